"""Log lines: valid JSON, one a line, each short enough for Docker not to split it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from worker.logs import MAX_LINE_BYTES, brief, log

DOCKER_BUFFER_BYTES = 16 * 1024  # the line and its newline must fit, or Docker splits it


def logged(capsys: pytest.CaptureFixture[str], event: str, **fields: Any) -> tuple[bytes, dict]:
    log(event, **fields)
    lines = capsys.readouterr().out.encode("utf-8").splitlines(keepends=True)
    assert len(lines) == 1
    assert len(lines[0]) <= DOCKER_BUFFER_BYTES
    return lines[0], json.loads(lines[0])


def test_short_lines_are_written_as_given(capsys: pytest.CaptureFixture[str]) -> None:
    _, record = logged(capsys, "item", outcome="ok", bytes_in=12, engine="local", ratio=0.5)
    assert {k: v for k, v in record.items() if k != "ts"} == {
        "event": "item",
        "outcome": "ok",
        "bytes_in": 12,
        "engine": "local",
        "ratio": 0.5,
    }


def test_a_1_mb_field_is_cut_and_the_line_stays_json(capsys: pytest.CaptureFixture[str]) -> None:
    line, record = logged(capsys, "item", outcome="failed", reason="é" * 500_000)
    assert len(line) < DOCKER_BUFFER_BYTES
    assert record["outcome"] == "failed"
    kept, _, marker = record["reason"].partition("…[truncated ")
    assert set(kept) == {"é"} and len(kept) > 1000, "it keeps as much as fits"
    assert marker == f"{1_000_000 - len(kept.encode())} bytes]"


def test_every_long_field_is_cut(capsys: pytest.CaptureFixture[str]) -> None:
    line, record = logged(capsys, "x", **{f"f{i}": "s" * 100_000 for i in range(10)})
    assert len(line) <= MAX_LINE_BYTES + 1
    assert all("[truncated" in record[f"f{i}"] for i in range(10))


def test_long_lists_and_nested_values_are_cut(capsys: pytest.CaptureFixture[str]) -> None:
    _, record = logged(
        capsys, "x", ids=list(range(100_000)), nested={"k": {str(i): i for i in range(10_000)}}
    )
    assert record["ids"][:3] == [0, 1, 2] and record["ids"][-1].startswith("…[truncated")
    assert record["nested"]["k"]["…"].startswith("[truncated")


def test_too_many_fields_to_fit_still_give_a_valid_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, record = logged(capsys, "flood", **{f"field{i}": "x" * 100 for i in range(1000)})
    assert record["event"] == "flood"
    assert "left out" in record["log_error"]


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_values_json_cannot_take_are_logged_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    circular: list[Any] = []
    circular.append(circular)
    _, record = logged(
        capsys,
        "odd",
        nan=math.nan,
        inf=-math.inf,
        huge=10**5000,
        big=2**70,
        keys={(1, 2): "tuple key", 3: "int key"},
        items={1, 2} - {2},
        unprintable=Unprintable(),
        surrogate="bad \udcff byte",
        circular=circular,
    )
    assert record["nan"] == "nan" and record["inf"] == "-inf"
    assert record["huge"] == "<integer of 16610 bits>"
    assert record["big"] == str(2**70)
    assert record["keys"] == {"(1, 2)": "tuple key", "3": "int key"}
    assert record["items"] == "{1}"
    assert record["unprintable"] == "<unprintable Unprintable>"
    assert record["surrogate"] == "bad ? byte"
    assert json.dumps(record["circular"]) == '[[[[[[["[[...]]"]]]]]]]', "cut at MAX_DEPTH"


def test_brief_cuts_sql_for_logs() -> None:
    sql = "SELECT * FROM S3Object s WHERE s.t LIKE '" + "%a" * 1000 + "'"
    short = brief(sql)
    assert short.startswith("SELECT * FROM S3Object s WHERE")
    assert short.endswith(f"…[truncated {len(sql) - 200} bytes]")
    assert brief("SELECT 1") == "SELECT 1"
    assert brief("x" * 20, limit=10) == "xxxxxxxxxx…[truncated 10 bytes]"


def test_brief_never_splits_a_character() -> None:
    assert brief("é" * 10, limit=5) == "éé…[truncated 16 bytes]"
