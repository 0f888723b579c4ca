"""Print requirement lines from pyproject.toml, the one dependency list of the project (stdlib only: it runs in
the image builds before anything is installed).

    python docker/pyproject_requirements.py pyproject.toml            # [project].dependencies
    python docker/pyproject_requirements.py pyproject.toml --streamer # the streamer image's subset

The streamer image's subset is named in [tool.k2.streamer-image].packages (names only: the ranges and extras
are those of [project].dependencies, so they cannot drift apart).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def requirements(pyproject: Path, streamer_only: bool = False) -> list[str]:
    document = tomllib.loads(pyproject.read_text())
    dependencies: list[str] = document["project"]["dependencies"]
    if not streamer_only:
        return list(dependencies)
    wanted = [_name(n) for n in document["tool"]["k2"]["streamer-image"]["packages"]]
    by_name = {_name(r): r for r in dependencies}
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise ValueError(f"[tool.k2.streamer-image] names packages that are not dependencies: {missing}")
    return [by_name[n] for n in wanted]


if __name__ == "__main__":
    print("\n".join(requirements(Path(sys.argv[1]), streamer_only="--streamer" in sys.argv[2:])))
