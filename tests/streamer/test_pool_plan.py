"""The connection pool's pure logic, driven directly with no I/O: allocation of stream keys to slots, staggered
rotations (20 routers on a made-up clock), placement of listings, SUBSCRIBE batches and replies, the shared
attempt budget under a reconnect storm, and symbol selection / validation."""

from __future__ import annotations

from itertools import pairwise

import pytest

from streamer.connect import AttemptBudget
from streamer.kinds import stream_keys
from streamer.parse import Event
from streamer.routing import Close, Connect, Failed, Failure, Opened, Rotated, Rotation, Router
from streamer.slots import SUBSCRIBE_BATCH, Method, allocate, batches, place, reply, request, slots_needed, stagger
from streamer.symbols import Explicit, Listing, Quote, parse_selector, select, symbol_problem


def test_2000_symbols_by_2_streams_make_20_slots_of_200_with_each_key_once() -> None:
    symbols = [f"s{i:04d}usdt" for i in range(2000)]
    keys = stream_keys(symbols, ("trade", "bookTicker"))
    slots = allocate(keys, 200)
    assert len(slots) == 20 == slots_needed(len(keys), 200)
    assert all(len(s) == 200 for s in slots)
    flat = [k for s in slots for k in s]
    assert flat == keys and len(set(flat)) == 4000  # every key exactly once, in order
    # A symbol's two streams stay on one slot (symbol-major allocation, an even size per slot).
    assert all({k.split("@")[0] for k in s[0::2]} == {k.split("@")[0] for k in s[1::2]} for s in slots)
    assert allocate(keys[:450], 200)[-1] == keys[400:450]
    with pytest.raises(ValueError):
        allocate(keys, 0)


def test_first_rotations_are_spread_evenly_over_the_lifetime() -> None:
    assert stagger(1, 100.0) == [100.0]  # a pool of one rotates after the lifetime, as before
    offsets = stagger(20, 100.0)
    assert offsets[0] == 5.0 and offsets[-1] == 100.0
    assert all(b - a == pytest.approx(5.0) for a, b in pairwise(offsets))


def test_twenty_routers_rotate_staggered_never_together_each_every_lifetime() -> None:
    """20 slots on one made-up clock: each connection opens the instant it is asked for and switches at once."""
    lifetime, count = 100.0, 20
    routers = []
    for i, first in enumerate(stagger(count, lifetime)):
        key = f"s{i}@trade"
        routers.append(Router([key], lambda _k: None, lambda _e: None, 10.0, lifetime, Rotation.SCHEDULED, first))
    numbers = iter(range(1, 10_000))
    rotations: list[tuple[float, int]] = []
    now = 0.0
    for router in routers:
        router.start()
    while now <= 3 * lifetime + 1:
        for index, router in enumerate(routers):
            router.tick(now)
            while actions := router.take_actions():
                for action in actions:
                    if isinstance(action, Connect):
                        conn = next(numbers)
                        router.handle(Opened(conn), now)
                        if router.pending is not None:  # the rotation's new connection overlaps the old one
                            router.route(conn, Event(f"s{index}@trade", f"s{index}", "trade", 1, 1, {}, 0), now)
                    elif isinstance(action, Rotated):
                        rotations.append((now, index))
        now = round(now + 0.5, 6)
    times = sorted(t for t, _ in rotations)
    assert len(times) == 60  # every slot rotated 3 times in 3 lifetimes
    assert all(sum(1 for _, i in rotations if i == slot) == 3 for slot in range(count))
    # Never two at once: consecutive rotations of the pool are a lifetime / 20 apart.
    assert min(b - a for a, b in pairwise(times)) >= lifetime / count - 0.5


def test_a_listing_goes_to_a_slot_with_room_or_a_new_slot_and_touches_no_other() -> None:
    placement = place(["a@trade", "b@trade", "c@trade"], [200, 199, 200], 200)
    assert placement.existing == {1: ["a@trade"]} and placement.new == [["b@trade", "c@trade"]]
    assert place(["a@trade"], [200, 200], 200).existing == {}
    big = [f"k{i}@trade" for i in range(450)]
    assert [len(n) for n in place(big, [], 200).new] == [200, 200, 50]


def test_subscribe_requests_are_batched_and_answers_recognised() -> None:
    keys = [f"s{i}@trade" for i in range(1024)]
    cut = batches(keys)
    assert [len(b) for b in cut] == [200, 200, 200, 200, 200, 24] and SUBSCRIBE_BATCH == 200
    assert request(Method.SUBSCRIBE, ["btcusdt@trade"], 7) == '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":7}'
    answer = reply('{"result":null,"id":7}')
    assert answer is not None and answer.request_id == 7 and answer.error is None
    refused = reply('{"error":{"code":2,"msg":"Invalid request"},"id":8}')
    assert refused is not None and refused.error is not None and "Invalid request" in refused.error
    assert reply('{"stream":"btcusdt@trade","data":{"e":"trade","id":1}}') is None  # market data
    assert reply(b"\xff{") is None and reply("{not json") is None and reply('{"id":1}') is None


