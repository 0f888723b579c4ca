"""Client of the streamer's handover control endpoint (see streamer/health.py), and the checks on its answers.

Exact handover, per stream key ("btcusdt@trade"): the old instance stops producing and reports the last id
Kafka acknowledged (`POST /handover/standby`); the new one, which connected in standby and buffered, drops
what it buffered up to that id and produces from the next one on (`POST /handover/release`). Gaps the old
instance was still repairing from Binance's REST history (`repairs` in its answer) go to the new one with the
release, so each missed id is repaired by exactly one of them.

Both calls carry the shared handover token (`Authorization: Bearer ...`): the streamer refuses them without
it. The deploying process and both colors share it: `K2_HANDOVER_TOKEN` / `K2_HANDOVER_TOKEN_FILE` in the
environment (compose: the .env both read), else, for the local process backend, a token file made once in the
deploy folder (`ensure_token_file`) that both colors are given.
"""

from __future__ import annotations

import json
import os
import secrets
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple, cast

from k2_ops.deploy.model import DeploymentError
from streamer.config import env_name

TOKEN_ENV = env_name("handover_token")
TOKEN_FILE_ENV = env_name("handover_token_file")


def token_from_environment(environ: Mapping[str, str] | None = None) -> str | None:
    """The handover token this process was given (inline or as a file), or None."""
    env = os.environ if environ is None else environ
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    if env.get(TOKEN_FILE_ENV):
        try:
            return Path(env[TOKEN_FILE_ENV]).read_text().strip() or None
        except OSError as exc:
            raise DeploymentError(f"{TOKEN_FILE_ENV}={env[TOKEN_FILE_ENV]!r}: cannot read it ({exc.strerror})") from exc
    return None


def ensure_token_file(path: Path) -> Path:
    """A token file readable by its owner only, made with a random token the first time."""
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return path


def _post(url: str, body: Mapping[str, Any], timeout_s: float, token: str | None) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            # The streamer's POST /handover/* routes answer a JSON object.
            return cast(dict[str, Any], json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:500]
        raise DeploymentError(f"POST {url} answered {exc.code}: {detail}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DeploymentError(f"POST {url} failed: {getattr(exc, 'reason', exc)}") from exc


class Standby(NamedTuple):
    """What the old instance handed over: its last Kafka-acknowledged id per stream key, and the gaps it was
    still repairing ({stream key: {"symbol", "stream", "ranges"}})."""

    positions: dict[str, int]
    repairs: dict[str, Any]


def enter_standby(base_url: str, flush_timeout_s: float, token: str | None) -> Standby:
    """Stop producing on `base_url`; return what the instance taking over needs (`Standby`)."""
    answer = _post(
        f"{base_url.rstrip('/')}/handover/standby",
        {"flush_timeout_seconds": flush_timeout_s},
        flush_timeout_s + 10.0,
        token,
    )
    if not answer.get("flushed", False):
        raise DeploymentError(f"{base_url}: Kafka did not acknowledge everything before the handover: {answer}")
    positions = answer.get("positions")
    if not isinstance(positions, dict):
        raise DeploymentError(f"{base_url}: standby answer has no positions: {answer}")
    repairs = answer.get("repairs") or {}
    if not isinstance(repairs, dict):
        raise DeploymentError(f"{base_url}: standby answer's repairs are not a mapping: {answer}")
    return Standby({str(key): int(value) for key, value in positions.items()}, repairs)


def release(
    base_url: str, after: Mapping[str, int] | None, token: str | None, timeout_s: float = 30.0,
    repairs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Make `base_url` produce everything after `after` (None: everything it buffered) and go on producing;
    it also repairs the gaps the old instance handed over (`repairs`)."""
    body: dict[str, Any] = {"after": dict(after)} if after else {}
    if repairs:
        body["repairs"] = dict(repairs)
    return _post(f"{base_url.rstrip('/')}/handover/release", body, timeout_s, token)


def release_gaps(report: Mapping[str, Any]) -> dict[str, int]:
    """Stream keys where the released instance could not continue at the next id, with the missing count."""
    streams = report.get("streams", {})
    return {key: int(item.get("gap", 0)) for key, item in streams.items() if int(item.get("gap", 0)) > 0}


def missing_positions(positions: Mapping[str, int], expected_keys: list[str] | None) -> list[str]:
    """Stream keys the old instance never produced (nothing to hand over for them: not an error, a note)."""
    if not expected_keys:
        return []
    return sorted(set(expected_keys) - set(positions))
