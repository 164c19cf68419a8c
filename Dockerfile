# syntax=docker/dockerfile:1
#
# xconv container image.
#   native:  builds the transform's native fast path (native/, Rust) into an abi3 wheel
#            with maturin (pinned by requirements/constraints.txt; crates per Cargo.lock)
#   builder: installs the pinned dependencies (requirements/constraints.txt), then the
#            wheel and the native wheel, into a virtualenv at /opt/venv
#   runtime: the same slim Python base with only that virtualenv copied in
# The runtime runs as UID/GID 10001, writes nothing outside /tmp, and works with a
# read-only root filesystem (mount an emptyDir / tmpfs at /tmp).
ARG PYTHON_IMAGE=python:3.11-slim
ARG RUST_IMAGE=rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS native
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements/constraints.txt ./requirements/
RUN python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install -c requirements/constraints.txt maturin
COPY native ./native
RUN /opt/maturin/bin/maturin build --release --locked --compatibility linux \
      --manifest-path native/Cargo.toml --out /wheels

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
# Dependencies first, in their own layer, pinned by requirements/constraints.txt (the same
# pins `make venv` and CI install): this layer is rebuilt only when pyproject.toml or the
# constraints change, not when only code changes. The build backend (pyproject's
# build-system) goes, pinned too, into a separate build venv, never into /opt/venv.
COPY pyproject.toml ./
COPY requirements/constraints.txt ./requirements/
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" >/tmp/requirements.txt \
 && python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))" >/tmp/build-requirements.txt \
 && /opt/venv/bin/pip install -c requirements/constraints.txt -r /tmp/requirements.txt \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install -c requirements/constraints.txt -r /tmp/build-requirements.txt
# Then the package itself, without touching the dependencies installed above.
COPY README.md CHANGELOG.md ./
COPY consumer ./consumer
COPY schemas ./schemas
COPY --from=native /wheels/ /native-wheels/
RUN /opt/build/bin/pip wheel --no-build-isolation --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps /wheels/*.whl /native-wheels/*.whl \
 && /opt/venv/bin/python -c "import xconv_native" \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m compileall -q /opt/venv \
 && /opt/venv/bin/xconv --version

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="xconv" \
      org.opencontainers.image.description="Kafka purchase events to X (Twitter) Ads Web Conversions: batched, rate-paced, at-least-once." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"
RUN groupadd --system --gid 10001 xconv \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /tmp --shell /usr/sbin/nologin xconv
COPY --from=builder /opt/venv /opt/venv
# Bytecode is precompiled in the builder; never write .pyc at run time (read-only root).
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp
WORKDIR /tmp
USER 10001:10001
# /metrics, /healthz (liveness) and /readyz (readiness): observability.http_port
EXPOSE 9464
STOPSIGNAL SIGTERM
ENTRYPOINT ["xconv"]
CMD ["run", "--config", "/etc/xconv/config.toml"]
