"""The per-schema Avro encoders write exactly fastavro's bytes, and a schema they do not match falls back to
fastavro."""

from __future__ import annotations

import io
from collections import Counter
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_writer
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer import avro
from streamer.kinds import KINDS
from streamer.parse import Event, FrameParser
from streamer.serialize import AvroSerializer, load_schema, without_logical_types
from tests.streamer.test_parse import BTC_FILE, CRYPTOFEED_FILE, btc_frames, cryptofeed_frames

HEADER = b"\x00\x00\x00\x00\x07"
PARSED = {stream: parse_schema(without_logical_types(load_schema(stream))) for stream in KINDS}


def fastavro_bytes(stream: str, record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    out.write(HEADER)
    schemaless_writer(out, PARSED[stream], record)
    return out.getvalue()


def own_bytes(stream: str, record: dict[str, Any]) -> bytes:
    encoder = avro.body_encoder(without_logical_types(load_schema(stream)))
    assert encoder is not None, f"no encoder written for the {stream} schema"
    return encoder(HEADER, record)


def test_every_record_of_the_real_recordings_encodes_to_fastavros_bytes() -> None:
    if not (BTC_FILE.exists() and CRYPTOFEED_FILE.exists()):
        pytest.fail(f"the Binance recordings are missing ({BTC_FILE.parent}; set K2_SAMPLES_DIR)")
    parser = FrameParser("blue")
    compared: Counter[str] = Counter()
    for raw in [*btc_frames(), *cryptofeed_frames()]:
        event = parser.parse(raw, 1_723_161_260_000)
        if isinstance(event, Event):
            assert own_bytes(event.stream, event.record) == fastavro_bytes(event.stream, event.record), event
            compared[event.stream] += 1
    assert compared["trade"] > 9000 and compared["bookTicker"] > 28000 and compared["depth"] > 3000
    assert compared["aggTrade"] > 0


AVRO_LONG = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=40)
LEVELS = st.lists(st.fixed_dictionaries({"price": TEXT, "quantity": TEXT}), max_size=5)
RECORDS = {
    "trade": st.fixed_dictionaries({
        "exchange": TEXT, "symbol": TEXT, "trade_id": AVRO_LONG, "price": TEXT, "quantity": TEXT,
        "event_time": AVRO_LONG, "trade_time": AVRO_LONG, "is_buyer_maker": st.booleans(),
        "is_best_match": st.none() | st.booleans(), "ingestion_time": AVRO_LONG, "instance": TEXT}),
    "aggTrade": st.fixed_dictionaries({
        "exchange": TEXT, "symbol": TEXT, "agg_trade_id": AVRO_LONG, "price": TEXT, "quantity": TEXT,
        "first_trade_id": AVRO_LONG, "last_trade_id": AVRO_LONG, "event_time": AVRO_LONG, "trade_time": AVRO_LONG,
        "is_buyer_maker": st.booleans(), "is_best_match": st.none() | st.booleans(), "ingestion_time": AVRO_LONG,
        "instance": TEXT}),
    "bookTicker": st.fixed_dictionaries({
        "exchange": TEXT, "symbol": TEXT, "update_id": AVRO_LONG, "bid_price": TEXT, "bid_quantity": TEXT,
        "ask_price": TEXT, "ask_quantity": TEXT, "event_time": st.none() | AVRO_LONG, "ingestion_time": AVRO_LONG,
        "instance": TEXT}),
    "depth": st.fixed_dictionaries({
        "exchange": TEXT, "symbol": TEXT, "first_update_id": AVRO_LONG, "final_update_id": AVRO_LONG,
        "event_time": AVRO_LONG, "bids": LEVELS, "asks": LEVELS, "ingestion_time": AVRO_LONG, "instance": TEXT}),
}


@pytest.mark.parametrize("stream", list(KINDS))
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_generated_records_encode_to_fastavros_bytes(stream: str, data: st.DataObject) -> None:
    record = data.draw(RECORDS[stream])
    assert own_bytes(stream, record) == fastavro_bytes(stream, record)


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_every_avro_long_is_written_as_fastavro_writes_it(n: int) -> None:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema("long"), n)
    assert avro.long_bytes(n) == out.getvalue()


def test_boundaries_of_each_varint_length() -> None:
    for bits in range(0, 64):
        for n in (2**bits - 1, 2**bits, -(2**bits), -(2**bits) - 1):
            if -(2**63) <= n <= 2**63 - 1:
                out = io.BytesIO()
                schemaless_writer(out, parse_schema("long"), n)
                assert avro.long_bytes(n) == out.getvalue(), n


def test_a_long_outside_64_bits_is_refused() -> None:
    for n in (2**63, -(2**63) - 1, 2**70):
        with pytest.raises(ValueError, match="does not fit an Avro long"):
            avro.long_bytes(n)


def test_the_caches_stay_bounded() -> None:
    for i in range(3 * avro.STRINGS.max_size):
        assert avro.STRINGS[f"{i}.5"] == avro.long_bytes(len(f"{i}.5")) + f"{i}.5".encode()
        assert avro.TIMES[1_700_000_000_000 + i] == avro.long_bytes(1_700_000_000_000 + i)
        assert 0 < len(avro.STRINGS) <= avro.STRINGS.max_size and 0 < len(avro.TIMES) <= avro.TIMES.max_size


@pytest.mark.parametrize("stream", list(KINDS))
def test_each_schema_has_its_encoder_and_a_changed_schema_falls_back_to_fastavro(stream: str) -> None:
    schema = load_schema(stream)
    assert avro.body_encoder(without_logical_types(schema)) is avro.ENCODERS[schema["name"]][1]

    # A field added to the schema: the written encoder no longer matches and fastavro encodes the record.
    changed = {**schema, "fields": [*schema["fields"], {"name": "venue", "type": "string", "default": "spot"}]}
    assert avro.body_encoder(without_logical_types(changed)) is None
    # A field's type changed (the instance as an optional string).
    retyped = {**schema, "fields": [f if f["name"] != "instance" else {**f, "type": ["null", "string"]}
                                    for f in schema["fields"]]}
    assert avro.body_encoder(without_logical_types(retyped)) is None

    parser = FrameParser("blue")
    from tests.streamer.test_serialize import FRAMES

    event = parser.parse(FRAMES[stream], 1_723_161_260_000)
    assert isinstance(event, Event)
    record = {**event.record, "venue": "spot"}
    out = io.BytesIO()
    out.write(b"\x00\x00\x00\x00\x09")
    schemaless_writer(out, parse_schema(without_logical_types(changed)), record)
    assert AvroSerializer("s-value", 9, changed).encode(record) == out.getvalue()
