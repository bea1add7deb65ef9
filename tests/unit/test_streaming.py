"""Rows stream from the query to the custom code: nothing holds the whole result on the way.

A command handler reads rows on stdin while the query still runs, the built-in rows-to-json
turns them into its array as it uploads, and only a Python handler (whose interface is one
``str``) gets them joined, capped at MAX_RESULT_BYTES. Errors of the query raised mid-stream
stay the query's, so the item fails for the query's reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker import query
from worker.handlers import CommandHandler, PythonHandler, RowsToJson
from worker.messages import InputFormat
from worker.query import QueryError, QueryLimitExceeded, QueryRequest, run_query

ROOT = Path(__file__).resolve().parents[2]
GIB = 1024**3


def stored(output) -> object:
    return json.loads(b"".join(output.chunks()))


def command(line: str) -> CommandHandler:
    return CommandHandler(line, 30, max_output_bytes=GIB)


def wait_for(path: Path, seconds: float = 10) -> bool:
    """Wait until ``path`` exists (the event), giving up after ``seconds``."""
    give_up = time.monotonic() + seconds
    while not path.exists():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.01)
    return True


def test_a_command_reads_rows_before_the_query_has_produced_the_rest(tmp_path: Path) -> None:
    marker = tmp_path / "first-read"
    seen: list[bool] = []

    def rows() -> Iterator[str]:
        yield '{"n":1}\n'
        # The query "runs on": the command must already have the first record.
        seen.append(wait_for(marker))
        yield '{"n":2}\n'

    script = f'read first; echo "$first" > {marker}; cat >/dev/null; echo \'{{"ok":1}}\''
    assert stored(command(f"sh -c {json.dumps(script)}")(rows())) == {"ok": 1}
    assert seen == [True]
    assert marker.read_text() == '{"n":1}\n'


def test_a_query_failing_mid_stream_kills_the_command_and_fails_for_its_reason(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pid"

    def rows() -> Iterator[str]:
        yield "a\n"
        wait_for(pid_file)
        raise QueryLimitExceeded("record 2 is over 1 MiB")

    with pytest.raises(QueryLimitExceeded, match="record 2 is over 1 MiB"):
        command(f"sh -c 'echo $$ > {pid_file}; cat >/dev/null; echo 1'")(rows())
    pid = int(pid_file.read_text())
    status = Path(f"/proc/{pid}/status")
    assert not status.exists() or "State:\tZ" in status.read_text()


def test_a_command_that_stops_reading_still_sees_the_query_fail() -> None:
    # ``head -c 1`` exits at once; the query still runs to its end, whose failure counts.
    pulled: list[int] = []

    def rows() -> Iterator[str]:
        for number in range(200):
            pulled.append(number)
            yield "x" * 65536
        raise QueryError("source changed while it was read")

    with pytest.raises(QueryError, match="source changed"):
        command("sh -c 'head -c 1 >/dev/null; echo 1'")(rows())
    assert len(pulled) == 200


@pytest.mark.parametrize(
    ("rows_format", "chunks", "array"),
    [
        (
            "json",
            ['{"a":"1"}\n{"a', '":"2"}\n', '{"a":"3\u2028"}\n'],
            [{"a": "1"}, {"a": "2"}, {"a": "3\u2028"}],
        ),
        ("csv", ['1,"x\n', 'y"\n2,', "z\n"], [["1", "x\ny"], ["2", "z"]]),
    ],
)
def test_rows_to_json_joins_records_split_across_chunks(
    rows_format: str, chunks: list[str], array: list[object]
) -> None:
    assert stored(RowsToJson(rows_format)(iter(chunks))) == array


def test_a_python_handler_gets_one_string_capped_at_max_result_bytes(monkeypatch) -> None:
    handler = PythonHandler("json:loads", timeout=5)
    assert stored(handler(iter(['{"a":', "1}"]))) == {"a": 1}
    monkeypatch.setattr(query, "MAX_RESULT_BYTES", 5)
    with pytest.raises(QueryLimitExceeded, match="passed MAX_RESULT_BYTES"):
        handler(iter(['"é', 'é"']))  # four characters, six bytes of UTF-8


class Selecting:
    """S3 Select over a scripted event stream, whose HEAD answers the ETags in turn."""

    def __init__(self, etags: list[str], answer: str) -> None:
        self.etags, self.answer = etags, answer

    def head_object(self, **kwargs):
        return {"ETag": self.etags.pop(0)}

    def select_object_content(self, **kwargs):
        def events():
            for start in range(0, len(self.answer), 3):  # records split across events
                yield {"Records": {"Payload": self.answer[start : start + 3].encode()}}
            yield {"End": {}}

        return {"Payload": events()}


def select(s3: Selecting, sql: str = "SELECT * FROM S3Object s"):
    return run_query(s3, QueryRequest("b", "k", sql, InputFormat()), "s3select")


def test_s3_select_keys_the_version_asked_before_and_refuses_one_changed_meanwhile() -> None:
    result = select(Selecting(['"v1"', '"v1"'], '{"a":"1"}\n{"a":"2"}\n'))
    assert result.etag == '"v1"'  # known before any row is read
    assert result.text == '{"a":"1"}\n{"a":"2"}\n'
    changed = select(Selecting(['"v1"', '"v2"'], '{"a":"1"}\n'))
    with pytest.raises(QueryError, match="overwritten while S3 Select read it"):
        changed.text  # noqa: B018 - the check runs once the rows are read


def test_s3_select_is_cut_to_limit_across_split_events() -> None:
    answer = '{"a":"1"}\n{"a":"2"}\n{"a":"3"}\n'
    result = select(Selecting(['"v"', '"v"'], answer), "SELECT * FROM S3Object s LIMIT 2")
    assert result.text == '{"a":"1"}\n{"a":"2"}\n'


# A fresh interpreter: a warm-up query on a small object loads whatever the query path
# needs, the peak is reset (the object's construction must not hide the query's peak) and
# then taken across a SELECT * of a large object through the handler.
CHILD = """
import json, sys
from pathlib import Path
from tests.unit.bare_s3 import BytesS3
from worker.handlers import CommandHandler, RowsToJson
from worker.messages import InputFormat
from worker.query import QueryRequest, local, run_query

