"""Back-pressure: stop reading every socket while the Kafka buffer is full, read again below 90 % of it.

The sink never drops (streamer/sink.py); when Kafka is slow or away its buffer fills, and the readers stop
reading instead: TCP then holds what the exchange sends. One object per process, because the Kafka buffer is
the process's. While paused, the heartbeat suspends its pong and data deadlines (nothing can be read, so
nothing missing proves a dead connection).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streamer.metrics import StreamerMetrics

log = logging.getLogger(__name__)

RESUME_AT = 0.9  # of the limit
DRAIN_POLL_S = 0.05


class BackPressure:
    def __init__(self, backlog: Callable[[], int], limit: int, metrics: StreamerMetrics) -> None:
        self.backlog = backlog  # messages awaiting Kafka's acknowledgement
        self.limit = limit  # K2_MAX_BUFFERED_MESSAGES
        self.metrics = metrics
        self.paused = False
        self._resume = asyncio.Event()
        self._resume.set()
        self._watcher: asyncio.Task[None] | None = None

    def is_paused(self) -> bool:
        return self.paused

    async def wait_until_drained(self) -> None:
        """Called by a reader that found the buffer full: returns once it has drained below RESUME_AT."""
        if not self.paused:
            self.paused = True
            self._resume.clear()
            self.metrics.g(self.metrics.backpressure).set(1)
            log.warning("Kafka buffer full: pausing socket reads until it drains (back-pressure)")
            self._watcher = asyncio.create_task(self._watch_drain(), name="drain-watcher")
        await self._resume.wait()

    async def _watch_drain(self) -> None:
        began = time.monotonic()
        while self.backlog() >= RESUME_AT * self.limit:
            await asyncio.sleep(DRAIN_POLL_S)
        self.paused = False
        self.metrics.g(self.metrics.backpressure).set(0)
        log.info("Kafka buffer drained after %.1f s: reading again", time.monotonic() - began)
        self._resume.set()
