# secrets-agent container image.
#
#   docker build -t secrets-agent:0.1.0 .
#   docker run --rm --read-only --tmpfs /secrets secrets-agent:0.1.0 --help
#
# Two stages: the builder makes the wheel and installs it with its runtime dependencies into a virtualenv;
# the final image copies only that virtualenv onto the same Python base. No compiler is needed (every
# dependency ships wheels for CPython 3.11 on amd64 and arm64), so none is installed in either stage.
#
# The base is pinned to an exact Python patch release and Debian release. Both stages MUST use the same
# image: the virtualenv's interpreter is a symlink to the base image's /usr/local/bin/python3.11. To pin a
# digest as well: docker buildx imagetools inspect python:3.11.15-slim-bookworm, then build with
# --build-arg PYTHON_IMAGE=python:3.11.15-slim-bookworm@sha256:<digest>.
ARG PYTHON_IMAGE=python:3.11.15-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder

# No pip cache in a layer, no version check, no bytecode written as a side effect of building.
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/opt/venv

WORKDIR /src
# pyproject.toml names README.md as the package's long description, so the build needs it; constraints.txt
# pins every runtime dependency to the versions `make test` ran against.
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY agent/ agent/

# The wheel, then a virtualenv holding only that wheel and its runtime dependencies, with the extras the
# image supports: pubsub (Secret Manager events) and postgres (the PostgreSQL rotation provider). The
# virtualenv gets no pip of its own (--without-pip): the base image's pip installs into it (--python).
RUN python -m pip wheel --no-deps --wheel-dir dist . \
 && python -m venv --without-pip "$VIRTUAL_ENV" \
 && wheel="$(find dist -name 'secrets_agent-*.whl')" \
 && python -m pip --python "$VIRTUAL_ENV/bin/python" install --no-compile \
        --constraint constraints.txt "${wheel}[pubsub,postgres]"

# Bytecode for every module, now: at run time the root filesystem is read-only and nothing may be written.
# unchecked-hash .pyc files are used without looking at the sources' timestamps, so they stay valid whatever
# mtimes the layers end up with (a build with rewritten timestamps, for example).
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash "$VIRTUAL_ENV"


FROM ${PYTHON_IMAGE}

ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="secrets-agent" \
      org.opencontainers.image.description="Hands every pod its secrets from Google Cloud Secret Manager" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# The same non-root identity as distroless images (nonroot, 65532), with a passwd entry so that HOME and
# the user name resolve. No home directory is created: nothing is written there.
RUN groupadd --system --gid 65532 nonroot \
 && useradd --system --no-log-init --uid 65532 --gid 65532 --home-dir /home/nonroot --no-create-home \
        --shell /usr/sbin/nologin nonroot

# Bytecode for the interpreter's standard library as well, in the same never-rechecked form: whatever the
# base image ships, imports read .pyc files and never write or recompile at run time.
RUN python -m compileall -q -j 0 --invalidation-mode unchecked-hash /usr/local/lib/python3.11

COPY --from=builder /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/nonroot

USER 65532:65532
WORKDIR /
# 8731: /healthz, /readyz and /metrics. The secrets endpoint (8730) listens on the pod's loopback only.
EXPOSE 8731
ENTRYPOINT ["secrets-agent"]
CMD ["--help"]
