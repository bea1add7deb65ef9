"""Shared fixture: Terraform in terraform/, initialised once per session, offline via the mirror."""

from __future__ import annotations

import pytest

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
