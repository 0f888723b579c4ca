# K2 Dagster image (k2-dagster:<tag>): dagster-webserver and dagster-daemon for the compose stack, with the
# project installed, dagster-postgres for the instance storage, and the Docker CLI + compose plugin that the
# compose deployment backend of blue_green_deploy runs. Build from the repository root:
#
#   docker compose -f docker/compose.yaml build dagster-webserver
#
# BuildKit reads docker/dagster.Dockerfile.dockerignore (next to this file) for the build context.

ARG PYTHON_IMAGE=python:3.11-slim
ARG DOCKER_CLI_IMAGE=docker:28-cli

# Statically linked docker CLI and its compose/buildx plugins, copied from Docker's official CLI image.
FROM ${DOCKER_CLI_IMAGE} AS docker-cli

FROM ${PYTHON_IMAGE}

ARG VERSION=2.0.0
LABEL org.opencontainers.image.title="k2-dagster" \
      org.opencontainers.image.description="K2 Ops Dagster webserver and daemon (k2-platform)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.vendor="K2 Ops" \
      org.opencontainers.image.base.name="python:3.11-slim"

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    PATH=/opt/dagster/venv/bin:$PATH

COPY --from=docker-cli /usr/local/bin/docker /usr/local/bin/docker
COPY --from=docker-cli /usr/local/libexec/docker/cli-plugins /usr/local/libexec/docker/cli-plugins

RUN groupadd --system --gid 10001 dagster \
    && useradd --system --uid 10001 --gid 10001 --home-dir /opt/dagster --shell /usr/sbin/nologin dagster

# Dependencies first (cached while only the source changes): the project's own list (pyproject.toml's
# [project].dependencies, via docker/pyproject_requirements.py) and the Postgres storage of Dagster
# (dagster-postgres 0.29.x pairs with dagster 1.13.x). SQLAlchemy stays on 2.0: 2.1 makes `postgresql://` mean
# psycopg 3 instead of dagster-postgres's psycopg2 (measured: the webserver then fails at start without
# psycopg, and with it every launchRun fails with "the connection is closed").
WORKDIR /opt/dagster/app
COPY pyproject.toml README.md ./
COPY docker/pyproject_requirements.py docker/pyproject_requirements.py
RUN python -m venv /opt/dagster/venv \
    && python docker/pyproject_requirements.py pyproject.toml > /tmp/project-requirements.txt \
    && pip install --requirement /tmp/project-requirements.txt "dagster-postgres>=0.29,<0.30" "sqlalchemy>=2.0,<2.1"

# The repository (minus the dockerignore list). Installed editable so k2_ops.paths.REPO_ROOT is this folder:
# the rules, docker/compose.yaml and the .run state folder are where the code expects them.
COPY . /opt/dagster/app
RUN pip install --no-deps --editable /opt/dagster/app \
    && mkdir -p /opt/dagster/dagster_home /opt/dagster/storage /opt/dagster/app/.run \
    && chown -R dagster:dagster /opt/dagster/dagster_home /opt/dagster/storage /opt/dagster/app/.run \
    && docker --version && docker compose version \
    && python -c "import dagster, dagster_postgres, k2_ops, streamer"

USER 10001:10001
EXPOSE 3000
# Compose sets the entrypoint per service (dagster-webserver / dagster-daemon run); this default serves the UI.
ENTRYPOINT ["dagster-webserver", "--host", "0.0.0.0", "--port", "3000", "--workspace", "/opt/dagster/app/docker/dagster/workspace.yaml"]
