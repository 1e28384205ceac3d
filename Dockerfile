# syntax=docker/dockerfile:1
# gitlab-dora-proxy: `dora-proxy serve` as a non-root user, listening on 0.0.0.0:8080.
#   docker build -t gitlab-dora-proxy .
#   docker run -e DORA_PROXY_UPSTREAM_URL=https://gitlab.example.com -p 8080:8080 gitlab-dora-proxy
# Several replicas: deploy/docker-compose.yml (shared Redis cache behind a load balancer).

ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm

# ---- builder: the project's wheel plus wheels of every dependency (Redis client included) ----
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip wheel --wheel-dir /wheels ".[redis]"

# ---- runtime: installs those wheels offline; no compiler, no sources, no pip cache ----------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index /wheels/*.whl

# A fixed uid/gid, so a bind-mounted cache directory can be chowned to it on the host. The
# cache directory must belong to the proxy's user and be 0700: the disk cache refuses others.
RUN groupadd --system --gid 10001 dora \
    && useradd --system --uid 10001 --gid dora --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin dora \
    && install -d -m 0700 -o dora -g dora /var/cache/dora-proxy

ENV DORA_PROXY_HOST=0.0.0.0 \
    DORA_PROXY_PORT=8080 \
    DORA_PROXY_CACHE_DIR=/var/cache/dora-proxy \
    DORA_PROXY_LOG_FORMAT=json
VOLUME ["/var/cache/dora-proxy"]
USER 10001:10001
EXPOSE 8080
# slim has no curl: ask /-/health with the standard library (non-2xx or no answer: unhealthy).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen('http://127.0.0.1:%s/-/health' % os.environ.get('DORA_PROXY_PORT', '8080'), timeout=4)"]
ENTRYPOINT ["dora-proxy", "serve"]
