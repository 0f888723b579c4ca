"""Parser: the real Binance recordings, every error class, and hypothesis fuzzing (it must never raise)."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k2_ops.paths import shared_samples_dir
from streamer import parse as p
from streamer import payload
from streamer.integrity import ACCEPT, SequenceTracker
from streamer.parse import Event, FrameParser, Notice
from streamer.serialize import RecordSerializer, SerializerCache, make_registry_client

SAMPLES = shared_samples_dir()
BTC_FILE = SAMPLES / "btcusdt_20240808.gz"
CRYPTOFEED_FILE = SAMPLES / "cryptofeed_BINANCE.ws.1.0"



@pytest.fixture(autouse=True)
def recordings() -> None:
    if not (BTC_FILE.exists() and CRYPTOFEED_FILE.exists()):
        pytest.fail(f"the Binance recordings are missing in {SAMPLES} (set K2_SAMPLES_DIR to their folder)")


def btc_frames() -> Iterator[str]:
    with gzip.open(BTC_FILE, "rt") as lines:
        for line in lines:
            _, _, raw = line.rstrip("\n").partition(" ")
            yield raw


def cryptofeed_frames() -> Iterator[str]:
    with CRYPTOFEED_FILE.open() as lines:
        next(lines)  # "<url> <-> <connect time>" header
        for line in lines:
            _, sep, raw = line.rstrip("\n").partition(": ")
            if sep:
                yield raw


@pytest.fixture(scope="module")
def btc_parsed() -> list[Event | Notice]:
    parser = FrameParser("blue")
    return [parser.parse(raw, 1_723_161_260_000) for raw in btc_frames()]


def test_btcusdt_recording_parses_completely(btc_parsed: list[Event | Notice]) -> None:
    events = [e for e in btc_parsed if isinstance(e, Event)]
    notices = [e for e in btc_parsed if isinstance(e, Notice)]
    assert Counter(e.stream for e in events) == {"trade": 9757, "bookTicker": 28040, "depth": 3451}
    # The one REST depth snapshot line has neither a stream wrapper nor an event type.
    assert [n.kind for n in notices] == [p.UNKNOWN_EVENT]
    assert all(e.unknown_fields == 0 for e in events)


def test_btcusdt_ids_are_contiguous_and_tracked_without_gaps(btc_parsed: list[Event | Notice]) -> None:
    events = [e for e in btc_parsed if isinstance(e, Event)]
    trade_ids = [e.first_id for e in events if e.stream == "trade"]
    assert trade_ids[0] == 3735683259 and trade_ids[-1] == 3735693015
    assert trade_ids == list(range(3735683259, 3735693016))
    tracker = SequenceTracker()
    for e in events:
        tracker.accept(e)
    totals = tracker.totals()
    assert totals["gaps"] == 0 and totals["missing"] == 0 and totals["duplicates"] == 0
    assert totals["accepted"] == len(events)
    assert tracker.states["btcusdt@depth@100ms"].contiguous
    assert not tracker.states["btcusdt@bookTicker"].contiguous


def test_trade_record_keeps_exact_values() -> None:
    raw = next(r for r in btc_frames() if '"e":"trade"' in r)
    data = json.loads(raw)["data"]
    event = FrameParser("green").parse(raw, 42)
    assert isinstance(event, Event)
    assert event.key == "btcusdt@trade" and event.symbol == "btcusdt"
    r = event.record
    assert r["price"] == data["p"] and r["quantity"] == data["q"]  # the exact strings, never floats
    assert (r["trade_id"], r["event_time"], r["trade_time"]) == (data["t"], data["E"], data["T"])
    assert (r["is_buyer_maker"], r["is_best_match"]) == (data["m"], data["M"])
    assert (r["symbol"], r["exchange"], r["ingestion_time"], r["instance"]) == (
        "BTCUSDT",
        "binance",
        42,
        "green",
    )


def test_depth_and_book_ticker_records() -> None:
    parser = FrameParser("blue")
    depth_raw = next(r for r in btc_frames() if "depthUpdate" in r)
    depth = parser.parse(depth_raw, 1)
    data = json.loads(depth_raw)["data"]
    assert isinstance(depth, Event) and depth.stream == "depth"
    assert (depth.first_id, depth.last_id) == (data["U"], data["u"])
    assert [[lvl["price"], lvl["quantity"]] for lvl in depth.record["bids"]] == data["b"]
    assert [[lvl["price"], lvl["quantity"]] for lvl in depth.record["asks"]] == data["a"]
    book_raw = next(r for r in btc_frames() if "@bookTicker" in r)
    book = parser.parse(book_raw, 1)
    data = json.loads(book_raw)["data"]
    assert isinstance(book, Event) and book.stream == "bookTicker" and book.first_id == data["u"]
    assert (book.record["bid_price"], book.record["ask_quantity"]) == (data["b"], data["A"])
    assert book.record["event_time"] is None  # spot bookTicker has no E


def test_cryptofeed_recording_agg_trades_and_klines() -> None:
    parser = FrameParser("blue")
    results = [parser.parse(raw, 1) for raw in cryptofeed_frames()]
    events = [e for e in results if isinstance(e, Event)]
    notices = Counter(n.kind for n in results if isinstance(n, Notice))
    streams = Counter(e.stream for e in events)
    assert streams["aggTrade"] > 0 and streams["depth"] > 0 and streams["bookTicker"] > 0
    assert set(notices) == {p.UNKNOWN_EVENT}  # klines: a stream we do not model, tolerated and counted
    agg = next(e for e in events if e.stream == "aggTrade")
    assert agg.record["first_trade_id"] <= agg.record["last_trade_id"]
    symbols = {e.symbol for e in events}
    assert symbols == {"nknusdt", "blzeth", "lrcbtc", "runeeur"}


def _trade(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "e": "trade",
        "E": 1700000000001,
        "s": "BTCUSDT",
        "t": 17,
        "p": "61837.63000000",
        "q": "0.00100000",
        "T": 1700000000000,
        "m": True,
        "M": True,
    }
    for key, value in changes.items():
        if value is ...:
            data.pop(key)
        else:
            data[key] = value
    return data


def _frame(data: Any, stream: str | None = "btcusdt@trade") -> str:
    return json.dumps(data if stream is None else {"stream": stream, "data": data})


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ('{"stream":"btcusdt@trade","data":{"e":"tr', p.MALFORMED_JSON),
        ("\x00\xff", p.MALFORMED_JSON),
        ("[1, 2]", p.NOT_OBJECT),
        ('{"stream":"btcusdt@trade","data":[1]}', p.NOT_OBJECT),
        (_frame(_trade(t=...)), p.MISSING_FIELD),
        (_frame(_trade(p=...)), p.MISSING_FIELD),
        (_frame(_trade(t="17")), p.INVALID_VALUE),
        (_frame(_trade(t=True)), p.INVALID_VALUE),
        (_frame(_trade(t=-1)), p.INVALID_VALUE),
        (_frame(_trade(t=2**63)), p.INVALID_VALUE),  # beyond an Avro long
        (_frame(_trade(T=2**64)), p.INVALID_VALUE),
        (_frame(_trade(p="١٢٣.٤")), p.INVALID_VALUE),  # digits, but not ASCII ones
        (_frame(_trade(p=61837.63)), p.INVALID_VALUE),  # a float price would lose exactness
        (_frame(_trade(p="1e5")), p.INVALID_VALUE),
        (_frame(_trade(m="true")), p.INVALID_VALUE),
        (_frame(_trade(s=None)), p.INVALID_VALUE),
        (_frame(_trade(), stream="ethusdt@trade"), p.UNEXPECTED_STREAM),
        (_frame(_trade(), stream="btcusdt@aggTrade"), p.UNEXPECTED_STREAM),  # a trade is not an aggTrade
        (_frame(_trade(), stream="btcusdt@tradex"), p.UNEXPECTED_STREAM),
        (_frame({"e": "kline", "E": 1, "s": "BTCUSDT"}), p.UNKNOWN_EVENT),
        (
            _frame(
                {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 5, "u": 4, "b": [], "a": []},
                "btcusdt@depth@100ms",
            ),
            p.INVALID_VALUE,
        ),
        (
            _frame(
                {"e": "depthUpdate", "E": 1, "s": "BTCUSDT", "U": 5, "u": 6, "b": [["1.0"]], "a": []},
                "btcusdt@depth@100ms",
            ),
            p.INVALID_VALUE,
        ),
        ('{"result":null,"id":1}', p.SUBSCRIPTION_RESPONSE),
        ('{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1700000000000}}', p.SERVER_SHUTDOWN),
        ('{"e":"serverShutdown","E":1700000000000}', p.SERVER_SHUTDOWN),
    ],
)
def test_bad_and_control_frames_become_notices(raw: str, kind: str) -> None:
    result = FrameParser("blue").parse(raw, 1)
    assert isinstance(result, Notice), result
    assert result.kind == kind
    assert result.is_error == (kind not in p.CONTROL_NOTICES)


def test_an_out_of_range_id_does_not_poison_the_stream() -> None:
    """A frame with an id beyond an Avro long is skipped as invalid; the real ids after it all get through."""
    parser, tracker = FrameParser("blue"), SequenceTracker()
    accepted, notices = [], []
    for trade_id in (5, 2**63, 6, 7):
        result = parser.parse(_frame(_trade(t=trade_id)), 1)
        if isinstance(result, Notice):
            notices.append(result.kind)
        elif tracker.check(tracker.state(result.key, result.symbol, result.stream), result.first_id,
                           result.last_id) == ACCEPT:
            SERIALIZER.encode(result.stream, result.record)
            accepted.append(result.last_id)
    assert accepted == [5, 6, 7] and notices == [p.INVALID_VALUE]
    assert tracker.totals() == {"accepted": 3, "duplicates": 0, "gaps": 0, "missing": 0}


def test_a_book_ticker_event_time_beyond_an_avro_long_is_invalid() -> None:
    """Spot bookTicker has no event time, but one that is sent must fit the record's long like every other."""
    frame = ('{"stream":"btcusdt@bookTicker","data":{"u":5,"s":"BTCUSDT","b":"1.0","B":"2.0","a":"1.1","A":"3.0",'
             '"E":%d}}')
    parser = FrameParser("blue")
    result = parser.parse(frame % (2**63), 1)
    assert isinstance(result, Notice) and (result.kind, result.detail) == (p.INVALID_VALUE, "E")
    fits = parser.parse(frame % (2**63 - 1), 1)
    assert isinstance(fits, Event) and SERIALIZER.encode(fits.stream, fits.record)[0] == 0


