"""``invoke plan``'s code path against a stack applied to moto's server.

Right after a deploy the plan must say "no changes" (a plan that always shows a diff hides
real drift), and a changed variable must say "changes pending" without applying anything.

The stack is applied and planned with ``module.storage`` as the target: moto does not store
every attribute the rest of the stack sets (a job queue's ``job_state_time_limit_action``, a
launch template's ``tag_specifications``, the redrive policy's JSON spacing), so a plan of
the whole stack always differs from moto's state there, never from AWS's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchspot import terraform as tf
from batchspot.emulators import Emulator, moto_server

pytestmark = [pytest.mark.terraform, pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
TARGETS = ("module.storage",)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Emulator, Path]]:
    """The stack's storage applied to a private moto server, and the dir holding its state."""
    work = tmp_path_factory.mktemp("plan-stack")
    with moto_server(work / "logs") as emulator:
        state_dir = work / "state"
        tf.deploy(
            local_endpoint=emulator.endpoint, state_dir=state_dir, targets=TARGETS, stream=False
        )
        yield emulator, state_dir


def changes_pending(deployed: tuple[Emulator, Path], **variables: object) -> bool:
    """Plan the deployed target, as ``invoke plan`` does, with ``variables`` changed."""
    emulator, state_dir = deployed
    return tf.plan(
        variables=variables,
        local_endpoint=emulator.endpoint,
        state_dir=state_dir,
        targets=TARGETS,
        stream=False,
    )


def test_a_fresh_deploy_plans_no_changes(deployed: tuple[Emulator, Path]) -> None:
    assert changes_pending(deployed) is False


def test_a_changed_variable_plans_changes_and_applies_none(
    deployed: tuple[Emulator, Path],
) -> None:
    assert changes_pending(deployed, output_expiration_days=7) is True
    assert changes_pending(deployed) is False, "a plan must not apply what it shows"


def test_invoke_plan_prints_its_verdict_as_typed(deployed: tuple[Emulator, Path]) -> None:
    """The task plans the whole stack: only storage exists yet, so changes are pending."""
    emulator, state_dir = deployed
    result = subprocess.run(
        [
            str(INVOKE),
            "plan",
            "--local-endpoint",
            emulator.endpoint,
            "--state-dir",
            str(state_dir),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "changes pending"
