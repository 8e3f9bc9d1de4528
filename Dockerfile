# syntax=docker/dockerfile:1
# The sagequeue server image: one image for every role (all, api, worker).
#
#   docker build -t sagequeue .
#   docker run -p 8765:8765 -v sagequeue-data:/var/lib/sagequeue sagequeue
#   docker run ... sagequeue --role worker --max-instances 2      (flags go after the image)
#
# Models run with this image's Python (each instance in its own process), so a model's own
# packages (scikit-learn, torch, ...) must be in the image: list extras in SAGEQUEUE_EXTRAS,
# or build FROM this image and pip install them (docs/deploy.md, "Images").

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Extras of pyproject.toml to install besides the server (which includes the PostgreSQL
# driver): e.g. "examples" adds the example models' scikit-learn; "" installs none.
ARG SAGEQUEUE_EXTRAS=
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/sagequeue
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN if [ -n "${SAGEQUEUE_EXTRAS}" ]; then spec=".[${SAGEQUEUE_EXTRAS}]"; else spec="."; fi \
    && /opt/sagequeue/bin/pip install "${spec}"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="sagequeue" \
      org.opencontainers.image.description="Self-hosted, wire-compatible Amazon SageMaker Asynchronous Inference" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged uid/gid: Kubernetes' runAsUser and volume ownership refer to it.
RUN groupadd --system --gid 10001 sagequeue \
    && useradd --system --uid 10001 --gid sagequeue --no-create-home \
       --home-dir /var/lib/sagequeue --shell /usr/sbin/nologin sagequeue \
    && install -d -o sagequeue -g sagequeue -m 0750 /var/lib/sagequeue
# The same path as in the build stage: the venv's scripts point at /opt/sagequeue/bin/python.
COPY --from=build /opt/sagequeue /opt/sagequeue
ENV PATH=/opt/sagequeue/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/sagequeue \
    SAGEQUEUE_HOST=0.0.0.0 \
    SAGEQUEUE_PORT=8765 \
    SAGEQUEUE_DATA_DIR=/var/lib/sagequeue
# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
WORKDIR /var/lib/sagequeue
EXPOSE 8765
# SIGTERM stops taking work, lets running invocations finish (up to 25 s) and re-queues the
# rest: give the container more than that to stop (docker stop -t 40, stop_grace_period,
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
# /healthz answers 200 once the process is ready (no answer or 503 before). Only API
# processes serve HTTP: run a worker with --no-healthcheck (compose: healthcheck disable).
# Set the port with SAGEQUEUE_PORT, not --port, so that this check finds it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('SAGEQUEUE_PORT', '8765'), timeout=2)"]
ENTRYPOINT ["sagequeue", "serve"]
