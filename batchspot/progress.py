"""Progress that fits where it is shown: a live bar on a terminal, else a line now and then.

tqdm redraws its bar in place with carriage returns. Captured by a file, a CI log or a pipe,
every redraw becomes one more copy of the line (dozens for `invoke local`'s 12 items). Off a
terminal, :class:`Progress` therefore prints a plain line at most every ``every`` seconds, and
one at the end.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

from tqdm import tqdm

# Off a terminal: at most one line this often, so a long run logs its pace and a short one
# prints little more than its last line.
LINE_EVERY_SECONDS = 5.0


class Progress:
    """Counts ``done`` of ``total``; draws a tqdm bar on a TTY, else prints lines now and then."""

    def __init__(
        self,
        total: int,
        unit: str,
        desc: str,
        stream: TextIO | None = None,
        every: float = LINE_EVERY_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start counting; nothing is printed off a terminal until ``every`` seconds pass."""
        self._stream = stream or sys.stderr
        self._unit, self._desc, self._every, self._clock = unit, desc, every, clock
        self.total, self.done, self.note = total, 0, ""
        self._started = self._printed_at = clock()
        self._last_line: str | None = None
        self._bar = (
            tqdm(total=total, unit=unit, desc=desc, file=self._stream)
            if self._stream.isatty()
            else None
        )

    def show(self, done: int, total: int | None = None, note: str = "") -> None:
        """Record the count (and a new total, a short note); redraw or print if it is time."""
        self.done, self.note = done, note
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.n = done
            self._bar.set_postfix_str(note, refresh=False)
            self._bar.refresh()
        elif self._clock() - self._printed_at >= self._every:
            self._print()

    def close(self) -> None:
        """Close the bar, or print the last count unless that very line was just printed."""
        if self._bar is not None:
            self._bar.close()
        elif self._line() != self._last_line:
            self._print()

    def __enter__(self) -> Progress:
        """Use as a context manager: closed (its last line printed) on the way out."""
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        """Close, whatever ended the block."""
        self.close()

    def _line(self) -> str:
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        note = f", {self.note}" if self.note else ""
        return f"{self._desc}: {self.done}/{self.total} {self._unit}{share}{note}"

    def _print(self) -> None:
        line = self._line()
        self._stream.write(f"{line} after {self._clock() - self._started:.0f} s\n")
        self._stream.flush()
        self._printed_at = self._clock()
        self._last_line = line
