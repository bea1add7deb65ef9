"""Build the worker image and push it to ECR, through the Docker SDK.

Images are tagged with the git revision they were built from, so a job definition names
exactly the code it runs; a build from a tree with uncommitted changes gets a ``-dirty-<time>``
suffix, never a revision it does not match. ECR credentials come from boto3
(``GetAuthorizationToken``), so no ``aws ecr get-login-password | docker login`` pipe is needed.
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException

LOCAL_REPOSITORY = "batchspot-worker"
DEFAULT_PLATFORM = "linux/amd64"  # Batch's default instance families; override for Graviton


class ImageError(RuntimeError):
    """The image could not be built or pushed; the text says why."""


@dataclass(frozen=True)
class Pushed:
    """Where an image was pushed."""

    image: str
    digest: str | None


def engine() -> docker.DockerClient:
    """Connect to the Docker engine named by the environment, or say in one sentence why not."""
    try:
        return docker.from_env()
    except DockerException as error:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        raise ImageError(
            f"No Docker engine is reachable at {where} ({error.__class__.__name__}); "
            "start Docker or set DOCKER_HOST, then retry."
        ) from None


def revision_tag(context: Path) -> str:
    """Return the short git revision of ``context``, marked dirty if the tree has changes."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=context, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        revision = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except subprocess.CalledProcessError as error:
        raise ImageError(
            f"cannot read the git revision of {context}: {error.stderr.strip()}"
        ) from None
    if dirty:
        return f"{revision}-dirty-{datetime.now(UTC):%Y%m%d%H%M%S}"
    return revision


def _follow(lines: Iterable[dict[str, Any]], emit: Callable[[str], None]) -> list[dict[str, Any]]:
    """Relay an Engine API progress stream; raise on its error line; return its aux records."""
    aux: list[dict[str, Any]] = []
    for line in lines:
        if "error" in line:
            raise ImageError(line["error"].strip())
        if "aux" in line:
            aux.append(line["aux"])
        text = line.get("stream") or line.get("status")
        if text and text.strip():
            emit(text.rstrip())
    return aux


def build(
    client: docker.DockerClient,
    context: Path,
    *,
    tag: str,
    platform: str = DEFAULT_PLATFORM,
    emit: Callable[[str], None] = print,
) -> str:
    """Build ``context``'s Dockerfile as ``batchspot-worker:<tag>``; return the image name."""
    image = f"{LOCAL_REPOSITORY}:{tag}"
    try:
        lines = client.api.build(
            path=str(context), tag=image, platform=platform, rm=True, decode=True
        )
        _follow(lines, emit)
    except APIError as error:
        raise ImageError(f"build failed: {error.explanation or error}") from None
    return image


def ecr_credentials(ecr: Any) -> tuple[str, str, str]:
    """Return (username, password, registry) from ECR's authorization token."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    username, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    return username, password, data["proxyEndpoint"]


def push(
    client: docker.DockerClient,
    ecr: Any,
    *,
    repository_url: str,
    tag: str,
    also: tuple[str, ...] = (),
    emit: Callable[[str], None] = print,
) -> list[Pushed]:
    """Push the built ``batchspot-worker:<tag>`` to ``repository_url`` as ``tag`` and ``also``.

    ``also=("latest",)`` moves the tag the stack's job definition runs by default (its
    ``image_tag``), so a push takes effect without a redeploy; leave it empty when the
    repository's tags are immutable.
    """
    username, password, registry = ecr_credentials(ecr)
    auth = {"username": username, "password": password}
    pushed = []
    try:
        client.login(username=username, password=password, registry=registry)
        for name in (tag, *also):
            client.api.tag(f"{LOCAL_REPOSITORY}:{tag}", repository_url, tag=name)
            lines = client.api.push(
                repository_url, tag=name, auth_config=auth, stream=True, decode=True
            )
            aux = _follow(lines, emit)
            digest = next((a["Digest"] for a in aux if "Digest" in a), None)
            pushed.append(Pushed(image=f"{repository_url}:{name}", digest=digest))
    except APIError as error:
        if error.status_code == 404:
            raise ImageError(
                f"no local image {LOCAL_REPOSITORY}:{tag}: run `invoke build` first"
            ) from None
        raise ImageError(f"push failed: {error.explanation or error}") from None
    return pushed
