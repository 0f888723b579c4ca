import itertools

import pytest

from k2_ops.polling import poll_until


def test_returns_the_first_truthy_value() -> None:
    values = iter([0, None, "", 7])
    assert poll_until(lambda: next(values), 5, "a value", interval_s=0) == 7


def test_an_error_counts_as_not_yet_and_is_named_at_the_deadline() -> None:
    calls = itertools.count()

    def flaky() -> int:
        if next(calls) < 2:
            raise ConnectionRefusedError("port not open yet")
        return 1

    assert poll_until(flaky, 5, "the port", interval_s=0) == 1

    def refused() -> int:
        raise OSError("nope")

    with pytest.raises(RuntimeError, match=r"the port: not reached within 0.05 s \(last error: nope\)"):
        poll_until(refused, 0.05, "the port", interval_s=0.01, error=RuntimeError)


def test_abort_gives_up_early_with_its_reason() -> None:
    with pytest.raises(TimeoutError, match="Kafka ready: the process exited with code 1"):
        poll_until(lambda: False, 60, "Kafka ready", abort=lambda: "the process exited with code 1")


def test_without_retry_errors_the_condition_error_propagates() -> None:
    with pytest.raises(KeyError):
        poll_until(lambda: {}["missing"], 60, "a key", retry_errors=False)
