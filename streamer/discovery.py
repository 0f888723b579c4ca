"""Symbol discovery for a `quote:<ASSET>` selector: GET /api/v3/exchangeInfo at K2_BINANCE_REST_URL, refreshed
every K2_SYMBOL_REFRESH_SECONDS, over TLS verified with the WebSocket's settings (K2_SSL_VERIFY, K2_SSL_CA_FILE).

`Discovery` owns the discovered symbol set (`symbols`): it alone changes it, and hands each change (listed,
delisted) to the pool, which subscribes the new ones on a slot with room and unsubscribes the delisted ones
without touching any other connection. Which symbols are streamed is decided by `streamer.symbols.select`.

Invariants: `parse_exchange_info` never raises; an unreachable or broken REST API never stops streaming: it is
logged plainly, retried every refresh, and the last known set keeps streaming; a refresh that would leave no
symbol at all is refused (logged as an error), since that is a broken answer rather than a delisted market.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import urllib.request
from collections.abc import Awaitable, Callable

from streamer.config import StreamerConfig
from streamer.connect import make_ssl_context
from streamer.redact import mask_credentials
from streamer.symbols import Listing, Selector, select

log = logging.getLogger(__name__)

EXCHANGE_INFO_PATH = "/api/v3/exchangeInfo"
FETCH_TIMEOUT_S = 30.0
MAX_BODY_BYTES = 64 << 20


def parse_exchange_info(body: bytes) -> list[Listing] | str:
    """The listings of an exchangeInfo answer, or why it cannot be used. Never raises."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        return f"not JSON ({type(exc).__name__})"
    if not isinstance(data, dict) or not isinstance(data.get("symbols"), list):
        return "no 'symbols' list in the answer"
    listings = []
    for item in data["symbols"]:
        if not isinstance(item, dict):
            continue
        symbol, status, quote = item.get("symbol"), item.get("status"), item.get("quoteAsset")
        if isinstance(symbol, str) and isinstance(status, str) and isinstance(quote, str):
            listings.append(Listing(symbol.lower(), status, quote.upper()))
    return listings


class Discovery:
    def __init__(
        self,
        config: StreamerConfig,
        selector: Selector,
        apply: Callable[[list[str], list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.url = config.rest_url.rstrip("/") + EXCHANGE_INFO_PATH
        self.selector = selector
        self.shard = config.shard
        self.refresh_s = config.symbol_refresh_s
        self.apply = apply  # the pool's change(listed, delisted)
        self.ssl_context: ssl.SSLContext | None = (
            make_ssl_context(config.ssl_verify, config.ssl_ca_file) if self.url.startswith("https://") else None
        )
        self.symbols: list[str] = []  # the discovered set: changed here only
        self.failures = 0  # consecutive failed reads

    def _fetch(self) -> bytes:
        request = urllib.request.Request(self.url, headers={"User-Agent": "k2-streamer"})
        with urllib.request.urlopen(request, timeout=FETCH_TIMEOUT_S, context=self.ssl_context) as response:
            body: bytes = response.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"answer larger than {MAX_BODY_BYTES} bytes")
        return body

    def read(self) -> list[str]:
        """Fetch exchangeInfo and select (blocking: run in a thread). Raises with a plain reason on failure."""
        parsed = parse_exchange_info(self._fetch())
        if isinstance(parsed, str):
            raise ValueError(f"exchangeInfo unusable: {parsed}")
        selected = select(parsed, self.selector, self.shard)
        if not selected:
            of_shard = "" if self.shard.whole_market else f" in {self.shard}"
            raise ValueError(f"exchangeInfo lists no symbol for {self.selector.describe()}{of_shard}")
        return selected

    def first(self) -> list[str]:
        """The first read (start-up retries it until it succeeds); sets the discovered set."""
        self.symbols = self.read()
        log.info("exchangeInfo at %s: %d symbols for %s", mask_credentials(self.url), len(self.symbols),
                 self.selector.describe())
        return self.symbols

    async def refresh(self) -> tuple[list[str], list[str]] | None:
        """One refresh: (listed, delisted) applied to the pool, or None when the REST API failed."""
        try:
            selected = await asyncio.to_thread(self.read)
        except Exception as exc:
            self.failures += 1
            log.warning("exchangeInfo at %s unreachable or unusable (%s: %s); still streaming the last known %d "
                        "symbols; retrying in %.1f s (%d failure(s) in a row)", mask_credentials(self.url),
                        type(exc).__name__, mask_credentials(str(exc)), len(self.symbols), self.refresh_s,
                        self.failures)
            return None
        if self.failures:
            log.info("exchangeInfo at %s answers again after %d failure(s)", mask_credentials(self.url),
                     self.failures)
        self.failures = 0
        known = set(self.symbols)
        now = set(selected)
        listed = [s for s in selected if s not in known]
        delisted = [s for s in self.symbols if s not in now]
        self.symbols = selected
        if (listed or delisted) and self.apply is not None:
            await self.apply(listed, delisted)
        return listed, delisted

    async def run(self) -> None:
        """Refresh every K2_SYMBOL_REFRESH_SECONDS until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("applying a symbol refresh failed; retrying at the next refresh")
