"""Counts the AWS calls the worker makes, through botocore's own event hooks.

Calls per item is the worker's cost figure (the floor is 2.2: receive/10 + read + write +
delete/10), so it is measured where every call passes, not estimated.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any


class CallCounter:
    """Thread-safe tally of API calls by ``service.Operation``."""

    def __init__(self) -> None:
        """Start with no calls counted."""
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()

    def attach(self, client: Any) -> Any:
        """Count every call ``client`` makes from now on; return the client for chaining."""
        service = client.meta.service_model.service_name
        client.meta.events.register(
            "before-call", lambda model, **_: self._count(f"{service}.{model.name}")
        )
        return client

    def _count(self, name: str) -> None:
        with self._lock:
            self._calls[name] += 1

    def snapshot(self) -> dict[str, int]:
        """Return the calls so far, by operation."""
        with self._lock:
            return dict(self._calls)

    @property
    def total(self) -> int:
        """All calls so far."""
        with self._lock:
            return sum(self._calls.values())
