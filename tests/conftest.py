"""Suite-wide settings: hypothesis runs a fixed sequence of examples in CI; no test sees a
developer's deployed stack; in CI, a test that skips for a reason not listed here fails.

Locally each run explores new examples (that is how the fuzz tests found their defects); in CI
the same examples run every time, so a red build always means a change, not a lucky draw.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from batchspot.terraform import STATE_DIR_VARIABLE

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

# The only skips a CI run (CI set, as .ci/run does) accepts, by reason prefix. Any other skip
# fails its test there: a missing terraform, checkov or hadolint must break the build, not
# quietly shrink it. LocalStack runs deselect moto-only tests (`invoke test-local`'s -m); this
# entry covers only a LocalStack run started without that filter.
CI_ALLOWED_SKIPS = ("needs moto: LocalStack's free edition",)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Under CI, turn a skip whose reason is not in CI_ALLOWED_SKIPS into a failure."""
    outcome = yield
    report = outcome.get_result()
    if not os.environ.get("CI") or not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = str(report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(CI_ALLOWED_SKIPS):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, where only CI_ALLOWED_SKIPS may skip: {reason}"


@pytest.fixture(autouse=True)
def hermetic_state_dir(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Point saved stack outputs at an empty temp dir, for this process and the tasks it starts.

    Without it a test would read ``<repo>/.batchspot/outputs.json`` on a machine that deployed,
    and pass or fail by what that stack holds.
    """
    state_dir = tmp_path_factory.mktemp("state")
    monkeypatch.setenv(STATE_DIR_VARIABLE, str(state_dir))
    return state_dir
