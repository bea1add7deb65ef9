"""The Dockerfile's text: what a build on any machine must keep (its pinned base, the tested
versions, the worker alone, non-root). tests/container builds and runs the image itself."""

from __future__ import annotations

import json
import re
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


def test_image_is_multi_stage_on_one_base_and_non_root():
    stages = [s.split()[0] for s in _instructions("FROM")]
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"], "both stages must use one base"
    user = _instructions("USER")[-1]
    assert not user.startswith(("root", "0")), user
    assert image_cmd() == ["python", "-m", "worker"]


def test_the_default_base_is_slim_and_pinned_by_digest():
    """``invoke build --local-base`` replaces it; a plain build must get the pinned one."""
    (default,) = [a.split("=", 1)[1] for a in _instructions("ARG") if a.startswith("BASE_IMAGE=")]
    assert re.fullmatch(r"python:3\.11-slim-bookworm@sha256:[0-9a-f]{64}", default), default


def test_image_installs_the_versions_ci_tests():
    (install,) = [r for r in _instructions("RUN") if "pip install" in r and "venv" in r]
    assert "-c constraints.txt" in install
    assert any("constraints.txt" in c.split() for c in _instructions("COPY"))
    assert "!constraints.txt" in (REPO_ROOT / ".dockerignore").read_text().splitlines()


def test_image_installs_the_worker_alone():
    copies = " ".join(_instructions("COPY"))
    assert "batchspot" not in copies and "tests" not in copies and "terraform" not in copies
    assert "[control]" not in DOCKERFILE and "[dev]" not in DOCKERFILE
