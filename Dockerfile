# syntax=docker/dockerfile:1
#
# news-monitor container image.
#
#   docker build -t news-monitor .
#   docker run -v "$PWD/config:/config:ro" -v monitor-data:/data -p 9108:9108 \
#     -e MONITOR_SLACK_URL=slack://... news-monitor
#
# Volumes:
#   /config  configuration. The image holds a copy of the shipped config/; mount your
#            own directory over it (monitor.yaml plus the files it includes).
#   /data    working directory and the default SQLite database. Set
#            MONITOR_DATABASE_URL=postgresql+psycopg://... to use PostgreSQL instead.
# Port 9108 serves /healthz and /metrics.

# --- build: the project and every dependency as wheels (no dev extras) -----------------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# README.md is the package's long description (pyproject.toml: readme).
COPY pyproject.toml README.md ./
COPY monitor ./monitor
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# --- runtime ------------------------------------------------------------------------
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    MONITOR_CONFIG=/config/monitor.yaml \
    MONITOR_SERVER_HOST=0.0.0.0 \
    MONITOR_DATABASE_URL=sqlite:////data/monitor.db

RUN groupadd --system --gid 10001 monitor \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --no-create-home \
            --shell /usr/sbin/nologin monitor \
 && mkdir -p /config /data \
 && chown 10001:10001 /data

# Install from the build stage's wheels only (no index, no compiler in this image); the
# versions are the ones the build stage resolved, so there is nothing to pin here.
# hadolint ignore=DL3013
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels news-monitor \
 && monitor --version

# The default configuration: the shipped config/ (monitor.yaml and watchlists/).
COPY config/ /config/

VOLUME ["/config", "/data"]
WORKDIR /data
USER 10001:10001
EXPOSE 9108

# /healthz answers 200 when the database answers, 503 otherwise (its own DB check waits up
# to 5 s). The image has no curl, so the check uses Python's urllib. Any error (refused,
# timeout, 503) exits 1 with a one-line reason in `docker inspect` (tracebacklimit=0).
# A config that moves server.port must override this check.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.tracebacklimit = 0; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9108/healthz', timeout=8).status == 200 else 1)"]

# The daemon stops scheduling on SIGTERM, lets in-flight sends finish, and exits within 10 s.
STOPSIGNAL SIGTERM
ENTRYPOINT ["monitor"]
CMD ["run", "--config", "/config/monitor.yaml"]
