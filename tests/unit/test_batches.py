"""A batch's result lines: each item's JSON kept whole on one line, failures with reasons."""

from __future__ import annotations

import json

from worker.batches import BatchLine, failure_line, read_lines, result_line


def test_lines_read_back_as_written_with_line_breaks_in_results() -> None:
    pretty = json.dumps({"rows": [{"note": "two\nlines"}, 2]}, indent=2).encode()
    stored = b"".join(result_line("s3://in/a b.csv", '"e1"', [pretty[:7], pretty[7:]]))
    stored += failure_line("s3://in/ü.csv", "malformed CSV")
    assert stored.count(b"\n") == 2, "one line per item"
    assert list(read_lines(stored.splitlines())) == [
        BatchLine("s3://in/a b.csv", "e1", {"rows": [{"note": "two\nlines"}, 2]}),
        BatchLine("s3://in/ü.csv", error="malformed CSV"),
    ]
    assert [line.failed for line in read_lines(stored.splitlines())] == [False, True]
