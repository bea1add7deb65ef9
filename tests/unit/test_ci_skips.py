"""The suite's CI rule (tests/conftest.py): under CI, a skip is a failure unless allow-listed.

Each case runs pytest on a one-test file next to a copy of the real conftest, as CI would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def run_suite(tmp_path: Path, skip_reason: str, ci: bool) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_one.py").write_text(
        f"import pytest\n\ndef test_needs_a_tool():\n    pytest.skip({skip_reason!r})\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_missing_tool_fails_the_run_under_ci(tmp_path):
    result = run_suite(tmp_path, "terraform is not installed", ci=True)
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert "1 failed" in result.stdout
    assert "skipped under CI" in result.stdout and "terraform is not installed" in result.stdout


def test_an_allow_listed_skip_stays_a_skip_under_ci(tmp_path):
    reason = "needs moto: LocalStack's free edition has no S3 Select, Batch, ECR or IAM"
    result = run_suite(tmp_path, reason, ci=True)
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "1 skipped" in result.stdout


def test_outside_ci_a_skip_is_reported_with_its_reason(tmp_path):
    result = run_suite(tmp_path, "terraform is not installed", ci=False)
    assert result.returncode == pytest.ExitCode.OK, result.stdout
    assert "SKIPPED" in result.stdout and "terraform is not installed" in result.stdout
