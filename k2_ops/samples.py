"""The real Binance recordings the parser, replay and simulator tests read, and how a clone gets them.

In this workspace they sit beside the checkout (`../shared/binance_samples/`). A clone anywhere else fetches
them from their public sources (`k2 setup`, run by `make setup`) into `.cache/binance_samples/`.

Invariants:
- a recording lands in the folder only after its SHA-256 matched the pinned one: it is downloaded to a
  temporary file in the same folder, checked, then renamed, so the folder never holds a partial or altered
  file under a recording's name;
- a recording already present with the right checksum is never downloaded again; one present with a wrong
  checksum is an error naming the file (it is not silently replaced: somebody put it there).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_HFTBACKTEST = "https://raw.githubusercontent.com/nkaz001/hftbacktest/c4183c646c744222812405fb3618a39ab75a4a8d"
_CRYPTOFEED = "https://raw.githubusercontent.com/bmoscon/cryptofeed/ce58c2a0015040aa2271e80bac783d74fa2cdcff"


@dataclass(frozen=True)
class Recording:
    name: str
    url: str
    sha256: str
    licence: str


RECORDINGS: tuple[Recording, ...] = (
    Recording(
        "btcusdt_20240808.gz",
        f"{_HFTBACKTEST}/examples/spot/btcusdt_20240808.gz",
        "5d263f4c5379cfc27379ef0e22779aa33804463d1b69c292e9c0714e31f2e1b4",
        "MIT (nkaz001/hftbacktest)",
    ),
    Recording(
        "cryptofeed_BINANCE.ws.1.0",
        f"{_CRYPTOFEED}/sample_data/BINANCE.ws.1.0",
        "5ba2e0cc8204e49dff3d4c608dbb1c3cacc06d432d910ccc31f6b94136bfa5d2",
        "XFree86 1.1 (bmoscon/cryptofeed)",
    ),
    Recording(
        "cryptofeed_BINANCE.http.0.0",
        f"{_CRYPTOFEED}/sample_data/BINANCE.http.0.0",
        "f482e6ea64cb2cbbf2ea6d038f509d9587720631f4287747d2edc480e880c21d",
        "XFree86 1.1 (bmoscon/cryptofeed)",
    ),
)


class SampleError(Exception):
    """A recording could not be fetched or does not match its pinned checksum."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def missing(folder: Path, recordings: Sequence[Recording] = RECORDINGS) -> list[Recording]:
    """The recordings not in `folder`; raises SampleError for one present with a wrong checksum."""
    absent = []
    for recording in recordings:
        path = folder / recording.name
        if not path.exists():
            absent.append(recording)
        elif (found := sha256_of(path)) != recording.sha256:
            raise SampleError(f"{path}: SHA-256 {found}, expected {recording.sha256}; remove it to fetch it again")
    return absent


def _download(url: str, into: Path, timeout_s: float) -> None:
    with urllib.request.urlopen(url, timeout=timeout_s) as response, into.open("wb") as out:
        while block := response.read(1 << 16):
            out.write(block)


def fetch(
    folder: Path,
    recordings: Sequence[Recording] = RECORDINGS,
    *,
    url_of: Callable[[Recording], str] = lambda recording: recording.url,
    timeout_s: float = 60.0,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Download the recordings missing from `folder`, each checked against its SHA-256; returns what it added."""
    folder.mkdir(parents=True, exist_ok=True)
    added = []
    for recording in missing(folder, recordings):
        url = url_of(recording)
        log(f"samples: fetching {recording.name} ({recording.licence}) from {url}")
        fd, tmp_name = tempfile.mkstemp(prefix=f".{recording.name}.", dir=folder)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            try:
                _download(url, tmp, timeout_s)
            except OSError as exc:  # URLError and HTTPError are OSErrors
                raise SampleError(f"{recording.name}: could not download {url}: {exc}") from exc
            if (found := sha256_of(tmp)) != recording.sha256:
                raise SampleError(f"{recording.name}: downloaded from {url} with SHA-256 {found}, "
                                  f"expected {recording.sha256}; not kept")
            tmp.replace(folder / recording.name)
        finally:
            tmp.unlink(missing_ok=True)
        added.append(folder / recording.name)
    return added
