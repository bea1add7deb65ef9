"""Hostile inputs amid healthy traffic: none may hold a worker hostage (issue 11).

Each test seeds healthy items plus hostile ones into a queue whose maxReceiveCount is 1, runs
one ``python -m worker`` (as the image does) and passes only if:

* every healthy item is stored;
* every hostile item is settled (stored, or dead-lettered with its reason) within its deadline;
* the worker's peak RSS (VmHWM, read from /proc while it runs) stays within its budget: 128 MiB,
  or 256 MiB once it ran a scan on the vectorised fast path (issue 14);
* nothing is written outside the results prefix.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchspot.emulators import Emulator
from batchspot.fleet import Fleet, worker_env
from batchspot_support.hostile import (
    CASES,
    PARQUET_CASES,
    QUERY_CASES,
    message_input,
    parquet_file,
    peak_rss_budget_kib,
    ran_fast_path,
)
from tests.integration.harness import (
    Stack,
    drain,
    log_events,
    make_stack,
    output_objects,
    put_sources,
    queue_depths,
    send_all,
)

EXPLODE = "tests.integration.handlers:explode"
HEALTHY = 5

pytestmark = pytest.mark.once


@dataclass
class Run:
    """What one worker run did with healthy and hostile items."""

    sqs: Any
    stack: Stack
    items: list[dict[str, Any]]
    outputs: dict[str, bytes]
    dead_letters: list[str]
    peak_rss_kib: int
    peak_rss_budget_kib: int
    exit_code: int
    log_lines: list[str]

    def failed(self) -> list[dict[str, Any]]:
        return [e for e in self.items if e["outcome"] == "failed"]


def hostile_source(s3: Any, stack: Stack, key: str, body: bytes, **message: Any) -> str:
    """Upload one hostile source; return its message body."""
    s3.put_object(Bucket=stack.input_bucket, Key=key, Body=body)
    return json.dumps({"bucket": stack.input_bucket, "key": key, **message})


@pytest.fixture
def stack(sqs, s3) -> Stack:
    """A fresh queue (maxReceiveCount 1: a failure is dead-lettered at once) and buckets."""
    return make_stack(sqs, s3, max_receive=1)


@pytest.fixture
def hostile_run(tmp_path: Path, emulator: Emulator, sqs, s3, stack: Stack) -> Iterator[Any]:
    """Run one worker over healthy items plus the given hostile message bodies."""

    def run(hostile: list[str], **settings: str) -> Run:
        healthy = put_sources(s3, stack, HEALTHY)
        send_all(sqs, stack.queue_url, healthy[:2] + hostile + healthy[2:])
        env = worker_env(
            emulator.client_env(),
            stack.queue_url,
            stack.output_bucket,
            IDLE_EXIT_SECONDS="1",
            RETRY_DELAY_SECONDS="0",
            **settings,
        )
        fleet = Fleet(env, tmp_path)
        child = fleet.start(0)
        try:
            assert fleet.wait(timeout=180), "the worker did not finish"
        finally:
            fleet.kill_all()
        text = child.log.read_text(errors="replace")
        return Run(
            sqs=sqs,
            stack=stack,
            items=log_events(text, "item"),
            outputs=output_objects(s3, stack.output_bucket),
            dead_letters=drain(sqs, stack.dlq_url),
            peak_rss_kib=child.peak_rss_kib or 0,
            peak_rss_budget_kib=peak_rss_budget_kib(ran_fast_path(log_events(text))),
            exit_code=child.exit_code or 0,
            log_lines=text.splitlines(),
        )

    yield run


def assert_contained(run: Run, hostile: int, deadline_seconds: float | None = None) -> None:
    """The four promises of this suite, for ``hostile`` hostile items in ``run``.

    Every healthy item is stored; every hostile one is settled, stored or dead-lettered (and
    only the failed ones dead-lettered), within its deadline; peak RSS stays within bounds;
    nothing is written outside the results prefix.
    """
    failed = len(run.failed())
    assert sum(1 for e in run.items if e["outcome"] == "ok") == HEALTHY + hostile - failed
    assert len(run.items) == HEALTHY + hostile, run.items
    assert len(run.outputs) == HEALTHY + hostile - failed
    assert all(key.startswith("results/") for key in run.outputs), list(run.outputs)
    assert len(run.dead_letters) == failed
    assert queue_depths(run.sqs, run.stack.queue_url) == (0, 0)
    if deadline_seconds is not None:
        assert all(e.get("duration_ms", 0) <= deadline_seconds * 1000 for e in run.items)
    assert 0 < run.peak_rss_kib <= run.peak_rss_budget_kib, f"peak RSS {run.peak_rss_kib} KiB"


def test_each_kind_of_bad_output_key_is_refused_for_good(hostile_run) -> None:
    bad_keys = {
        "outside the prefix": "elsewhere/result.json",
        "absolute": "/results/result.json",
        "dot-dot": "results/../elsewhere/result.json",
        "control character": "results/evil\r\nkey.json",
        "over 1024 bytes": "results/" + "k" * 1100,
        "another item's derived key": "results/in/a.csv.0123456789abcdef.json",
    }
    bodies = [
        json.dumps({"bucket": "any", "key": f"{name}.csv", "output_key": key})
        for name, key in bad_keys.items()
    ]
    run = hostile_run(bodies, HANDLER=EXPLODE)
    assert_contained(run, hostile=len(bad_keys))
    for event in run.failed():
        assert event["reason"].startswith("refused output_key: output_key ")
        assert event["next"] == "dead-letter queue"


def test_custom_code_that_hangs_is_cut_off_at_the_items_deadline(hostile_run, s3, stack):
    """HANDLER_TIMEOUT is 100 s, but the whole item may take only ITEM_TIMEOUT_SECONDS."""
    hang = hostile_source(s3, stack, "hang.csv", b"value\nhang\n")
    run = hostile_run(
        [hang],
        HANDLER=EXPLODE,
        HANDLER_TIMEOUT="100",
        ITEM_TIMEOUT_SECONDS="4",
        WORKER_CONCURRENCY="2",
    )
    assert_contained(run, hostile=1, deadline_seconds=4)
    (failed,) = run.failed()
    assert "deadline" in failed["reason"]


# Custom code that leaves processes behind, or floods stderr, when its input says so; each
# leftover writes its pid to $TEST_MARK_DIR first, so the test can ask whether it still lives.
LEAVES_PROCESSES = r"""
rows=$(cat)
case "$rows" in
  *daemon*) sh -c 'echo $$ > "$TEST_MARK_DIR/daemon.pid"; exec sleep 60' & ;;
  *setsid*) setsid sh -c 'echo $$ > "$TEST_MARK_DIR/setsid.pid"; exec sleep 60' & ;;
  *stderr*) head -c 100000000 /dev/zero >&2 ;;
