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
from collections.abc import Awaitable, Callable

from streamer.config import StreamerConfig
from streamer.redact import mask_credentials
from streamer.rest import Endpoint, RestClient
from streamer.symbols import Listing, Selector, select

log = logging.getLogger(__name__)


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
        rest: RestClient,
        apply: Callable[[list[str], list[str]], Awaitable[None]] | None = None,
    ) -> None:
        self.url = config.rest_url.rstrip("/") + Endpoint.EXCHANGE_INFO.path
        self.selector = selector
        self.shard = config.shard
        self.refresh_s = config.symbol_refresh_s
        self.rest = rest  # shared with gap repairs and depth snapshots: one weight budget
        self.apply = apply  # the pool's change(listed, delisted)
        self.symbols: list[str] = []  # the discovered set: changed here only
        self.failures = 0  # consecutive failed reads

    async def read(self) -> list[str]:
        """Fetch exchangeInfo and select. Raises with a plain reason on failure."""
        parsed = parse_exchange_info(await self.rest.get(Endpoint.EXCHANGE_INFO, {}))
        if isinstance(parsed, str):
            raise ValueError(f"exchangeInfo unusable: {parsed}")
        selected = select(parsed, self.selector, self.shard)
        if not selected:
            of_shard = "" if self.shard.whole_market else f" in {self.shard}"
            raise ValueError(f"exchangeInfo lists no symbol for {self.selector.describe()}{of_shard}")
        return selected

    async def first(self) -> list[str]:
        """The first read (start-up retries it until it succeeds); sets the discovered set."""
        self.symbols = await self.read()
        log.info("exchangeInfo at %s: %d symbols for %s", mask_credentials(self.url), len(self.symbols),
                 self.selector.describe())
        return self.symbols

    async def refresh(self) -> tuple[list[str], list[str]] | None:
        """One refresh: (listed, delisted) applied to the pool, or None when the REST API failed."""
        try:
            selected = await self.read()
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
