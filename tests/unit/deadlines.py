"""A deadline for tests that passes after a given number of checks: no clock, deterministic."""

from __future__ import annotations

from worker.query import Deadline


class Countdown(Deadline):
    """Passes at the check after ``checks`` checks; ``checks`` counts the checks made."""

    def __init__(self, checks: int) -> None:
        super().__init__(None)
        self.left, self.checks = checks, 0

    def check(self) -> None:
        self.checks += 1
        if self.checks > self.left:
            self._at = float("-inf")
        super().check()
