"""Build the worker image and push it to ECR, through the Docker SDK.

Images are tagged with the git revision they were built from, so a job definition names
exactly the code it runs; a build from a tree with uncommitted changes gets a ``-dirty-<time>``
suffix, never a revision it does not match. The repository's tags are immutable, so a push
never moves a tag such as ``latest``: the stack is pinned to the pushed image's digest instead
(:attr:`Pushed.deploy_variable`). ECR credentials come from boto3
(``GetAuthorizationToken``), so no ``aws ecr get-login-password | docker login`` pipe is needed.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import docker
from botocore.exceptions import ClientError
from docker.errors import APIError, DockerException

from worker.errors import error_code

LOCAL_REPOSITORY = "batchspot-worker"
DEFAULT_PLATFORM = "linux/amd64"  # Batch's default instance families; override for Graviton
# <registry>.dkr.ecr.<region>.amazonaws.com/<repository>[:<tag>][@<digest>]
ECR_IMAGE = re.compile(
    r"(?P<host>(?P<registry>\d{12})\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?)"
    r"/(?P<repository>[^:@]+)(?::(?P<tag>[^:@/]+))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?"
)
# What ECR answers when the image, or its whole repository, is not there.
_NOT_IN_ECR = frozenset({"ImageNotFoundException", "RepositoryNotFoundException"})


class ImageError(RuntimeError):
    """The image could not be built or pushed; the text says why."""


@dataclass(frozen=True)
class Pushed:
    """Where an image was pushed, and the digest that names exactly that image."""

    repository_url: str
    tag: str
    digest: str

    @property
    def image(self) -> str:
        """The image by tag, as pushed."""
        return f"{self.repository_url}:{self.tag}"

    @property
    def pinned(self) -> str:
        """The image by digest: what a job definition should run."""
        return f"{self.repository_url}@{self.digest}"

    @property
    def deploy_variable(self) -> str:
        """The ``invoke deploy --var`` value that makes the stack's jobs run this image."""
        return f"image_digest={self.digest}"


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


def require_repository(ecr: Any, repository_url: str) -> None:
    """Fail with ECR's RepositoryNotFoundException now, rather than mid-push after a login."""
    ecr.describe_repositories(repositoryNames=[repository_url.split("/", 1)[-1]])


def missing_from_ecr(ecr: Any, image: str) -> str | None:
    """Say why ``image`` (a job definition's) is not in its ECR repository; None if it is.

    The digest is checked when the image names one, else the tag (``latest`` if none). An
    image outside ECR (Docker Hub, ECR Public) is not checked. On AWS a missing image makes
    every child fail with CannotPullContainerError, so doctor and submit catch it first.
    """
    match = ECR_IMAGE.fullmatch(image)
    if not match:
        return None
    wanted = (
        {"imageDigest": match["digest"]}
        if match["digest"]
        else {"imageTag": match["tag"] or "latest"}
    )
    try:
        ecr.describe_images(
            registryId=match["registry"], repositoryName=match["repository"], imageIds=[wanted]
        )
    except ClientError as error:
        if error_code(error) not in _NOT_IN_ECR:
            raise
        return (
            f"the job definition's image {image} is not in ECR ({error_code(error)}), so every "
            "child would fail with CannotPullContainerError: run `invoke build push` and deploy "
            "the digest it prints"
        )
    return None


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
    emit: Callable[[str], None] = print,
) -> Pushed:
    """Push the built ``batchspot-worker:<tag>`` to ``repository_url`` as ``tag``.

    Only the revision tag is pushed: ECR refuses to move an existing tag (the repository is
    immutable), so jobs are pinned to the returned digest, never to a moving ``latest``.
    """
    username, password, registry = ecr_credentials(ecr)
    auth = {"username": username, "password": password}
    try:
        client.login(username=username, password=password, registry=registry)
        client.api.tag(f"{LOCAL_REPOSITORY}:{tag}", repository_url, tag=tag)
        lines = client.api.push(repository_url, tag=tag, auth_config=auth, stream=True, decode=True)
        aux = _follow(lines, emit)
    except APIError as error:
        if error.status_code == 404:
            raise ImageError(
                f"no local image {LOCAL_REPOSITORY}:{tag}: run `invoke build` first"
            ) from None
        raise ImageError(f"push failed: {error.explanation or error}") from None
    digest = next((a["Digest"] for a in aux if "Digest" in a), None)
    if digest is None:
        raise ImageError(
            f"the registry reported no digest for {repository_url}:{tag}, so it cannot be pinned"
        )
    return Pushed(repository_url=repository_url, tag=tag, digest=digest)
