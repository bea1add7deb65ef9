"""fmt, validate and the native ``terraform test`` suite (mocked provider, offline)."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.terraform


def test_terraform_code_is_formatted(terraform_env, run_tool):
    result = run_tool(
        ["terraform", "fmt", "-check", "-recursive", "-diff", "-no-color"], terraform_env
    )
    assert result.returncode == 0, f"run `terraform fmt -recursive terraform/`:\n{result.stdout}"


def test_root_module_is_valid(terraform_env, run_tool):
    result = run_tool(["terraform", "validate", "-no-color"], terraform_env)
    assert result.returncode == 0, result.stdout + result.stderr


def test_native_terraform_tests_pass_for_every_module(terraform_env, run_tool):
    result = run_tool(["terraform", "test", "-no-color"], terraform_env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    for module in ("network", "storage", "queue", "registry", "batch", "root"):
        assert f"tests/{module}.tftest.hcl... pass" in output
    summary = re.search(r"Success! (\d+) passed, 0 failed", output)
    assert summary and int(summary.group(1)) >= 20, output[-2000:]
