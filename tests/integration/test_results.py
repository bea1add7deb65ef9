"""Runs and their results (issue 12), against the emulator over HTTP.

* The rerun rule: a result is keyed by everything that made it, so a rerun with another
  limit, query, rows format or code stores new results, and the same rerun is already done.
* The manifest lists exactly what a run did: its results, its failures with their reasons,
  and nothing another run stored.
* The final step (``python -m worker.final``, as the final job runs it) reduces the results
  and fails past the tolerated share of failures.
* Merging 10 000 results holds one chunk at a time, not the results.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchspot import results as operator_results
from batchspot.seed import SeedReport, seed
from tests.integration.harness import (
    ROOT,
    Stack,
    log_events,
    make_stack,
    output_objects,
    run_worker,
    worker_env,
)
from worker.config import load_config
from worker.final import FinalError, FinalSettings, run_final
from worker.manifest import Entry, Run, build_manifest, merge, read_entries

EXPLODE = "tests.integration.handlers:explode"
SOURCE = b"id,value\n1,10\n2,20\n3,30\n"


@dataclass(frozen=True)
class FirstRun:
    """A source processed once with the default settings, and those settings."""

    stack: Stack
    env: dict[str, str]


def seed_skipping_done(
    s3: Any, sqs: Any, stack: Stack, env: dict[str, str], query: str | None = None
) -> SeedReport:
    """Seed ``src/`` as ``invoke seed --skip-done`` does for workers with ``env``."""
    return seed(
        s3,
        sqs,
        queue_url=stack.queue_url,
        bucket=stack.input_bucket,
        prefix="src/",
        query=query,
        skip_done=True,
        recipe=load_config(env).recipe,
        output_bucket=stack.output_bucket,
    )


@pytest.fixture(scope="module")
def first_run(s3: Any, sqs: Any, aws_env: dict[str, str]) -> FirstRun:
    stack = make_stack(sqs, s3)
    s3.put_object(Bucket=stack.input_bucket, Key="src/a.csv", Body=SOURCE)
    env = worker_env(aws_env, stack, QUERY_ENGINE="local")
    assert seed_skipping_done(s3, sqs, stack, env).sent == 1
    done = run_worker(env)
    assert done.returncode == 0, done.stderr
    assert [e["outcome"] for e in log_events(done.stdout, "item")] == ["ok"]
    return FirstRun(stack, env)


def test_a_rerun_with_the_same_settings_is_already_done(first_run: FirstRun, s3, sqs) -> None:
    report = seed_skipping_done(s3, sqs, first_run.stack, first_run.env)
    assert (report.skipped_done, report.sent) == (1, 0), "seed --skip-done finds the result"
    # Queued again all the same (a plain seed): the worker finds the result and stores nothing.
    plain = seed(s3, sqs, queue_url=first_run.stack.queue_url, bucket=first_run.stack.input_bucket)
    assert plain.sent == 1
    before = output_objects(s3, first_run.stack.output_bucket)
    done = run_worker(first_run.env)
    assert [e["outcome"] for e in log_events(done.stdout, "item")] == ["already-done"]
    assert output_objects(s3, first_run.stack.output_bucket) == before


@pytest.mark.parametrize(
    ("settings", "query", "stored"),
    [
        ({"S3_QUERY_LIMIT": "2"}, None, [{"id": "1", "value": "10"}, {"id": "2", "value": "20"}]),
        ({}, "SELECT s.id FROM S3Object s WHERE s.id = '3'", [{"id": "3"}]),
        ({"ROWS_FORMAT": "csv"}, None, None),
        ({"CODE_VERSION": "batchspot@sha256:" + "1" * 64}, None, None),
    ],
    ids=["limit", "query", "rows-format", "code-version"],
)
def test_a_rerun_with_other_settings_stores_a_new_result(
    first_run: FirstRun, s3, sqs, settings: dict[str, str], query: str | None, stored: Any
) -> None:
    env = {**first_run.env, **settings}
    before = output_objects(s3, first_run.stack.output_bucket)

    report = seed_skipping_done(s3, sqs, first_run.stack, env, query)
    done = run_worker(env)

    assert (report.skipped_done, report.sent) == (0, 1), "another recipe's result is not done"
    assert [e["outcome"] for e in log_events(done.stdout, "item")] == ["ok"]
    after = output_objects(s3, first_run.stack.output_bucket)
    (new_key,) = set(after) - set(before)
    assert set(before) <= set(after), "earlier results stay"
    if stored is not None:
        assert json.loads(after[new_key]) == stored


def test_the_manifest_lists_exactly_what_the_run_did(tmp_path: Path, s3, sqs, aws_env) -> None:
    stack = make_stack(sqs, s3, max_receive=2)
    for name, first_value in [("good-1", "1"), ("good-2", "2"), ("bad", "boom"), ("earlier", "9")]:
        s3.put_object(
            Bucket=stack.input_bucket, Key=f"src/{name}.csv", Body=f"id\n{first_value}\n".encode()
        )
    env = worker_env(aws_env, stack, HANDLER=EXPLODE, QUERY_ENGINE="local")
    # Another run stored one result before: it is not this run's.
    seed(s3, sqs, queue_url=stack.queue_url, bucket=stack.input_bucket, prefix="src/earlier")
    assert run_worker({**env, "AWS_BATCH_JOB_ID": "run-earlier"}).returncode == 0
    seed(s3, sqs, queue_url=stack.queue_url, bucket=stack.input_bucket, prefix="src/")
    children = [
        {**env, "AWS_BATCH_JOB_ID": f"run-1:{index}", "AWS_BATCH_JOB_ARRAY_INDEX": str(index)}
        for index in (0, 1)
    ]
    with ThreadPoolExecutor(2) as pool:
        finished = list(pool.map(run_worker, children))
    assert [f.returncode for f in finished] == [0, 0]
    items = [e for f in finished for e in log_events(f.stdout, "item")]

    manifest = build_manifest(
        s3, sqs, Run("run-1", stack.output_bucket, "results/", stack.queue_url)
    )

    stored = {e["source"]: e for e in items if e["outcome"] == "ok"}
    succeeded = list(read_entries(s3, stack.output_bucket, manifest.succeeded_key))
    assert {e.source for e in succeeded} == {
        f"s3://{stack.input_bucket}/src/good-1.csv",
        f"s3://{stack.input_bucket}/src/good-2.csv",
    }
    for entry in succeeded:
        assert f"s3://{stack.output_bucket}/{entry.output}" == stored[entry.source]["output"]
        assert entry.size == stored[entry.source]["bytes_out"]
        assert (entry.attempts, entry.reason) == (1, None)
    (failure,) = read_entries(s3, stack.output_bucket, manifest.failed_key)
    assert failure.source == f"s3://{stack.input_bucket}/src/bad.csv"
    assert failure.attempts == 2 and "the custom code refused this input" in failure.reason
    counts = manifest.counts
    assert (counts.succeeded, counts.failed, counts.pending) == (2, 1, 0)
    assert counts.dead_lettered == 1
    document = json.loads(
        s3.get_object(Bucket=stack.output_bucket, Key=manifest.key)["Body"].read()
    )
    assert document == manifest.document()
    # What `invoke results --failed --download DIR` prints and fetches.
    assert [
        operator_results.render_failure(e) for e in operator_results.failures(s3, manifest)
    ] == [f"s3://{stack.input_bucket}/src/bad.csv after 2 attempt(s): {failure.reason}"]
    assert operator_results.download(s3, manifest, tmp_path / "out") == 2
    for entry in succeeded:
        assert (tmp_path / "out" / entry.output).read_bytes() == output_objects(
            s3, stack.output_bucket
        )[entry.output]

    # The final job over the same run: the command's JSON stored, the run failed past 20 %.
    count_lines = (
        f'{sys.executable} -c "import json, sys; '
        "print(json.dumps({'results': [json.loads(l)['result'] for l in sys.stdin]}))\""
    )
    final = subprocess.run(
        [sys.executable, "-m", "worker.final"],
        cwd=ROOT,
        env={
            **env,
            "RUN_JOB_ID": "run-1",
            "FINAL_COMMAND": count_lines,
            "TOLERATE_FAILURES": "20",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert final.returncode == 1, final.stdout + final.stderr
    assert "33.3% of the items failed" in log_events(final.stdout, "final-failed")[0]["reason"]
    reduced = s3.get_object(Bucket=stack.output_bucket, Key="runs/run-1/final.json")
    results = [
        json.loads(s3.get_object(Bucket=stack.output_bucket, Key=e.output)["Body"].read())
        for e in succeeded
    ]
    assert json.loads(reduced["Body"].read()) == {"results": results}


@pytest.mark.timeout(900)
def test_merging_thousands_of_results_holds_one_chunk_at_a_time(s3, sqs, tmp_path: Path) -> None:
    # 19 MiB in 2000 results: as much data as 10 000 of 2 kB, a fifth of the calls to moto.
    count, size = 2_000, 10_000
    stack = make_stack(sqs, s3)
    body = json.dumps({"pad": "x" * (size - 20)}, indent=1).encode()  # spans lines, as JSON may

    def put(index: int) -> None:
        s3.put_object(
            Bucket=stack.output_bucket,
            Key=f"results/in/part-{index:05d}.csv.0123456789abcdef.json",
            Body=body,
            Metadata={"job-id": f"big:{index % 4}", "source": f"s3://in/part-{index:05d}.csv"},
        )

    with ThreadPoolExecutor(8) as pool:  # below the client's 10 pooled connections
        list(pool.map(put, range(count)))
    manifest = build_manifest(s3, sqs, Run("big", stack.output_bucket, "results/", stack.queue_url))
    assert manifest.counts.succeeded == count

    merged = tmp_path / "merged.jsonl"
    tracemalloc.start()
    try:
        with merged.open("wb") as sink:
            merge(
                s3,
                stack.output_bucket,
                read_entries(s3, stack.output_bucket, manifest.succeeded_key),
                sink,
                "results/",
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    total = count * len(body)
    print(f"merged {count} results ({total / 2**20:.1f} MiB): peak traced {peak / 2**20:.2f} MiB")
    assert peak < total / 10, f"peak {peak} bytes for {total} bytes of results"
    with merged.open() as lines:
        parsed = [json.loads(line) for line in lines]
    assert len(parsed) == count
    assert parsed[0] == {
        "source": "s3://in/part-00000.csv",
        "output": "results/in/part-00000.csv.0123456789abcdef.json",
        "result": json.loads(body),
    }


def test_merge_writes_one_line_per_result_even_if_it_spans_lines(s3, sqs) -> None:
    stack = make_stack(sqs, s3)
    s3.put_object(Bucket=stack.output_bucket, Key="r/a.json", Body=b'{\n "a": "x\\ny"\r\n}')
    sink = io.BytesIO()
    merge(s3, stack.output_bucket, [Entry("s3://in/a", "r/a.json", 20, 1)], sink, "r/")
    (line,) = sink.getvalue().splitlines()
    assert json.loads(line)["result"] == {"a": "x\ny"}


def test_the_final_step_stores_nothing_when_its_command_prints_no_json(s3, sqs) -> None:
    stack = make_stack(sqs, s3)
    run = Run("no-json", stack.output_bucket, "results/", stack.queue_url)
    with pytest.raises(FinalError, match="the final command printed output that is not JSON"):
        run_final(s3, sqs, run, FinalSettings(command="echo done"))
    listed = s3.list_objects_v2(Bucket=stack.output_bucket, Prefix="runs/no-json/")["Contents"]
    stored = {item["Key"] for item in listed}
    assert "runs/no-json/manifest.json" in stored and "runs/no-json/final.json" not in stored
