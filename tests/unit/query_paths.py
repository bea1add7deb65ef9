"""Run a query test module on both of the local engine's paths: the Python evaluator and the
vectorised fast path, which must give the same output byte for byte.

Under ``fast`` a query the fast path cannot express (or data it declines part way) still runs
on the Python evaluator, as in production; the tests in ``test_query_fast.py`` prove which
queries the fast path itself answers.
"""

from __future__ import annotations

import pytest

from worker.query import local


@pytest.fixture(params=["python", "fast"], autouse=True)
def query_path(request, monkeypatch) -> str:
    """Switch the local engine to one path for the test (both, one after the other)."""
    monkeypatch.setattr(local, "FAST_PATH", request.param == "fast")
    return request.param
