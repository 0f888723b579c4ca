"""Binance's stream-name rules, URL paths and live control messages, as pure functions.

Paths: `/ws/<stream>[/<stream>...]` (raw), `/stream?streams=a/b/c` (combined), bare `/ws` or `/stream`
for live subscriptions. Control messages (`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`,
`SET_PROPERTY`, `GET_PROPERTY`) get Binance's documented responses: `{"result":..,"id":..}` or
`{"error":{"code":..,"msg":..},"id":..}` with codes 0-3 and the documented messages. Two messages are
not in the documentation: "Invalid request: invalid stream" (seen from the real exchange) and
"Invalid request: too many streams" for going over the per-connection stream limit (our choice).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .market import STREAM_KINDS

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
# Symbols: lowercase letters of any script and digits (some listings have non-ASCII names).
STREAM_RE = re.compile(r"^([^\W_]{1,30})@(" + "|".join(re.escape(k) for k in STREAM_KINDS) + r")$")
MAX_ID_STRING = 36
INT64 = 2**63

UNKNOWN_PROPERTY = (0, "Unknown property")
EXPECTED_BOOLEAN = (1, "Invalid value type: expected Boolean")
PROPERTY_NAME = (2, "Invalid request: property name must be a string")
BAD_ID = (2, "Invalid request: request ID must be an unsigned integer")
TOO_MANY_PARAMS = (2, "Invalid request: too many parameters")
INVALID_STREAM = (2, "Invalid request: invalid stream")


def parse_stream(name: str) -> tuple[str, str] | None:
    """(symbol, kind) for a valid stream name such as 'btcusdt@trade'; None if invalid."""
    match = STREAM_RE.match(name) if isinstance(name, str) else None
    if match is None or match.group(1) != match.group(1).lower():
        return None
    return match.group(1), match.group(2)


class PathError(Exception):
    """The handshake path is not one Binance serves; answered with HTTP `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class PathRequest:
    streams: tuple[str, ...]
    combined: bool


def parse_path(path: str, max_streams: int) -> PathRequest:
    split = urlsplit(path)
    route = split.path
    if route in ("/ws", "/ws/"):
        names, combined = [], False
    elif route.startswith("/ws/"):
        names, combined = route[len("/ws/") :].split("/"), False
    elif route in ("/stream", "/stream/"):
        query = parse_qs(split.query, keep_blank_values=True).get("streams", [""])
        names = [n for n in query[-1].split("/")] if query[-1] else []
        combined = True
    else:
        raise PathError(404, f"Not found: {route}. Use /ws/<stream>, /stream?streams=a/b or /ws\n")
    for name in names:
        if parse_stream(name) is None:
            raise PathError(400, f"Invalid request: invalid stream {name!r}\n")
    unique = tuple(dict.fromkeys(names))
    if len(unique) > max_streams:
        raise PathError(400, f"Invalid request: too many streams ({len(unique)} > {max_streams})\n")
    return PathRequest(streams=unique, combined=combined)


@dataclass(frozen=True)
class Reply:
    """The response to send and the session changes to apply."""

    text: str
    subscribe: tuple[str, ...] = ()
    unsubscribe: tuple[str, ...] = ()
    combined: bool | None = None


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def result(value: Any, request_id: Any) -> Reply:
    return Reply(_dump({"result": value, "id": request_id}))


def error(code_msg: tuple[int, str], request_id: Any = None) -> Reply:
    code, msg = code_msg
    return Reply(_dump({"error": {"code": code, "msg": msg}, "id": request_id}))


def valid_request_id(value: Any) -> bool:
    """Binance accepts a 64-bit signed integer, an alphanumeric string of up to 36 chars, or null."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -INT64 <= value < INT64
    if isinstance(value, str):
        return len(value) <= MAX_ID_STRING and value.isascii() and value.isalnum()
    return False


def _json_error(text: str, exc: json.JSONDecodeError) -> Reply:
    reason = "expected value" if exc.msg == "Expecting value" else exc.msg[0].lower() + exc.msg[1:]
    return error((3, f"Invalid JSON: {reason} at line {exc.lineno} column {exc.colno}"))


def _column_after(text: str, token: str) -> int:
    """1-based column just past `token` in a one-line request (how serde reports positions)."""
    at = text.find(token)
    return (at + len(token)) if at >= 0 else len(text)


def handle_message(text: str | bytes, streams: Sequence[str], combined: bool, max_streams: int) -> Reply:
    """Answer one control message sent by a client on a connection with `streams` and `combined`."""
    if isinstance(text, bytes):
        try:
            text = text.decode()
        except UnicodeDecodeError:
            return error((3, "Invalid JSON: invalid unicode at line 1 column 1"))
    try:
        request = json.loads(text)
    except json.JSONDecodeError as exc:
        return _json_error(text, exc)
    if not isinstance(request, dict):
        return error((2, "Invalid request: expected a JSON object"))
    if "method" not in request:
        return error((2, f"Invalid request: missing field `method` at line 1 column {len(text.rstrip())}"))
    method = request["method"]
    if method not in METHODS:
        token = json.dumps(method)
        expected = ", ".join(f"`{m}`" for m in METHODS)
        shown = method if isinstance(method, str) else token
        return error(
            (
                2,
                f"Invalid request: unknown variant `{shown}`, expected one of {expected} "
                f"at line 1 column {_column_after(text, token)}",
            )
        )
    if "id" not in request or not valid_request_id(request["id"]):
        return error(BAD_ID)
    request_id = request["id"]
    params = request.get("params")
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        return _subscription(method, params, request_id, streams, max_streams)
    if method == "LIST_SUBSCRIPTIONS":
        if params not in (None, []):
            return error(TOO_MANY_PARAMS, request_id)
        return result(list(streams), request_id)
    return _property(method, params, request_id, combined)


def _subscription(method: str, params: Any, request_id: Any, streams: Sequence[str], max_streams: int) -> Reply:
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        return error((2, "Invalid request: params must be an array of stream names"), request_id)
    if any(parse_stream(name) is None for name in params):
        return error(INVALID_STREAM, request_id)
    names = tuple(dict.fromkeys(params))
    if method == "UNSUBSCRIBE":
        return Reply(result(None, request_id).text, unsubscribe=tuple(n for n in names if n in streams))
    current = set(streams)
    new = tuple(n for n in names if n not in current)
    if len(current) + len(new) > max_streams:
        return error((2, f"Invalid request: too many streams (limit {max_streams})"), request_id)
    return Reply(result(None, request_id).text, subscribe=new)


def _property(method: str, params: Any, request_id: Any, combined: bool) -> Reply:
    if not isinstance(params, list) or not params or not isinstance(params[0], str):
        return error(PROPERTY_NAME, request_id)
    if len(params) > (2 if method == "SET_PROPERTY" else 1):
        return error(TOO_MANY_PARAMS, request_id)
    if params[0] != "combined":
        return error(UNKNOWN_PROPERTY, request_id)
    if method == "GET_PROPERTY":
        return result(combined, request_id)
    if len(params) < 2 or not isinstance(params[1], bool):
        return error(EXPECTED_BOOLEAN, request_id)
    return Reply(result(None, request_id).text, combined=params[1])
