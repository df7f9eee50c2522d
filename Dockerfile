# One image for every service of the mesh: `osago aggregator`, `osago gateway`, `osago bridge`,
# `osago sim` (demo installs only) and `osago health` (the Helm test hook).
#
#   docker build -t osago .
#
# The builder stage installs the pinned runtime dependencies (requirements.lock) and then the
# project itself without resolving anything again (--no-deps), into a virtual environment at
# /opt/osago. The final stage is the same slim Python base with that environment copied in: no
# compiler, no pip cache, no source tree, and a fixed non-root user (UID/GID 10001) the Helm
# chart's securityContext names.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/osago
# The dependencies first: this layer is reused until requirements.lock changes.
COPY requirements.lock ./
RUN /opt/osago/bin/pip install --no-compile -r requirements.lock
COPY . .
# setuptools comes from the lock, so the wheel builds without fetching anything.
RUN /opt/osago/bin/pip install --no-deps --no-build-isolation . \
    && /opt/osago/bin/python -m compileall -q /opt/osago/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="osago" \
      org.opencontainers.image.description="OSAGO quote aggregator: aggregator, insurer gateway, web_bridge and simulator in one image"
RUN groupadd --system --gid 10001 osago \
    && useradd --system --uid 10001 --gid osago --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin osago
COPY --from=builder /opt/osago /opt/osago
# PYTHONDONTWRITEBYTECODE: the root filesystem is read-only in the pods; the bytecode was
# compiled at build time.
ENV PATH=/opt/osago/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OSAGO_LOG_FORMAT=json
USER 10001:10001
WORKDIR /tmp
# aggregator gRPC, gateway gRPC, web_bridge HTTP, simulator HTTP, Prometheus metrics.
EXPOSE 50050 50051 8081 8480 9464
ENTRYPOINT ["osago"]
CMD ["--help"]
