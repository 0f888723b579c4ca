"""WebSocket source: verified TLS, make-before-break rotation, heartbeat, health timeout, backoff.

One supervisor task owns the connection state and reacts to events (opened, failed, rotate, switched) that the
per-connection tasks report; nothing else changes that state, so there are no races between them.

Per connection three tasks run: the reader (recv → parse → route), the pinger (client ping every
K2_PING_INTERVAL_SECONDS, pong deadline K2_PING_TIMEOUT_SECONDS) and the watchdog (no market-data message for
K2_HEALTH_CHECK_TIMEOUT_SECONDS → replace; it sleeps exactly until the deadline, so detection takes the
timeout plus a few milliseconds). websockets' own keepalive is off (ping_interval=None): it would close the
connection itself and hide the cause; websockets still answers the server's pings with a pong echoing the
payload, as Binance requires.

Make-before-break (rotation at K2_CONNECTION_MAX_LIFETIME_SECONDS, before the exchange's 24 h limit, on a
`serverShutdown` event, and on a pong timeout while the old connection still delivers):
  1. open and subscribe the new connection while the old one keeps delivering;
  2. per stream key, buffer what the new connection delivers until its buffered data overlaps what the old one
     delivered (its first id <= last delivered id + 1), then switch that key to the new connection: the
     buffer goes through the sequence tracker, which drops the overlap, and later messages of the old
     connection for that key are ignored. Nothing lost, nothing duplicated;
  3. when every key has switched (or after K2_ROTATION_OVERLAP_TIMEOUT_SECONDS for quiet keys: the new
     connection was subscribed while the old was still open, so it has everything from then on), close the
     old connection with code 1000.
When the old connection is dead (closed by the server, health timeout) the new one takes over at once, and
whatever the exchange published in between shows up as a sequence gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode
from websockets.protocol import State

from streamer.config import StreamerConfig
from streamer.integrity import SequenceTracker
from streamer.kinds import stream_keys
from streamer.parse import OVERSIZED, SERVER_SHUTDOWN, Event, FrameParser, Notice

log = logging.getLogger(__name__)

# Binance: at most 5 incoming messages per second per connection (pings, pongs, close, subscriptions) and
# 300 connection attempts per 5 minutes per IP. We keep our own frames at 4/s and attempts at a third.
CLIENT_FRAMES_PER_SECOND = 4
# Our 4 frames must fit in any second *as the exchange sees them*: arrival jitter can bring two of our frames
# closer than we sent them, and websockets' automatic pongs to the server's pings (outside the budget) take
# the fifth place. So the budget's window is a bit longer than a second. With fixed-rate pings at the
# 0.25 s minimum interval this costs ~9 % of the slots (skipped, never bursted); at 0.5 s and above nothing.
FRAME_WINDOW_S = 1.1
ATTEMPT_WINDOW_S = 300.0
MAX_ATTEMPTS_PER_WINDOW = 100
CLOSE_TIMEOUT_S = 5.0


def make_ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """TLS context for wss://. Verification is on unless explicitly disabled (then loudly, see Source)."""
    # create_default_context(SERVER_AUTH): the system's trusted CAs, verify_mode=CERT_REQUIRED and
    # check_hostname=True, i.e. the certificate must chain to a trusted CA *and* name the host we dialled.
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    # Binance speaks TLS 1.2 and 1.3; refuse anything older even if the OpenSSL build would allow it.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        # Adds (does not replace) trust in this CA, e.g. the exchange simulator's per-run CA in tests.
        context.load_verify_locations(cafile=ca_file)
    if not verify:
        # Order matters: check_hostname must be off before verify_mode can be CERT_NONE.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def backoff_delay(attempt: int, initial_s: float, cap_s: float, rng: random.Random) -> float:
    """Exponential backoff, full jitter: 0 for the first retry, then uniform(0, min(cap, initial*2^(n-1)))."""
    if attempt <= 0:
        return 0.0
    return rng.uniform(0.0, min(cap_s, initial_s * (2.0 ** min(attempt - 1, 30))))


