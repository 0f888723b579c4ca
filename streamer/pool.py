"""The connection pool: the process's stream keys spread over connection slots (`Source`), the asyncio side.

The plan is pure and lives in streamer/slots.py (allocation of at most K2_STREAMS_PER_CONNECTION keys per slot,
staggered first rotations, placement of listings); this module starts one `Source` per slot, gives them the
process's shared pieces (the Kafka back-pressure and one connection-attempt budget: Binance counts attempts
per IP), applies listings and delistings, and exports the pool-level metrics.

Invariants:
- every stream key of the streamed symbols is on exactly one slot; a listing only adds keys to a slot with
  room (or opens a new slot), a delisting only takes keys off the slots that hold them (a slot left empty is
  closed): no other connection is disturbed;
- each slot has its own connections, lifetime, ping grid, health timeout and make-before-break rotation;
- metrics stay low-cardinality: pool totals (rotations, reconnects, pings keep their names and labels), the
  number of slots and of open connections, and the spread of connection ages (oldest, youngest).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

from streamer.backpressure import BackPressure
from streamer.config import StreamerConfig
from streamer.connect import AttemptBudget
from streamer.integrity import SequenceTracker
from streamer.kinds import stream_keys
from streamer.metrics import StreamerMetrics
from streamer.parse import Event, FrameParser
from streamer.slots import allocate, place, stagger
from streamer.source import Source

log = logging.getLogger(__name__)


class Pool:
    def __init__(
        self,
        config: StreamerConfig,
        parser: FrameParser,
        tracker: SequenceTracker,
        deliver: Callable[[Event], None],
        metrics: StreamerMetrics,
        backpressure: BackPressure,
        attempt_budget: AttemptBudget,
        symbols: Iterable[str],
    ) -> None:
        self.config = config
        self.parser = parser
        self.tracker = tracker
        self.deliver = deliver
        self.metrics = metrics
        self.backpressure = backpressure
        self.attempt_budget = attempt_budget
        self.symbols: list[str] = list(symbols)
        for symbol in self.symbols:
            for stream in config.streams:
                tracker.track(symbol, stream)
        keys = stream_keys(self.symbols, config.streams)
        chunks = allocate(keys, config.streams_per_connection)
        offsets = stagger(len(chunks), config.rotation_after_s)
        self._next_index = 0
        self.slots: list[Source] = [self._slot(chunk, offsets[i]) for i, chunk in enumerate(chunks)]
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.open_seconds: float | None = None  # how long the pool took to open (every slot delivering)
        self.stopping = False
        self._stopped = asyncio.Event()
        m = metrics
        m.set_function(m.connections_open, lambda: float(sum(1 for s in self.slots if s.connected())))
        m.set_function(m.connection_slots, lambda: float(len(self.slots)))
        m.set_function(m.connection_lifetime, lambda: self.age_spread()[0])
        m.set_function(m.connection_age_oldest, lambda: self.age_spread()[0])
        m.set_function(m.connection_age_youngest, lambda: self.age_spread()[1])
        m.set_function(m.last_message, lambda: max((s.last_message_wall for s in self.slots), default=0.0))
        m.set_function(m.connection_status, lambda: 1.0 if self.connected() else 0.0)

    def _slot(self, keys: list[str], first_rotation_after_s: float) -> Source:
        index = self._next_index
        self._next_index += 1
        return Source(self.config, self.parser, self.tracker, self.deliver, self.metrics, self.backpressure,
                      self.attempt_budget, keys=keys, slot=index, first_rotation_after_s=first_rotation_after_s)

    # ---- status -------------------------------------------------------------------------------------------
    def connected(self) -> bool:
        """Every slot has a connection delivering (readiness)."""
        return bool(self.slots) and all(s.connected() for s in self.slots)

    def seconds_since_data(self) -> float | None:
        """The stalest slot's seconds since its last market data; None while a slot has had none."""
        values = [s.seconds_since_data() for s in self.slots]
        if not values or any(v is None for v in values):
            return None
        return max(v for v in values if v is not None)

    def age_spread(self) -> tuple[float, float]:
        """(oldest, youngest) age of the slots' delivering connections; (0, 0) with none."""
        now = time.monotonic()
        ages = [s.router.active_age(now) for s in self.slots if s.connected()]
        return (max(ages), min(ages)) if ages else (0.0, 0.0)

    def describe(self) -> str:
        open_ = sum(1 for s in self.slots if s.connected())
        return f"{open_} of {len(self.slots)} connections open ({sum(len(s.keys) for s in self.slots)} streams)"

    @property
    def rotations(self) -> int:
        return sum(s.rotations for s in self.slots)

    @property
    def reconnects(self) -> int:
        return sum(s.reconnects for s in self.slots)

    # ---- life cycle ---------------------------------------------------------------------------------------
    def _start(self, slot: Source) -> None:
        self.tasks[slot.slot] = asyncio.create_task(slot.run(), name=f"slot-{slot.slot}")

    async def run(self) -> None:
        began = time.monotonic()
        for slot in self.slots:
            self._start(slot)
        streams = sum(len(s.keys) for s in self.slots)
        log.info("opening a pool of %d connection(s) for %d streams (at most %d per connection)",
                 len(self.slots), streams, self.config.streams_per_connection)
        await asyncio.wait([asyncio.create_task(s.first_open.wait()) for s in self.slots])
        self.open_seconds = time.monotonic() - began
        if not self.stopping:
            log.info("pool open: %d connection(s), %d streams, in %.2f s", len(self.slots), streams,
                     self.open_seconds)
        await self._stopped.wait()

    async def change(self, added: list[str], removed: list[str]) -> None:
        """Listings (`added` symbols) and delistings (`removed`): only the slots concerned change."""
        gone = set(removed)
        self.symbols = [s for s in self.symbols if s not in gone] + [s for s in added if s not in self.symbols]
        if removed:
            delisted = set(stream_keys(removed, self.config.streams))
            for slot in list(self.slots):
                mine = [k for k in slot.keys if k in delisted]
                if not mine:
                    continue
                if len(mine) == len(slot.keys):
                    log.info("slot %d: every stream delisted; closing it", slot.slot)
                    self.slots.remove(slot)
                    await slot.stop()
                    self.tasks.pop(slot.slot, None)
                else:
                    await slot.change_keys([], mine)
        if added:
            for symbol in added:
                for stream in self.config.streams:
                    self.tracker.track(symbol, stream)
            placement = place(stream_keys(added, self.config.streams), [len(s.keys) for s in self.slots],
                              self.config.streams_per_connection)
            for index, listed in placement.existing.items():
                await self.slots[index].change_keys(listed, [])
            for listed in placement.new:
                slot = self._slot(listed, self.config.rotation_after_s)
                self.slots.append(slot)
                self._start(slot)
                log.info("slot %d opened for %d new stream(s)", slot.slot, len(listed))
        log.info("symbols changed: %d listed (%s), %d delisted (%s); %s", len(added), ",".join(added[:10]),
                 len(removed), ",".join(removed[:10]), self.describe())

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*(s.stop() for s in self.slots), return_exceptions=True)
        for task in self.tasks.values():
            task.cancel()
        self._stopped.set()
