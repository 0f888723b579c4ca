"""The streamer of `make run` as a local-stack service: the active color of the process backend.

Add `StreamerService(run_dir)` to `LocalStack.extra_services` after Kafka and the simulator: it starts the
active color (blue on a fresh stack) exactly as `blue_green_deploy` expects to find it (`streamer-<color>`
in the run folder, state in `<run>/deploy/`, registered with Prometheus), so deployments from the Dagster
UI hand over from it. Stopping it stops whichever colors run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from k2_ops.deploy.model import COLORS, DeployConfig
from k2_ops.deploy.probe import read_readiness
from k2_ops.deploy.settings import DeploySettings


@dataclass
class StreamerService:
    run_dir: str
    topic_prefix: str = "market.crypto.binance"
    ready_timeout_s: float = 120.0
    stop_grace_s: float = 30.0
    _settings: DeploySettings = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._settings = DeploySettings(run_dir=str(self.run_dir), topic_prefix=self.topic_prefix)

    @property
    def color(self) -> str:
        return self._settings.history().active_color()

    @property
    def url(self) -> str:
        info = self._settings.make_backend().instance(self.color)
        return info.base_url if info else ""

    @property
    def health_url(self) -> str:
        return f"{self.url}/readyz" if self.url else ""

    def start(self) -> float:
        began = time.monotonic()
        config = DeployConfig(ready_timeout_seconds=self.ready_timeout_s)
        self._settings.orchestrator().ensure_running(self.color, config)
        return time.monotonic() - began

    def stop(self) -> None:
        backend = self._settings.make_backend()
        for color in COLORS:
            backend.stop(color, self.stop_grace_s)

    def status(self) -> dict[str, object]:
        url = self.url
        return {"name": f"streamer-{self.color}", "url": url, "ready": bool(url) and read_readiness(url).ready}
