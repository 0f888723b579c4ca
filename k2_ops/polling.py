"""Waiting for a condition with a deadline: the one polling loop K2 Ops uses (never a guessed sleep).

    poll_until(lambda: broker_count() > 0, 30, "Kafka broker listed", error=ServiceError)

Each caller names what it waits for and the exception that fits its layer (ServiceError for the local
stack, BenchError for benchmarks, AssertionError in tests), so a timeout reads as a sentence.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def poll_until(
    condition: Callable[[], Any],
    timeout_s: float,
    what: str,
    *,
    interval_s: float = 0.1,
    abort: Callable[[], str | None] | None = None,
    error: type[Exception] = TimeoutError,
    retry_errors: bool = True,
) -> Any:
    """Call `condition` every `interval_s` until it returns something truthy, and return that.

    At the deadline raise `error("<what>: not reached within N s (last error: ...)")`. `abort` may return a
    reason to give up early (e.g. the process being waited for exited). With `retry_errors`, an exception
    from `condition` (a port not open yet) counts as "not yet" and is named in the timeout message.
    """
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while True:
        try:
            value = condition()
        except Exception as exc:
            if not retry_errors:
                raise
            last_error, value = exc, None
        if value:
            return value
        if abort is not None and (reason := abort()):
            raise error(f"{what}: {reason}")
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error is not None else ""
            raise error(f"{what}: not reached within {timeout_s:g} s{detail}")
        time.sleep(interval_s)
