"""Where the streamer's CPU goes, per stage of the hot path: a cProfile of its event-loop thread, each
function's own time attributed to one stage, plus the other threads' CPU from the throughput figure.

Pure (no I/O): `attribute` takes the `pstats.Stats(...).stats` mapping, `stage_table` the shares and the
throughput phase's per-thread CPU per message.

Invariants:
- every profiled function lands in exactly one stage (the first rule that matches, `OTHER` otherwise;
  an unnamed built-in is split over its callers' stages), so the stage shares of the event-loop thread
  sum to 1;
- time spent waiting in the selector (`select.epoll.poll`) is idle, not work: it is reported on its own and
  left out of the shares (with the profiler's CPU clock it is near 0 anyway);
- the Kafka poll thread (delivery callbacks) and librdkafka's own threads are not in a cProfile of the
  main thread: their rows come from the per-thread CPU split measured without the profiler.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any


class Stage(Enum):
    RECEIVE = "frame receive (WebSocket frames, TLS, asyncio)"
    JSON = "JSON decode"
    DECIMAL = "decimal validation"
    RECORD = "payload checks, record dict, Event"
    INTEGRITY = "integrity (sequence check)"
    METRICS = "metric updates"
    AVRO = "Avro encode"
    PRODUCE = "produce call (confluent-kafka)"
    PIPELINE = "reader loop, routing, pipeline"
    OTHER = "other (logging, health, timers, ...)"
    IDLE = "idle (waiting in the selector)"


# (stage, path fragments, function-name fragments): a function matches when its file contains one of the
# path fragments and (no name fragments are given or) its name contains one of the name fragments. Order
# matters: the first match wins.
_RULES: tuple[tuple[Stage, tuple[str, ...], tuple[str, ...]], ...] = (
    (Stage.IDLE, ("~",), ("'poll' of 'select.epoll'", "'select' of 'select.epoll'")),
    (Stage.JSON, ("streamer/parse.py",), ("_loads",)),
    (Stage.JSON, ("/json/",), ()),
    (Stage.JSON, ("~",), ("'decode' of 'bytes'", "_json.")),
    (Stage.DECIMAL, ("streamer/payload.py",), ("_dec", "_new_decimal")),
    (Stage.DECIMAL, ("~",), ("'match' of 're.Pattern'", "'fullmatch' of 're.Pattern'")),
    (Stage.RECORD, ("streamer/payload.py", "streamer/parse.py", "streamer/kinds.py"), ()),
    (Stage.INTEGRITY, ("streamer/integrity.py",), ()),
    (Stage.METRICS, ("/prometheus_client/", "streamer/metrics.py", "streamer/latency.py"), ()),
    (Stage.AVRO, ("/fastavro/", "streamer/serialize.py", "streamer/avro.py"), ()),
    (Stage.AVRO, ("~",), ("fastavro",)),
    (Stage.PRODUCE, ("~",), ("'produce' of 'cimpl.Producer'", "'poll' of 'cimpl.Producer'")),
    (Stage.PRODUCE, ("streamer/sink.py",), ()),
    (Stage.PIPELINE, ("streamer/pipeline.py", "streamer/routing.py", "streamer/source.py",
                      "streamer/backpressure.py"), ()),
    (Stage.RECEIVE, ("/websockets/", "streamer/wsclient.py", "streamer/wsframes.py", "/asyncio/", "/ssl.py"), ()),
    (Stage.RECEIVE, ("~",), ("_ssl.", "'recv", "'send", "_asyncio.", "_overlapped", "'utf_8_decode'")),
)

FuncKey = tuple[str, int, str]


def stage_of(key: FuncKey) -> Stage:
    """The stage a profiled function (pstats key: file, line, name) belongs to."""
    path, _, name = key
    path = path.replace("\\", "/")
    for stage, paths, names in _RULES:
        if any(p == path if p == "~" else p in path for p in paths) and (
            not names or any(n in name for n in names)
        ):
            return stage
    return Stage.OTHER


def attribute(stats: Mapping[FuncKey, tuple[Any, ...]]) -> dict[Stage, float]:
    """Own time (pstats `tottime`, seconds of the profiler's clock) summed per stage; every stage present.
    A built-in no rule names (`len`, `dict.get`, ...) is charged to its callers' stages, in proportion to
    the time it spent under each caller (pstats keeps that per caller)."""
    totals = dict.fromkeys(Stage, 0.0)
    for key, row in stats.items():
        stage = stage_of(key)
        callers: Mapping[FuncKey, tuple[Any, ...]] = row[4] if len(row) > 4 else {}
        if stage is Stage.OTHER and key[0] == "~" and callers:
            under = {caller: float(c[2]) for caller, c in callers.items()}
            spent = sum(under.values())
            if spent > 0:
                for caller, seconds in under.items():
                    totals[stage_of(caller)] += float(row[2]) * seconds / spent
                continue
        totals[stage] += float(row[2])
    return totals


def stage_table(
    totals: Mapping[Stage, float], event_loop_us_per_msg: float | None, other_threads_us_per_msg: float | None,
    librdkafka_us_per_msg: float | None,
) -> list[dict[str, Any]]:
    """Rows {stage, share, us_per_msg}: the event-loop stages split that thread's measured CPU per message
    by their profile share; delivery callbacks and librdkafka threads come from the thread split."""
    busy = sum(seconds for stage, seconds in totals.items() if stage is not Stage.IDLE)
    rows: list[dict[str, Any]] = []
    for stage in Stage:
        if stage is Stage.IDLE:
            continue
        share = totals.get(stage, 0.0) / busy if busy > 0 else None
        us = share * event_loop_us_per_msg if share is not None and event_loop_us_per_msg is not None else None
        rows.append({"stage": stage.value, "thread": "event loop", "share": share, "us_per_msg": us})
    rows.append({"stage": "delivery callbacks (Kafka poll thread) and other Python threads",
                 "thread": "other Python threads", "share": None, "us_per_msg": other_threads_us_per_msg})
    rows.append({"stage": "librdkafka threads (batching, compression, network)", "thread": "librdkafka",
                 "share": None, "us_per_msg": librdkafka_us_per_msg})
    return rows
