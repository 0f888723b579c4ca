"""Avro in the Confluent wire format, schemas per stream, and the bounded serializer cache."""

from __future__ import annotations

import datetime as dt
import gc
import io
import tracemalloc

import pytest
from fastavro import parse_schema, schemaless_reader
from fastavro.validation import validate

from streamer.kinds import KINDS
from streamer.parse import Event, FrameParser
from streamer.serialize import (
    AvroSerializer,
    RecordSerializer,
    SerializerCache,
    load_schema,
    make_registry_client,
    split_wire,
    subject_for,
    topic_for,
)


def registry(name: str) -> object:
    return make_registry_client(f"mock://{name}")


def decode(value: bytes, stream: str) -> dict:
    _, body = split_wire(value)
    return schemaless_reader(io.BytesIO(body), parse_schema(load_schema(stream)))


FRAMES = {
    "trade": '{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255208,"s":"BTCUSDT","t":3735683259,'
    '"p":"61837.63000000","q":"0.00100000","T":1723161255207,"m":true,"M":true}}',
    "aggTrade": '{"stream":"nknusdt@aggTrade","data":{"e":"aggTrade","E":1633998512123,"s":"NKNUSDT",'
    '"a":12345,"p":"0.35130000","q":"6195.00000000","f":100,"l":105,"T":1633998512120,"m":false,"M":true}}',
    "bookTicker": '{"stream":"btcusdt@bookTicker","data":{"u":50093239212,"s":"BTCUSDT","b":"61837.63000000",'
    '"B":"3.78826000","a":"61837.64000000","A":"1.54698000"}}',
    "depth": '{"stream":"btcusdt@depth@100ms","data":{"e":"depthUpdate","E":1723161255308,"s":"BTCUSDT",'
    '"U":50093239203,"u":50093239207,"b":[["55653.87000000","0.00000000"]],'
    '"a":[["61838.04000000","0.32332000"],["61844.30000000","0.40163000"]]}}',
}