def classify_connect_error(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "ssl_certificate"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, InvalidStatus | InvalidHandshake):
        return "handshake"
    return "error"


class FrameBudget:
    """Sliding window of frames we send on one connection (Binance allows 5 per second; see FRAME_WINDOW_S)."""

    def __init__(self, per_second: int = CLIENT_FRAMES_PER_SECOND, window_s: float = FRAME_WINDOW_S) -> None:
        self.per_second = per_second
        self.window_s = window_s
        self.sent: deque[float] = deque()

    async def acquire(self) -> None:
        while True:
            now = time.monotonic()
            while self.sent and self.sent[0] <= now - self.window_s:
                self.sent.popleft()
            if len(self.sent) < self.per_second:
                self.sent.append(now)
                return
            await asyncio.sleep(self.sent[0] + self.window_s - now)


class PingSchedule:
    """The client ping grid of the process: slot k (k >= 1) is due at epoch + k * interval.

    One schedule per process, not per connection, because the validation counts the process's
    `binance_pings_sent_total` per day (480 at 180 s): a rotation must neither restart the grid (a ping
    lost per rotation) nor let the old and the new connection both ping in one slot (counted twice). The
    epoch is the first connection's start; a slot is claimed once, by whichever connection is active.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.epoch: float | None = None
        self.last_claimed = 0

    def start(self, now: float) -> None:
        if self.epoch is None:
            self.epoch = now

    def due(self, slot: int) -> float:
        assert self.epoch is not None
        return self.epoch + slot * self.interval_s

    def next_slot(self, now: float) -> int:
        """The first unclaimed slot due at or after `now`: slots already past are skipped, never made up."""
        assert self.epoch is not None
        # 1e-9: a wake-up exactly on a slot's due time (float rounding) still counts as that slot.
        ahead = math.ceil((now - self.epoch) / self.interval_s - 1e-9)
        return max(ahead, self.last_claimed + 1, 1)

    def claim(self, slot: int) -> bool:
        """True once per slot: the caller sends that slot's ping."""
        if slot <= self.last_claimed:
            return False
        self.last_claimed = slot
        return True


class Connection:
    """One WebSocket connection and its reader, pinger and watchdog tasks."""

    def __init__(self, number: int, ws: ClientConnection) -> None:
        self.number = number
        self.ws = ws
        self.opened_at = time.monotonic()
        self.last_data = self.opened_at
        self.messages = 0
        self.retiring = False  # we are closing it on purpose: its end is not a failure
        self.shutdown_announced = False  # the server sent serverShutdown: its close is expected
        self.failed = False
        self.budget = FrameBudget()
        self.tasks: list[asyncio.Task[None]] = []

    def age(self) -> float:
        return time.monotonic() - self.opened_at

    def __repr__(self) -> str:
        return f"connection #{self.number}"


