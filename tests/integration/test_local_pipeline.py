"""``invoke local`` end to end, as a new user runs it, checked in the emulator it used."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from matplotlib.image import imread

from batchspot import report
from batchspot.sample_data import month_csv
from tests.integration.harness import ROOT, output_objects

ROWS = 30


def invoke(aws_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run an invoke task as typed, its output captured (no terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=ROOT,
        env={**os.environ, **aws_env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_invoke_local_runs_the_whole_pipeline(tmp_path: Path, emulator, s3, sqs, aws_env) -> None:
    name = f"local{uuid.uuid4().hex[:8]}"
    result = invoke(
        aws_env,
        "local",
        "--endpoint", emulator.endpoint,
        "--workers", "3",
        "--rows", str(ROWS),
        "--state-dir", str(tmp_path),
        "--name", name,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "items:            12 seeded, 12 stored" in result.stdout
    assert "dead-letter:      0" in result.stdout
    assert "% saved" in result.stdout
    hosted = "queue and storage only" if emulator.name == "localstack" else "the whole stack"
    assert f"({hosted}" in result.stdout
    assert "final step:       succeeded 12, failed 0, pending in the queue 0" in result.stdout

    (stack_dir,) = (tmp_path / "stacks").iterdir()
    outputs = json.loads((stack_dir / "outputs.json").read_text())
    stored = output_objects(s3, outputs["output_bucket"])
    assert len(stored) == 12
    listed = s3.list_objects_v2(Bucket=outputs["output_bucket"], Prefix="runs/")["Contents"]
    (manifest,) = (item["Key"] for item in listed if item["Key"].endswith("/manifest.json"))
    assert f"manifest:         s3://{outputs['output_bucket']}/{manifest}" in result.stdout
    document = s3.get_object(Bucket=outputs["output_bucket"], Key=manifest)["Body"].read()
    counts = json.loads(document)["Counts"]
    assert counts["succeeded"] == 12
    for key, body in stored.items():
        month = int(key.split("yellow_tripdata_2018-")[1][:2])
        expected = list(csv.DictReader(io.StringIO(month_csv(month, ROWS))))
        assert json.loads(body) == expected, f"{key} is not the rows of its source"
    copied = sorted(p.name for p in (tmp_path / "results").rglob("*.json"))
    assert copied == sorted(Path(k).name for k in stored)
    for queue in ("queue_url", "dlq_url"):
        attributes = sqs.get_queue_attributes(
            QueueUrl=outputs[queue], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "0"
    assert f"report:           {tmp_path / 'report.png'}" in result.stdout
    check_output_fits_a_log(result)
    check_report(tmp_path, counts, aws_env)


def check_output_fits_a_log(result: subprocess.CompletedProcess[str]) -> None:
    """Captured without a terminal, the progress is a few lines, not a redraw per refresh."""
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) < 40, "\n".join(lines)
    # Text mode reads tqdm's carriage returns as line ends: each redraw counts as a line here.
    assert sum(line.startswith("processed: ") for line in lines) <= 3


def check_report(tmp_path: Path, counts: dict[str, int], aws_env: dict[str, str]) -> None:
    """The run's picture, and `invoke report` redrawing it, agree with the run's manifest."""
    picture = tmp_path / "report.png"
    height, width = imread(picture).shape[:2]
    assert (width, height) == (1500, 850), "15 x 8.5 inches at 100 dpi"
    again = invoke(
        aws_env,
        "report",
        "--log-dir",
        str(tmp_path / "logs"),
        "--chart",
        str(tmp_path / "again.png"),
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert (
        f"items: succeeded {counts['succeeded']}, already done 0, failed attempts 0, "
        f"dead-lettered {counts['dead_lettered']}"
    ) in again.stdout
    assert "3 children" in again.stdout and "% saved" in again.stdout
    assert (tmp_path / "again.png").stat().st_size > 10_000

    run = report.from_log_dir(tmp_path / "logs")
    figure = report.picture(run, None)
    assert [axes.get_title() for axes in figure.axes] == list(report.PANELS)
    over_time, durations, _, children, _ = figure.axes
    (succeeded,) = over_time.get_lines()
    assert succeeded.get_ydata()[-1] == counts["succeeded"] == len(run.items)
    assert sum(bar.get_height() for bar in durations.patches) == counts["succeeded"]
    assert len(children.patches) == 3, "one bar per array child"
    assert sum(child.items for child in run.children.values()) == counts["succeeded"]
