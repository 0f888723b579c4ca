"""What machine a benchmark ran on (CPU model, cores, RAM, Python, kernel, libraries) and how busy it was."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def source_revision(folder: Path) -> str:
    """The git commit of the code measured ("<short sha>", "+dirty" when it has uncommitted changes)."""
    import subprocess

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30)
        return done.stdout.strip() if done.returncode == 0 else ""

    sha = git("rev-parse", "--short", "HEAD")
    if not sha:
        return "unknown (not a git checkout)"
    return sha + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def describe() -> dict[str, Any]:
    try:
        import confluent_kafka

        librdkafka = confluent_kafka.libversion()[0]
    except Exception:
        librdkafka = None
    return {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "kernel": f"{platform.system()} {platform.release()}",
        "libraries": {
            "websockets": _version("websockets"),
            "confluent-kafka": _version("confluent-kafka"),
            "librdkafka": librdkafka,
            "fastavro": _version("fastavro"),
            # Installed here but not dependencies of the streamer: measured as alternatives only.
            "uvloop": _version("uvloop"),
            "orjson": _version("orjson"),
        },
        "load_average_at_start": load_average(),
    }