local.FAST_PATH = False  # the Python evaluator's stream; the fast path has its own budget

def peak_kib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])

rows = int(sys.argv[2])
body = b"id,name,amount\\n" + b"".join(b"%d,name-%d,%d.25\\n" % (i, i, i) for i in range(rows))
s3 = BytesS3({"big": body, "small": body[:4096]})
sql = "SELECT * FROM S3Object s"
command = sys.argv[1] == "command"
handler = CommandHandler("wc -c", 60, max_output_bytes=1 << 30) if command else RowsToJson("json")

def run(key):
    result = run_query(s3, QueryRequest("b", key, sql, InputFormat()), "local")
    output = handler(result.chunks())
    if command:  # wc -c prints the bytes it read: a JSON number
        size = json.loads(b"".join(output.chunks()))
    else:
        size = sum(len(chunk) for chunk in output.chunks())
    return result.chars, size

run("small")
Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
before = peak_kib()
produced, output = run("big")
print(json.dumps({"before_kib": before, "after_kib": peak_kib(), "produced": produced,
                  "output": output}))
"""


@pytest.mark.timeout(300)
@pytest.mark.parametrize("handler", ["command", "rows-to-json"])
def test_memory_stays_flat_for_a_large_select_star(handler: str) -> None:
    rows = 1_500_000  # ~40 MB of CSV in, ~80 MB of JSON lines out
    done = subprocess.run(
        [sys.executable, "-c", CHILD, handler, str(rows)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=290,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    print(report)  # the figures, with pytest -s
    assert report["produced"] > 64 << 20
    # Every record reached the handler: the command counted every byte; the array holds each
    # record, a comma for each newline but the last, and its brackets.
    extra = 0 if handler == "command" else 1
    assert report["output"] == report["produced"] + extra
    # Held at once: a fetched range (up to 8 MiB, copied by the fake S3), a chunk, the
    # parsers' buffers; never the 84 MiB result.
    assert report["after_kib"] - report["before_kib"] < 32 << 10
