"""What `make run` starts on the core stack, and what `k2 stack status` reports of it."""

from __future__ import annotations

from pathlib import Path

from k2_ops.deploy.service import StreamerService
from k2_ops.paths import home_dir
from k2_ops.stack.apps import DagsterProcess, SimulatorProcess
from k2_ops.stack.local import Service, probe, read_state, running_services


def app_services(run_dir: Path, scrape_interval_s: float, with_dagster: bool = True) -> dict[str, Service]:
    """What `make run` adds to the core stack, in start order: simulator, the active streamer, Dagster UI."""
    services: dict[str, Service] = {
        "simulator": SimulatorProcess(run_dir),
        "streamer": StreamerService(str(run_dir)),
    }
    if with_dagster:
        services["dagster"] = DagsterProcess(run_dir, env={
            "K2_RUN_DIR": str(run_dir),
            # Its runs work in the run folder: the download cache stays the stack's, not one made there.
            "K2_HOME": str(home_dir()),
            "K2_PROMETHEUS_SCRAPE_INTERVAL_SECONDS": f"{scrape_interval_s:g}",
        })
    return services


def _current_streamer(run_dir: Path) -> dict[str, str] | None:
    """The active color's streamer now: a deployment or rollback may have replaced the one `up` started."""
    try:
        streamer = StreamerService(str(run_dir))
        return {"url": streamer.url, "health_url": streamer.health_url} if streamer.url else None
    except (LookupError, OSError, ValueError):
        return None


def status_report(run_dir: Path) -> list[dict[str, object]]:
    """Each recorded service with its URL, whether its process lives, and whether it answers."""
    state = read_state(run_dir) or {"services": {}}
    if "streamer" in state["services"] and (current := _current_streamer(run_dir)):
        state["services"]["streamer"] = current
    alive = set(running_services(run_dir))
    return [
        {
            "name": name,
            "url": entry["url"],
            # A service may run as several named processes (the streamer as streamer-blue / streamer-green).
            "running": name in alive or any(process.startswith(f"{name}-") for process in alive),
            "healthy": probe(entry["health_url"]),
        }
        for name, entry in state["services"].items()
    ]
