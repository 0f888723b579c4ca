"""Sequence tracker: gaps counted with the number of missing ids, duplicates dropped, overlap made exact."""

from __future__ import annotations

from streamer.integrity import ACCEPT, DUPLICATE, SequenceTracker


def feed(tracker: SequenceTracker, key: str, stream: str, ids: list[tuple[int, int]]) -> list[int]:
    state = tracker.state(key, key.split("@")[0], stream)
    return [tracker.check(state, first, last) for first, last in ids]


def test_contiguous_trades_are_accepted() -> None:
    tracker = SequenceTracker()
    assert feed(tracker, "btcusdt@trade", "trade", [(i, i) for i in range(100, 110)]) == [ACCEPT] * 10
    state = tracker.states["btcusdt@trade"]
    assert (state.last_id, state.accepted, state.gaps, state.missing, state.duplicates) == (109, 10, 0, 0, 0)


def test_gap_counts_one_gap_and_every_missing_id() -> None:
    tracker = SequenceTracker()
    feed(tracker, "btcusdt@trade", "trade", [(1, 1), (2, 2), (6, 6), (7, 7), (10, 10)])
    state = tracker.states["btcusdt@trade"]
    assert (state.gaps, state.missing) == (2, 3 + 2)
    assert tracker.last_gap == ("btcusdt@trade", 8, 2)


def test_duplicates_and_older_ids_are_dropped() -> None:
    tracker = SequenceTracker()
    results = feed(tracker, "ethusdt@trade", "trade", [(1, 1), (2, 2), (2, 2), (1, 1), (3, 3)])
    assert results == [ACCEPT, ACCEPT, DUPLICATE, DUPLICATE, ACCEPT]
    assert tracker.totals()["duplicates"] == 2 and tracker.totals()["gaps"] == 0


def test_overlapping_connections_merge_exactly() -> None:
    """Old connection delivered 1..50; the new one replays 40..80: the merged stream is 1..80 once."""
    tracker = SequenceTracker()
    state = tracker.state("btcusdt@trade", "btcusdt", "trade")
    delivered = [i for i in range(1, 51) if tracker.check(state, i, i) == ACCEPT]
    delivered += [i for i in range(40, 81) if tracker.check(state, i, i) == ACCEPT]
    assert delivered == list(range(1, 81))
    assert (state.duplicates, state.gaps) == (11, 0)


def test_depth_ranges_chain_on_previous_final_id() -> None:
    tracker = SequenceTracker()
    results = feed(tracker, "btcusdt@depth@100ms", "depth", [(10, 14), (15, 15), (16, 20), (16, 20), (25, 30)])
    assert results == [ACCEPT, ACCEPT, ACCEPT, DUPLICATE, ACCEPT]
    state = tracker.states["btcusdt@depth@100ms"]
    assert (state.gaps, state.missing, state.duplicates) == (1, 4, 1)


def test_book_ticker_ids_only_increase_and_never_count_gaps() -> None:
    tracker = SequenceTracker()
    results = feed(tracker, "btcusdt@bookTicker", "bookTicker", [(100, 100), (104, 104), (104, 104), (90, 90)])
    assert results == [ACCEPT, ACCEPT, DUPLICATE, DUPLICATE]
    assert tracker.states["btcusdt@bookTicker"].gaps == 0


def test_streams_are_tracked_independently() -> None:
    tracker = SequenceTracker()
    feed(tracker, "btcusdt@trade", "trade", [(1, 1), (2, 2)])
    feed(tracker, "ethusdt@trade", "trade", [(1, 1), (3, 3)])
    assert tracker.states["btcusdt@trade"].gaps == 0
    assert tracker.states["ethusdt@trade"].gaps == 1
    assert tracker.last_id("btcusdt@trade") == 2 and tracker.last_id("solusdt@trade") is None


def test_a_handover_gap_is_counted_by_the_tracker_only_for_contiguous_ids() -> None:
    tracker = SequenceTracker()
    tracker.track("btcusdt", "trade")
    tracker.track("btcusdt", "bookTicker")
    assert tracker.handover_gap("btcusdt@trade", 100, 101) == 0  # resumes right after: no gap
    assert tracker.handover_gap("btcusdt@trade", 100, 104) == 3
    assert tracker.handover_gap("btcusdt@bookTicker", 100, 104) == 0  # update ids only increase
    assert tracker.handover_gap("solusdt@trade", 100, 104) == 0  # a stream this instance does not track
    assert tracker.totals()["gaps"] == 1 and tracker.totals()["missing"] == 3
    assert tracker.last_gap == ("btcusdt@trade", 101, 3)


def test_skip_to_makes_what_the_other_instance_produced_a_duplicate() -> None:
    tracker = SequenceTracker()
    state = tracker.track("btcusdt", "trade")
    tracker.check(state, 5, 5)
    tracker.skip_to("btcusdt@trade", 9)
    tracker.skip_to("btcusdt@trade", 7)  # never backwards
    assert tracker.last_id("btcusdt@trade") == 9
    assert [tracker.check(state, i, i) for i in (8, 9, 10)] == [DUPLICATE, DUPLICATE, ACCEPT]
    assert state.gaps == 0