def _types(node: object) -> list[str]:
    """Every primitive type name used anywhere in a schema."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [t for item in node for t in _types(item)]
    if isinstance(node, dict):
        found = _types(node.get("type", []))
        for field in node.get("fields", []):
            found += _types(field["type"])
        if "items" in node:
            found += _types(node["items"])
        return found
    return []


def test_every_stream_has_a_valid_schema_with_exact_decimals_and_millis() -> None:
    for stream in KINDS:
        schema = load_schema(stream)
        parse_schema(schema)
        fields = {f["name"]: f["type"] for f in schema["fields"]}
        for name in ("exchange", "symbol", "ingestion_time", "instance"):
            assert name in fields, (stream, name)
        assert fields["ingestion_time"] == {"type": "long", "logicalType": "timestamp-millis"}
        assert not {"float", "double"} & set(_types(schema)), stream
    trade = {f["name"]: f["type"] for f in load_schema("trade")["fields"]}
    assert trade["price"] == "string" and trade["is_buyer_maker"] == "boolean"
    assert trade["trade_time"]["logicalType"] == "timestamp-millis"


@pytest.mark.parametrize("stream", list(FRAMES))
def test_round_trip_through_the_confluent_wire_format(stream: str) -> None:
    event = FrameParser("blue").parse(FRAMES[stream], 1723161255300)
    assert isinstance(event, Event) and event.stream == stream
    assert validate(event.record, parse_schema(load_schema(stream)), raise_errors=True)
    client = registry(f"roundtrip-{stream}")
    serializer = RecordSerializer(SerializerCache(client, 10), "market.crypto.binance")
    value = serializer.encode(stream, event.record)
    assert value[0] == 0  # magic byte
    schema_id, _ = split_wire(value)
    topic = topic_for("market.crypto.binance", stream)
    assert schema_id == client.get_latest_version(subject_for(topic)).schema_id
    decoded = decode(value, stream)
    for key, expected in event.record.items():
        got = decoded[key]
        if isinstance(got, dt.datetime):
            got = int(got.timestamp() * 1000)
        assert got == expected, key
    assert serializer.topics == {
        "trade": "market.crypto.binance.trades",
        "aggTrade": "market.crypto.binance.aggtrades",
        "bookTicker": "market.crypto.binance.bookticker",
        "depth": "market.crypto.binance.depth",
        "depthSnapshot": "market.crypto.binance.depth_snapshots",
    }


def test_largest_binance_magnitudes_survive_exactly() -> None:
    raw = FRAMES["trade"].replace("61837.63000000", "92233720368.54775807").replace("0.00100000", "0.00000001")
    event = FrameParser("blue").parse(raw, 1)
    assert isinstance(event, Event)
    value = RecordSerializer(SerializerCache(registry("big"), 10), "t").encode("trade", event.record)
    decoded = decode(value, "trade")
    assert (decoded["price"], decoded["quantity"]) == ("92233720368.54775807", "0.00000001")


def test_split_wire_rejects_other_formats() -> None:
    with pytest.raises(ValueError, match="wire format"):
        split_wire(b"\x01\x00\x00\x00\x01abc")
    with pytest.raises(ValueError, match="wire format"):
        split_wire(b"\x00\x00")


def test_lru_bound_10_with_15_serializers_evicts_5() -> None:
    sizes: list[int] = []
    evicted: list[int] = []
    cache = SerializerCache(registry("lru15"), 10, lambda size, n: (sizes.append(size), evicted.append(n)))
    schema = load_schema("trade")
    for i in range(15):
        cache.get(f"subject-{i}-value", schema)
    assert len(cache) == 10 and cache.evictions == 5 and sum(evicted) == 5
    assert max(sizes) == 10
    assert [f"subject-{i}-value" in cache for i in range(15)] == [False] * 5 + [True] * 10


def test_lru_keeps_recently_used_subjects() -> None:
    cache = SerializerCache(registry("lru-recent"), 3)
    schema = load_schema("trade")
    for name in ("a", "b", "c"):
        cache.get(name, schema)
    cache.get("a", schema)  # a becomes the most recent
    cache.get("d", schema)  # evicts b, the least recent
    assert "a" in cache and "b" not in cache and "c" in cache and "d" in cache
    same = cache.get("a", schema)
    assert cache.get("a", schema) is same  # a hit returns the cached serializer


def test_cycling_150_subjects_releases_every_evicted_serializer() -> None:
    """Evicted serializers are released: after 20 rounds through 150 subjects (3,000 misses, 2,990 evictions)
    exactly the 10 cached serializers are alive, and the memory Python allocated during those rounds and still
    holds is under max_retained_bytes (a serializer retained per miss would hold megabytes). Counted with gc and
    tracemalloc, which no other process and no machine load can change (RSS of the pytest process could)."""
    max_retained_bytes = 256 * 1024  # < 90 bytes per miss
    cache = SerializerCache(registry("lru150"), 10)
    schemas = [load_schema(s) for s in KINDS]
    record = FrameParser("blue").parse(FRAMES["trade"], 1).record  # type: ignore[union-attr]

    def one_round() -> None:
        for i in range(150):
            serializer = cache.get(f"cycle-{i}-value", schemas[0] if i % 4 == 0 else schemas[i % 4])
            if i % 4 == 0:
                serializer.encode(record)

    def alive_serializers() -> int:
        return sum(1 for o in gc.get_objects() if isinstance(o, AvroSerializer) and o.subject.startswith("cycle-"))

    for _ in range(3):  # warm-up: the registry learns the 150 subjects
        one_round()
    gc.collect()
    tracemalloc.start()
    try:
        for _ in range(20):
            one_round()
        gc.collect()
        retained, _peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(cache) == 10
    assert cache.evictions == 23 * 150 - 10
    assert alive_serializers() == 10
    print(f"after 3000 more cache misses: {retained / 1024:.1f} KiB allocated and still held")
    assert retained < max_retained_bytes