def test_oversized_frames_are_not_even_decoded() -> None:
    parser = FrameParser("blue", max_frame_bytes=1024)
    result = parser.parse(_frame(_trade(x="y" * 2000)), 1)
    assert isinstance(result, Notice) and result.kind == p.OVERSIZED


def test_unknown_fields_are_tolerated_and_counted() -> None:
    result = FrameParser("blue").parse(_frame(_trade(newField=1, other="x")), 1)
    assert isinstance(result, Event) and result.unknown_fields == 2
    legacy = FrameParser("blue").parse(_frame(_trade(b=88, a=99)), 1)  # pre-2024-06-18 order ids
    assert isinstance(legacy, Event) and legacy.unknown_fields == 2
    without_m = FrameParser("blue").parse(_frame(_trade(M=...)), 1)
    assert isinstance(without_m, Event) and without_m.record["is_best_match"] is None


def test_raw_stream_frames_without_wrapper() -> None:
    result = FrameParser("blue").parse(_frame(_trade(), stream=None), 1)
    assert isinstance(result, Event) and result.key == "btcusdt@trade"
    book = FrameParser("blue").parse(
        '{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}',
        1,
    )
    assert isinstance(book, Event) and book.key == "bnbusdt@bookTicker"


# ---- fuzzing -----------------------------------------------------------------------------------------------


