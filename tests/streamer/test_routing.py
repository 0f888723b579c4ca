"""The connection-routing state machine, driven by made-up events and clocks (no sockets, no asyncio).

Each test plays what the asyncio layer would report (connections opened, failed, announced a shutdown; market
data per connection) and checks what the router decides (actions) and what reaches the pipeline: a sequence
tracker behind `deliver`, as in the streamer, so duplicates from the overlap are dropped there.
"""

from __future__ import annotations

from streamer.integrity import SequenceTracker
from streamer.parse import Event
from streamer.routing import (
    Action,
    Activate,
    Close,
    Connect,
    Failed,
    Failure,
    Opened,
    Reconnected,
    Rotated,
    Rotation,
    Router,
    ShutdownAnnounced,
    Start,
)

BTC, ETH = "btcusdt@trade", "ethusdt@trade"
OVERLAP_S, LIFETIME_S = 10.0, 100.0


class Slot:
    """A router with the sequence tracker and a record of what was delivered, per stream key."""

    def __init__(self, keys: tuple[str, ...] = (BTC, ETH)) -> None:
        self.tracker = SequenceTracker()
        for key in keys:
            self.tracker.state(key, key.split("@")[0], "trade")
        self.delivered: dict[str, list[int]] = {key: [] for key in keys}

        def deliver(event: Event) -> None:  # what the pipeline does first: the tracker drops duplicates
            if self.tracker.accept(event):
                self.delivered[event.key].append(event.first_id)

        self.router = Router(keys, self.tracker.last_id, deliver, OVERLAP_S, LIFETIME_S, Rotation.SCHEDULED)

    def data(self, conn: int, key: str, ids: range | list[int], now: float = 0.0) -> None:
        """Market data as the reader hands it over: straight to the pipeline while `conn` owns every key."""
        for i in ids:
            event = Event(key, key.split("@")[0], "trade", i, i, {}, 0)
            if self.router.sole == conn:
                self.router.deliver(event)
            else:
                self.router.route(conn, event, now)

    def actions(self) -> list[Action]:
        return self.router.take_actions()

    def open_first(self) -> None:
        self.router.start()
        assert self.actions() == [Connect(Start.INITIAL)]
        self.router.handle(Opened(1), now=0.0)
        assert self.actions() == [Activate(1)]

    def start_rotation(self) -> None:
        """Connection 1 delivered ids 1..10 of each key; its lifetime ends and connection 2 opens."""
        self.open_first()
        for key in self.router.keys:
            self.data(1, key, range(1, 11))
        self.router.tick(LIFETIME_S - 0.1)
        assert self.actions() == []
        self.router.tick(LIFETIME_S)
        assert self.actions() == [Connect(Rotation.SCHEDULED)]
        self.router.handle(Opened(2), now=LIFETIME_S + 0.2)
        assert self.actions() == [Activate(2)]
        assert self.router.sole is None  # both connections deliver: everything is routed


def test_the_first_connection_owns_every_key_and_delivers_directly() -> None:
    slot = Slot()
    slot.open_first()
    assert slot.router.sole == 1 and slot.router.connected()
    slot.data(1, BTC, range(1, 4))
    assert slot.delivered[BTC] == [1, 2, 3]


def test_each_key_switches_on_overlap_and_the_old_connection_closes_when_all_have() -> None:
    slot = Slot()
    slot.start_rotation()
    slot.data(2, BTC, range(8, 13), now=LIFETIME_S + 0.3)  # overlaps 1..10: switch, 8..10 are duplicates
    assert slot.router.owner == {BTC: 2, ETH: 1}
    slot.data(1, BTC, range(11, 14))  # the old connection's later BTC messages are ignored
    slot.data(1, ETH, range(11, 13))  # ETH still comes from the old connection
    assert slot.actions() == []
    slot.data(2, ETH, range(12, 15), now=LIFETIME_S + 0.4)
    assert slot.actions() == [Rotated(Rotation.SCHEDULED), Close(1)]
    assert slot.router.sole == 2 and slot.router.rotations == 1 and slot.router.reconnects == 0
    slot.data(2, BTC, range(13, 15))
    assert slot.delivered == {BTC: list(range(1, 15)), ETH: list(range(1, 15))}


def test_the_new_connection_is_buffered_until_it_overlaps_what_was_delivered() -> None:
    slot = Slot((BTC,))
    slot.start_rotation()
    slot.data(2, BTC, [15, 16])  # 11..14 not delivered yet: switching now would lose them
    assert slot.delivered[BTC] == list(range(1, 11)) and slot.router.owner[BTC] == 1
    assert slot.router.buffers[BTC][0].first_id == 15
    slot.data(1, BTC, range(11, 15))  # the old connection reaches 14: 15 follows, switch
    assert slot.router.owner[BTC] == 2 and slot.actions() == [Rotated(Rotation.SCHEDULED), Close(1)]
    slot.data(2, BTC, [17])
    assert slot.delivered[BTC] == list(range(1, 18))


def test_a_quiet_key_switches_at_the_overlap_timeout() -> None:
    slot = Slot()
    slot.start_rotation()
    opened = LIFETIME_S + 0.2
    slot.data(2, BTC, range(10, 12))  # BTC overlaps; ETH publishes nothing
    assert slot.router.next_deadline(opened + 1.0) == 1.0
    slot.router.tick(opened + OVERLAP_S - 0.01)
    assert slot.actions() == [] and slot.router.owner[ETH] == 1
    slot.router.tick(opened + OVERLAP_S)
    assert slot.actions() == [Rotated(Rotation.SCHEDULED), Close(1)]
    assert slot.router.owner == {BTC: 2, ETH: 2} and slot.router.sole == 2
    slot.data(2, ETH, [11, 12])
    assert slot.delivered[ETH] == list(range(1, 13))


