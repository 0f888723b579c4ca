"""Per-stage attribution of `k2 bench --profile`: a real cProfile (CPU clock) of the streamer's real parse →
sequence check → Avro path over the real BTCUSDT recording lands in the right stages, shares sum to 1, and
the report renders the table from a profile."""

from __future__ import annotations

import cProfile
import gzip
import itertools
import pstats
import time

import pytest

from k2_ops.bench import report
from k2_ops.bench.stages import Stage, attribute, stage_of, stage_table
from k2_ops.paths import shared_samples_dir
from streamer.integrity import SequenceTracker
from streamer.parse import Event, FrameParser
from streamer.serialize import RecordSerializer, SerializerCache, make_registry_client

BTC_FILE = shared_samples_dir() / "btcusdt_20240808.gz"
FRAMES = 20_000


@pytest.fixture(scope="module")
def profiled() -> dict[Stage, float]:
    if not BTC_FILE.exists():
        pytest.fail(f"the Binance recording {BTC_FILE} is missing (set K2_SAMPLES_DIR to its folder)")
    with gzip.open(BTC_FILE, "rt") as lines:
        frames = [line.rstrip("\n").partition(" ")[2] for line in itertools.islice(lines, FRAMES)]
    parser = FrameParser("blue")
    tracker = SequenceTracker()
    serializer = RecordSerializer(SerializerCache(make_registry_client("mock://stages"), 10), "stages")
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    encoded = 0
    for received_ms, raw in enumerate(frames):
        event = parser.parse(raw, received_ms)
        if isinstance(event, Event) and tracker.accept(event):
            serializer.encode(event.stream, event.record)
            encoded += 1
    profiler.disable()
    assert encoded > FRAMES // 2
    return attribute(pstats.Stats(profiler).stats)  # type: ignore[attr-defined]


def test_real_hot_path_lands_in_its_stages(profiled: dict[Stage, float]) -> None:
    for stage in (Stage.JSON, Stage.DECIMAL, Stage.RECORD, Stage.INTEGRITY, Stage.AVRO):
        assert profiled[stage] > 0, f"nothing attributed to {stage}: {profiled}"
    # Nothing of this path is receive, produce or metrics work.
    assert profiled[Stage.RECEIVE] == profiled[Stage.PRODUCE] == profiled[Stage.METRICS] == 0
    # The work is in named stages, not in "other".
    assert profiled[Stage.OTHER] < 0.2 * sum(profiled.values())


def test_builtin_and_library_functions_are_attributed() -> None:
    assert stage_of(("~", 0, "<method 'poll' of 'select.epoll' objects>")) is Stage.IDLE
    assert stage_of(("~", 0, "<method 'produce' of 'cimpl.Producer' objects>")) is Stage.PRODUCE
    assert stage_of(("~", 0, "<method 'read' of '_ssl._SSLSocket' objects>")) is Stage.RECEIVE
    assert stage_of(("/v/lib/python3.11/site-packages/websockets/frames.py", 1, "parse")) is Stage.RECEIVE
    assert stage_of(("/w/streamer/wsframes.py", 99, "feed")) is Stage.RECEIVE
    assert stage_of(("/w/streamer/wsclient.py", 1, "data_received")) is Stage.RECEIVE
    assert stage_of(("/v/site-packages/prometheus_client/metrics.py", 1, "inc")) is Stage.METRICS
    assert stage_of(("/w/streamer/payload.py", 73, "_dec")) is Stage.DECIMAL
    assert stage_of(("/w/streamer/payload.py", 133, "trade")) is Stage.RECORD
    assert stage_of(("/w/streamer/unheard_of.py", 1, "f")) is Stage.OTHER


def test_shares_sum_to_one_without_idle_and_threads_come_from_the_split(profiled: dict[Stage, float]) -> None:
    totals = dict(profiled) | {Stage.IDLE: 100.0}  # idle never dilutes the shares
    rows = stage_table(totals, 10.0, 0.8, 1.5)
    loop = [r for r in rows if r["thread"] == "event loop"]
    assert abs(sum(r["share"] for r in loop) - 1) < 1e-9
    assert abs(sum(r["us_per_msg"] for r in loop) - 10.0) < 1e-9
    assert [r["us_per_msg"] for r in rows if r["thread"] != "event loop"] == [0.8, 1.5]


def test_report_renders_the_stage_table_only_with_a_profile(profiled: dict[Stage, float]) -> None:
    figures = {f"e2e.thread_{g}_us": {"median": v} for g, v in
               (("event_loop", 12.0), ("python_threads", 0.8), ("librdkafka", 1.4))}
    with_profile = {"raw": {"profile": {"stage_seconds": {s.name: v for s, v in profiled.items()}}},
                    "figures": figures}
    text = "\n".join(report.stage_lines(with_profile))
    assert "| Avro encode | event loop |" in text
    assert "| librdkafka threads (batching, compression, network) | librdkafka |  | 1.40 µs |" in text
    assert report.stage_lines({"raw": {}, "figures": figures}) == []
