"""Binance's REST API under one request-weight budget: symbol discovery, gap repairs and depth snapshots share it.

Binance counts the weight of an IP's requests per minute (REQUEST_WEIGHT, 6,000; the window is the calendar
minute) and reports the count in every answer (`X-MBX-USED-WEIGHT-1M`). Over the limit it answers HTTP 429
with `Retry-After`; an IP that keeps sending gets HTTP 418, a ban, again with `Retry-After`.

- `WeightBudget` (pure; time is a parameter) decides when a request may go: this process's share of the
  window's weight, the exchange's own count from the header (it includes other processes on the IP), and no
  request at all before a 429's or 418's `Retry-After` has passed.
- `RestClient` (the asyncio edge, on httpx2: the HTTP client confluent-kafka's Schema Registry client brings)
  asks the budget, sends, feeds the answer back and counts it. One request at a time, callers in order of
  arrival (what has waited longest goes first): a request sent while another was being answered 429 would
  already be one sent after the order to back off, which Binance counts towards a ban.

Invariants: no request is sent while `blocked_until` lies ahead, nor while another is unanswered; the weight
spent in a window never exceeds
the budget unless the exchange's header says others spent it; the API key is sent as `X-MBX-APIKEY` and never
logged (it is kept out of reprs and messages).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import httpx2

from streamer.redact import mask_credentials

log = logging.getLogger(__name__)

USED_WEIGHT_HEADER = "x-mbx-used-weight-1m"
# Binance's documented spot REQUEST_WEIGHT limit per minute (GET /api/v3/exchangeInfo lists it).
BINANCE_WEIGHT_PER_MINUTE = 6000
# A 429 or 418 without a usable Retry-After: back off this long.
DEFAULT_RETRY_AFTER_S = 60.0
# An answer larger than this is refused (exchangeInfo for the whole market is about 20 MB).
MAX_BODY_BYTES = 64 << 20


class Endpoint(Enum):
    """A REST endpoint: its path and its request weight (Binance's table; depth's grows with `limit`)."""

    EXCHANGE_INFO = ("exchangeInfo", "/api/v3/exchangeInfo", 20)
    HISTORICAL_TRADES = ("historicalTrades", "/api/v3/historicalTrades", 25)
    AGG_TRADES = ("aggTrades", "/api/v3/aggTrades", 4)  # 2 until Binance raised it on 2025-03-10
    DEPTH = ("depth", "/api/v3/depth", 0)  # depth_weight(limit)

    def __init__(self, label: str, path: str, weight: int) -> None:
        self.label = label  # binance_rest_requests_total{endpoint}
        self.path = path
        self.fixed_weight = weight

    def weight(self, params: dict[str, Any]) -> int:
        return depth_weight(int(params.get("limit", 100))) if self is Endpoint.DEPTH else self.fixed_weight


def depth_weight(limit: int) -> int:
    """GET /api/v3/depth's weight for `limit` levels per side."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


@dataclass
class WeightBudget:
    """This process's share of the exchange's request weight per window, and the exchange's back-off orders.

    `budget`: weight this process may spend per window (its share of the IP's limit). `window_s`: the
    exchange's window (60 s), aligned to multiples of it on the wall clock, as Binance's minute is.
    """

    budget: int
    window_s: float = 60.0
    window: int = -1  # index of the current window (now // window_s)
    used: int = 0  # weight counted in the current window: ours, or the exchange's header when higher
    blocked_until: float = 0.0  # no request before this (a 429's or 418's Retry-After)
    banned: bool = False  # the last back-off order was a 418 (an IP ban)

    def _roll(self, now: float) -> None:
        window = math.floor(now / self.window_s)
        if window != self.window:
            self.window, self.used = window, 0

    def wait_s(self, weight: int, now: float) -> float:
        """0 when a request of `weight` may go now; else how long to wait before asking again."""
        if now < self.blocked_until:
            return self.blocked_until - now
        self.banned = False
        self._roll(now)
        if self.used + weight <= self.budget:
            return 0.0
        if weight > self.budget:  # could never fit: wait for an empty window, then let it go alone
            return 0.0 if self.used == 0 else (self.window + 1) * self.window_s - now
        return (self.window + 1) * self.window_s - now

    def spend(self, weight: int, now: float) -> None:
        self._roll(now)
        self.used += weight

    def on_answer(self, status: int, used_header: int | None, retry_after_s: float | None, now: float) -> None:
        """What the exchange said: its count of the window's weight, and for 429/418 how long to keep off."""
        self._roll(now)
        if used_header is not None and used_header > self.used:
            self.used = used_header
        if status in (429, 418):
            wait = retry_after_s if retry_after_s is not None and retry_after_s > 0 else DEFAULT_RETRY_AFTER_S
            self.blocked_until = max(self.blocked_until, now + wait)
            self.banned = status == 418


