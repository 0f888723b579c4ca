"""Fetching the Binance recordings a clone outside this workspace lacks: over real HTTP from a loopback server
that stands in for GitHub, each file kept only when its SHA-256 is the pinned one."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from k2_ops import samples
from k2_ops.paths import shared_samples_dir


@dataclass
class Origin:
    """A loopback HTTP server serving `files[name]` at `/<name>`; records every path asked for."""

    files: dict[str, bytes]
    requests: list[str] = field(default_factory=list)
    port: int = 0

    def url_of(self, recording: samples.Recording) -> str:
        return f"http://127.0.0.1:{self.port}/{recording.name}"


@pytest.fixture
def origin() -> Iterator[Origin]:
    real = shared_samples_dir()
    state = Origin({r.name: (real / r.name).read_bytes() for r in samples.RECORDINGS})

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            state.requests.append(name)
            body = state.files.get(name)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def test_fetches_every_recording_once_with_its_pinned_checksum(origin: Origin, tmp_path: Path) -> None:
    folder = tmp_path / "samples"
    added = samples.fetch(folder, url_of=origin.url_of, log=lambda _: None)

    assert sorted(p.name for p in added) == sorted(r.name for r in samples.RECORDINGS)
    for recording in samples.RECORDINGS:
        assert samples.sha256_of(folder / recording.name) == recording.sha256
    assert sorted(p.name for p in folder.iterdir()) == sorted(r.name for r in samples.RECORDINGS)  # no temp files

    asked = len(origin.requests)
    assert samples.fetch(folder, url_of=origin.url_of, log=lambda _: None) == []
    assert len(origin.requests) == asked, "a present, verified recording is downloaded again"


def test_a_download_with_another_checksum_is_refused_and_not_kept(origin: Origin, tmp_path: Path) -> None:
    altered = samples.RECORDINGS[1]
    origin.files[altered.name] = origin.files[altered.name].replace(b"bookTicker", b"bookTickex", 1)
    folder = tmp_path / "samples"

    with pytest.raises(samples.SampleError, match=f"{altered.name}: downloaded from .* not kept"):
        samples.fetch(folder, url_of=origin.url_of, log=lambda _: None)

    assert not (folder / altered.name).exists()
    assert [p.name for p in folder.iterdir()] == [samples.RECORDINGS[0].name]  # the good one before it, no temp


def test_a_missing_source_is_an_error_naming_the_file_and_url(origin: Origin, tmp_path: Path) -> None:
    gone = samples.RECORDINGS[0]
    del origin.files[gone.name]

    with pytest.raises(samples.SampleError, match=f"{gone.name}: could not download http://127.0.0.1:.*404"):
        samples.fetch(tmp_path, url_of=origin.url_of, log=lambda _: None)
    assert list(tmp_path.iterdir()) == []


def test_a_present_file_with_a_wrong_checksum_is_reported_not_replaced(origin: Origin, tmp_path: Path) -> None:
    for recording in samples.RECORDINGS:
        shutil.copyfile(shared_samples_dir() / recording.name, tmp_path / recording.name)
    tampered = tmp_path / samples.RECORDINGS[2].name
    tampered.write_bytes(tampered.read_bytes()[:-1])

    with pytest.raises(samples.SampleError, match=f"{tampered}: SHA-256 .*remove it to fetch it again"):
        samples.fetch(tmp_path, url_of=origin.url_of, log=lambda _: None)
    assert origin.requests == []
    assert samples.sha256_of(tampered) != samples.RECORDINGS[2].sha256


def test_the_pinned_sources_are_the_ones_the_readme_credits() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for recording in samples.RECORDINGS:
        repository = recording.url.split("/")[3:5]
        assert "/".join(repository) in readme, f"README does not credit {repository} for {recording.name}"
        assert recording.licence.split(" (")[0] in readme
