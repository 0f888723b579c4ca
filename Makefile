# K2 Ops — the two commands are `make run` (local stack in the foreground) and `make test` (whole suite).
# Both call `make setup`, which only does what is missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the stack and tests run: Prometheus 2.42 + promtool, Alertmanager 0.25 + amtool,
# a Java 17 runtime and Maven for Kafka, Chromium for the Dagster UI browser tests, nginx (TLS + basic-auth
# reverse proxy the tests put in front of the Schema Registry).
SYSTEM_COMMANDS := prometheus promtool prometheus-alertmanager amtool java mvn chromium nginx
SYSTEM_PACKAGES := prometheus prometheus-alertmanager openjdk-17-jre-headless maven chromium nginx-light

.PHONY: setup system-packages run test test-fast lint typecheck bench clean compose-up compose-down

# `k2 setup` fetches what pip does not install (Kafka and Apicurio Registry from Maven Central, the Binance
# recordings when ../shared/binance_samples/ is absent; versions and checksums in k2_ops/paths.py and
# k2_ops/samples.py) and only what is missing.
setup: system-packages $(VENV)/.installed
	@$(PY) -m k2_ops.cli setup
	@echo "setup: complete"

system-packages:
	@missing=""; for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -z "$$missing" ]; then echo "setup: system packages present ($(SYSTEM_COMMANDS))"; exit 0; fi; \
	echo "setup: missing commands:$$missing -> apt-get install $(SYSTEM_PACKAGES)"; \
	sudo=""; [ "$$(id -u)" = 0 ] || sudo="sudo"; \
	command -v apt-get >/dev/null || { echo "setup: ERROR: apt-get not found; install$$missing by hand" >&2; exit 1; }; \
	$$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES) \
	  || { echo "setup: ERROR: apt-get install failed (needed for:$$missing)" >&2; exit 1; }; \
	for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null 2>&1 || { echo "setup: ERROR: '$$c' still missing after apt-get" >&2; exit 1; }; done
	@# Kafka 4.x and the Schema Registry need Java 17 or later: an older default `java` fails here, not later.
	@major=$$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1); \
	if [ -z "$$major" ] || [ "$$major" -lt 17 ]; then \
	  echo "setup: ERROR: 'java' is version $${major:-unknown}; Kafka 4.x needs Java 17+ (apt-get install openjdk-17-jre-headless, then select it with update-alternatives --config java)" >&2; exit 1; fi

$(VENV)/.installed: pyproject.toml
	@echo "setup: creating virtualenv $(VENV) and installing k2-platform[dev] (editable)"
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version}"' \
	  || { echo "setup: ERROR: '$(PYTHON)' is not Python 3.11 (set PYTHON=...)" >&2; exit 1; }
	@# A half-created venv (no pip: python3.11-venv missing at the time) is made again.
	@$(PY) -m pip --version >/dev/null 2>&1 || { rm -rf $(VENV); $(PYTHON) -m venv $(VENV); } \
	  || { echo "setup: ERROR: '$(PYTHON) -m venv' failed: install python3.11-venv (apt-get install python3.11-venv)" >&2; exit 1; }
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $@

run: setup
	$(PY) -m k2_ops.cli run

test: setup
	$(PY) -m ruff check .
	$(PY) -m mypy --strict streamer k2_ops dagster_project
	$(PY) -m pytest --durations=25

# The inner loop: everything but the tests marked `slow` (live soaks, clusters, deploys, browsers); CI runs all.
test-fast: setup
	$(PY) -m ruff check .
	$(PY) -m mypy --strict streamer k2_ops dagster_project
	$(PY) -m pytest -m "not slow" --durations=10

lint: setup
	$(PY) -m ruff check .

typecheck: setup
	$(PY) -m mypy --strict streamer k2_ops dagster_project

# The containerised stack (docker/compose.yaml) on a local Docker engine: installs docker.io, mmdebstrap and
# friends with apt-get if missing, starts dockerd if none runs, builds the images from Debian packages
# (k2 images build --local-bases), then `docker compose up --wait` with the simulator feeding streamer-blue.
compose-up: setup
	$(PY) -m k2_ops.cli compose up

# `docker compose down -v`, then stops the dockerd that compose-up started (by its PID).
compose-down: setup
	$(PY) -m k2_ops.cli compose down

# The full benchmark with the per-stage profile (docs/performance.md); about 9 minutes.
bench: setup
	$(PY) -m k2_ops.cli bench --profile

clean:
	rm -rf .run
