"""The wheel an operator installs holds the control plane and the worker, and nothing else.

``invoke local`` must work from ``pip install .[control]`` (not editable): everything it
imports has to be inside the wheel. The check imports it from the unpacked wheel with Python's
``-S``, so the editable install's path hook cannot quietly supply the checkout instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The checkout minus what is not source: every other folder stays, so a packaging rule that
# would pull in the support package, the tests or the examples shows in the wheel.
SKIPPED = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".batchspot",
    ".terraform",
    ".*_cache",
    ".hypothesis",
    "__pycache__",
    "*.egg-info",
    "build",
)


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the checkout (which stays clean) and unpack it."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT, source, ignore=SKIPPED)
    dist = work / "dist"
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "-q", "-w", str(dist)]
    subprocess.run(build, check=True, timeout=600)
    (wheel,) = dist.glob("batchspot-*.whl")
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    return site


def test_the_wheel_holds_the_control_plane_and_the_worker_only(unpacked_wheel: Path) -> None:
    top = {path.name for path in unpacked_wheel.iterdir() if not path.name.endswith(".dist-info")}
    assert top == {"batchspot", "worker"}
    assert (unpacked_wheel / "batchspot" / "data" / "ondemand_prices.json").is_file()
    stack = unpacked_wheel / "batchspot" / "stack"
    assert (stack / "main.tf").is_file() and (stack / ".terraform.lock.hcl").is_file()
    assert (stack / "modules" / "worker_policy" / "main.tf").is_file()
    assert not (stack / "tests").exists(), "Terraform's own tests are not shipped"


def test_invoke_local_imports_and_makes_its_sample_data_from_the_wheel(
    unpacked_wheel: Path, tmp_path: Path
) -> None:
    dependencies = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(unpacked_wheel), *dependencies])}
    code = (
        "import batchspot.local, batchspot.sample_data as data, batchspot.terraform as tf; "
        "print(batchspot.local.__file__); print(len(data.month_csv(1, rows=3).splitlines())); "
        "print(tf.TERRAFORM_DIR)"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        cwd=tmp_path,  # not the checkout, whose folders would be importable from here
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module_file, lines, stack = result.stdout.split()
    assert Path(module_file).is_relative_to(unpacked_wheel)
    assert lines == "4"  # the header and three trips
    assert Path(stack) == unpacked_wheel / "batchspot" / "stack"  # deploys without a checkout
