"""checkov (Terraform and Dockerfile) and hadolint must report zero failed checks.

The binaries are the ones ``invoke lint-infra`` runs (batchspot.linters): checkov from its own
venv, installed on first use by .ci/install-linters.sh. A linter that cannot be found skips;
under CI the suite's skip hook (tests/conftest.py) fails the run instead.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from batchspot import linters
from batchspot.terraform import REPO_ROOT, TERRAFORM_DIR

pytestmark = pytest.mark.terraform


def _tool(find) -> Path:
    try:
        return find()
    except linters.LinterMissing as error:
        pytest.skip(str(error))


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )


@pytest.mark.parametrize("scan", linters.checkov_scans(), ids=["terraform", "dockerfile"])
def test_checkov_finds_no_failed_checks(scan):
    checkov = _tool(linters.checkov)
    result = _run([str(checkov), "--skip-download", "--quiet", "--output", "json", *scan])
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    if report.get("passed") == 0 and report.get("failed") == 0:  # checkov's "nothing found" shape
        pytest.fail(f"checkov scanned nothing for {scan}")
    failed = report["results"]["failed_checks"]
    assert not failed, [(c["check_id"], c["resource"], c["file_path"]) for c in failed]
    assert report["summary"]["passed"] > 0


def test_every_checkov_skip_is_justified():
    skips = []
    for path in [*TERRAFORM_DIR.rglob("*.tf"), linters.DOCKERFILE]:
        if ".terraform" in path.parts:
            continue
        skips += [(path, line) for line in path.read_text().splitlines() if "checkov:skip=" in line]
    assert skips, "expected the documented skips"
    for path, line in skips:
        assert re.search(r"checkov:skip=CKV\w+:\S.{20,}", line), (
            f"unjustified skip in {path}: {line}"
        )


def test_hadolint_passes_on_the_dockerfile():
    hadolint = _tool(linters.hadolint)
    result = _run([str(hadolint), "--no-color", str(linters.DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr
