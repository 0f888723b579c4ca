"""Blue-green deployment of the streamer: pure logic, two backends (process, compose), history and rollback.

Dagster (`dagster_project/`) and the `k2 deploy` CLI only orchestrate what lives here:
- `model`: colors, the deploy config (every duration a float in seconds), the state passed between steps;
- `backend`: the `DeploymentBackend` interface; `process_backend` (local, tests) and `compose` (production);
- `probe`: `/readyz` polling with a deadline and `/metrics` sampling (rates, errors, reconnects);
- `handover`: the streamer's control endpoint client for the exact (zero gap, zero duplicate) handover;
- `audit`: duplicate and gap counting by (symbol, trade id) from Kafka;
- `orchestrator`: the steps of a deployment, cutover, automatic rollback with measured time;
- `history`: deployment records in a JSON-lines file.
"""

from k2_ops.deploy.backend import DeploymentBackend, InstanceInfo
from k2_ops.deploy.history import DeploymentHistory
from k2_ops.deploy.model import COLORS, DeployConfig, DeploymentError, DeploymentState, other_color

__all__ = [
    "COLORS",
    "DeployConfig",
    "DeploymentBackend",
    "DeploymentError",
    "DeploymentHistory",
    "DeploymentState",
    "InstanceInfo",
    "other_color",
]
