"""The stream-kind table: one place for every fact about a kind, and one format of stream key everywhere."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from streamer.config import STREAM_KINDS, load_config
from streamer.integrity import SequenceTracker
from streamer.kinds import KINDS, stream_key, stream_keys
from streamer.parse import Event, FrameParser
from streamer.serialize import load_schema, topic_for

PAYLOADS = {
    "trade": {"e": "trade", "E": 1, "s": "BTCUSDT", "t": 7, "p": "1.0", "q": "2.0", "T": 1, "m": True, "M": True},
    "aggTrade": {"e": "aggTrade", "E": 1, "s": "BTCUSDT", "a": 7, "p": "1.0", "q": "2.0", "f": 1, "l": 2, "T": 1,
                 "m": False, "M": True},
    "bookTicker": {"u": 7, "s": "BTCUSDT", "b": "1.0", "B": "2.0", "a": "1.1", "A": "3.0"},
    "depth": {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 5, "u": 7, "b": [["1.0", "2.0"]], "a": []},
}


def test_the_table_covers_every_configurable_kind_with_its_schema_topic_and_id_field() -> None:
    assert STREAM_KINDS == tuple(KINDS) == ("trade", "aggTrade", "bookTicker", "depth")
    assert load_config({"K2_BINANCE_STREAMS": ",".join(KINDS)}).streams == STREAM_KINDS
    for name, kind in KINDS.items():
        assert resources.files("streamer.schemas").joinpath(kind.schema_file).is_file()
        fields = {f["name"] for f in load_schema(name)["fields"]}
        assert kind.id_field in fields, name  # the header names a field the record really has
        assert topic_for("market.crypto.binance", name) == f"market.crypto.binance.{kind.topic_suffix}"
    assert [k.name for k in KINDS.values() if not k.contiguous] == ["bookTicker"]


def test_stream_keys_are_binance_stream_names() -> None:
    assert stream_key("btcusdt", "depth") == "btcusdt@depth@100ms"
    assert stream_keys(("btcusdt", "ethusdt"), ("trade", "depth")) == [
        "btcusdt@trade", "btcusdt@depth@100ms", "ethusdt@trade", "ethusdt@depth@100ms"]


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_parser_keys_events_by_the_subscribed_stream_key(kind: str) -> None:
    """Wrapped in the subscribed stream name or raw: the event's key is the key we subscribed and track."""
    parser = FrameParser("blue")
    key = stream_key("btcusdt", kind)
    for raw in (json.dumps({"stream": key, "data": PAYLOADS[kind]}), json.dumps(PAYLOADS[kind])):
        event = parser.parse(raw, 1)
        assert isinstance(event, Event), event
        assert (event.key, event.stream, event.last_id) == (key, kind, 7)


def test_a_depth_gap_names_the_stream_key_positions_show() -> None:
    """The gap log used to say "btcusdt@depth" while /positions said "btcusdt@depth@100ms"."""
    tracker = SequenceTracker()
    state = tracker.track("btcusdt", "depth")
    tracker.check(state, 10, 14)
    tracker.check(state, 20, 25)  # 15..19 missing
    assert tracker.last_gap == ("btcusdt@depth@100ms", 15, 5)
    assert set(tracker.received_last()) == {tracker.last_gap[0]}
