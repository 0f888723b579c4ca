"""Connection routing of one connection slot: a state machine with no I/O and no asyncio.

A connection slot (one of the pool's, streamer/pool.py) carries a set of stream keys over successive
WebSocket connections (known here by their numbers); listings and delistings change the set (`add_keys`,
`remove_keys`: a new key is owned by the active connection, a removed one forgotten), nothing else does.
`Router` decides which connection owns each stream key, when to open a replacement, when to switch to it and
when to close the old one; the asyncio layer (streamer/source.py) feeds it what happened
(`handle(Opened | Failed | ShutdownAnnounced, now)`, `route(conn, event, now)` for market data of a connection
that does not own everything alone, `tick(now)` as time passes) and carries out the actions it leaves in
`actions` (`take_actions()`): Connect, Activate, Close, and the Rotated / Reconnected counts. Time is a
parameter, so tests drive it with made-up events and clocks.

Make-before-break (rotation at K2_CONNECTION_MAX_LIFETIME_SECONDS, the slot's first one after
`first_rotation_after_s` so that a pool's slots rotate staggered; the slot's rotations stay on that grid,
first + k x lifetime from its first connection's open, also after an unplanned replacement, so the stagger
and the count per day hold; before the exchange's 24 h limit, on a
`serverShutdown` event, and on a pong timeout while the old connection still delivers):
  1. open and subscribe the new connection while the old one keeps delivering;
  2. per stream key, buffer what the new connection delivers until its buffered data overlaps what the old one
     delivered (its first id <= last delivered id + 1, the position `last_delivered(key)` reports), then switch
     that key to the new connection: the buffer is delivered, and the sequence tracker behind `deliver` drops
     the overlap; later messages of the old connection for that key are ignored. Nothing lost, nothing
     duplicated;
  3. when every key has switched (or after K2_ROTATION_OVERLAP_TIMEOUT_SECONDS for quiet keys: the new
     connection was subscribed while the old was still open, so it has everything from then on), close the
     old connection with code 1000.
When the old connection is dead (closed by the server, health timeout) the new one takes over at once, and
whatever the exchange published in between shows up as a sequence gap.

Invariants: at most one active and one pending connection; a connection attempt (`connecting`) never runs
beside a pending connection; while not stopping there is always an active, a pending or a connecting one
(`tick` restores it); every connection the router gave up gets exactly one Close.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from streamer.parse import Event

log = logging.getLogger(__name__)


class Rotation(Enum):
    """Why a connection was replaced on purpose (label `reason` of binance_connection_rotations_total)."""

    SCHEDULED = "scheduled"  # K2_CONNECTION_MAX_LIFETIME_SECONDS reached
    SERVER_SHUTDOWN = "server_shutdown"  # the exchange announced it will close the connection
    SERVER_LIMIT = "server_limit"  # 95 % of K2_SERVER_MAX_LIFETIME_SECONDS (the exchange's 24 h) reached


class Failure(Enum):
    """Why a connection was lost (label `reason` of binance_reconnects_total)."""

    HEALTH_TIMEOUT = "health_timeout"  # no market data for K2_HEALTH_CHECK_TIMEOUT_SECONDS
    PONG_TIMEOUT = "pong_timeout"  # a ping's pong missed K2_PING_TIMEOUT_SECONDS
    SERVER_CLOSE = "server_close"  # the server closed or dropped the connection
    ERROR = "error"  # anything else (a reader error, a refused oversized frame)


class Start(Enum):
    INITIAL = "initial"  # the slot's first connection


Cause = Rotation | Failure | Start


# ---- inputs (the asyncio layer reports them; tests make them up) ---------------------------------------------
@dataclass(frozen=True)
class Opened:
    conn: int  # a new connection is open and subscribed; nothing is read from it before Activate


@dataclass(frozen=True)
class Failed:
    conn: int
    reason: Failure
    still_open: bool = False  # a pong timeout on a connection that can still deliver: replace make-before-break


@dataclass(frozen=True)
class ShutdownAnnounced:
    conn: int  # the server sent serverShutdown on this connection


Input = Opened | Failed | ShutdownAnnounced


# ---- actions (the asyncio layer carries them out, in order) -------------------------------------------------
@dataclass(frozen=True)
class Connect:
    cause: Cause  # open a new connection (backoff and attempt budget are the dialer's business)


@dataclass(frozen=True)
class Activate:
    conn: int  # start reading, pinging and watching this connection


@dataclass(frozen=True)
class Close:
    conn: int  # close with 1000, reading what arrives until the close completes


@dataclass(frozen=True)
class Rotated:
    reason: Rotation  # count one planned rotation


@dataclass(frozen=True)
class Reconnected:
    reason: Failure  # count one unplanned replacement


Action = Connect | Activate | Close | Rotated | Reconnected


@dataclass
class Link:
    """What the router knows of one of its connections."""

    number: int
    opened_at: float
    rotate_at: float  # when its scheduled rotation is due (the slot's first one staggered, see streamer/slots.py)
    shutdown_announced: bool = False  # its close is expected: the rotation under way accounts for it
    slot: str = ""  # the slot's name in logs ("slot 3"), as the asyncio layer names the same connection

    def __str__(self) -> str:
        return f"{self.slot} connection #{self.number}" if self.slot else f"connection #{self.number}"


class Router:
    def __init__(
        self,
        keys: Sequence[str],
        last_delivered: Callable[[str], int | None],
        deliver: Callable[[Event], None],
        overlap_timeout_s: float,
        rotation_after_s: float,
        rotation_reason: Rotation,
        first_rotation_after_s: float | None = None,
        name: str = "",
    ) -> None:
        self.name = name  # the slot's name in logs
        self.keys = tuple(keys)
        self.last_delivered = last_delivered  # per stream key: the last id delivered (the sequence tracker's)
        self.deliver = deliver
        self.overlap_timeout_s = overlap_timeout_s
        self.rotation_after_s = rotation_after_s
        self.rotation_reason = rotation_reason
        # The slot's first connection rotates after this (staggered across a pool); every later one after
        # rotation_after_s.
        self.first_rotation_after_s = rotation_after_s if first_rotation_after_s is None else first_rotation_after_s
        self.epoch: float | None = None  # when the slot's first connection opened: the rotation grid's origin
        self.active: Link | None = None
        self.pending: Link | None = None
        # The one connection that owns every key while no switch is under way: its events skip routing.
        self.sole: int | None = None
        self.pending_cause: Cause = Start.INITIAL
        self.pending_deadline = 0.0
        self.connecting: Cause | None = None  # a connection attempt under way, and why
        self.owner: dict[str, int] = {}
        self.buffers: dict[str, list[Event]] = {}
        self.rotations = 0
        self.reconnects = 0
        self.stopping = False
        self.actions: list[Action] = []

    # ---- queries ---------------------------------------------------------------------------------------------
    def connected(self) -> bool:
        return self.active is not None

    def active_number(self) -> int | None:
        return None if self.active is None else self.active.number

    def active_age(self, now: float) -> float:
        return 0.0 if self.active is None else now - self.active.opened_at

    def next_deadline(self, now: float) -> float:
        """Seconds until `tick` has something to do at the latest (an overlap timeout, a due rotation)."""
        timers = [1.0]
        if self.pending is not None:
            timers.append(self.pending_deadline - now)
        elif self.active is not None and self.connecting is None:
            timers.append(self.active.rotate_at - now)
        return max(0.0, min(timers))

    def take_actions(self) -> list[Action]:
        actions, self.actions = self.actions, []
        return actions

    # ---- inputs ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._connect(Start.INITIAL)

    def handle(self, event: Input, now: float) -> None:
        if isinstance(event, Opened):
            self._opened(event.conn, now)
        elif isinstance(event, Failed):
            self._failed(event, now)
        else:
            self._shutdown_announced(event.conn)

    def route(self, conn: int, event: Event, now: float) -> None:
        """Market data of `conn` while it does not own every key alone (see `sole`)."""
        key = event.key
        pending = self.pending
        if pending is not None and conn == pending.number:
            if self.owner.get(key) == conn:
                self.deliver(event)
                return
            buffer = self.buffers.get(key)
            if buffer is None:
                buffer = self.buffers[key] = []
            buffer.append(event)
            self._maybe_switch(key, now)
        elif self.active is not None and conn == self.active.number and self.owner.get(key, conn) == conn:
            self.deliver(event)
            if pending is not None:
                self._maybe_switch(key, now)
        # else: a retiring connection, or one whose key already switched: its data is covered by the new one.

    def tick(self, now: float) -> None:
        """Timers: an overlap that took too long, a rotation due; and never leave the slot without a connection."""
        if self.pending is not None and now >= self.pending_deadline:
            # Rotation logic: quiet keys never overlapped; the new connection has had them since it subscribed.
            waiting = [k for k in self.keys if self.owner.get(k) != self.pending.number]
            log.info("%s: overlap timeout after %.1f s; switching %d quiet stream(s) %s", self.pending,
                     self.overlap_timeout_s, len(waiting), waiting[:5])
            self._switch_all(now)
        elif (
            self.active is not None
            and self.pending is None
            and self.connecting is None
            and now >= self.active.rotate_at
        ):
            log.info("%s: lifetime %.1f s reached; rotating (%s)", self.active, now - self.active.opened_at,
                     self.rotation_reason.value)
            self._connect(self.rotation_reason)
        if not self.stopping and self.active is None and self.pending is None and self.connecting is None:
            self._connect(Failure.ERROR)

    def add_keys(self, keys: Sequence[str]) -> None:
        """New stream keys on this slot (a listing; the asyncio layer subscribes every open connection). The
        active connection owns them; during a switch-over the pending one takes them over like any other."""
        new = [k for k in keys if k not in self.keys]
        self.keys = self.keys + tuple(new)
        if self.active is not None:
            for key in new:
                self.owner[key] = self.active.number

    def remove_keys(self, keys: Sequence[str]) -> None:
        """Stream keys leave this slot (a delisting; the asyncio layer unsubscribes them)."""
        gone = set(keys)
        self.keys = tuple(k for k in self.keys if k not in gone)
        for key in gone:
            self.owner.pop(key, None)
            self.buffers.pop(key, None)

    def stop(self, now: float) -> list[int]:
        """Stop: finish a switch under way, attempt nothing more; returns the connections left to close."""
        self.stopping = True
        self.connecting = None
        if self.pending is not None:
            self._switch_all(now)
        left = [] if self.active is None else [self.active.number]
        self._set_links(None, None)
        # Until the server confirms our close, the closing connection still owns every key: what it delivers
        # meanwhile was sent to us and goes to Kafka (its end then is no failure: no active link to replace).
        self.sole = left[0] if left else None
        return left

    # ---- transitions -----------------------------------------------------------------------------------------
    def _set_links(self, active: Link | None, pending: Link | None) -> None:
        """The only place that changes which connections are active and pending."""
        self.active = active
        self.pending = pending
        self.sole = active.number if active is not None and pending is None else None
        if pending is None:
            self.buffers = {}
        if active is not None:
            self.owner = dict.fromkeys(self.keys, active.number)

    def _next_rotation(self, now: float) -> float:
        """The slot's next grid point after `now`: epoch + first + k x lifetime (k >= 0). A connection opened
        by a rotation at grid point k rotates at k + 1; one opened by an unplanned replacement keeps the grid
        (so at most a lifetime, never more: the exchange's limit holds)."""
        if self.epoch is None:
            self.epoch = now
        first = self.epoch + self.first_rotation_after_s
        if now < first:
            return first
        steps = int((now - first) / self.rotation_after_s) + 1
        return first + steps * self.rotation_after_s

    def _connect(self, cause: Cause) -> None:
        self.connecting = cause
        self.actions.append(Connect(cause))

    def _opened(self, conn: int, now: float) -> None:
        cause = self.connecting if self.connecting is not None else Failure.ERROR
        self.connecting = None
        link = Link(conn, now, self._next_rotation(now), slot=self.name)
        if self.stopping:
            self.actions.append(Close(conn))
            return
        if self.active is None:
            self._set_links(link, None)
            self.actions.append(Activate(conn))
            if isinstance(cause, Rotation):  # e.g. serverShutdown: the old one closed before the new one opened
                self._count_rotation(cause)
            log.info("%s is now delivering (%s)", link, cause.value)
            return
        # Make-before-break: the old connection keeps delivering until the new one overlaps it.
        self._set_links(self.active, link)
        self.pending_cause = cause
        self.pending_deadline = now + self.overlap_timeout_s
        self.actions.append(Activate(conn))

    def _failed(self, event: Failed, now: float) -> None:
        conn, reason = event.conn, event.reason
        active, pending = self.active, self.pending
        if pending is not None and conn == pending.number:
            log.warning("%s failed in the switch-over (%s); keeping %s, retrying", pending, reason.value, active)
            self._set_links(active, None)
            self.actions.append(Close(conn))
            if active is not None:
                self._connect(self.pending_cause)
            return
        if active is None or conn != active.number:
            return  # a connection already given up (and closing): its end changes nothing
        if not (active.shutdown_announced and reason is Failure.SERVER_CLOSE):
            # Not announced by serverShutdown (that rotation accounts for it): an unplanned replacement, also
            # when a rotation was under way.
            self.reconnects += 1
            self.actions.append(Reconnected(reason))
            if pending is not None:
                self.pending_cause = reason
            if self.connecting is not None:
                self.connecting = reason
        if reason is Failure.PONG_TIMEOUT and pending is None and event.still_open:
            # The connection may still deliver: replace it make-before-break so nothing is lost meanwhile.
            if self.connecting is None:
                self._connect(reason)
            return
        log.warning("%s lost (%s) after %.1f s; replacing it", active, reason.value, now - active.opened_at)
        if pending is not None:
            self._switch_all(now)  # the new connection is already subscribed: it takes over at once
            return
        self._set_links(None, None)
        self.actions.append(Close(conn))
        if self.connecting is None:
            self._connect(reason)

    def _shutdown_announced(self, conn: int) -> None:
        for link in (self.active, self.pending):
            if link is not None and link.number == conn:
                link.shutdown_announced = True
        active = self.active
        if active is not None and active.number == conn and self.pending is None and self.connecting is None:
            log.info("%s: rotating (%s)", active, Rotation.SERVER_SHUTDOWN.value)
            self._connect(Rotation.SERVER_SHUTDOWN)

    def _maybe_switch(self, key: str, now: float) -> None:
        buffer = self.buffers.get(key)
        if not buffer:
            return
        last = self.last_delivered(key)
        # Overlap reached: the new connection holds the message right after the last one delivered (or an
        # older one). From here it can continue alone with nothing missing.
        if last is None or buffer[0].first_id <= last + 1:
            self._switch_key(key)
            assert self.pending is not None
            pending = self.pending.number
            if all(self.owner.get(k) == pending for k in self.keys):
                self._complete_switch(now)

    def _switch_key(self, key: str) -> None:
        assert self.pending is not None
        self.owner[key] = self.pending.number
        for event in self.buffers.pop(key, ()):
            self.deliver(event)

    def _switch_all(self, now: float) -> None:
        assert self.pending is not None
        pending = self.pending.number
        for key in self.keys:
            if self.owner.get(key) != pending:
                self._switch_key(key)
        for key in list(self.buffers):  # keys we did not expect: deliver too rather than drop
            self._switch_key(key)
        self._complete_switch(now)

    def _complete_switch(self, now: float) -> None:
        new, old = self.pending, self.active
        assert new is not None
        self._set_links(new, None)
        if old is not None:
            # Make-before-break done: the new connection owns every key; the old one is closed with 1000.
            if isinstance(self.pending_cause, Rotation):
                self._count_rotation(self.pending_cause)
            log.info("%s replaced by %s (%s) after %.1f s; closing it with 1000", old, new,
                     self.pending_cause.value, now - old.opened_at)
            self.actions.append(Close(old.number))

    def _count_rotation(self, reason: Rotation) -> None:
        self.rotations += 1
        self.actions.append(Rotated(reason))
