"""Shards split the market by a stable hash: every symbol in exactly one shard, the same in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from streamer.config import ConfigError, load_config
from streamer.shards import MAX_SHARDS, Shard, shard_of
from streamer.symbols import select

MARKET = [f"sym{i:04d}usdt" for i in range(2000)]


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, MAX_SHARDS])
def test_every_symbol_is_in_exactly_one_shard(count: int) -> None:
    selections = [Shard(index, count).select(MARKET) for index in range(count)]
    assert sorted(s for selection in selections for s in selection) == sorted(MARKET)  # no hole, no overlap


def test_the_split_is_balanced_enough_to_share_the_load() -> None:
    sizes = [len(Shard(index, 4).select(MARKET)) for index in range(4)]
    assert all(400 <= size <= 600 for size in sizes), sizes  # 500 each on average


def test_the_split_is_the_same_in_every_process_whatever_the_hash_seed() -> None:
    code = ("import json, sys; from streamer.shards import shard_of; "
            "print(json.dumps([shard_of(s, 5) for s in sys.argv[1:]]))")
    mine = [shard_of(s, 5) for s in MARKET[:300]]
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", code, *MARKET[:300]], env=env, capture_output=True, text=True,
                              check=True)
        assert json.loads(done.stdout) == mine


def test_a_listing_moves_no_other_symbol_and_case_does_not_matter() -> None:
    shard = Shard(1, 3)
    before = shard.select(MARKET)
    after = shard.select([*MARKET, "newcoinusdt"])
    assert after[: len(before)] == before
    assert shard_of("BTCUSDT", 3) == shard_of("btcusdt", 3)


def test_bad_shard_settings_name_the_setting_and_range() -> None:
    with pytest.raises(ConfigError, match=r"K2_SHARD_INDEX=2 is not below K2_SHARD_COUNT=2; allowed: 0 \.\. 1"):
        load_config({"K2_SHARD_INDEX": "2", "K2_SHARD_COUNT": "2"})
    with pytest.raises(ConfigError, match=r"K2_SHARD_COUNT.*allowed: 1 \.\. 64"):
        load_config({"K2_SHARD_COUNT": "0"})
    with pytest.raises(ValueError, match=r"K2_SHARD_INDEX=3; allowed: 0 \.\. 2"):
        Shard(3, 3)
    config = load_config({"K2_SHARD_INDEX": "1", "K2_SHARD_COUNT": "3", "K2_BINANCE_SYMBOLS": ",".join(MARKET[:30])})
    assert config.shard == Shard(1, 3)
    assert select((), config.selector, config.shard) == sorted(Shard(1, 3).select(MARKET[:30]))


def test_a_shard_that_owns_none_of_the_listed_symbols_is_refused() -> None:
    other = 1 - shard_of("btcusdt", 2)
    with pytest.raises(ConfigError, match=f"K2_SHARD_INDEX={other} of K2_SHARD_COUNT=2 selects none of the 1 "
                                          "symbols of K2_BINANCE_SYMBOLS"):
        load_config({"K2_BINANCE_SYMBOLS": "btcusdt", "K2_SHARD_INDEX": str(other), "K2_SHARD_COUNT": "2"})
    owner = load_config({"K2_BINANCE_SYMBOLS": "btcusdt", "K2_SHARD_INDEX": str(1 - other), "K2_SHARD_COUNT": "2"})
    assert select((), owner.selector, owner.shard) == ["btcusdt"]
