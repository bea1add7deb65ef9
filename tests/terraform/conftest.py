"""Shared fixtures: Terraform in terraform/, initialised once per session, offline via the
mirror; and the stand-in for `invoke build push` where no Docker engine runs."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from batchspot.emulators import Emulator
from batchspot.terraform import TERRAFORM_DIR
from batchspot.terraform_cli import TerraformCli, TerraformNotInstalled


@pytest.fixture(scope="session")
def terraform_cli(tmp_path_factory: pytest.TempPathFactory) -> TerraformCli:
    """The root module, inited in a session data dir from the committed lock file.

    ``-lockfile=readonly`` makes a lock that no longer matches the constraints (or the mirror's
    provider) fail here, instead of being rewritten silently. Without a terraform binary the
    tests skip, which the suite's CI hook turns into a failure (tests/conftest.py).
    """
    state = tmp_path_factory.mktemp("terraform-session")
    cli = TerraformCli(TERRAFORM_DIR, state_dir=state, data_dir=state / "data")
    try:
        cli.init(backend=False, lockfile="readonly")
    except TerraformNotInstalled as error:
        pytest.skip(str(error))
    return cli


PushStandIn = Callable[[Emulator, dict], None]


@pytest.fixture(scope="session")
def push_stand_in() -> PushStandIn:
    """Put an image manifest where the stack's job definition looks (its ECR repository,
    tag ``latest``), as `invoke build push` would, for emulators without a Docker engine."""

    def push(emulator: Emulator, outputs: dict) -> None:
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": 2, "digest": "sha256:" + "0" * 64},
            "layers": [],
        }  # fmt: skip
        emulator.client("ecr").put_image(
            repositoryName=outputs["ecr_repository_url"].rsplit("/", 1)[1],
            imageManifest=json.dumps(manifest),
            imageTag="latest",
        )

    return push
