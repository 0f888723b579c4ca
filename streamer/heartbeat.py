"""Heartbeat of a connection slot: client pings on a fixed grid, pong deadlines, the data watchdog, and the
budget of frames we send on one connection.

The connection (streamer/wsclient.py) has no keepalive of its own: the pings are all here, so a missed pong
is counted and replaces the connection with its cause named. It answers the server's pings with a pong
echoing the payload at once, as Binance requires.

- Pings: every K2_PING_INTERVAL_SECONDS on one grid per connection slot (`PingSchedule`), shared by the slot's
  successive connections, so a rotation neither skips a ping nor sends two in one slot; each ping has its own
  pong deadline (K2_PING_TIMEOUT_SECONDS). A missed pong replaces the connection.
- Watchdog: no market-data message for K2_HEALTH_CHECK_TIMEOUT_SECONDS replaces the connection. It sleeps
  exactly until the deadline, so detection takes the timeout plus a few milliseconds.
- Back-pressure (reads paused on purpose) suspends both: a pong or data that cannot be read proves nothing.
- Frames: Binance allows 5 incoming messages per second per connection; we keep our own to 4 per 1.1 s
  (`FrameBudget`), leaving room for the automatic pongs and arrival jitter.

`PingSchedule` and `FrameBudget.wait` are pure (time is a parameter); the `Heartbeat` coroutines are asyncio.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from streamer.metrics import StreamerMetrics
from streamer.wsclient import ConnectionClosed, WebSocket

log = logging.getLogger(__name__)

# Binance: at most 5 incoming messages per second per connection (pings, pongs, close, subscriptions).
# We keep our own frames at 4/s.
CLIENT_FRAMES_PER_SECOND = 4
# Our 4 frames must fit in any second *as the exchange sees them*: arrival jitter can bring two of our frames
# closer than we sent them, and the automatic pongs to the server's pings (outside the budget) take
# the fifth place. So the budget's window is a bit longer than a second. With fixed-rate pings at the
# 0.25 s minimum interval this costs ~9 % of the slots (skipped, never bursted); at 0.5 s and above nothing.
FRAME_WINDOW_S = 1.1


class FrameBudget:
    """Sliding window of frames we send on one connection (Binance allows 5 per second; see FRAME_WINDOW_S)."""

    def __init__(
        self,
        per_second: int = CLIENT_FRAMES_PER_SECOND,
        window_s: float = FRAME_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_second = per_second
        self.window_s = window_s
        self._clock = clock
        self._sent: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more frame fits the window (0: it fits now, and is counted as sent)."""
        while self._sent and self._sent[0] <= now - self.window_s:
            self._sent.popleft()
        if len(self._sent) < self.per_second:
            self._sent.append(now)
            return 0.0
        return self._sent[0] + self.window_s - now

    async def acquire(self) -> None:
        while (delay := self.wait(self._clock())) > 0:
            await asyncio.sleep(delay)


class PingSchedule:
    """The client ping grid of a connection slot: slot k (k >= 1) is due at epoch + k * interval.

    One schedule per connection slot, not per connection, because the validation counts
    `binance_pings_sent_total` per day (480 at 180 s): a rotation must neither restart the grid (a ping lost
    per rotation) nor let the old and the new connection both ping in one slot (counted twice). The epoch is
    the first connection's start; a slot is claimed once, by whichever connection is active.
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


class Monitored(Protocol):
    """A connection as the watchdog sees it: when its last market-data message arrived (monotonic)."""

    last_data: float


class Heartbeat:
    """Pings and watchdog of one connection slot (see the module doc). One object per slot: its ping grid
    outlives the slot's connections."""

    def __init__(
        self,
        ping_interval_s: float,
        ping_timeout_s: float,
        health_timeout_s: float,
        metrics: StreamerMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.schedule = PingSchedule(ping_interval_s)
        self.ping_timeout_s = ping_timeout_s
        self.health_timeout_s = health_timeout_s
        self.metrics = metrics
        self._clock = clock

    async def pinger(
        self, name: str, ws: WebSocket, budget: FrameBudget, may_ping: Callable[[], bool],
        paused: Callable[[], bool],
    ) -> bool:
        """Ping `ws` on the slot's schedule while `may_ping()`; True on a missed pong (replace the
        connection), False when the connection closed (its reader reports that).

        Fixed rate: the next ping is due at epoch + k * interval whatever the pong latency, so the period is
        the interval, not interval + round trip. The pong is awaited alongside the schedule (a late pong or a
        deadline running into the next slot neither delays that ping nor makes it up later: no drift, no
        burst). Only the active connection pings (`may_ping`); during a make-before-break overlap the new
        connection stays silent until it is switched to, and the schedule's claim makes each slot send at most
        one ping even when the switch happens exactly at a slot, so `binance_pings_sent_total` counts one ping
        per interval across rotations (480 per day at 180 s). Frames: at most one ping per interval >= 0.25 s,
        plus pongs and the close, stay within the per-connection FrameBudget (4 of Binance's 5 per second).
        """
        m = self.metrics
        clock = self._clock
        schedule = self.schedule
        schedule.start(clock())
        timeout = self.ping_timeout_s
        waiting: deque[tuple[float, asyncio.Future[float]]] = deque()  # (pong deadline, pong), oldest first
        slot = schedule.next_slot(clock())
        try:
            while True:
                now = clock()
                # A pong acknowledges its ping and every earlier one, so pongs complete oldest first.
                while waiting and waiting[0][1].done():
                    _, pong = waiting.popleft()
                    if pong.cancelled() or pong.exception() is not None:
                        return False  # the connection closed: the reader reports it
                    m.g(m.last_pong).set(time.time())
                if waiting and now >= waiting[0][0]:
                    if paused():
                        waiting.clear()  # not reading: a pong could not be seen, so its absence means nothing
                    else:
                        m.c_pong_timeouts.inc()
                        log.warning("%s: no pong within %.2f s", name, timeout)
                        return True
                due = schedule.due(slot)
                if now >= due:
                    # Paused: not reading, a pong could not be seen either; the slot passes unused.
                    if may_ping() and not paused() and schedule.claim(slot):
                        await budget.acquire()
                        pong = ws.ping()
                        m.c_pings_sent.inc()
                        waiting.append((clock() + timeout, pong))
                    # The next slot still ahead: slots missed while the loop was late are skipped, not sent
                    # in a burst.
                    slot = schedule.next_slot(clock())
                    continue
                wake = min(due, waiting[0][0]) if waiting else due
                if waiting:
                    await asyncio.wait([waiting[0][1]], timeout=wake - now)
                else:
                    await asyncio.sleep(wake - now)
        except ConnectionClosed:
            return False

    async def watchdog(self, name: str, conn: Monitored, paused: Callable[[], bool]) -> None:
        """Return once `conn` has delivered no market data for the health timeout (replace it)."""
        timeout = self.health_timeout_s
        clock = self._clock
        while True:
            remaining = conn.last_data + timeout - clock()
            if remaining > 0:
                await asyncio.sleep(remaining + 0.005)
                continue
            if paused():
                # We stopped reading on purpose: silence proves nothing, the connection's data clock restarts
                # (readiness reads it too, as data that could not be read is not stale data).
                conn.last_data = clock()
                continue
            log.warning("%s: no market data for %.2f s (health timeout)", name, clock() - conn.last_data)
            return
