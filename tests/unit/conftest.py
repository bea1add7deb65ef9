"""Fixtures every unit test shares."""

from __future__ import annotations

import pytest

from worker.query import local


@pytest.fixture(autouse=True)
def fresh_path_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees a query's path logged anew: it is logged once per query per process, so
    a test asserting the log would otherwise depend on which tests ran before it."""
    monkeypatch.setattr(local, "_logged", set())
