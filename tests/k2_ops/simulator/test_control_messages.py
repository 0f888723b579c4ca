"""Live control messages (SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY, GET_PROPERTY) with
Binance's documented responses and error codes 0-3, over TLS and as pure functions; URL paths."""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from k2_ops.simulator import BackgroundSimulator
from k2_ops.simulator.protocol import PathError, handle_message, parse_path
from k2_ops.simulator.testing import recv_json, recv_response

METHODS_MSG = "expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"


async def ask(ws: ClientConnection, request: dict[str, Any] | str, request_id: Any = None) -> dict[str, Any]:
    await ws.send(request if isinstance(request, str) else json.dumps(request))
    if request_id is None and isinstance(request, dict):
        request_id = request.get("id")
    return await recv_response(ws, request_id)


def test_documented_session(sim: BackgroundSimulator, tls: ssl.SSLContext) -> None:
    async def scenario() -> None:
        async with connect(f"{sim.ws_base_url}/ws", ssl=tls) as ws:
            sub = {"method": "SUBSCRIBE", "params": ["btcusdt@aggTrade", "btcusdt@depth@100ms"], "id": 1}
            assert await ask(ws, sub) == {"result": None, "id": 1}
            listed = await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 3})
            assert listed == {"result": ["btcusdt@aggTrade", "btcusdt@depth@100ms"], "id": 3}
            # Data flows, raw (not combined) on /ws.
            kinds = set()
            while kinds != {"aggTrade", "depthUpdate"}:
                message = await recv_json(ws)
                if "e" in message:
                    kinds.add(message["e"])
            unsub = {"method": "UNSUBSCRIBE", "params": ["btcusdt@depth@100ms"], "id": 312}
            assert await ask(ws, unsub) == {"result": None, "id": 312}
            assert (await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": 4}))["result"] == ["btcusdt@aggTrade"]
            assert await ask(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 2}) == {
                "result": False,
                "id": 2,
            }
            set_combined = {"method": "SET_PROPERTY", "params": ["combined", True], "id": 5}
            assert await ask(ws, set_combined) == {"result": None, "id": 5}
            assert (await ask(ws, {"method": "GET_PROPERTY", "params": ["combined"], "id": 6}))["result"] is True
            while True:  # after SET_PROPERTY combined=true, data arrives wrapped
                message = await recv_json(ws)
                if "stream" in message:
                    assert message["stream"] == "btcusdt@aggTrade" and message["data"]["e"] == "aggTrade"
                    break

    asyncio.run(scenario())


def test_error_codes_on_the_wire(sim: BackgroundSimulator, tls: ssl.SSLContext) -> None:
    async def scenario() -> None:
        async with connect(f"{sim.ws_base_url}/stream", ssl=tls) as ws:
            unknown = await ask(ws, {"method": "GET_PROPERTY", "params": ["colour"], "id": 7})
            assert unknown == {"error": {"code": 0, "msg": "Unknown property"}, "id": 7}
            boolean = await ask(ws, {"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 8})
            assert boolean["error"] == {"code": 1, "msg": "Invalid value type: expected Boolean"}
            name = await ask(ws, {"method": "SET_PROPERTY", "params": [5, True], "id": 9})
            assert name["error"] == {"code": 2, "msg": "Invalid request: property name must be a string"}
            bad_id = await ask(ws, '{"method": "LIST_SUBSCRIPTIONS", "id": 1.5}', request_id=None)
            assert bad_id == {
                "error": {"code": 2, "msg": "Invalid request: request ID must be an unsigned integer"},
                "id": None,
            }
            typo = await ask(ws, '{"method":"SUBSCRIB","params":["btcusdt@trade"],"id":10}', request_id=None)
            assert typo["error"]["code"] == 2
            assert typo["error"]["msg"].startswith("Invalid request: unknown variant `SUBSCRIB`, " + METHODS_MSG)
            assert typo["error"]["msg"].endswith("at line 1 column 20")
            missing = await ask(ws, '{"params":["btcusdt@trade"],"id":11}', request_id=None)
            assert missing["error"]["msg"].startswith("Invalid request: missing field `method` at line 1 column")
            broken = await ask(ws, '{"method": "SUBSCRIBE", "params": [}', request_id=None)
            assert broken["error"]["code"] == 3
            assert broken["error"]["msg"].startswith("Invalid JSON: expected value at line 1 column")
            stream = await ask(ws, {"method": "SUBSCRIBE", "params": ["BTCUSDT@trade"], "id": 12})
            assert stream == {"error": {"code": 2, "msg": "Invalid request: invalid stream"}, "id": 12}
            many = await ask(ws, {"method": "GET_PROPERTY", "params": ["combined", True], "id": 13})
            assert many["error"] == {"code": 2, "msg": "Invalid request: too many parameters"}
            # The connection survives every error.
            assert (await ask(ws, {"method": "LIST_SUBSCRIPTIONS", "id": "abc123"})) == {
                "result": [],
                "id": "abc123",
            }

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ('{"method":"LIST_SUBSCRIPTIONS","id":null}', None),
        ('{"method":"LIST_SUBSCRIPTIONS","id":-9223372036854775808}', None),
        ('{"method":"LIST_SUBSCRIPTIONS","id":9223372036854775808}', 2),
        ('{"method":"LIST_SUBSCRIPTIONS","id":"' + "a" * 36 + '"}', None),
        ('{"method":"LIST_SUBSCRIPTIONS","id":"' + "a" * 37 + '"}', 2),
        ('{"method":"LIST_SUBSCRIPTIONS","id":"a-b"}', 2),
        ('{"method":"LIST_SUBSCRIPTIONS","id":true}', 2),
        ('{"method":"LIST_SUBSCRIPTIONS"}', 2),
        ('{"method":"LIST_SUBSCRIPTIONS","params":["x"],"id":1}', 2),
        ('{"method":"SUBSCRIBE","params":"btcusdt@trade","id":1}', 2),
        ('{"method":"SET_PROPERTY","params":["combined"],"id":1}', 1),
        ('{"method":"SET_PROPERTY","params":["combined",true,1],"id":1}', 2),
        ('{"method":"SET_PROPERTY","params":[],"id":1}', 2),
        ('{"method":"SET_PROPERTY","params":["other",true],"id":1}', 0),
        ("[1, 2]", 2),
        ("", 3),
        (b"\xff\xfe", 3),
    ],
)
def test_request_validation(text: str | bytes, code: int | None) -> None:
    reply = json.loads(handle_message(text, (), False, 1024).text)
    if code is None:
        assert "result" in reply
    else:
        assert reply["error"]["code"] == code, reply


