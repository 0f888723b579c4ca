"""The interface both deployment backends implement: start, stop and locate one color's streamer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceInfo:
    color: str
    # Where /metrics, /healthz, /readyz and /handover answer.
    base_url: str
    image: str
    standby: bool
    started_at: float


class DeploymentBackend(ABC):
    """One streamer per color. Implementations keep their state on disk: each Dagster step may run in a
    different process, and a rollback run must find the instances a deploy run started."""

    name: str

    @abstractmethod
    def build(self, image: str) -> str:
        """Make `image` available; return what was done (for the run log)."""

    @abstractmethod
    def start(self, color: str, image: str, *, standby: bool, env: Mapping[str, str] | None = None) -> InstanceInfo:
        """Start `color` (standby = connect and buffer without producing). Returns at once; poll readiness."""

    @abstractmethod
    def stop(self, color: str, grace_seconds: float) -> None:
        """Graceful stop (SIGTERM: the streamer flushes Kafka and closes with 1000), killed after it."""

    @abstractmethod
    def is_running(self, color: str) -> bool: ...

    @abstractmethod
    def instance(self, color: str) -> InstanceInfo | None:
        """The last started instance of `color` (also after a restart of the caller), or None."""

    @abstractmethod
    def exit_reason(self, color: str) -> str | None:
        """Why `color` stopped by itself (exit code and log tail), or None while it runs."""

    def base_url(self, color: str) -> str:
        info = self.instance(color)
        if info is None:
            raise LookupError(f"no {color} instance was started by the {self.name} backend")
        return info.base_url
