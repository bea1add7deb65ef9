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


def test_image_installs_the_worker_alone():
    copies = " ".join(_instructions("COPY"))
    assert "batchspot" not in copies and "tests" not in copies and "terraform" not in copies
    assert "[control]" not in DOCKERFILE and "[dev]" not in DOCKERFILE


def test_image_cmd_starts_the_worker_and_fails_fast_without_configuration(tmp_path):
    if not (REPO_ROOT / "worker" / "__main__.py").exists():
        pytest.skip("worker/__main__.py is not written yet")
    command = image_cmd()
    command[0] = sys.executable  # the image's `python`, here the venv's
    env = {k: v for k, v in os.environ.items() if k not in ("SQS_QUEUE_URL", "OUTPUT_BUCKET")}
    result = subprocess.run(
        command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "SQS_QUEUE_URL" in result.stdout + result.stderr
