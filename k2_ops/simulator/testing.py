"""Helpers for tests that talk to the simulator (ours and the streamer's): polling with deadlines and a
client that can withhold pongs.

    async with connect(url, ssl=client_ssl_context(sim.ca_file),
                       create_connection=SilentClientConnection) as ws:
        ...  # this client records server pings and answers none (unless ws.answer_pings = True)
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode

from k2_ops.polling import poll_until


class ConditionTimeout(AssertionError):
    """A polled condition did not become true before its deadline."""


def wait_until(condition: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02, what: str = "") -> Any:
    """Poll `condition` until it returns a truthy value (returned) or the deadline passes."""
    return poll_until(
        condition, timeout_s, what or str(condition), interval_s=interval_s, error=ConditionTimeout, retry_errors=False
    )


async def async_wait_until(
    condition: Callable[[], Any], timeout_s: float = 10.0, interval_s: float = 0.02, what: str = ""
) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise ConditionTimeout(f"timed out after {timeout_s} s waiting for {what or condition}")
        await asyncio.sleep(interval_s)


def all_closed(sim: Any, timeout_s: float = 10.0) -> list[Any]:
    """The simulator's connections once every one of them has closed (the server records a close a
    moment after the client sees it)."""

    def check() -> list[Any] | None:
        infos = sim.connections()
        return infos if infos and all(c.closed_at is not None for c in infos) else None

    return wait_until(check, timeout_s, what="every connection closed on the simulator")  # type: ignore[no-any-return]


async def recv_json(ws: ClientConnection, timeout_s: float = 10.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout_s))


async def recv_response(ws: ClientConnection, request_id: Any, timeout_s: float = 10.0) -> dict[str, Any]:
    """The next control response with this id, skipping market data in between."""
    deadline = time.monotonic() + timeout_s
    while True:
        message = await recv_json(ws, max(deadline - time.monotonic(), 0.001))
        if not isinstance(message, dict):
            continue
        is_response = "result" in message or "error" in message
        if is_response and message.get("id") == request_id:
            return message


class SilentClientProtocol(ClientProtocol):
    """A client protocol that records pings and does not answer them unless told to."""

    answer_pings = False

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING and not self.answer_pings:
            self.events.append(frame)
            return
        super().recv_frame(frame)


class SilentClientConnection(ClientConnection):
    """Use as `connect(..., create_connection=SilentClientConnection)`: a client that never pongs."""

    def __init__(self, protocol: ClientProtocol, **kwargs: Any) -> None:
        protocol = SilentClientProtocol(
            protocol.uri,
            origin=protocol.origin,
            extensions=protocol.available_extensions,
            subprotocols=protocol.available_subprotocols,
            max_size=(protocol.max_message_size, protocol.max_fragment_size),
            logger=protocol.logger,
        )
        super().__init__(protocol, **kwargs)
        self.pings_received: list[bytes] = []

    @property
    def answer_pings(self) -> bool:
        return self.protocol.answer_pings  # type: ignore[attr-defined, no-any-return]

    @answer_pings.setter
    def answer_pings(self, value: bool) -> None:
        self.protocol.answer_pings = value  # type: ignore[attr-defined]

    def process_event(self, event: Any) -> None:
        if isinstance(event, Frame) and event.opcode is Opcode.PING:
            self.pings_received.append(bytes(event.data))
        super().process_event(event)