def _sample_payloads() -> list[dict[str, Any]]:
    picked: dict[str, dict[str, Any]] = {}
    for raw in btc_frames():
        obj = json.loads(raw)
        picked.setdefault(obj.get("stream", "snapshot"), obj)
        if len(picked) >= 4:
            break
    for raw in cryptofeed_frames():
        obj = json.loads(raw)
        picked.setdefault(obj["stream"].split("@", 1)[1], obj)
    return list(picked.values())


SAMPLE_PAYLOADS = _sample_payloads() if BTC_FILE.exists() else [{}]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> str | bytes:
    frame = json.loads(json.dumps(draw(st.sampled_from(SAMPLE_PAYLOADS))))
    target = frame.get("data", frame)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        action = draw(st.sampled_from(["drop", "replace", "add", "retype_stream", "nest"]))
        keys = list(target)
        if action == "drop" and keys:
            target.pop(draw(st.sampled_from(keys)))
        elif action == "replace" and keys:
            target[draw(st.sampled_from(keys))] = draw(json_values)
        elif action == "add":
            target[draw(st.text(max_size=3))] = draw(json_values)
        elif action == "retype_stream" and "stream" in frame:
            frame["stream"] = draw(json_values | st.text(max_size=30))
        elif action == "nest":
            frame = {"stream": frame.get("stream"), "data": draw(json_values)}
            target = {}
    text = json.dumps(frame, allow_nan=True)
    encoding = draw(st.sampled_from(["str", "bytes", "truncated", "flipped"]))
    if encoding == "bytes":
        return text.encode()
    if encoding == "truncated":
        return text[: draw(st.integers(min_value=0, max_value=len(text)))]
    if encoding == "flipped":
        data = bytearray(text.encode())
        index = draw(st.integers(min_value=0, max_value=len(data) - 1))
        data[index] = draw(st.integers(min_value=0, max_value=255))
        return bytes(data)
    return text


