"""After a cutover: when has the active color been unready long enough to roll back? (pure, for the sensor)"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class WatchState:
    deployment_id: str | None = None
    unready_since: float | None = None
    rollback_requested: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> WatchState:
        return cls(**data) if data else cls()


def decide(state: WatchState, deployment_id: str, ready: bool, now: float, unhealthy_seconds: float
           ) -> tuple[WatchState, bool]:
    """The next state, and whether to launch a rollback now (at most once per deployment)."""
    if state.deployment_id != deployment_id:
        state = WatchState(deployment_id=deployment_id)
    if ready:
        return WatchState(deployment_id, None, state.rollback_requested), False
    since = state.unready_since if state.unready_since is not None else now
    if state.rollback_requested or now - since < unhealthy_seconds:
        return WatchState(deployment_id, since, state.rollback_requested), False
    return WatchState(deployment_id, since, True), True
