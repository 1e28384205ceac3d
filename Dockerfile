# syntax=docker/dockerfile:1
# gitlab-dora-proxy: `dora-proxy serve` as a non-root user, listening on 0.0.0.0:8080.
#   docker build -t gitlab-dora-proxy .
#   docker run -e DORA_PROXY_UPSTREAM_URL=https://gitlab.example.com -p 8080:8080 gitlab-dora-proxy
# Several replicas: deploy/docker-compose.yml (shared Redis cache behind a load balancer).

ARG PYTHON_IMAGE=python:3.11.16-slim-bookworm

# ---- builder: wheels of the locked dependencies (hash-checked) and of the project itself ------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# requirements.lock (pip-compile --generate-hashes, see docs/decisions.md) pins every runtime
# dependency, Redis client included, by version and sha256: two builds get the same bytes.
COPY requirements.lock ./
RUN pip wheel --require-hashes --no-deps --wheel-dir /wheels/deps -r requirements.lock \
    && cp requirements.lock /wheels/
COPY pyproject.toml README.md LICENSE ./
COPY proxy ./proxy
RUN pip wheel --no-deps --wheel-dir /wheels/project .

# ---- runtime: installs those wheels offline; no compiler, no sources, no pip cache ----------
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Dependencies only from the lock (hashes checked again), then the project with --no-deps: nothing
# unpinned can slip in.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links /wheels/deps --require-hashes \
       -r /wheels/requirements.lock \
    && pip install --no-index --no-deps /wheels/project/*.whl

# Keep VERSION equal to proxy/__init__.py's __version__ (tests/system/test_container.py checks).
# SOURCE_URL: the repository the image is built from, e.g. --build-arg SOURCE_URL=https://...
ARG VERSION=0.1.0
ARG SOURCE_URL=""
LABEL org.opencontainers.image.title="gitlab-dora-proxy" \
      org.opencontainers.image.description="GitLab Ultimate's DORA metrics API for every GitLab tier" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="MIT"

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
