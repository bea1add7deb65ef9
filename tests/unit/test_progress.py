"""Progress off a terminal is a few plain lines, on a terminal tqdm's live bar."""

from __future__ import annotations

import io

from batchspot.progress import Progress


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_a_line_every_few_seconds_and_one_at_the_end() -> None:
    stream, clock = io.StringIO(), Clock()
    with Progress(total=12, unit="items", desc="processed", stream=stream, clock=clock) as bar:
        for step in range(60):  # 30 s of refreshes every 0.5 s, as invoke local polls
            clock.now += 0.5
            bar.show(step // 5)
        clock.now += 1
        bar.show(12)  # the last count, between two lines
    lines = stream.getvalue().splitlines()
    assert len(lines) == 7, lines  # at 5, 10, ... 30 s, then the end's (a new count)
    assert "\r" not in stream.getvalue()
    assert lines[0] == "processed: 1/12 items (8%) after 5 s"
    assert lines[-2:] == [
        "processed: 11/12 items (92%) after 30 s",
        "processed: 12/12 items (100%) after 31 s",
    ]


def test_the_last_line_is_not_printed_twice() -> None:
    stream, clock = io.StringIO(), Clock()
    with Progress(total=4, unit="msg", desc="done", stream=stream, clock=clock) as bar:
        clock.now += 6
        bar.show(4, note="DLQ 0")
    assert stream.getvalue() == "done: 4/4 msg (100%), DLQ 0 after 6 s\n"


def test_on_a_terminal_the_bar_is_drawn_in_place() -> None:
    stream, clock = Terminal(), Clock()
    with Progress(total=12, unit="items", desc="processed", stream=stream, clock=clock) as bar:
        for done in range(13):
            clock.now += 0.5
            bar.show(done)
    assert stream.getvalue().count("\n") <= 1 and "\r" in stream.getvalue()
    assert "12/12" in stream.getvalue()
