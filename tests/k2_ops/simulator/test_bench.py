"""The simulator's message rate over TLS, measured with the simulator process pinned to one core.

Printed, never asserted (speed depends on the machine and its load); run with -s to see it, or run
`python -m k2_ops.simulator.bench` for the full ramp.
"""

from __future__ import annotations

import pytest

from k2_ops.simulator.bench import measure


@pytest.mark.slow
def test_rate_over_tls_is_measured_and_printed() -> None:
    for rate in (2_000.0, 20_000.0):
        step = measure(rate, seconds=2.0, connections=1, symbols=("btcusdt",), uvloop=False)
        print(
            f"\nsimulator over TLS at {rate:.0f} trades/s: generated {step.generated_per_s:,.0f} msg/s, "
            f"delivered {step.delivered_per_s:,.0f} msg/s, simulator CPU {step.simulator_cpu:.0%}, "
            f"{step.per_cpu_second:,.0f} msg per CPU-second"
        )
        # Functional checks only: the bench really moved messages through a real TLS connection.
        assert step.generated_per_s > 0 and step.delivered_per_s > 0 and step.simulator_cpu > 0