SERIALIZER = RecordSerializer(SerializerCache(make_registry_client("mock://fuzz"), 10), "fuzz")


def _check(result: Event | Notice) -> None:
    assert isinstance(result, Event | Notice)
    if isinstance(result, Event):
        # Whatever got through is a well-formed event: ids ordered, decimals exact strings...
        assert 0 <= result.first_id <= result.last_id
        assert result.key.startswith(result.symbol + "@")
        for field in ("price", "quantity", "bid_price", "ask_quantity"):
            if field in result.record:
                assert payload._DECIMAL.match(result.record[field])
        # ...and can be produced: an id the serializer rejects must never reach the sequence tracker.
        assert SERIALIZER.encode(result.stream, result.record)[0] == 0


FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(mutated_payloads())
def test_fuzz_mutated_real_payloads_never_raise(raw: str | bytes) -> None:
    _check(FrameParser("blue", max_frame_bytes=4096).parse(raw, 1))


@FUZZ
@given(
    st.one_of(
        st.text(max_size=200),
        st.binary(max_size=200),
        json_values.map(json.dumps),
        st.dictionaries(
            st.sampled_from(["stream", "data", "e", "s", "t", "u", "U", "result", "id"]),
            json_values,
            max_size=6,
        ).map(json.dumps),
    )
)
def test_fuzz_random_input_never_raises(raw: str | bytes) -> None:
    _check(FrameParser("blue").parse(raw, 1))


def test_deeply_nested_json_is_a_notice_not_a_crash() -> None:
    raw = "[" * 100_000 + "]" * 100_000
    assert isinstance(FrameParser("blue", max_frame_bytes=1 << 20).parse(raw, 1), Notice)


@pytest.mark.parametrize(
    "text", ['{"a":NaN}', '{"a":1e400}', '"\\ud800"', ' {"a":1} ', '{"a":123456789012345678901234567890}'])
def test_frame_json_is_json_loads_where_msgspec_is_stricter(text: str) -> None:
    # msgspec refuses NaN, out-of-range floats and lone surrogates; the fallback keeps json.loads' answer.
    assert repr(p._loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ['{"a":1}x', "[1,2", '{"a":"\x00"}', ""])
def test_frame_json_errors_are_json_loads_errors(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as ours:
        p._loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    assert str(ours.value) == str(theirs.value)


def _outcome(result: Event | Notice) -> tuple[Any, ...]:
    if isinstance(result, Event):
        return ("event", result.key, result.symbol, result.stream, result.first_id, result.last_id, result.record,
                result.unknown_fields)
    return ("notice", result.kind, result.detail)


WARM = FrameParser("blue", max_frame_bytes=4096)
for _sample in SAMPLE_PAYLOADS:  # every sample stream known: mutated frames of them take the fast path
    WARM.parse(json.dumps(_sample), 1)


@FUZZ
@given(mutated_payloads())
def test_fuzz_a_known_streams_fast_path_decides_as_a_fresh_parser(raw: str | bytes) -> None:
    assert _outcome(WARM.parse(raw, 1)) == _outcome(FrameParser("blue", max_frame_bytes=4096).parse(raw, 1))
