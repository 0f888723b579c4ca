"""`k2 setup`: fetch what the local stack and the tests run that pip does not install.

- Apache Kafka (KRaft) and its runtime jars, from Maven Central (`k2_ops/stack/kafka-pom.xml`);
- Apicurio Registry, the Confluent-compatible Schema Registry, from Maven Central (`k2_ops/stack/registry/pom.xml`);
- the real Binance recordings the parser, replay and simulator tests read (k2_ops/samples.py).

Everything goes into the download cache (`k2_ops.paths.cache_dir()`); the poms ship in the package, so a wheel
install fetches the same versions as a checkout (`make setup` calls this). Invariant: a component counts as
fetched only when its marker file exists, written after Maven succeeded, so an interrupted fetch is redone.
System packages (Java 17, Prometheus, Alertmanager, Maven) are not installed here: `make setup` does that with
apt-get; this command names any that are missing.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from k2_ops import samples
from k2_ops.paths import APICURIO_VERSION, KAFKA_VERSION, PACKAGE_DIR, kafka_libs_dir, registry_home, shared_samples_dir

MARKER = ".fetched"
MAVEN = ["mvn", "-q", "-B", "-Dstyle.color=never"]
KAFKA_POM = PACKAGE_DIR / "stack" / "kafka-pom.xml"
REGISTRY_POM = PACKAGE_DIR / "stack" / "registry" / "pom.xml"


class FetchError(Exception):
    """A download failed; the message names the component and the command to run by hand."""


def _maven(args: list[str], what: str) -> None:
    if shutil.which("mvn") is None:
        raise FetchError(f"{what}: 'mvn' not found (apt-get install maven, or `make setup` in a checkout)")
    done = subprocess.run([*MAVEN, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise FetchError(f"{what}: mvn could not fetch it from Maven Central (exit {done.returncode}):\n{tail}")


def _fetch_once(folder: Path, what: str, maven_args: list[str]) -> bool:
    """Run Maven to fill `folder` unless its marker says it was done; False when it was."""
    if (folder / MARKER).exists():
        return False
    shutil.rmtree(folder, ignore_errors=True)
    _maven(maven_args, what)
    (folder / MARKER).touch()
    return True


def fetch_kafka(libs: Path | None = None) -> bool:
    """Kafka's runtime jars into `libs`; False when they were already there."""
    libs = libs or kafka_libs_dir()
    return _fetch_once(libs, f"Apache Kafka {KAFKA_VERSION}", [
        "-f", str(KAFKA_POM), f"-Dkafka.version={KAFKA_VERSION}", "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}"])


def fetch_registry(home: Path | None = None) -> bool:
    """The Apicurio Registry distribution unpacked into `home`; False when it was already there."""
    home = home or registry_home()
    return _fetch_once(home, f"Apicurio Registry {APICURIO_VERSION}", [
        "-f", str(REGISTRY_POM), f"-Dapicurio.version={APICURIO_VERSION}", "dependency:unpack",
        f"-Dregistry.dir={home}"])


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "setup", help="fetch Kafka, the Schema Registry and the Binance recordings into the download cache")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    steps = (
        (f"Apache Kafka {KAFKA_VERSION} jars", fetch_kafka, kafka_libs_dir()),
        (f"Apicurio Registry {APICURIO_VERSION}", fetch_registry, registry_home()),
    )
    try:
        for what, fetch, where in steps:
            began = time.monotonic()
            fetched = fetch(where)
            state = f"fetched in {time.monotonic() - began:.0f} s" if fetched else "present"
            print(f"setup: {what}: {state} ({where})")
        added = samples.fetch(shared_samples_dir())
        print(f"setup: Binance recordings: {f'fetched {len(added)}' if added else 'present'} "
              f"({shared_samples_dir()}, SHA-256 checked)")
    except (FetchError, samples.SampleError) as exc:
        print(f"setup: ERROR: {exc}", file=sys.stderr)
        return 1
    missing = [c for c in ("java", "prometheus", "promtool", "prometheus-alertmanager") if shutil.which(c) is None]
    if missing:
        print(f"setup: note: not on PATH: {', '.join(missing)} (the local stack needs them; `make setup` installs "
              "them with apt-get)", file=sys.stderr)
    return 0

