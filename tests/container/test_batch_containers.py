"""The AWS path on one machine: ``invoke local --containers``, where moto's Batch runs the
array job and the final job as containers of the image built here."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import uuid
from typing import Any

import pytest

from batchspot.sample_data import month_csv
from tests.container.conftest import INVOKE
from tests.integration.harness import ROOT, output_objects

ROWS = 30


@pytest.fixture(scope="module")
def containers_run(tmp_path_factory, worker_image, batch_moto) -> tuple[str, dict[str, Any]]:
    """``invoke local --containers`` against the session's moto; its output and outputs.

    ``worker_image`` first: the base and the layers are then cached for the run's own build.
    """
    state = tmp_path_factory.mktemp("local-containers")
    name = f"lc{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [
            str(INVOKE), "local", "--containers", "--local-base",
            "--endpoint", batch_moto.endpoint,
            "--workers", "2",
            "--rows", str(ROWS),
            "--state-dir", str(state),
            "--name", name,
        ],
        cwd=ROOT,
        env={**os.environ, **batch_moto.client_env()},
        capture_output=True,
        text=True,
        timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    (stack_dir,) = (state / "stacks").iterdir()
    return result.stdout, json.loads((stack_dir / "outputs.json").read_text())


def test_local_containers_runs_the_array_and_final_jobs_as_containers(
    containers_run, docker_client, worker_image, s3
):
    stdout, outputs = containers_run

    assert "items:            12 seeded, 12 stored" in stdout
    assert "dead-letter:      0" in stdout
    assert "final step:       succeeded 12, failed 0, pending in the queue 0" in stdout
    image = stdout.split("children ran as containers of ", 1)[1].split(" ", 1)[0]
    assert image.startswith("batchspot-worker:")
    assert "containers:       2 children ran as containers of " in stdout
    assert "(SUCCEEDED 2); final job SUCCEEDED" in stdout
    # The final job's container wrote the manifest the summary names.
    manifest_key = stdout.split(f"s3://{outputs['output_bucket']}/", 2)[2].split()[0]
    manifest = json.loads(
        s3.get_object(Bucket=outputs["output_bucket"], Key=manifest_key)["Body"].read()
    )
    assert manifest["Counts"]["succeeded"] == 12
    stored = output_objects(s3, outputs["output_bucket"])
    for key, body in stored.items():
        month = int(key.split("yellow_tripdata_2018-")[1][:2])
        assert json.loads(body) == list(csv.DictReader(io.StringIO(month_csv(month, ROWS))))
    assert len(stored) == 12
    # moto never removes a job's container; the run does.
    assert not docker_client.containers.list(all=True, filters={"ancestor": image})


def _registered(batch_moto, job_definition: str) -> dict[str, Any]:
    """The newest revision of ``job_definition`` as Batch holds it."""
    batch = batch_moto.client("batch")
    found = batch.describe_job_definitions(jobDefinitions=[job_definition])["jobDefinitions"]
    return max(found, key=lambda d: d["revision"])["containerProperties"]


def test_the_job_definitions_run_the_image_built_here(containers_run, batch_moto):
    """moto's ECR hosts no registry, so the deployed job definitions name the local build."""
    stdout, outputs = containers_run
    built = stdout.split("built ", 1)[1].split()[0]
    for name in ("job_definition", "final_job_definition"):
        assert _registered(batch_moto, outputs[name])["image"] == built