def test_subscription_changes_are_pure_results() -> None:
    reply = handle_message(
        '{"method":"SUBSCRIBE","params":["btcusdt@trade","btcusdt@trade","ethusdt@bookTicker"],"id":1}',
        ("ethusdt@bookTicker",),
        False,
        1024,
    )
    assert reply.subscribe == ("btcusdt@trade",)
    reply = handle_message(
        '{"method":"UNSUBSCRIBE","params":["x@trade","btcusdt@trade"],"id":2}', ("btcusdt@trade",), False, 1024
    )
    assert reply.unsubscribe == ("btcusdt@trade",)
    full = tuple(f"s{i}@trade" for i in range(3))
    reply = handle_message('{"method":"SUBSCRIBE","params":["s9@trade"],"id":3}', full, False, 3)
    assert json.loads(reply.text)["error"]["code"] == 2 and not reply.subscribe


def test_paths() -> None:
    assert parse_path("/ws/btcusdt@trade", 1024).streams == ("btcusdt@trade",)
    assert parse_path("/ws/btcusdt@trade/ethusdt@aggTrade", 1024).combined is False
    combined = parse_path("/stream?streams=btcusdt@trade/btcusdt@depth@100ms", 1024)
    assert combined.streams == ("btcusdt@trade", "btcusdt@depth@100ms") and combined.combined
    assert parse_path("/ws", 1024).streams == () and parse_path("/stream", 1024).combined
    for path, status in [("/nope", 404), ("/ws/btcusdt@kline", 400), ("/ws/BTCUSDT@trade", 400)]:
        with pytest.raises(PathError) as caught:
            parse_path(path, 1024)
        assert caught.value.status == status
    with pytest.raises(PathError) as caught:
        parse_path("/stream?streams=a@trade/b@trade/c@trade", 2)
    assert caught.value.status == 400


def test_bad_paths_are_refused_over_http(sim: BackgroundSimulator, tls: ssl.SSLContext) -> None:
    async def status(path: str) -> int:
        try:
            async with connect(f"{sim.ws_base_url}{path}", ssl=tls):
                return 101
        except InvalidStatus as exc:
            return exc.response.status_code

    async def scenario() -> None:
        assert await status("/ws/btcusdt@trade") == 101
        assert await status("/ws/btcusdt@nonsense") == 400
        assert await status("/api/v3/depth") == 400  # a REST endpoint, asked without its symbol (-1102)
        assert await status("/api/v3/klines") == 404  # a REST path the simulator does not serve

    asyncio.run(scenario())
