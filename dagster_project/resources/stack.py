"""Where the local stack's services listen: `<K2_RUN_DIR>/stack.json`, written by `k2 stack up` / `make run`.

Resources read it when used, not when the definitions load, so `dagster definitions validate` works without
a running stack and a restarted stack (new ports) needs no reload.
"""


from pathlib import Path

from k2_ops.paths import run_dir
from k2_ops.stack.local import read_state


def stack_run_dir(configured: str = "") -> Path:
    return Path(configured) if configured else run_dir()


def stack_url(service: str, configured_run_dir: str = "") -> str:
    """The URL `service` ("prometheus", "alertmanager", "kafka", "simulator", ...) has in the running stack."""
    folder = stack_run_dir(configured_run_dir)
    state = read_state(folder)
    if state is None:
        raise LookupError(f"no local stack state in {folder / 'stack.json'}: start the stack (`make run`) or "
                          f"configure the resource's url")
    services = state.get("services") or {}
    entry = services.get(service)
    if entry is None:
        raise LookupError(f"the local stack in {folder} has no {service!r} (it has: {', '.join(services)})")
    return str(entry["url"] if isinstance(entry, dict) else entry)
