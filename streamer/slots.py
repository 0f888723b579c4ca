"""The connection pool's plan, pure (no I/O, no clock): which stream keys ride on which connection slot, when
each slot's first scheduled rotation falls, and how subscriptions are cut into SUBSCRIBE messages.

Invariants:
- every stream key is on exactly one slot, and no slot holds more than `per_connection` keys (Binance allows
  1024 per connection; K2_STREAMS_PER_CONNECTION, default 200);
- a symbol's streams stay together on one slot when they fit (allocation is symbol-major);
- scheduled rotations are staggered: slot i of n first rotates after lifetime x (i + 1) / n, then every
  lifetime, so no two slots rotate together (n = 1: after the lifetime, as before the pool);
- a new listing goes to the slot with room (lowest index first), or to new slots; no other slot changes;
  a delisting only takes keys off the slots that hold them;
- a SUBSCRIBE message carries at most SUBSCRIBE_BATCH stream names (the URL itself carries none).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Stream names per SUBSCRIBE message. Each message is one of the 5 frames per second Binance allows a
# connection (streamer/heartbeat.py keeps ours to 4 per 1.1 s), so 200 streams subscribe in one message and
# 1024 in six, within two seconds.
SUBSCRIBE_BATCH = 200


def allocate(keys: Sequence[str], per_connection: int) -> list[list[str]]:
    """The keys in order, cut into slots of at most `per_connection` (the last one may be smaller)."""
    if per_connection < 1:
        raise ValueError("per_connection must be >= 1")
    return [list(keys[i : i + per_connection]) for i in range(0, len(keys), per_connection)]


def slots_needed(streams: int, per_connection: int) -> int:
    return max(1, math.ceil(streams / per_connection))


def stagger(count: int, lifetime_s: float) -> list[float]:
    """Seconds after its first connection opens at which slot i first rotates: lifetime x (i + 1) / count."""
    return [lifetime_s * (i + 1) / count for i in range(count)]


@dataclass(frozen=True)
class Placement:
    """Where new keys go: `existing[i]` = keys added to slot i; `new` = keys of slots to open."""

    existing: dict[int, list[str]]
    new: list[list[str]]


def place(new_keys: Sequence[str], loads: Sequence[int], per_connection: int) -> Placement:
    """Put new keys on slots with room (lowest index first, keeping a symbol's keys in order), the rest on
    new slots. `loads[i]` = keys slot i holds now."""
    existing: dict[int, list[str]] = {}
    left = list(new_keys)
    for index, load in enumerate(loads):
        room = per_connection - load
        if room <= 0 or not left:
            continue
        existing[index], left = left[:room], left[room:]
    return Placement(existing, allocate(left, per_connection))


def batches(keys: Sequence[str], size: int = SUBSCRIBE_BATCH) -> list[list[str]]:
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


class Method(StrEnum):
    SUBSCRIBE = "SUBSCRIBE"
    UNSUBSCRIBE = "UNSUBSCRIBE"


def request(method: Method, params: Sequence[str], request_id: int) -> str:
    """A SUBSCRIBE / UNSUBSCRIBE message as Binance documents it."""
    return json.dumps({"method": method.value, "params": list(params), "id": request_id}, separators=(",", ":"))


@dataclass(frozen=True)
class Reply:
    """The exchange's answer to a request: {"result": null, "id": N}, or an error {"error": {...}, "id": N}."""

    request_id: Any
    error: str | None


def reply(raw: str | bytes) -> Reply | None:
    """The answer to a request if `raw` is one, else None (market data). Never raises."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            return None
    if '"id"' not in raw or '"stream"' in raw[:12]:
        return None  # market data of the combined endpoint starts with {"stream":
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or "id" not in obj or ("result" not in obj and "error" not in obj):
        return None
    error = obj.get("error")
    return Reply(obj.get("id"), None if error is None else json.dumps(error)[:200])
