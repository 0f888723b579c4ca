"""End-to-end latency the streamer measures itself, exported as two Prometheus histograms per stream kind:

- `binance_event_to_ack_seconds`: the exchange's event time (`E`) -> Kafka's delivery acknowledgement;
- `binance_receive_to_ack_seconds`: the frame's arrival on this host -> Kafka's acknowledgement.

The first is what a consumer of the data experiences; it includes the network from the exchange and the
difference between the exchange's clock and this host's (both are wall clocks; the recordings in
`../shared/binance_samples` show a host 1.27 s behind Binance). The second uses this host's clock at both
ends, so no clock difference enters it: the pipeline's own latency (parse, Avro, Kafka, replication).

Invariants:
- only the Kafka poll thread records (`record`), the scrape reads a snapshot (`snapshot`): each histogram's
  counts and sum sit in one list, copied in one step under the GIL, so a scrape never sees a bucket count
  above the total;
- a latency below 0 s (an event stamped ahead of this host's clock) is recorded as 0 s and counted in
  `clock_ahead`, exported as `binance_event_time_ahead_total`: the skew is visible, never a negative sample;
- kinds without an exchange event time (spot `bookTicker`) record receive -> ack only.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

# 1 ms .. 10 s: a healthy pipeline acknowledges in a few ms; an outage or a broker election shows in seconds.
BUCKETS: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SUM = len(BUCKETS) + 1  # index of the sum in a histogram's list; the +Inf count is at len(BUCKETS)


class Histogram:
    """Counts per bucket (non-cumulative) and the sum, in one list: [b0, .., b12, +Inf, sum]."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        self.values: list[float] = [0] * (len(BUCKETS) + 1) + [0.0]

    def observe(self, seconds: float) -> None:
        values = self.values
        values[bisect_left(BUCKETS, seconds)] += 1
        values[_SUM] += seconds

    def snapshot(self) -> tuple[list[float], float, int]:
        """(cumulative counts per bound incl. +Inf, sum, count) of one consistent copy."""
        values = list(self.values)
        cumulative: list[float] = []
        total = 0
        for count in values[:_SUM]:
            total += int(count)
            cumulative.append(total)
        return cumulative, values[_SUM], total


class AckLatency:
    """The two histograms per stream kind, and the count of events stamped ahead of this host's clock."""

    def __init__(self, kinds: Iterable[str]) -> None:
        # Every kind's histograms exist from the start (the poll thread never adds a key under a scrape);
        # `exported` are the kinds configured, the only ones the scrape shows.
        self.event_to_ack = {kind: Histogram() for kind in kinds}
        self.receive_to_ack = {kind: Histogram() for kind in kinds}
        self.clock_ahead = {kind: 0 for kind in self.event_to_ack}
        self.exported: list[str] = []

    def export(self, kind: str) -> None:
        if kind in self.event_to_ack and kind not in self.exported:
            self.exported.append(kind)

    def record(self, kind: str, event_ms: int | None, received_ms: int, acked_s: float) -> None:
        """One acknowledged message (called in the Kafka poll thread): times are this host's wall clock. An
        unknown kind is ignored (never raises in the poll thread)."""
        # Histogram.observe written out twice: two Python calls less per acknowledgement.
        receive = self.receive_to_ack.get(kind)
        if receive is None:
            return
        latency = acked_s - received_ms / 1000
        if latency < 0:
            latency = 0.0
        values = receive.values
        values[bisect_left(BUCKETS, latency)] += 1
        values[_SUM] += latency
        if event_ms is None:
            return
        latency = acked_s - event_ms / 1000
        if latency < 0:
            self.clock_ahead[kind] += 1
            latency = 0.0
        values = self.event_to_ack[kind].values
        values[bisect_left(BUCKETS, latency)] += 1
        values[_SUM] += latency


class AckLatencyCollector:
    """Exports an `AckLatency` at scrape time, labelled like every streamer metric (`instance`, `stream`)."""

    def __init__(self, instance: str, latency: AckLatency) -> None:
        self.instance = instance
        self.latency = latency

    def describe(self) -> Iterable[Metric]:
        return self._families(with_samples=False)

    def collect(self) -> Iterable[Metric]:
        return self._families(with_samples=True)

    def _families(self, with_samples: bool) -> list[Metric]:
        labels = ["instance", "stream"]
        event = HistogramMetricFamily(
            "binance_event_to_ack_seconds",
            "Exchange event time (E) to Kafka delivery acknowledgement, seconds; includes the exchange/host "
            "clock difference (negative values count as 0 and in binance_event_time_ahead_total)",
            labels=labels)
        receive = HistogramMetricFamily(
            "binance_receive_to_ack_seconds",
            "Frame received on this host to Kafka delivery acknowledgement, seconds (this host's clock only)",
            labels=labels)
        ahead = CounterMetricFamily(
            "binance_event_time_ahead", "Acknowledged events whose exchange time was ahead of this host's clock",
            labels=labels)
        if with_samples:
            bounds = [*(repr(float(b)) for b in BUCKETS), "+Inf"]  # "0.001" .. "10.0", as prometheus_client writes
            for kind in self.latency.exported:
                for family, histograms in ((event, self.latency.event_to_ack),
                                           (receive, self.latency.receive_to_ack)):
                    cumulative, total_s, _ = histograms[kind].snapshot()
                    family.add_metric([self.instance, kind], list(zip(bounds, cumulative, strict=True)), total_s)
                ahead.add_metric([self.instance, kind], self.latency.clock_ahead[kind])
        return [event, receive, ahead]
