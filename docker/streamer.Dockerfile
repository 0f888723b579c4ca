# K2 streamer image, tagged k2-platform:<version> (the blue-green deploy job's default is
# k2-platform:v2.0-stable). Build from the repository root; compose does it for you:
#
#   docker build -f docker/streamer.Dockerfile -t k2-platform:v2.0-stable .
#   docker compose -f docker/compose.yaml build streamer-blue
#
# BuildKit reads docker/streamer.Dockerfile.dockerignore (next to this file) instead of a root .dockerignore:
# .venv, .cache, .run, tests and the other local folders never enter the build context.
#
# What it holds: Python 3.11 (slim), a virtualenv with the streamer's runtime dependencies only
# (pyproject.toml's [tool.k2.streamer-image] subset of the dependencies: no Dagster, no matplotlib, no dev tools) and the k2-platform wheel
# installed without its dependencies. It runs as an unprivileged user and its PID 1 is the streamer itself.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: the project's wheel and the runtime virtualenv ------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Requirements first: this layer stays cached while only the source changes. The list is pyproject.toml's
# [project].dependencies, the subset named in [tool.k2.streamer-image].
COPY pyproject.toml docker/pyproject_requirements.py /src/
RUN python -m venv /opt/k2 \
    && python /src/pyproject_requirements.py /src/pyproject.toml --streamer > /tmp/streamer-requirements.txt \
    && /opt/k2/bin/pip install --requirement /tmp/streamer-requirements.txt
# The wheel's inputs: pyproject.toml (+ the README it names) and the streamer package only. k2_ops and
# dagster_project stay out, so the wheel built here carries just `streamer` (with its Avro schemas).
COPY README.md /src/
COPY streamer /src/streamer
RUN /opt/k2/bin/pip wheel --no-deps --wheel-dir /wheels /src \
    && /opt/k2/bin/pip install --no-deps /wheels/k2_platform-*.whl \
    && /opt/k2/bin/python -c "import streamer.app, streamer.__main__"

# ---- runtime ------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# Keep VERSION equal to [project].version in pyproject.toml (a test checks it); compose passes it too.
ARG VERSION=2.0.0
ARG VCS_REF=unknown
ARG BUILD_DATE=unknown
LABEL org.opencontainers.image.title="k2-streamer" \
      org.opencontainers.image.description="K2 Ops Binance WebSocket -> Avro -> Kafka streamer (k2-platform)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${VCS_REF}" \
      org.opencontainers.image.created="${BUILD_DATE}" \
      org.opencontainers.image.vendor="K2 Ops" \
      org.opencontainers.image.base.name="python:3.11-slim" \
      org.opencontainers.image.ref.name="k2-platform:${VERSION}"

# A fixed numeric uid/gid so volume permissions and runAsNonRoot checks do not depend on /etc/passwd.
RUN groupadd --system --gid 10001 k2 \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin k2

COPY --from=build /opt/k2 /opt/k2

# K2_METRICS_HOST: the streamer's default (127.0.0.1) is unreachable from other containers, so /metrics,
# /healthz and /readyz listen on every interface of the container; the port is published by compose.
ENV PATH=/opt/k2/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    K2_METRICS_HOST=0.0.0.0 \
    K2_METRICS_PORT=8000

USER 10001:10001
WORKDIR /tmp
EXPOSE 8000

# docker stop sends SIGTERM to PID 1. The exec-form ENTRYPOINT makes PID 1 the streamer's own Python process
# (no shell in between to swallow the signal); the streamer handles SIGTERM itself: it stops reading, flushes
# Kafka within K2_SHUTDOWN_FLUSH_TIMEOUT_SECONDS, closes its WebSockets with code 1000 and exits 0. Give
# `docker stop --time` / compose's stop_grace_period more than that flush timeout.
STOPSIGNAL SIGTERM

# Liveness: /healthz answers 200 while the event loop runs. Python's urllib, so the image needs no curl; a
# non-2xx answer or no answer raises, and the uncaught exception exits 1 (= unhealthy).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('K2_METRICS_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["k2-streamer"]
