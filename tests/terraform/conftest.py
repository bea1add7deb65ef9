"""Shared fixtures: one initialised Terraform data dir per session, offline via the mirror."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from batchspot import terraform as tf

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO_ROOT / "terraform"


def run(command: list[str], env: dict[str, str], cwd: Path = TERRAFORM_DIR, timeout: float = 600):
    """Run a tool, return the completed process (never raises on a non-zero exit)."""
    return subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="session")
def run_tool():
    """The ``run`` helper, as a fixture (test modules here are not an importable package)."""
    return run


@pytest.fixture(scope="session")
def terraform_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for the terraform CLI: mirror config, a session data dir, inited once."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed")
    state = tmp_path_factory.mktemp("terraform-session")
    env = {
        **os.environ,
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "TF_DATA_DIR": str(state / "data"),
    }
    config = tf.cli_config(state)
    if config is not None:
        env["TF_CLI_CONFIG_FILE"] = str(config)
    result = run(["terraform", "init", "-backend=false", "-input=false", "-no-color"], env)
    assert result.returncode == 0, result.stdout + result.stderr
    return env
