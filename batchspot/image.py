"""Build the worker image and push it to ECR, through the Docker SDK.

Images are tagged with the git revision they were built from, so a job definition names
exactly the code it runs; a build from a tree with uncommitted changes gets a ``-dirty-<time>``
suffix, never a revision it does not match. The repository's tags are immutable, so a push
never moves a tag such as ``latest``: the stack is pinned to the pushed image's digest instead
(:attr:`Pushed.deploy_variable`). ECR credentials come from boto3
(``GetAuthorizationToken``), so no ``aws ecr get-login-password | docker login`` pipe is needed.

Where the Dockerfile's pinned base cannot be pulled (no registry reachable, as on an
air-gapped CI machine), :func:`local_base_image` makes an equivalent base from Debian
bookworm's own packages with ``mmdebstrap`` and ``docker import``, and :func:`build` passes it
as the ``BASE_IMAGE`` argument.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
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
PINNED_BASE = "the Dockerfile's pinned python:3.11-slim-bookworm"

# The local base: what python:3.11-slim-bookworm gives the Dockerfile, from Debian's packages.
# `passwd` brings useradd for the non-root user, libstdc++6 what pyarrow's libraries link (the
# essential variant leaves out apt, which brings it in the slim image). The machine's CA bundle
# replaces Debian's so pip inside the build trusts what the machine trusts (a TLS-inspecting
# proxy's CA included).
LOCAL_BASE_REPOSITORY = "batchspot-base"
LOCAL_BASE_SUITE = "bookworm"
LOCAL_BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates", "passwd", "libstdc++6")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Documentation, manuals and translations are never read in a worker container.
_LEAN_PATHS = (
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
)
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


def local_base_image(
    client: docker.DockerClient, *, ca_bundle: Path = CA_BUNDLE, emit: Callable[[str], None] = print
) -> str:
    """Return a base image made from Debian bookworm's packages, making it on first use.

    The tag is a hash of the suite, the packages and the CA bundle, so a machine whose bundle
    changes gets a new base and an unchanged one reuses the image it has (``mmdebstrap`` takes
    about half a minute; ``docker import`` a few seconds).
    """
    if shutil.which("mmdebstrap") is None:
        raise ImageError(
            "--local-base needs mmdebstrap, which is not installed: "
            "apt-get install mmdebstrap (or build on the pinned base where a registry answers)."
        )
    if not ca_bundle.is_file():
        raise ImageError(f"--local-base copies the machine's CA bundle, and {ca_bundle} is missing")
    identity = hashlib.sha256(
        "\n".join([LOCAL_BASE_SUITE, *LOCAL_BASE_PACKAGES, *_LEAN_PATHS]).encode()
        + ca_bundle.read_bytes()
    ).hexdigest()[:12]
    name = f"{LOCAL_BASE_REPOSITORY}:{LOCAL_BASE_SUITE}-{identity}"
    try:
        client.images.get(name)
        return name
    except docker.errors.ImageNotFound:
        pass
    emit(f"making {name} from Debian {LOCAL_BASE_SUITE}'s packages with mmdebstrap ...")
    with tempfile.TemporaryDirectory(prefix="batchspot-base-") as folder:
        tarball = Path(folder) / "base.tar"
        command = [
            "mmdebstrap",
            "--variant=essential",
            f"--include={','.join(LOCAL_BASE_PACKAGES)}",
            *(f"--dpkgopt={option}" for option in _LEAN_PATHS),
            f'--customize-hook=cp {ca_bundle} "$1/etc/ssl/certs/ca-certificates.crt"',
            '--customize-hook=ln -sf python3 "$1/usr/bin/python"',
            LOCAL_BASE_SUITE,
            str(tarball),
        ]
        made = subprocess.run(command, capture_output=True, text=True)
        if made.returncode != 0:
            tail = " / ".join(made.stderr.strip().splitlines()[-3:])
            raise ImageError(f"mmdebstrap failed (exit {made.returncode}): {tail}")
        repository, tag = name.split(":")
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=tag, changes=["ENV LANG=C.UTF-8"]
        )
    return name


def build(
    client: docker.DockerClient,
    context: Path,
    *,
    tag: str,
    platform: str = DEFAULT_PLATFORM,
    base_image: str | None = None,
    emit: Callable[[str], None] = print,
    stream: bool = True,
) -> str:
    """Build ``context``'s Dockerfile as ``batchspot-worker:<tag>``; return the image name.

    ``base_image`` replaces the Dockerfile's pinned base (its ``BASE_IMAGE`` argument). The
    build's RUN steps use the host's network: an engine started without a bridge (as CI's is)
    has no other, and pip must reach the package index. Without ``stream`` only the base line
    is emitted, not the engine's build output.
    """
    image = f"{LOCAL_REPOSITORY}:{tag}"
    emit(f"base: {base_image or PINNED_BASE}")
    try:
        lines = client.api.build(
            path=str(context),
            tag=image,
            platform=platform,
            rm=True,
            decode=True,
            network_mode="host",
            buildargs={"BASE_IMAGE": base_image} if base_image else None,
        )
        _follow(lines, emit if stream else lambda _: None)
    except APIError as error:
        raise ImageError(f"build failed: {error.explanation or error}") from None
    return image


def build_checkout(
    *,
    local_base: bool = False,
    platform: str = DEFAULT_PLATFORM,
    emit: Callable[[str], None] = print,
    stream: bool = True,
) -> str:
    """Build this checkout's image, tagged with its revision (``invoke build``); return it.

    ``local_base`` builds on :func:`local_base_image` instead of the Dockerfile's pinned base;
    ``stream`` relays the engine's build output (see :func:`build`).
    """
    client = engine()
    context = Path(__file__).resolve().parent.parent
    if not (context / "Dockerfile").is_file():
        raise ImageError(
            f"no Dockerfile in {context}: the image is built from a checkout of BatchSpot"
        )
    base = local_base_image(client, emit=emit) if local_base else None
    return build(
        client,
        context,
        tag=revision_tag(context),
        platform=platform,
        base_image=base,
        emit=emit,
        stream=stream,
    )


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