def test_a_dead_old_connection_hands_over_to_the_new_one_at_once() -> None:
    slot = Slot()
    slot.start_rotation()
    slot.data(2, BTC, [14, 15])  # buffered: 11..13 were published while the old connection was dying
    slot.router.handle(Failed(1, Failure.SERVER_CLOSE), now=LIFETIME_S + 1)
    assert slot.actions() == [Reconnected(Failure.SERVER_CLOSE), Close(1)]
    assert slot.router.sole == 2 and slot.router.rotations == 0 and slot.router.reconnects == 1
    assert slot.delivered[BTC] == [*range(1, 11), 14, 15]  # the buffer, at once
    state = slot.tracker.states[BTC]
    assert (state.gaps, state.missing) == (1, 3)  # what was lost shows as a gap, not silently


def test_the_overlap_is_delivered_once_duplicates_are_dropped_by_the_tracker() -> None:
    slot = Slot((BTC,))
    slot.start_rotation()
    slot.data(2, BTC, range(5, 13))  # replays 5..10
    assert slot.delivered[BTC] == list(range(1, 13))
    assert slot.tracker.states[BTC].duplicates == 6 and slot.tracker.totals()["gaps"] == 0


def test_a_pending_connection_that_fails_is_closed_and_the_rotation_retried() -> None:
    slot = Slot()
    slot.start_rotation()
    slot.data(2, BTC, [20])
    slot.router.handle(Failed(2, Failure.ERROR), now=LIFETIME_S + 1)
    assert slot.actions() == [Close(2), Connect(Rotation.SCHEDULED)]
    assert slot.router.sole == 1 and slot.router.buffers == {} and slot.router.reconnects == 0
    slot.data(1, BTC, [11])
    assert slot.delivered[BTC][-1] == 11


def test_a_pong_timeout_on_an_open_connection_replaces_it_make_before_break() -> None:
    slot = Slot((BTC,))
    slot.open_first()
    slot.data(1, BTC, range(1, 6))
    slot.router.handle(Failed(1, Failure.PONG_TIMEOUT, still_open=True), now=5.0)
    assert slot.actions() == [Reconnected(Failure.PONG_TIMEOUT), Connect(Failure.PONG_TIMEOUT)]
    assert slot.router.sole == 1  # it still delivers meanwhile
    slot.data(1, BTC, [6])
    slot.router.handle(Opened(2), now=6.0)
    slot.data(2, BTC, [6, 7])
    assert slot.actions() == [Activate(2), Close(1)]  # a replacement, not counted as a rotation
    assert slot.router.rotations == 0 and slot.delivered[BTC] == list(range(1, 8))


def test_a_lost_connection_without_a_replacement_is_closed_and_redialled() -> None:
    slot = Slot()
    slot.open_first()
    slot.router.handle(Failed(1, Failure.HEALTH_TIMEOUT), now=3.0)
    assert slot.actions() == [Reconnected(Failure.HEALTH_TIMEOUT), Close(1), Connect(Failure.HEALTH_TIMEOUT)]
    assert not slot.router.connected()
    slot.router.handle(Failed(1, Failure.SERVER_CLOSE), now=3.1)  # its reader ending too: already given up
    slot.router.tick(3.2)
    assert slot.actions() == []  # a connection attempt is under way: no second one
    slot.router.handle(Opened(2), now=4.0)
    assert slot.actions() == [Activate(2)] and slot.router.sole == 2 and slot.router.reconnects == 1


def test_an_announced_shutdown_rotates_and_its_close_is_no_reconnect() -> None:
    slot = Slot()
    slot.open_first()
    slot.router.handle(ShutdownAnnounced(1), now=1.0)
    assert slot.actions() == [Connect(Rotation.SERVER_SHUTDOWN)]
    slot.router.handle(Failed(1, Failure.SERVER_CLOSE), now=2.0)  # closed before the new one opened
    assert slot.actions() == [Close(1)]
    slot.router.handle(Opened(2), now=2.5)
    assert slot.actions() == [Activate(2), Rotated(Rotation.SERVER_SHUTDOWN)]
    assert (slot.router.rotations, slot.router.reconnects) == (1, 0)


def test_stop_finishes_a_switch_under_way_and_attempts_nothing_more() -> None:
    slot = Slot()
    slot.start_rotation()
    slot.data(2, BTC, [11, 12])
    assert slot.router.stop(now=LIFETIME_S + 1) == [2]
    assert slot.actions() == [Rotated(Rotation.SCHEDULED), Close(1)]
    assert slot.delivered[BTC] == list(range(1, 13))
    slot.router.tick(LIFETIME_S + 50)
    slot.router.handle(Opened(3), now=LIFETIME_S + 51)  # a dial that finished anyway
    assert slot.actions() == [Close(3)]


def test_after_stop_the_closing_connection_still_delivers_until_its_close_completes() -> None:
    slot = Slot()
    slot.open_first()
    slot.data(1, BTC, [1, 2])
    assert slot.router.stop(now=10.0) == [1]
    # Frames the exchange sent before it saw our close frame arrive after stop(): they are ours.
    assert slot.router.sole == 1
    slot.data(1, BTC, [3, 4])
    assert slot.delivered[BTC] == [1, 2, 3, 4]
    slot.router.handle(Failed(1, Failure.SERVER_CLOSE), now=11.0)  # the close completed
    assert slot.actions() == [] and slot.router.reconnects == 0
