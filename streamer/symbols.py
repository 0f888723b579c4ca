"""Which symbols to stream: the K2_BINANCE_SYMBOLS selector, symbol validation, and `select` (pure: no I/O).

K2_BINANCE_SYMBOLS is either an explicit comma list (`btcusdt,ethusdt`) or a selector: `quote:USDT` = every
symbol Binance lists with status TRADING and quote asset USDT (GET /api/v3/exchangeInfo, streamer/discovery.py).

Invariants:
- `select(listed, selector)` is the one place that decides the streamed set: a sorted list of lowercase
  symbols, each valid; a shard filter belongs here and nowhere else;
- a valid symbol is what Binance lists (letters of any script, digits, and the few marks real names carry),
  lowercased, and never something that breaks a stream name (`<symbol>@trade`: no `@`, `/`), a URL, a JSON
  request, a comma list or a Kafka key (no whitespace, control characters, quotes, `,`, `?`, `#`, `%`, `\\`);
- `parse_selector` and `valid_symbol` never raise.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from streamer.shards import WHOLE_MARKET, Shard

MAX_SYMBOL_CHARS = 40
# Characters that would break a stream name, a URL path or query, a JSON request, a comma list, or a log line.
_FORBIDDEN = frozenset('@/\\,?#%&"\'<>=:;*[]{}|^`~+')
QUOTE_PREFIX = "quote:"
TRADING = "TRADING"


def symbol_problem(symbol: str) -> str | None:
    """Why `symbol` cannot be streamed, or None when it can."""
    if not isinstance(symbol, str) or not 2 <= len(symbol) <= MAX_SYMBOL_CHARS:
        return f"must be 2..{MAX_SYMBOL_CHARS} characters"
    if symbol != symbol.lower():
        return "must be lowercase (Binance stream names use lowercase symbols)"
    for char in symbol:
        if char in _FORBIDDEN or char.isspace() or unicodedata.category(char)[0] in ("C", "Z"):
            return f"contains {char!r}, which would break a stream name or a topic key"
        if not (char.isalnum() or unicodedata.category(char)[0] in ("L", "N", "M")):
            return f"contains {char!r}, not a letter or digit"
    return None


def valid_symbol(symbol: str) -> bool:
    return symbol_problem(symbol) is None


@dataclass(frozen=True)
class Explicit:
    symbols: tuple[str, ...]

    def describe(self) -> str:
        return ",".join(self.symbols)


@dataclass(frozen=True)
class Quote:
    asset: str  # upper case, e.g. USDT

    def describe(self) -> str:
        return f"{QUOTE_PREFIX}{self.asset} (every TRADING symbol quoted in {self.asset})"


Selector = Explicit | Quote


def parse_selector(values: Iterable[str]) -> Selector | str:
    """The selector K2_BINANCE_SYMBOLS names, or a message saying what is wrong (never raises)."""
    items = [v.strip() for v in values if v.strip()]
    if len(items) == 1 and items[0].lower().startswith(QUOTE_PREFIX):
        asset = items[0][len(QUOTE_PREFIX):].strip().upper()
        if not (1 <= len(asset) <= 20 and asset.isalnum()):
            return f"{items[0]!r}: the quote asset must be 1..20 letters or digits, e.g. quote:USDT"
        return Quote(asset)
    if not items:
        return "no symbols"
    for item in items:
        if item.lower().startswith(QUOTE_PREFIX):
            return f"{item!r}: a quote: selector stands alone (not in a list)"
        problem = symbol_problem(item)
        if problem is not None:
            return f"{item!r} {problem}"
    if len(set(items)) != len(items):
        return "a symbol is listed twice"
    return Explicit(tuple(items))


@dataclass(frozen=True)
class Listing:
    """One symbol of exchangeInfo, as the streamer uses it."""

    symbol: str  # lowercase, as in stream names
    status: str  # TRADING, BREAK, ...
    quote: str  # quote asset, upper case


def select(listed: Iterable[Listing], selector: Selector, shard: Shard = WHOLE_MARKET) -> list[str]:
    """The symbols to stream, sorted: an explicit list as given (what is not listed is streamed anyway: the
    exchange may list it later), or every valid TRADING listing with the selector's quote asset; of those,
    the ones `shard` owns (streamer/shards.py)."""
    if isinstance(selector, Explicit):
        return sorted(shard.select(selector.symbols))
    return sorted(shard.select({item.symbol for item in listed
                                if item.status == TRADING and item.quote == selector.asset
                                and valid_symbol(item.symbol)}))
