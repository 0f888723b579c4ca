"""Read a streamer's `/metrics` directly (the soak runner needs no Prometheus): fetch, parse with
prometheus_client's parser, and turn a run of scrapes into series for the criteria."""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from k2_ops.validation.series import Series

LabelKey = tuple[tuple[str, str], ...]


class ScrapeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Scrape:
    """One scrape: its time and every sample as (name, labels, value)."""

    time: float
    samples: tuple[tuple[str, LabelKey, float], ...]

    def values(self, name: str, **labels: str) -> list[float]:
        return [
            value
            for sample_name, sample_labels, value in self.samples
            if sample_name == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
        ]

    def total(self, name: str, **labels: str) -> float | None:
        """Sum over the metric's label sets; None when the metric is absent."""
        found = self.values(name, **labels)
        return sum(found) if found else None

    def maximum(self, name: str) -> float | None:
        found = self.values(name)
        return max(found) if found else None


def metrics_url(url: str) -> str:
    """The /metrics URL for a streamer's base URL or its /metrics URL."""
    url = url.rstrip("/")
    return url if url.endswith("/metrics") else f"{url}/metrics"


def fetch_metrics(url: str, timeout_seconds: float = 5.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as response:
            body: bytes = response.read()
            return body.decode("utf-8", errors="replace")
    except (urllib.error.URLError, TimeoutError, OSError) as error:
        raise ScrapeError(f"cannot scrape {url}: {getattr(error, 'reason', error)}") from error


def parse_metrics(text: str, at: float) -> Scrape:
    """Parse Prometheus text exposition; `_created` samples (creation timestamps) are left out."""
    samples = []
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                samples.append((sample.name, tuple(sorted(sample.labels.items())), float(sample.value)))
    except ValueError as error:
        raise ScrapeError(f"unparsable /metrics text: {error}") from error
    return Scrape(at, tuple(samples))


def raw_series(scrapes: Sequence[Scrape]) -> list[Series]:
    """Series per (name, label set) across scrapes, labels including `__name__` (see criteria.select_series)."""
    points: dict[tuple[str, LabelKey], list[tuple[float, float]]] = {}
    for scrape in scrapes:
        for name, labels, value in scrape.samples:
            points.setdefault((name, labels), []).append((scrape.time, value))
    return [Series({"__name__": name, **dict(labels)}, values) for (name, labels), values in points.items()]