class RestError(Exception):
    """A REST request failed: `reason` says how (HTTP status and body, or the transport's error)."""

    def __init__(self, endpoint: Endpoint, reason: str, status: int | None = None) -> None:
        super().__init__(f"{endpoint.label}: {reason}")
        self.endpoint = endpoint
        self.reason = reason
        self.status = status


def _header_int(headers: httpx2.Headers, name: str) -> int | None:
    value = headers.get(name)
    return int(value) if value is not None and value.strip().isdigit() else None


def _retry_after(headers: httpx2.Headers) -> float | None:
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class RestClient:
    """GET requests to Binance's REST API, each after the budget allows it. `metrics` may be None (tests)."""

    base_url: str
    budget: WeightBudget
    ssl_context: ssl.SSLContext | None
    timeout_s: float = 10.0
    api_key: str | None = field(default=None, repr=False)
    metrics: Any = None
    _client: httpx2.AsyncClient | None = field(default=None, init=False, repr=False)
    _turn: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    def _http(self) -> httpx2.AsyncClient:
        if self._client is None:
            headers = {"User-Agent": "k2-streamer"}
            if self.api_key:
                headers["X-MBX-APIKEY"] = self.api_key
            # trust_env off: no proxy from the environment, as for the WebSocket (proxies are not supported).
            self._client = httpx2.AsyncClient(base_url=self.base_url.rstrip("/"), headers=headers,
                                              verify=self.ssl_context if self.ssl_context is not None else True,
                                              timeout=self.timeout_s, trust_env=False)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _wait_for_budget(self, weight: int) -> None:
        while (wait := self.budget.wait_s(weight, time.time())) > 0:
            self._set_gauges()
            await asyncio.sleep(wait)
        self.budget.spend(weight, time.time())
        self._set_gauges()

    def _set_gauges(self) -> None:
        if self.metrics is not None:
            banned = self.budget.banned and time.time() < self.budget.blocked_until
            self.metrics.on_rest_budget(self.budget.used, banned)

    async def get(self, endpoint: Endpoint, params: dict[str, Any],
                  on_send: Callable[[], object] | None = None) -> bytes:
        """The body of a 200 answer; RestError for anything else (after telling the budget what it said).
        `on_send` is called once the budget allows the request, just before it is sent."""
        async with self._turn:  # one request at a time, in order of arrival
            return await self._get(endpoint, params, on_send)

    async def _get(self, endpoint: Endpoint, params: dict[str, Any], on_send: Callable[[], object] | None) -> bytes:
        await self._wait_for_budget(endpoint.weight(params))
        if on_send is not None:
            on_send()
        try:
            async with self._http().stream("GET", endpoint.path, params=params) as response:
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY_BYTES:
                        self._count(endpoint, "error")
                        raise RestError(endpoint, f"answer larger than {MAX_BODY_BYTES} bytes")
        except httpx2.HTTPError as exc:
            self._count(endpoint, "error")
            raise RestError(endpoint, f"{type(exc).__name__}: {mask_credentials(str(exc)) or 'no detail'}") from None
        retry_after = _retry_after(response.headers)
        self.budget.on_answer(response.status_code, _header_int(response.headers, USED_WEIGHT_HEADER), retry_after,
                              time.time())
        self._set_gauges()
        self._count(endpoint, str(response.status_code))
        if response.status_code == 200:
            return bytes(body)
        detail = bytes(body[:200]).decode(errors="replace").strip()
        if response.status_code in (429, 418):
            what = "IP banned (418)" if response.status_code == 418 else "rate limited (429)"
            log.error("Binance REST %s: %s; no REST request for %.0f s (Retry-After %s): %s", endpoint.label, what,
                      max(0.0, self.budget.blocked_until - time.time()), retry_after, detail)
        raise RestError(endpoint, f"HTTP {response.status_code}: {detail}", response.status_code)

    def _count(self, endpoint: Endpoint, code: str) -> None:
        if self.metrics is not None:
            self.metrics.on_rest_request(endpoint.label, code)