esac
while [ "${rows#*daemon}" != "$rows" ] && [ ! -s "$TEST_MARK_DIR/daemon.pid" ]; do :; done
while [ "${rows#*setsid}" != "$rows" ] && [ ! -s "$TEST_MARK_DIR/setsid.pid" ]; do :; done
echo '{"done": true}'
"""


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone: it runs nothing and holds no pipe)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_custom_code_cannot_outlive_its_item_nor_flood_the_host(
    tmp_path: Path, hostile_run, s3, stack
) -> None:
    """A daemon child, a setsid grandchild and 100 MB of stderr, each its own item."""
    marks = tmp_path / "marks"
    marks.mkdir()
    hostile = [
        hostile_source(s3, stack, f"{kind}.csv", f"value\n{kind}\n".encode())
        for kind in ("daemon", "setsid", "stderr")
    ]
    run = hostile_run(
        hostile,
        HANDLER_COMMAND=f"sh -c {shlex.quote(LEAVES_PROCESSES)}",
        TEST_MARK_DIR=str(marks),
    )
    assert sum(1 for e in run.items if e["outcome"] == "ok") == HEALTHY + 3
    assert len(run.outputs) == HEALTHY + 3 and not run.dead_letters
    assert all(json.loads(body) == {"done": True} for body in run.outputs.values())
    pids = {path.stem: int(path.read_text()) for path in marks.glob("*.pid")}
    assert set(pids) == {"daemon", "setsid"}
    assert not [kind for kind, pid in pids.items() if alive(pid)], "left running after the item"
    assert 0 < run.peak_rss_kib <= run.peak_rss_budget_kib, f"peak RSS {run.peak_rss_kib} KiB"
    assert all(len(line) < 16 * 1024 for line in run.log_lines), "Docker splits longer lines"


ENGINE_CASES = {**QUERY_CASES, **CASES}


@pytest.mark.parametrize("name", list(ENGINE_CASES))
def test_a_hostile_source_or_query_is_settled_amid_healthy_items(
    name: str, hostile_run, s3, stack
) -> None:
    """Each input of the issue's list, with the local engine (the one that must hold)."""
    make, sql, fields, expected = ENGINE_CASES[name]
    message = {"query": sql, "input": message_input({"csv_header": "USE", **fields})}
    hostile = hostile_source(s3, stack, "hostile.data", make(), **message)
    run = hostile_run([hostile], QUERY_ENGINE="local", ITEM_TIMEOUT_SECONDS="60")

    settled = [e for e in run.items if e["source"].endswith("/hostile.data")]
    assert len(settled) == 1, run.items
    if settled[0]["outcome"] == "failed":
        assert expected in settled[0]["reason"]
        assert settled[0]["next"] == "dead-letter queue"
    assert_contained(run, hostile=1, deadline_seconds=60)


def test_every_hostile_parquet_file_fails_for_good_amid_healthy_items(
    hostile_run, s3, stack
) -> None:
    """Issue 22's hostile Parquet files, all in one worker run: each dead-lettered with its
    reason, the healthy items (a Parquet one too, by its suffix) stored, the worker within the
    fast path's memory budget."""
    hostile = [
        hostile_source(
            s3,
            stack,
            f"hostile-{index}.parquet",
            make(),
            query=sql,
            input=message_input(fields),
        )
        for index, (make, sql, fields, _) in enumerate(PARQUET_CASES.values())
    ]
    healthy = hostile_source(
        s3,
        stack,
        "healthy.parquet",
        parquet_file({"i": list(range(1000)), "s": [f"r{i}" for i in range(1000)]}),
        query="SELECT s.s FROM S3Object s WHERE s.i >= 998",
    )
    run = hostile_run([*hostile, healthy], QUERY_ENGINE="local", ITEM_TIMEOUT_SECONDS="60")

    stored = [body for key, body in run.outputs.items() if "healthy.parquet" in key]
    assert stored == [b'[{"s":"r998"},{"s":"r999"}]'], list(run.outputs)  # rows-to-json
    for index, (_, _, _, expected) in enumerate(PARQUET_CASES.values()):
        settled = [e for e in run.items if e["source"].endswith(f"/hostile-{index}.parquet")]
        assert [e["outcome"] for e in settled] == ["failed"], settled
        assert expected in settled[0]["reason"]
        assert settled[0]["next"] == "dead-letter queue"
    assert_contained(run, hostile=len(PARQUET_CASES) + 1, deadline_seconds=60)
