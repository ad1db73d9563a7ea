# syntax=docker/dockerfile:1
#
# Two images from one file:
#   target `app` (the last stage, so a plain `docker build .` gives it): the `ingest` CLI, installed
#     from uv.lock. docker-compose.yml runs mock-api, receiver, relay, metrics and migrate from it.
#   target `airflow`: apache/airflow with the project installed, because the DAG factory imports
#     `ingest` and LocalExecutor tasks run inside the Airflow container.

ARG AIRFLOW_VERSION=3.3.2

# -- airflow --------------------------------------------------------------------------------------
FROM apache/airflow:${AIRFLOW_VERSION} AS airflow
ARG AIRFLOW_VERSION
COPY --chown=airflow:0 pyproject.toml uv.lock README.md /opt/ingest/
COPY --chown=airflow:0 src /opt/ingest/src
# Pinning apache-airflow alongside the project is Airflow's documented way to extend its image: pip
# must not up- or downgrade Airflow itself while resolving the project's dependencies.
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/ingest

# -- app ------------------------------------------------------------------------------------------
FROM python:3.11-slim AS app

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    INGEST_HOME=/var/lib/ingest

WORKDIR /build
RUN pip install --no-cache-dir "uv==0.13.8"

# Dependencies first, from the lock alone, so a source change does not reinstall them.
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src ./src
# --no-editable: the venv must not point back into /build/src.
RUN uv sync --frozen --no-dev --no-editable

# Non-root at run time; INGEST_HOME is the only place the CLI writes to.
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/ingest ingest \
    && mkdir -p "$INGEST_HOME" \
    && chown ingest:ingest "$INGEST_HOME"
USER ingest
WORKDIR /home/ingest

EXPOSE 8000 8080 9108
ENTRYPOINT ["ingest"]
CMD ["--help"]
