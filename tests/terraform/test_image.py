"""The worker image, checked statically (no Docker engine here) and its CMD run as-is."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.terraform

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO_ROOT / "Dockerfile").read_text()


def _instructions(keyword: str) -> list[str]:
    return re.findall(rf"^{keyword}\s+(.+)$", DOCKERFILE, flags=re.MULTILINE)


def image_cmd() -> list[str]:
    """The exec-form CMD of the final stage."""
    return json.loads(_instructions("CMD")[-1])


def test_image_is_multi_stage_slim_and_non_root():
    stages = _instructions("FROM")
    assert len(stages) == 2 and all("-slim" in s for s in stages)
    user = _instructions("USER")[-1]
    assert not user.startswith(("root", "0")), user
    assert image_cmd() == ["python", "-m", "worker"]


def test_every_stage_starts_from_the_same_base_pinned_by_digest():
    stages = [s.split()[0] for s in _instructions("FROM")]
    pinned = r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}"
    assert all(re.fullmatch(pinned, stage) for stage in stages), stages
    assert len(set(stages)) == 1, "the runtime stage must use the build stage's base"


def test_image_installs_the_versions_ci_tests():
    (install,) = [r for r in _instructions("RUN") if "pip install" in r and "venv" in r]
    assert "-c constraints.txt" in install
    assert any("constraints.txt" in c.split() for c in _instructions("COPY"))
    assert "!constraints.txt" in (REPO_ROOT / ".dockerignore").read_text().splitlines()


def test_image_installs_the_worker_alone():
    copies = " ".join(_instructions("COPY"))
    assert "batchspot" not in copies and "tests" not in copies and "terraform" not in copies
    assert "[control]" not in DOCKERFILE and "[dev]" not in DOCKERFILE


def test_image_cmd_starts_the_worker_and_fails_fast_without_configuration(tmp_path):
    command = image_cmd()
    command[0] = sys.executable  # the image's `python`, here the venv's
    env = {k: v for k, v in os.environ.items() if k not in ("SQS_QUEUE_URL", "OUTPUT_BUCKET")}
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "SQS_QUEUE_URL" in result.stdout + result.stderr