def test_listing_and_delisting_change_a_routers_keys_also_during_a_switch() -> None:
    delivered: list[str] = []
    router = Router(["a@trade"], lambda _k: None, lambda e: delivered.append(e.key), 10.0, 100.0,
                    Rotation.SCHEDULED)
    router.start()
    router.take_actions()
    router.handle(Opened(1), 0.0)
    router.take_actions()
    router.add_keys(["b@trade"])
    assert router.keys == ("a@trade", "b@trade") and router.owner["b@trade"] == 1 and router.sole == 1
    router.tick(100.0)  # rotation: connection 2 takes over both keys, the new one too
    assert router.take_actions() == [Connect(Rotation.SCHEDULED)]
    router.handle(Opened(2), 100.1)
    router.take_actions()
    router.add_keys(["c@trade"])  # a listing mid-switch
    router.remove_keys(["a@trade"])  # and a delisting
    for key in ("b@trade", "c@trade"):
        router.route(2, Event(key, key[0], "trade", 5, 5, {}, 0), 100.2)
    assert router.take_actions() == [Rotated(Rotation.SCHEDULED), Close(1)]
    assert router.sole == 2 and set(router.owner) == {"b@trade", "c@trade"}
    assert delivered == ["b@trade", "c@trade"]


def test_the_shared_attempt_budget_holds_a_reconnect_storm_of_20_slots() -> None:
    """Every slot redials the instant it may, for 15 minutes: no 300 s window ever holds more than the share."""
    budget = AttemptBudget(max_attempts=100, window_s=300.0)
    attempts: list[float] = []
    now = 0.0
    while now < 900.0:
        for _slot in range(20):
            if budget.wait(now) == 0.0:
                budget.record(now)
                attempts.append(now)
        now += 0.25
    assert len([t for t in attempts if t == 0.0]) == 20  # the pool of 20 opens at once
    for start in attempts:
        assert sum(1 for t in attempts if start <= t < start + 300.0) <= 100
    assert len(attempts) == 300  # and it is a budget, not a ban: 100 per window


def test_symbol_selection_is_one_pure_function() -> None:
    listed = [Listing("btcusdt", "TRADING", "USDT"), Listing("ethbtc", "TRADING", "BTC"),
              Listing("oldusdt", "BREAK", "USDT"), Listing("币安人生usdt", "TRADING", "USDT"),
              Listing("bad@usdt", "TRADING", "USDT"), Listing("aaausdt", "TRADING", "USDT")]
    assert select(listed, Quote("USDT")) == ["aaausdt", "btcusdt", "币安人生usdt"]
    assert select(listed, Explicit(("ethusdt", "btcusdt"))) == ["btcusdt", "ethusdt"]
    assert parse_selector(["quote:usdt"]) == Quote("USDT")
    assert isinstance(parse_selector(["quote:US DT"]), str) and isinstance(parse_selector([]), str)
    assert symbol_problem("1000satsusdt") is None and symbol_problem("币安人生usdt") is None
    for bad in ("btc@usdt", "btc/usdt", "btc,usdt", "btc usdt", "btc\nusdt", "BTCUSDT", "b", "x" * 41, 'a"b'):
        assert symbol_problem(bad) is not None, bad


def test_exchange_info_is_parsed_without_ever_raising() -> None:
    from streamer.discovery import parse_exchange_info

    body = (b'{"symbols":[{"symbol":"BTCUSDT","status":"TRADING","quoteAsset":"USDT"},'
            b'{"symbol":"ETHBTC","status":"BREAK","quoteAsset":"btc"},"junk",{"symbol":1}]}')
    assert parse_exchange_info(body) == [Listing("btcusdt", "TRADING", "USDT"), Listing("ethbtc", "BREAK", "BTC")]
    for broken in (b"", b"[]", b'{"symbols": 3}', b"\xff", b"[" * 100_000):
        assert isinstance(parse_exchange_info(broken), str)


def test_an_unplanned_replacement_keeps_the_slots_rotation_grid() -> None:
    """Slot 3 of 20 (lifetime 100 s) rotates at 20, 120, 220...; a connection lost at 150 s is replaced at once,
    and the replacement still rotates at 220, not 250: the stagger and the rotations per day hold."""
    router = Router(["a@trade"], lambda _k: None, lambda _e: None, 10.0, 100.0, Rotation.SCHEDULED,
                    stagger(20, 100.0)[3])
    router.start()
    router.take_actions()
    router.handle(Opened(1), 0.0)
    router.take_actions()
    assert router.active is not None and router.active.rotate_at == 20.0
    router.tick(20.0)
    assert router.take_actions() == [Connect(Rotation.SCHEDULED)]
    router.handle(Opened(2), 20.5)
    router.tick(30.5)  # the overlap timeout switches the quiet key
    router.take_actions()
    assert router.active.number == 2 and router.active.rotate_at == 120.0
    router.handle(Failed(2, Failure.SERVER_CLOSE), 150.0)
    router.take_actions()
    router.handle(Opened(3), 150.1)
    assert router.active.number == 3 and router.active.rotate_at == 220.0
