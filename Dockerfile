# BatchSpot worker image: what each AWS Batch container runs.
#
# Two stages: the first builds a virtualenv holding the worker and its runtime dependencies
# only (pyproject's [project].dependencies, never the control-plane extras); the second copies
# that venv onto a clean slim base and runs it as an unprivileged user.
#
#   docker build -t batchspot-worker .          (or: invoke build)
#
# Reproducible: the base image is pinned by digest (the multi-platform index of
# python:3.11-slim-bookworm, Python 3.11.16, as docker-library/repo-info lists it), and pip
# installs the exact versions of constraints.txt, the ones CI tests. To move the base, take the
# new digest from `docker buildx imagetools inspect python:3.11-slim-bookworm`.
#
# Where no registry is reachable, `invoke build --local-base` makes an equivalent base from
# Debian bookworm's own packages (python3, python3-venv, ca-certificates and the machine's CA
# bundle, with `python` -> python3) and passes it as BASE_IMAGE; both bases run this file alike.
# pip inside the build trusts the base's system CA bundle (PIP_CERT), so a TLS-inspecting proxy
# whose CA the base carries works too.
#
# Custom code: a Python callable under examples/ (or any package copied to /app) is importable
# as HANDLER=package.module:function, since `python -m` puts the working directory on sys.path;
# an executable goes anywhere on PATH for HANDLER_COMMAND. Derive from this image to add yours.

# checkov:skip=CKV_DOCKER_7:BASE_IMAGE defaults to a digest-pinned image (tests/terraform/test_dockerfile.py)
ARG BASE_IMAGE=python:3.11-slim-bookworm@sha256:0bee7276f83efd4a1ee05bbbf4281d95ed28e079220a9457f25a93e3f1e3c31b

FROM ${BASE_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md constraints.txt ./
COPY worker/ worker/
# Only worker/ is in the build context's copy, so the wheel holds the data plane alone.
# Compiled to bytecode here (pip's default): the root filesystem is read-only at run time and
# PYTHONDONTWRITEBYTECODE is set, so without it every process would compile botocore and
# pyarrow's Python modules on each start (bench/image.py: 1.7x slower to the first item, for
# 14 MB). pyarrow's tests and C++ headers are never used by the worker.
RUN /opt/venv/bin/pip install -c constraints.txt . \
    && rm -rf /opt/venv/lib/python3*/site-packages/pyarrow/tests \
              /opt/venv/lib/python3*/site-packages/pyarrow/include

# The same base as the build stage, so the venv's interpreter path and ABI match.
FROM ${BASE_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

RUN groupadd --system --gid 10001 worker \
    && useradd --system --uid 10001 --gid worker --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin worker

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY examples/ examples/

USER 10001:10001

# Batch watches the process, not a health endpoint: the worker exits by itself when it is done.
HEALTHCHECK NONE

CMD ["python", "-m", "worker"]
