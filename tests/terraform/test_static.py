"""fmt, validate and the native ``terraform test`` suite (mocked provider, offline)."""

from __future__ import annotations

import re
import subprocess

import pytest
from python_terraform import IsFlagged

from batchspot.terraform import TERRAFORM_DIR
from batchspot.terraform_cli import installed_version

pytestmark = pytest.mark.terraform


def test_terraform_code_is_formatted(terraform_cli):
    code, out, _ = terraform_cli.run("fmt", "-check", "-recursive", "-diff", no_color=IsFlagged)
    assert code == 0, f"run `terraform fmt -recursive terraform/`:\n{out}"


def test_root_module_is_valid(terraform_cli):
    code, out, err = terraform_cli.run("validate", no_color=IsFlagged)
    assert code == 0, out + err


def test_native_terraform_tests_pass_for_every_module(terraform_cli):
    code, out, err = terraform_cli.run("test", no_color=IsFlagged)
    output = out + err
    assert code == 0, output[-6000:]
    for module in (
        "network",
        "storage",
        "queue",
        "registry",
        "batch",
        "root",
        "worker_policy",
        "monitoring",
    ):
        assert f"tests/{module}.tftest.hcl... pass" in output
    summary = re.search(r"Success! (\d+) passed, 0 failed", output)
    assert summary and int(summary.group(1)) >= 28, output[-2000:]


def test_installed_version_is_terraforms_own_first_line(terraform_cli):
    assert installed_version().startswith("Terraform v")


def test_the_var_file_the_readme_has_operators_create_is_never_committed():
    """README "Deploying to AWS" has them copy the example to terraform/terraform.tfvars."""
    readme = (TERRAFORM_DIR.parent / "README.md").read_text()
    assert "cp terraform/terraform.tfvars.example terraform/terraform.tfvars" in readme
    ignored = subprocess.run(
        ["git", "check-ignore", "--quiet", "terraform/terraform.tfvars"],
        cwd=TERRAFORM_DIR.parent,
        check=False,
    )
    assert ignored.returncode == 0, "terraform/terraform.tfvars must be in .gitignore"