class Source:
    def __init__(
        self,
        config: StreamerConfig,
        parser: FrameParser,
        tracker: SequenceTracker,
        deliver: Callable[[Event], None],
        metrics: Any,
        backlog: Callable[[], int] = lambda: 0,
        backlog_limit: int = 1 << 62,
        attempt_window_s: float = ATTEMPT_WINDOW_S,
    ) -> None:
        self.config = config
        # Binance's 5-minute attempt window; a test on a compressed clock scales it like every other interval.
        self.attempt_window_s = attempt_window_s
        self.parser = parser
        self.tracker = tracker
        self.deliver = deliver
        self.metrics = metrics
        self.backlog = backlog
        self.backlog_limit = backlog_limit
        self.keys = stream_keys(config.symbols, config.streams)
        self.url = f"{config.ws_url}?streams={'/'.join(self.keys)}"
        self.host = urlsplit(config.ws_url).hostname or "?"
        secure = config.ws_url.startswith("wss://")
        self.ssl_context = make_ssl_context(config.ssl_verify, config.ssl_ca_file) if secure else None
        self.active: Connection | None = None
        self.pending: Connection | None = None
        self.pending_reason = ""
        self.pending_planned = False
        self.pending_deadline = 0.0
        self.owner: dict[str, Connection] = {}
        self.pending_buffers: dict[str, list[Event]] = {}
        self.connecting: asyncio.Task[None] | None = None
        self.connecting_reason = ""
        self.connecting_planned = False
        self.rotations = 0
        self.reconnects = 0
        self.last_message_wall = 0.0
        self.stopping = False
        self.paused = False
        self._resume = asyncio.Event()
        self._resume.set()
        self._events: asyncio.Queue[tuple[str, Connection | None, str]] = asyncio.Queue()
        self._attempt = 0
        self._attempt_times: deque[float] = deque()
        self._numbers = 0
        self._rng = random.Random()
        self._error_logged: dict[str, int] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._drain_watcher: asyncio.Task[None] | None = None
        self.ping_schedule = PingSchedule(config.ping_interval_s)
        m = metrics
        m.g(m.ssl_verify_enabled).set(1 if secure and config.ssl_verify else 0)
        m.set_function(m.connection_lifetime, lambda: self.active.age() if self.active else 0.0)
        m.set_function(m.last_message, lambda: self.last_message_wall)
        m.set_function(m.connection_status, lambda: 1.0 if self.connected() else 0.0)

    # ---- status for /readyz -------------------------------------------------------------------------------
    def connected(self) -> bool:
        return self.active is not None and not self.active.failed

    def seconds_since_data(self) -> float | None:
        """Seconds since the active connection's last market-data message; None before its first one (the
        health timeout counts from the open, but readiness needs data actually received)."""
        if self.active is None or self.active.messages == 0:
            return None
        return time.monotonic() - self.active.last_data

    # ---- supervisor ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        self._start_connecting("initial", planned=False)
        while not self.stopping:
            timeout = self._next_timer()
            try:
                kind, conn, reason = await asyncio.wait_for(self._events.get(), timeout)
            except TimeoutError:
                kind, conn, reason = "tick", None, ""
            try:
                self._handle(kind, conn, reason)
            except Exception:
                log.exception("source supervisor failed handling %s; continuing", kind)
            if not self.stopping and self.active is None and self.pending is None and self.connecting is None:
                self._start_connecting("error", planned=False)

    def _next_timer(self) -> float:
        now = time.monotonic()
        timers = [1.0]
        if self.pending is not None:
            timers.append(self.pending_deadline - now)
        elif self.active is not None and self.connecting is None:
            timers.append(self.active.opened_at + self.config.rotation_after_s - now)
        return max(0.0, min(timers))

    def _handle(self, kind: str, conn: Connection | None, reason: str) -> None:
        if kind == "opened":
            assert conn is not None
            self._on_opened(conn)
        elif kind == "failed":
            assert conn is not None
            self._on_failed(conn, reason)
        elif kind == "rotate":
            if conn is self.active and self.pending is None and self.connecting is None:
                log.info("%s: rotating (%s)", conn, reason)
                self._start_connecting(reason, planned=True)
        elif kind == "switched" and self.pending is not None and self._all_switched():
            self._switch_all()
        # Timers: a due rotation, an overlap that took too long.
        now = time.monotonic()
        if self.pending is not None and now >= self.pending_deadline:
            waiting = [k for k in self.keys if self.owner.get(k) is not self.pending]
            log.info("%s: overlap timeout after %.1f s; switching %d quiet stream(s) %s", self.pending,
                     self.config.rotation_overlap_timeout_s, len(waiting), waiting[:5])
            self._switch_all()
        elif (
            self.active is not None
            and self.pending is None
            and self.connecting is None
            and now >= self.active.opened_at + self.config.rotation_after_s
        ):
            log.info("%s: lifetime %.1f s reached; rotating (%s)", self.active, self.active.age(),
                     self.config.rotation_reason)
            self._start_connecting(self.config.rotation_reason, planned=True)

    def _on_opened(self, conn: Connection) -> None:
        self.connecting = None
        if self.stopping:
            self._retire(conn)
            return
        if self.active is None or self.active.failed:
            old = self.active
            self.active = conn
            self.owner = dict.fromkeys(self.keys, conn)
            if old is not None:
                self._retire(old)
            self._start_tasks(conn)
            if self.connecting_planned:  # e.g. serverShutdown: the old one closed before the new one opened
                self.rotations += 1
                self.metrics.rotations.labels(self.metrics.instance, self.connecting_reason).inc()
            log.info("%s is now delivering (%s)", conn, self.connecting_reason)
            return
        # Make-before-break: the old connection keeps delivering until the new one overlaps it.
        self.pending = conn
        self.pending_reason = self.connecting_reason
        self.pending_planned = self.connecting_planned
        self.pending_deadline = time.monotonic() + self.config.rotation_overlap_timeout_s
        self.pending_buffers = {}
        self._start_tasks(conn)

    def _on_failed(self, conn: Connection, reason: str) -> None:
        if conn.failed or conn.retiring:
            return
        conn.failed = True
        if conn is self.pending:
            log.warning("%s failed in the switch-over (%s); keeping %s, retrying", conn, reason, self.active)
            self.pending = None
            self.pending_buffers = {}
            self.owner = dict.fromkeys(self.keys, self.active)
            self._retire(conn)
            if self.active is not None:
                self._start_connecting(self.pending_reason or reason, planned=self.pending_planned)
            return
        if conn is not self.active:
            self._retire(conn)
            return
        if conn.shutdown_announced and reason == "server_close":
            pass  # announced by serverShutdown: the rotation under way accounts for it
        else:
            self.reconnects += 1
            self.metrics.reconnects.labels(self.metrics.instance, reason).inc()
            self.pending_planned = self.connecting_planned = False
        if reason == "pong_timeout" and self.pending is None and conn.ws.state is State.OPEN:
            # The connection may still deliver: replace it make-before-break so nothing is lost meanwhile.
            conn.failed = False
            if self.connecting is None:
                self._start_connecting("pong_timeout", planned=False)
            return
        log.warning("%s lost (%s) after %.1f s; replacing it", conn, reason, conn.age())
        if self.pending is not None:
            self._switch_all()  # the new connection is already subscribed: it takes over at once
            self._retire(conn)
            return
        self.active = None
        self._retire(conn)
        if self.connecting is None:
            self._start_connecting(reason, planned=False)

    def _all_switched(self) -> bool:
        pending = self.pending
        return all(self.owner.get(k) is pending for k in self.keys)

    def _switch_key(self, key: str) -> None:
        assert self.pending is not None
        self.owner[key] = self.pending
        buffered = self.pending_buffers.pop(key, ())
        for event in buffered:
            self.deliver(event)

    def _switch_all(self) -> None:
        for key in self.keys:
            if self.owner.get(key) is not self.pending:
                self._switch_key(key)
        for key in list(self.pending_buffers):  # keys we did not expect: deliver too rather than drop
            self._switch_key(key)
        self._complete_switch()

    def _complete_switch(self) -> None:
        new, old = self.pending, self.active
        assert new is not None
        self.pending = None
        self.pending_buffers = {}
        self.active = new
        self.owner = dict.fromkeys(self.keys, new)
        if old is not None:
            lifetime = old.age()
            if self.pending_planned:
                self.rotations += 1
                self.metrics.rotations.labels(self.metrics.instance, self.pending_reason).inc()
            log.info("%s replaced by %s (%s) after %.1f s, %d messages; closing it with 1000",
                     old, new, self.pending_reason, lifetime, old.messages)
            self._retire(old)

    def _retire(self, conn: Connection) -> None:
        conn.retiring = True
        task = asyncio.create_task(self._close(conn))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, conn: Connection) -> None:
        for task in conn.tasks[1:]:  # pinger and watchdog; the reader drains until the close completes
            task.cancel()
        with contextlib.suppress(Exception):
            await conn.budget.acquire()
            await asyncio.wait_for(conn.ws.close(code=1000, reason="rotation"), CLOSE_TIMEOUT_S + 1)
        if conn.tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(conn.tasks[0]), CLOSE_TIMEOUT_S)
            conn.tasks[0].cancel()

    # ---- connecting ---------------------------------------------------------------------------------
    def _start_connecting(self, reason: str, planned: bool) -> None:
        self.connecting_reason = reason
        self.connecting_planned = planned
        self.connecting = asyncio.create_task(self._connect_loop(), name="connect")

    async def _connect_loop(self) -> None:
        while not self.stopping:
            config = self.config
            delay = backoff_delay(self._attempt, config.backoff_initial_s, config.backoff_max_s, self._rng)
            delay = max(delay, self._attempt_window_wait())
            if delay > 0:
                log.info("reconnecting in %.2f s (attempt %d)", delay, self._attempt + 1)
                await asyncio.sleep(delay)
            if self.stopping:
                return
            self._attempt += 1
            conn = await self._open()
            if conn is not None:
                await self._events.put(("opened", conn, ""))
                return

    def _attempt_window_wait(self) -> float:
        now = time.monotonic()
        while self._attempt_times and self._attempt_times[0] < now - self.attempt_window_s:
            self._attempt_times.popleft()
        if len(self._attempt_times) < MAX_ATTEMPTS_PER_WINDOW:
            return 0.0
        return self._attempt_times[0] + self.attempt_window_s - now

    async def _open(self) -> Connection | None:
        self._attempt_times.append(time.monotonic())
        self.metrics.c_attempts.inc()
        if self.ssl_context is None:
            log.warning(
                "NO TLS (ws:// with K2_SSL_VERIFY=false): connecting to %s unencrypted; never run like this in "
                "production", self.host,
            )
        elif not self.config.ssl_verify:
            log.warning(
                "TLS CERTIFICATE VERIFICATION IS DISABLED (K2_SSL_VERIFY=false): connecting to %s without "
                "checking who answers; never run like this in production", self.host,
            )
        began = time.monotonic()
        try:
            ws = await connect(
                self.url,
                ssl=self.ssl_context,
                ping_interval=None,  # our own pinger (see module doc)
                ping_timeout=None,
                close_timeout=CLOSE_TIMEOUT_S,
                open_timeout=max(5.0, self.config.health_timeout_s),
                # Up to 4x: read, then counted and skipped by the parser; bigger: refused unread (1009), counted.
                max_size=min(64 << 20, self.config.max_frame_bytes * 4),
                max_queue=256,
                compression=None,  # Binance sends plain frames; no deflate CPU on either side
                proxy=None,
                user_agent_header="k2-streamer/2.0",
            )
        except Exception as exc:
            reason = classify_connect_error(exc)
            self.metrics.connection_failures.labels(self.metrics.instance, reason).inc()
            if reason == "ssl_certificate":
                detail = getattr(exc, "verify_message", "") or str(exc)
                log.error("TLS certificate of %s refused: %s; not connecting (retrying with backoff)",
                          self.host, detail)
            else:
                log.warning("cannot connect to %s: %s: %s", self.host, type(exc).__name__, exc)
            return None
        self._numbers += 1
        conn = Connection(self._numbers, ws)
        took_ms = (time.monotonic() - began) * 1000
        log.info("%s opened to %s in %.0f ms (%d streams)", conn, self.host, took_ms, len(self.keys))
        return conn

    def _start_tasks(self, conn: Connection) -> None:
        """Started only once the supervisor has made the connection active or pending: frames read before
        would have no owner. Until then websockets queues them (and TCP holds the rest): nothing is lost."""
        conn.last_data = time.monotonic()
        conn.tasks = [
            asyncio.create_task(self._reader(conn), name=f"reader-{conn.number}"),
            asyncio.create_task(self._pinger(conn), name=f"pinger-{conn.number}"),
            asyncio.create_task(self._watchdog(conn), name=f"watchdog-{conn.number}"),
        ]

    # ---- per-connection tasks -----------------------------------------------------------------------
    async def _reader(self, conn: Connection) -> None:
        ws = conn.ws
        recv = ws.recv
        parse = self.parser.parse
        backlog = self.backlog
        limit = self.backlog_limit
        reason = "server_close"
        try:
            while True:
                if backlog() >= limit:
                    await self._pause_until_drained()
                raw = await recv()
                now = time.time()
                event = parse(raw, int(now * 1000))
                if type(event) is Event:
                    conn.last_data = time.monotonic()
                    conn.messages += 1
                    if conn.messages == 1:
                        self._attempt = 0  # data flows again: the next reconnect starts without delay
                    self.last_message_wall = now
                    if event.unknown_fields:
                        self.metrics.unknown_fields.labels(self.metrics.instance, event.stream).inc(
                            event.unknown_fields)
                    if conn is self.active and self.pending is None:
                        self.deliver(event)  # the fast path: one connection, nothing to route
                    else:
                        self._route(conn, event)
                else:
                    self._on_notice(conn, event)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else None
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                # websockets refused a frame over max_size (4 x K2_MAX_FRAME_BYTES) without reading it and
                # closed with 1009: an oversized frame, and our side ended the connection.
                reason = "error"
                self.metrics.message_errors.labels(self.metrics.instance, OVERSIZED).inc()
                log.error("%s: a frame over %d bytes closed the connection (1009); counted as oversized",
                          conn, min(64 << 20, self.config.max_frame_bytes * 4))
            elif not conn.retiring:
                why = exc.rcvd.reason if exc.rcvd is not None else "(no close frame: connection dropped)"
                log.warning("%s closed by the server: code %s %s", conn, code, why)
        except asyncio.CancelledError:
            raise
        except Exception:
            reason = "error"
            log.exception("%s reader failed", conn)
        if not conn.retiring:
            await self._events.put(("failed", conn, reason))

    def _route(self, conn: Connection, event: Event) -> None:
        key = event.key
        if conn is self.pending:
            if self.owner.get(key) is conn:
                self.deliver(event)
                return
            buffer = self.pending_buffers.get(key)
            if buffer is None:
                buffer = self.pending_buffers[key] = []
            buffer.append(event)
            self._maybe_switch(key)
        elif conn is self.active and self.owner.get(key, conn) is conn:
            self.deliver(event)
            if self.pending is not None:
                self._maybe_switch(key)
        # else: a retiring connection, or one whose key already switched: its data is covered by the new one.

    def _maybe_switch(self, key: str) -> None:
        buffer = self.pending_buffers.get(key)
        if not buffer:
            return
        last = self.tracker.last_id(key)
        # Overlap reached: the new connection holds the message right after the last one delivered (or an
        # older one). From here it can continue alone with nothing missing.
        if last is None or buffer[0].first_id <= last + 1:
            self._switch_key(key)
            if self._all_switched():
                self._events.put_nowait(("switched", None, ""))

    def _on_notice(self, conn: Connection, notice: Notice) -> None:
        if notice.kind == SERVER_SHUTDOWN:
            log.warning("%s: server announced shutdown; rotating make-before-break", conn)
            conn.shutdown_announced = True
            if conn is self.active:
                self._events.put_nowait(("rotate", conn, "server_shutdown"))
            return
        if not notice.is_error:
            return
        self.metrics.message_errors.labels(self.metrics.instance, notice.kind).inc()
        seen = self._error_logged.get(notice.kind, 0)
        self._error_logged[notice.kind] = seen + 1
        if seen < 5 or seen % 1000 == 0:  # keep logs readable when a feed goes bad
            log.warning("%s: skipped a frame (%s: %s); %d so far", conn, notice.kind, notice.detail, seen + 1)

    async def _pinger(self, conn: Connection) -> None:
        """Client pings on the process-wide schedule (PingSchedule), each with its own pong deadline.

        Fixed rate: the next ping is due at epoch + k * interval whatever the pong latency, so the period is
        the interval, not interval + round trip. The pong is awaited alongside the schedule (a late pong or a
        deadline running into the next slot neither delays that ping nor makes it up later: no drift, no
        burst). Only the active connection pings; during a make-before-break overlap the new connection stays
        silent until it is switched to, and the schedule's claim makes each slot send at most one ping even
        when the switch happens exactly at a slot, so `binance_pings_sent_total` counts one ping per interval
        across rotations (480 per day at 180 s). Frames: at most one ping per interval >= 0.25 s, plus pongs
        and the close, stay within the per-connection FrameBudget (4 of Binance's 5 per second).
        """
        m = self.metrics
        schedule = self.ping_schedule
        schedule.start(time.monotonic())
        timeout = self.config.ping_timeout_s
        waiting: deque[tuple[float, asyncio.Future[float]]] = deque()  # (deadline, pong), oldest first
        slot = schedule.next_slot(time.monotonic())
        try:
            while True:
                now = time.monotonic()
                # websockets acknowledges pings in order, so pongs complete oldest first.
                while waiting and waiting[0][1].done():
                    _, pong = waiting.popleft()
                    if pong.cancelled() or pong.exception() is not None:
                        return  # the connection closed: the reader reports it
                    m.g(m.last_pong).set(time.time())
                if waiting and now >= waiting[0][0]:
                    if self.paused:
                        waiting.clear()  # not reading: a pong could not be seen, so its absence means nothing
                    else:
                        m.c_pong_timeouts.inc()
                        log.warning("%s: no pong within %.2f s", conn, timeout)
                        await self._events.put(("failed", conn, "pong_timeout"))
                        return
                due = schedule.due(slot)
                if now >= due:
                    # Paused: not reading, a pong could not be seen either; the slot passes unused.
                    if conn is self.active and not self.paused and schedule.claim(slot):
                        await conn.budget.acquire()
                        pong = await conn.ws.ping()
                        m.c_pings_sent.inc()
                        waiting.append((time.monotonic() + timeout, pong))
                    # The next slot still ahead: slots missed while the loop was late are skipped, not sent
                    # in a burst.
                    slot = schedule.next_slot(time.monotonic())
                    continue
                wake = min(due, waiting[0][0]) if waiting else due
                if waiting:
                    await asyncio.wait([waiting[0][1]], timeout=wake - now)
                else:
                    await asyncio.sleep(wake - now)
        except ConnectionClosed:
            return

    async def _watchdog(self, conn: Connection) -> None:
        timeout = self.config.health_timeout_s
        while True:
            remaining = conn.last_data + timeout - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining + 0.005)
                continue
            if self.paused:
                conn.last_data = time.monotonic()  # we stopped reading on purpose
                continue
            silent = time.monotonic() - conn.last_data
            log.warning("%s: no market data for %.2f s (health timeout)", conn, silent)
            await self._events.put(("failed", conn, "health_timeout"))
            return

    async def _pause_until_drained(self) -> None:
        """Back-pressure: stop reading until the Kafka buffer is below 90 % of its bound."""
        if not self.paused:
            self.paused = True
            self._resume.clear()
            self.metrics.g(self.metrics.backpressure).set(1)
            log.warning("Kafka buffer full: pausing socket reads until it drains (back-pressure)")
            self._drain_watcher = asyncio.create_task(self._watch_drain())
        await self._resume.wait()

    async def _watch_drain(self) -> None:
        began = time.monotonic()
        while self.backlog() >= 0.9 * self.backlog_limit:
            await asyncio.sleep(0.05)
        self.paused = False
        self.metrics.g(self.metrics.backpressure).set(0)
        log.info("Kafka buffer drained after %.1f s: reading again", time.monotonic() - began)
        self._resume.set()

    # ---- stop ---------------------------------------------------------------------------------------
    async def stop(self) -> None:
        """Close every connection with 1000, processing what arrives until the server confirms the close."""
        self.stopping = True
        if self.connecting is not None:
            self.connecting.cancel()
        if self.pending is not None:
            self._switch_all()
        for conn in [c for c in (self.active, self.pending) if c is not None]:
            conn.retiring = True
            for task in conn.tasks[1:]:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1000, reason="shutdown"), CLOSE_TIMEOUT_S + 1)
            if conn.tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(asyncio.shield(conn.tasks[0]), CLOSE_TIMEOUT_S)
                conn.tasks[0].cancel()
        if self._closing:
            await asyncio.wait(list(self._closing), timeout=CLOSE_TIMEOUT_S + 2)
        self.active = None
