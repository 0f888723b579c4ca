"""Client pings at a fixed rate: the connection slot's schedule (pure) and a real streamer whose pongs come back
late (a TCP proxy delays every byte both ways), rotating meanwhile."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from streamer.heartbeat import FRAME_WINDOW_S, FrameBudget, PingSchedule
from tests.streamer.conftest import wait_for


def test_slots_are_fixed_multiples_of_the_interval_from_the_epoch() -> None:
    schedule = PingSchedule(0.5)
    schedule.start(100.0)
    schedule.start(140.0)  # a later connection keeps the process's epoch
    assert schedule.next_slot(100.0) == 1
    assert schedule.due(1) == 100.5
    # A pong that took 0.2 s does not move the next ping: it is still due on the grid.
    assert schedule.claim(1)
    assert schedule.next_slot(100.5 + 0.2) == 2 and schedule.due(2) == 101.0


def test_a_slot_is_claimed_once_so_overlapping_connections_do_not_double_count() -> None:
    schedule = PingSchedule(1.0)
    schedule.start(0.0)
    assert schedule.claim(3)
    assert not schedule.claim(3)  # the other connection woke for the same slot
    assert not schedule.claim(2)  # nor an older one
    assert schedule.next_slot(2.9) == 4  # claimed slots are never handed out again


def test_late_wake_ups_skip_missed_slots_instead_of_bursting() -> None:
    schedule = PingSchedule(0.25)
    schedule.start(10.0)
    assert schedule.claim(1)
    # The loop was stalled for 1.1 s after slot 1: slots 2..5 are gone, the next one is still on the grid.
    assert schedule.next_slot(10.25 + 1.1) == 6
    assert schedule.due(6) == pytest.approx(11.5)


def test_a_wake_up_exactly_on_the_due_time_is_that_slot() -> None:
    schedule = PingSchedule(0.1)
    schedule.start(0.0)
    for slot in range(1, 1000):
        assert schedule.next_slot(schedule.due(slot)) == slot
        assert schedule.claim(slot)


def test_pings_per_window_match_the_interval_over_a_long_run() -> None:
    """480 slots in a 240 s day at 0.5 s, whatever each ping's round trip (it does not enter the grid)."""
    schedule = PingSchedule(0.5)
    schedule.start(0.0)
    sent, now, slot = 0, 0.0, schedule.next_slot(0.0)
    while schedule.due(slot) <= 240.0:
        now = schedule.due(slot)
        assert schedule.claim(slot)
        sent += 1
        now += 0.03  # the pong's round trip
        slot = schedule.next_slot(now)
    assert sent == 480


def test_frame_budget_leaves_room_for_jitter_and_the_servers_pong() -> None:
    """4 of our frames per 1.1 s: jitter of up to 0.1 s at the exchange still shows at most 4 of ours (plus
    websockets' automatic pong) in any second."""

    async def send(n: int) -> list[float]:
        budget = FrameBudget()
        times = []
        for _ in range(n):
            await budget.acquire()
            times.append(time.monotonic())
        return times

    times = asyncio.run(send(9))
    assert FRAME_WINDOW_S > 1.0
    assert all(times[i + 4] - times[i] >= FRAME_WINDOW_S - 0.001 for i in range(len(times) - 4))


class LatencyProxy:
    """TCP forwarder on 127.0.0.1 that delivers every chunk `delay_s` after it arrived, both directions
    (TLS passes through untouched): a network round trip of 2 x delay_s."""

    def __init__(self, target_port: int, delay_s: float) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="latency-proxy")

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("latency proxy did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def forward() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()

        forwarder = asyncio.create_task(forward())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay_s, chunk))
        except OSError:
            pass
        queue.put_nowait((0.0, b""))
        try:
            await forwarder
        except OSError:
            pass
        finally:
            writer.close()


@pytest.fixture
def delayed_simulator(make_simulator: Any) -> Iterator[tuple[Any, LatencyProxy]]:
    sim = make_simulator(server_ping_interval_s=5.0)
    with LatencyProxy(sim.port, delay_s=0.1) as proxy:
        yield sim, proxy


@pytest.mark.slow
def test_pings_keep_a_fixed_rate_despite_a_slow_round_trip_and_rotations(
    delayed_simulator: tuple[Any, LatencyProxy], make_streamer: Any, kafka: Any
) -> None:
    """Round trip 0.2 s on a 0.5 s interval: a pinger that waited the interval after each pong would send
    one ping per 0.7 s (~29 % short); fixed rate sends one per 0.5 s, across rotations every 2 s."""
    sim, proxy = delayed_simulator
    interval = 0.5
    streamer = make_streamer(
        None,
        kafka.bootstrap_servers,
        K2_BINANCE_WS_URL=f"wss://localhost:{proxy.port}/stream",
        K2_SSL_CA_FILE=str(sim.ca_file),
        K2_PING_INTERVAL_SECONDS=interval,
        K2_PING_TIMEOUT_SECONDS=0.45,
        K2_CONNECTION_MAX_LIFETIME_SECONDS=2,
        K2_ROTATION_OVERLAP_TIMEOUT_SECONDS=1,
    )
    streamer.wait_ready()
    wait_for(lambda: streamer.metric("binance_last_pong_timestamp_seconds") > 0, 30, "a pong through the proxy")

    def sample() -> tuple[float, float]:
        began = time.monotonic()
        pings = streamer.metric("binance_pings_sent_total")
        return (began + time.monotonic()) / 2, pings

    t0, pings0 = sample()
    rotations0 = streamer.metric("binance_connection_rotations_total")
    window = 40 * interval
    wait_for(lambda: time.monotonic() - t0 >= window, window + 5, "the measuring window")
    t1, pings1 = sample()
    rotations = streamer.metric("binance_connection_rotations_total") - rotations0
    expected = (t1 - t0) / interval
    print(f"fixed-rate pings: {pings1 - pings0:.0f} in {t1 - t0:.2f} s (expected {expected:.1f}), "
          f"{rotations:.0f} rotations, round trip 0.2 s")
    assert rotations >= 4  # the window crossed several make-before-break switches
    assert streamer.metric("binance_pong_timeouts_total") == 0
    assert streamer.metric("binance_reconnects_total") == 0
    # One read can fall just before or after a ping on either end: +-2 slots.
    assert expected - 2 <= pings1 - pings0 <= expected + 2
