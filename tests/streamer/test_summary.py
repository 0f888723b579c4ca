from streamer.summary import format_summary, summary_from_log


def test_the_last_shutdown_summary_in_a_log_is_read_back() -> None:
    log = "\n".join(
        [
            "2026-11-27 19:00:00,000 INFO [a] streamer: " + format_summary({"received": 1, "delivered": 1}),
            "2026-11-27 19:00:05,000 INFO [a] streamer: streaming btcusdt x trade",
            "2026-11-27 19:00:12,000 INFO [a] streamer: " + format_summary({"received": 7, "delivered": 6}),
            "",
        ]
    )
    assert summary_from_log(log) == {"received": 7, "delivered": 6}


def test_no_summary_when_the_streamer_never_stopped_gracefully() -> None:
    assert summary_from_log("2026-11-27 19:00:00,000 INFO [a] streamer: streaming\n") is None
    truncated = "x INFO streamer: " + format_summary({"received": 7})[:-3]
    assert summary_from_log(truncated) is None
