# BatchSpot worker image: what each AWS Batch container runs.
#
# Two stages: the first builds a virtualenv holding the worker and its runtime dependencies
# only (pyproject's [project].dependencies, never the control-plane extras); the second copies
# that venv onto a clean slim base and runs it as an unprivileged user.
#
#   docker build -t batchspot-worker .          (or: invoke build)
#
# Custom code: a Python callable under examples/ (or any package copied to /app) is importable
# as HANDLER=package.module:function, since `python -m` puts the working directory on sys.path;
# an executable goes anywhere on PATH for HANDLER_COMMAND. Derive from this image to add yours.

FROM python:3.11-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY worker/ worker/
# Only worker/ is in the build context's copy, so the wheel holds the data plane alone.
RUN /opt/venv/bin/pip install --no-compile .

FROM python:3.11-slim-bookworm

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
