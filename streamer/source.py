"""WebSocket source: the asyncio layer around the connection-routing state machine.

The decisions live in streamer/routing.py (`Router`, no I/O: which connection owns each stream key,
make-before-break overlap and switch, when to rotate or replace a connection); the heartbeat (pings, pong
deadlines, watchdog, frame budget) in streamer/heartbeat.py; dialing (TLS, backoff, attempt budget) in
streamer/connect.py; back-pressure in streamer/backpressure.py. This module runs the tasks and carries out
the router's actions.

One supervisor task owns the router: the per-connection tasks report what happened (`Opened`, `Failed`,
`ShutdownAnnounced`) on a queue, the supervisor feeds it to the router and performs the actions the router
leaves (Connect, Activate, Close, Rotated, Reconnected); nothing else changes the router's connection state, so
there are no races between tasks. Readers hand market data straight to the pipeline while their connection
owns every stream key (`Router.sole`, the fast path); during a switch-over they go through `Router.route`,
which buffers, switches and delivers in order on the reader's own call, and the supervisor is woken to carry
out what that decided.

Per connection three tasks run: the reader (recv → parse → route), the pinger and the watchdog (both in
streamer/heartbeat.py). A `Source` is one connection slot of the pool (streamer/pool.py): its stream keys, its
router and its heartbeat (whose ping grid outlives its connections); the back-pressure and the
connection-attempt budget it is given are the process's, shared by every slot.

Subscribing: the URL names no stream (it stays short; Binance refuses URLs over ~8,000 characters). Each new
connection is sent SUBSCRIBE messages of at most SUBSCRIBE_BATCH stream names, each within the connection's
frame budget, and is reported `Opened` only once every request was answered `{"result":null,"id":N}`; market
data that arrives between the answers is kept and read first, so nothing is lost. Keys added to or removed
from the slot later (listings, delistings) are subscribed or unsubscribed on every open connection of the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from streamer.backpressure import BackPressure
from streamer.config import StreamerConfig
from streamer.connect import CLOSE_TIMEOUT_S, AttemptBudget, Dialer, max_message_bytes
from streamer.heartbeat import FrameBudget, Heartbeat
from streamer.integrity import SequenceTracker
from streamer.kinds import stream_keys
from streamer.metrics import StreamerMetrics
from streamer.parse import OVERSIZED, SERVER_SHUTDOWN, Event, FrameParser, Notice
from streamer.routing import (
    Activate,
    Close,
    Connect,
    Failed,
    Failure,
    Input,
    Opened,
    Reconnected,
    Rotated,
    Rotation,
    Router,
    ShutdownAnnounced,
)
from streamer.slots import Method, batches, reply, request
from streamer.wsclient import ConnectionClosed, State, WebSocket
from streamer.wsframes import CloseCode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wake:
    """A reader's call to the router left actions: the supervisor carries them out."""


@dataclass(eq=False)
class Connection:
    """One WebSocket connection and its reader, pinger and watchdog tasks (the router knows it by number)."""

    number: int
    name: str
    ws: WebSocket
    # Monotonic time of the last market-data message (the open before the first; the watchdog restarts it while
    # reads are paused on purpose).
    last_data: float
    messages: int = 0
    retiring: bool = False  # we are closing it on purpose: its end is not a failure
    budget: FrameBudget = field(default_factory=FrameBudget)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    early: list[str | bytes] = field(default_factory=list)  # market data read while subscribing: read first

    def __str__(self) -> str:
        return self.name


class SubscribeError(Exception):
    """The exchange refused or did not answer a SUBSCRIBE request."""


