"""Shards: N streamers split the market by a stable hash of the symbol, with no overlap and no hole.

Invariants:
- `shard_of(symbol, count)` depends only on the symbol's lower-case name and `count`: not on the order or the
  set of the other symbols, the process, the host or Python's per-process hash seed. So every shard of a
  deployment agrees on the split, also as listings come and go (a new symbol lands in exactly one shard, a
  delisting leaves the others untouched).
- For every `count`, each symbol belongs to exactly one shard in `0 .. count-1`: the union of the shards'
  selections is the market and their intersection is empty.
- Moving from N to M shards moves symbols between shards (it is a modulo, not a consistent hash): re-sharding
  is a deployment of every shard, documented as such.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

MAX_SHARDS = 64


def shard_of(symbol: str, count: int) -> int:
    """The shard (0 .. count-1) that streams `symbol`."""
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"shard count {count}; allowed: 1 .. {MAX_SHARDS}")
    digest = hashlib.blake2b(symbol.lower().encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


@dataclass(frozen=True)
class Shard:
    """This process's part of the market: shard `index` of `count` (0 of 1 = the whole market)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"K2_SHARD_COUNT={self.count}; allowed: 1 .. {MAX_SHARDS}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"K2_SHARD_INDEX={self.index}; allowed: 0 .. {self.count - 1} (K2_SHARD_COUNT - 1)")

    @property
    def whole_market(self) -> bool:
        return self.count == 1

    def owns(self, symbol: str) -> bool:
        return self.whole_market or shard_of(symbol, self.count) == self.index

    def select(self, symbols: Iterable[str]) -> tuple[str, ...]:
        """The symbols of this shard, in the order given."""
        return tuple(s for s in symbols if self.owns(s))

    def __str__(self) -> str:
        return f"shard {self.index} of {self.count}"


WHOLE_MARKET = Shard()
