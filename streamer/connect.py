"""Dialing the exchange: the TLS context, reconnect backoff with full jitter, and the connection-attempt budget.

Binance allows 300 connection attempts per 5 minutes per IP; the whole pool keeps itself to
K2_CONNECTION_ATTEMPTS_PER_WINDOW (default MAX_ATTEMPTS_PER_WINDOW, a third) in any
K2_CONNECTION_ATTEMPT_WINDOW_SECONDS (default ATTEMPT_WINDOW_S), whatever the backoff says: one `AttemptBudget`
per process, shared by every connection slot. The backoff is exponential with full jitter
(the first retry immediate), and starts again from zero once a connection delivers data. Every attempt is
counted (`binance_connection_attempts_total`) and every failure by cause (`binance_connection_failures_total`);
a refused certificate is never retried without verification.

The TLS context and the attempt budget are pure (the clock is a parameter); `Dialer` is the asyncio part.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from urllib.parse import urlsplit

from websockets.exceptions import InvalidHandshake, InvalidStatus

from streamer.config import ATTEMPT_WINDOW_S as ATTEMPT_WINDOW_S  # re-exported: the budget's defaults
from streamer.config import MAX_ATTEMPTS_PER_WINDOW as MAX_ATTEMPTS_PER_WINDOW
from streamer.config import StreamerConfig
from streamer.metrics import StreamerMetrics
from streamer.wsclient import WebSocket, open_connection

log = logging.getLogger(__name__)

# How long a close handshake (ours or the server's) may take before the connection is dropped.
CLOSE_TIMEOUT_S = 5.0
# Messages read and not yet taken by a connection's reader before reading pauses (TCP holds the rest).
MAX_QUEUE = 1024


def make_ssl_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    """TLS context for wss://. Verification is on unless explicitly disabled (then loudly, see Dialer)."""
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
    """The `reason` label of binance_connection_failures_total for a failed attempt."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return "ssl_certificate"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeout"
    if isinstance(exc, InvalidStatus | InvalidHandshake):
        return "handshake"
    return "error"


def max_message_bytes(max_frame_bytes: int) -> int:
    """Frames up to 4 x K2_MAX_FRAME_BYTES are read (then counted and skipped by the parser); bigger ones are
    refused unread (streamer/wsframes.py), and the connection closes with 1009."""
    return min(64 << 20, max_frame_bytes * 4)


class AttemptBudget:
    """At most `max_attempts` connection attempts in any `window_s` (shared by every connection it dials)."""

    def __init__(self, max_attempts: int = MAX_ATTEMPTS_PER_WINDOW, window_s: float = ATTEMPT_WINDOW_S) -> None:
        self.max_attempts = max_attempts
        self.window_s = window_s
        self._times: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until an attempt fits the budget (0: now)."""
        while self._times and self._times[0] < now - self.window_s:
            self._times.popleft()
        if len(self._times) < self.max_attempts:
            return 0.0
        return self._times[0] + self.window_s - now

    def record(self, now: float) -> None:
        self._times.append(now)


class Dialer:
    """Opens WebSocket connections to one URL: backoff between failed attempts, within the attempt budget."""

    def __init__(
        self,
        config: StreamerConfig,
        url: str,
        metrics: StreamerMetrics,
        budget: AttemptBudget,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.url = url
        self.metrics = metrics
        self.budget = budget
        self.host = urlsplit(config.ws_url).hostname or "?"
        secure = config.ws_url.startswith("wss://")
        self.ssl_context = make_ssl_context(config.ssl_verify, config.ssl_ca_file) if secure else None
        self.failed_attempts = 0  # since the last connection that delivered data: the backoff exponent
        self.last_open_ms = 0.0  # how long the last successful attempt took (TCP + TLS + HTTP upgrade)
        self._rng = rng or random.Random()
        self._clock = clock
        metrics.g(metrics.ssl_verify_enabled).set(1 if secure and config.ssl_verify else 0)

    def data_flows(self) -> None:
        """A connection delivers data again: the next reconnect starts without delay."""
        self.failed_attempts = 0

    async def open(self, stopping: Callable[[], bool]) -> WebSocket | None:
        """Dial until a connection opens; None when `stopping()` turns true first."""
        config = self.config
        while not stopping():
            delay = backoff_delay(self.failed_attempts, config.backoff_initial_s, config.backoff_max_s, self._rng)
            delay = max(delay, self.budget.wait(self._clock()))
            if delay > 0:
                log.info("reconnecting in %.2f s (attempt %d)", delay, self.failed_attempts + 1)
                await asyncio.sleep(delay)
            if stopping():
                return None
            self.failed_attempts += 1
            ws = await self._attempt()
            if ws is not None:
                return ws
        return None

    async def _attempt(self) -> WebSocket | None:
        self.budget.record(self._clock())
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
        began = self._clock()
        try:
            ws = await open_connection(
                self.url,
                ssl=self.ssl_context,
                open_timeout_s=max(5.0, self.config.health_timeout_s),
                max_size=max_message_bytes(self.config.max_frame_bytes),
                max_queue=MAX_QUEUE,
                close_timeout_s=CLOSE_TIMEOUT_S,
                user_agent="k2-streamer/2.0",
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
        self.last_open_ms = (self._clock() - began) * 1000
        return ws