class Source:
    def __init__(
        self,
        config: StreamerConfig,
        parser: FrameParser,
        tracker: SequenceTracker,
        deliver: Callable[[Event], None],
        metrics: StreamerMetrics,
        backpressure: BackPressure | None = None,
        attempt_budget: AttemptBudget | None = None,
        keys: list[str] | None = None,
        slot: int = 0,
        first_rotation_after_s: float | None = None,
    ) -> None:
        self.config = config
        self.parser = parser
        self.deliver = deliver
        self.metrics = metrics
        self.slot = slot
        self.keys: list[str] = list(keys) if keys is not None else stream_keys(config.symbols, config.streams)
        # The process's pieces, which every slot of the pool shares: the Kafka buffer's back-pressure (none:
        # reads never pause) and the budget of connection attempts (Binance counts them per IP).
        self.backpressure = backpressure or BackPressure(lambda: 0, 1 << 62, metrics)
        self.dialer = Dialer(config, config.ws_url, metrics, attempt_budget or AttemptBudget())
        # This slot's own: its routing and its heartbeat (whose ping grid outlives its connections).
        self.router = Router(self.keys, tracker.last_id, deliver, config.rotation_overlap_timeout_s,
                             config.rotation_after_s, Rotation(config.rotation_reason), first_rotation_after_s,
                             name=f"slot {slot}")
        self.heartbeat = Heartbeat(config.ping_interval_s, config.ping_timeout_s, config.health_timeout_s, metrics)
        self.connections: dict[int, Connection] = {}  # open and not yet given up, by number
        self.last_message_wall = 0.0
        self.stopping = False
        self._events: asyncio.Queue[Input | Wake] = asyncio.Queue()
        self._dialing: asyncio.Task[None] | None = None
        self._numbers = 0
        self._error_logged: dict[str, int] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._request_ids = 0
        self.first_open = asyncio.Event()  # set once the slot's first connection is subscribed and reading

    # ---- status for /readyz and the summary ---------------------------------------------------------------
    @property
    def active(self) -> Connection | None:
        number = self.router.active_number()
        return None if number is None else self.connections.get(number)

    @property
    def rotations(self) -> int:
        return self.router.rotations

    @property
    def reconnects(self) -> int:
        return self.router.reconnects

    def connected(self) -> bool:
        return self.router.connected()

    def seconds_since_data(self) -> float | None:
        """Seconds since the active connection's last market-data message; None before its first one (the
        health timeout counts from the open, but readiness needs data actually received)."""
        active = self.active
        if active is None or active.messages == 0:
            return None
        return time.monotonic() - active.last_data

    # ---- supervisor ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        router = self.router
        router.start()
        self._perform()
        while not self.stopping:
            try:
                event = await asyncio.wait_for(self._events.get(), router.next_deadline(time.monotonic()))
            except TimeoutError:
                event = None
            try:
                if event is not None and not isinstance(event, Wake):
                    router.handle(event, time.monotonic())
                router.tick(time.monotonic())
            except Exception:
                log.exception("source supervisor failed handling %s; continuing", event)
            self._perform()

    def _perform(self) -> None:
        """Carry out the router's actions, in the order it decided them."""
        m = self.metrics
        for action in self.router.take_actions():
            if isinstance(action, Connect):
                self._dialing = asyncio.create_task(self._dial(), name="connect")
            elif isinstance(action, Activate):
                self._start_tasks(action.conn)
                self.first_open.set()
            elif isinstance(action, Close):
                self._retire(action.conn, "rotation")
            elif isinstance(action, Rotated):
                m.rotations.labels(m.instance, action.reason.value).inc()
            elif isinstance(action, Reconnected):
                m.reconnects.labels(m.instance, action.reason.value).inc()

    # ---- connecting ---------------------------------------------------------------------------------
    async def _dial(self) -> None:
        while not self.stopping:
            ws = await self.dialer.open(lambda: self.stopping)
            if ws is None:
                return
            self._numbers += 1
            conn = Connection(self._numbers, f"slot {self.slot} connection #{self._numbers}", ws, time.monotonic())
            began = time.monotonic()
            try:
                await self._subscribe_all(conn)
            except (SubscribeError, ConnectionClosed, TimeoutError) as exc:
                log.warning("%s: subscribing failed (%s: %s); closing it and dialling again", conn,
                            type(exc).__name__, exc)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(ws.close(code=1000, reason="subscribe failed"), CLOSE_TIMEOUT_S + 1)
                continue
            self.connections[conn.number] = conn
            log.info("%s opened to %s in %.0f ms, %d streams subscribed in %.0f ms", conn, self.dialer.host,
                     self.dialer.last_open_ms, len(self.keys), (time.monotonic() - began) * 1000)
            await self._events.put(Opened(conn.number))
            return

    async def _request(self, conn: Connection, method: Method, keys: list[str]) -> int:
        """Send one SUBSCRIBE/UNSUBSCRIBE within the connection's frame budget; returns its id."""
        self._request_ids += 1
        await conn.budget.acquire()
        conn.ws.send(request(method, keys, self._request_ids))
        return self._request_ids

    async def _subscribe_all(self, conn: Connection) -> None:
        """Subscribe a new connection to the slot's keys (also those added meanwhile), each request answered
        before the next; market data read meanwhile is kept in `conn.early`."""
        subscribed: list[str] = []
        deadline = time.monotonic() + max(5.0, self.config.health_timeout_s)
        while True:
            todo = [k for k in self.keys if k not in set(subscribed)]
            if not todo:
                return
            for batch in batches(todo):
                request_id = await self._request(conn, Method.SUBSCRIBE, batch)
                while True:
                    raw = await asyncio.wait_for(conn.ws.recv(), max(0.0, deadline - time.monotonic()))
                    answer = reply(raw)
                    if answer is None:
                        conn.early.append(raw)
                    elif answer.request_id == request_id:
                        if answer.error is not None:
                            raise SubscribeError(f"SUBSCRIBE refused: {answer.error}")
                        break
                subscribed.extend(batch)

    async def change_keys(self, add: list[str], remove: list[str]) -> None:
        """Listings and delistings on this slot: the router's keys change, and every open connection of the
        slot is sent SUBSCRIBE / UNSUBSCRIBE (answers reach its reader as notices)."""
        if remove:
            gone = set(remove)
            self.keys = [k for k in self.keys if k not in gone]
            self.router.remove_keys(remove)
        if add:
            self.keys.extend(k for k in add if k not in set(self.keys))
            self.router.add_keys(add)
        for conn in list(self.connections.values()):
            if conn.retiring:
                continue
            try:
                for method, keys in ((Method.UNSUBSCRIBE, remove), (Method.SUBSCRIBE, add)):
                    for batch in batches(keys):
                        await self._request(conn, method, batch)
            except ConnectionClosed:
                pass  # its reader reports the end; the replacement subscribes self.keys

    def _start_tasks(self, number: int) -> None:
        """Started only once the router has made the connection active or pending: frames read before would
        have no owner. Until then the connection queues them (and TCP holds the rest): nothing is lost."""
        conn = self.connections[number]
        conn.last_data = time.monotonic()
        conn.tasks = [
            asyncio.create_task(self._reader(conn), name=f"reader-{number}"),
            asyncio.create_task(self._pinger(conn), name=f"pinger-{number}"),
            asyncio.create_task(self._watchdog(conn), name=f"watchdog-{number}"),
        ]

    # ---- per-connection tasks -----------------------------------------------------------------------
    async def _reader(self, conn: Connection) -> None:
        recv_batch = conn.ws.recv_batch
        parse = self.parser.parse
        deliver = self.deliver
        router = self.router
        number = conn.number
        backlog = self.backpressure.backlog
        limit = self.backpressure.limit
        reason = Failure.SERVER_CLOSE
        batch: Iterable[str | bytes] = conn.early
        conn.early = []
        try:
            while True:
                # One batch: every message of the connection's last reads (streamer/wsclient.py).
                for raw in batch:
                    if backlog() >= limit:
                        await self.backpressure.wait_until_drained()
                    now = time.time()
                    event = parse(raw, int(now * 1000))
                    if type(event) is Event:
                        conn.last_data = time.monotonic()
                        conn.messages += 1
                        if conn.messages == 1:
                            self.dialer.data_flows()
                        self.last_message_wall = now
                        if event.unknown_fields:
                            self.metrics.unknown_fields.labels(self.metrics.instance, event.stream).inc(
                                event.unknown_fields)
                        if router.sole == number:
                            deliver(event)  # the fast path: this connection owns every stream key
                        else:
                            router.route(number, event, conn.last_data)
                            if router.actions:
                                self._events.put_nowait(Wake())
                    else:
                        assert isinstance(event, Notice)
                        self._on_notice(conn, event)
                batch = await recv_batch()
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                # A message over max_size (4 x K2_MAX_FRAME_BYTES) was refused from its header, unread, and the
                # connection closed with 1009: an oversized frame, and our side ended the connection.
                reason = Failure.ERROR
                self.metrics.message_errors.labels(self.metrics.instance, OVERSIZED).inc()
                log.error("%s: a frame over %d bytes closed the connection (1009); counted as oversized",
                          conn, max_message_bytes(self.config.max_frame_bytes))
            elif not conn.retiring:
                why = exc.rcvd.reason if exc.rcvd is not None else "(no close frame: connection dropped)"
                log.warning("%s closed by the server: code %s %s", conn, code, why)
        except asyncio.CancelledError:
            raise
        except Exception:
            reason = Failure.ERROR
            log.exception("%s reader failed", conn)
        if not conn.retiring:
            await self._events.put(Failed(number, reason))

    def _on_notice(self, conn: Connection, notice: Notice) -> None:
        if notice.kind == SERVER_SHUTDOWN:
            log.warning("%s: server announced shutdown; rotating make-before-break", conn)
            self._events.put_nowait(ShutdownAnnounced(conn.number))
            return
        if not notice.is_error:
            return
        self.metrics.message_errors.labels(self.metrics.instance, notice.kind).inc()
        seen = self._error_logged.get(notice.kind, 0)
        self._error_logged[notice.kind] = seen + 1
        if seen < 5 or seen % 1000 == 0:  # keep logs readable when a feed goes bad
            log.warning("%s: skipped a frame (%s: %s); %d so far", conn, notice.kind, notice.detail, seen + 1)

    async def _pinger(self, conn: Connection) -> None:
        number = conn.number
        missed = await self.heartbeat.pinger(
            str(conn), conn.ws, conn.budget, lambda: self.router.active_number() == number,
            self.backpressure.is_paused,
        )
        if missed:
            await self._events.put(Failed(number, Failure.PONG_TIMEOUT, still_open=conn.ws.state is State.OPEN))

    async def _watchdog(self, conn: Connection) -> None:
        await self.heartbeat.watchdog(str(conn), conn, self.backpressure.is_paused)
        await self._events.put(Failed(conn.number, Failure.HEALTH_TIMEOUT))

    # ---- closing ------------------------------------------------------------------------------------
    def _retire(self, number: int, why: str) -> None:
        conn = self.connections.pop(number, None)
        if conn is None or conn.retiring:
            return
        conn.retiring = True
        task = asyncio.create_task(self._close(conn, why))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, conn: Connection, why: str) -> None:
        for task in conn.tasks[1:]:  # pinger and watchdog; the reader drains until the close completes
            task.cancel()
        with contextlib.suppress(Exception):
            if why == "rotation":
                await conn.budget.acquire()  # the close frame counts against Binance's 5 frames per second
            await asyncio.wait_for(conn.ws.close(code=1000, reason=why), CLOSE_TIMEOUT_S + 1)
        if conn.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(conn.tasks[0]), CLOSE_TIMEOUT_S)
            conn.tasks[0].cancel()

    async def stop(self) -> None:
        """Close every connection with 1000, processing what arrives until the server confirms the close."""
        self.stopping = True
        if self._dialing is not None:
            self._dialing.cancel()
        left = self.router.stop(time.monotonic())
        self._perform()  # a switch-over under way completes first
        for number in left:
            self._retire(number, "shutdown")
        for number in list(self.connections):  # opened while stopping, before the router heard of it
            self._retire(number, "shutdown")
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=CLOSE_TIMEOUT_S + 2)
