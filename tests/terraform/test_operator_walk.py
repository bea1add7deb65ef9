"""The README's "Deploying to AWS" walked as an operator types it, against moto's server.

One apply, one destroy: deploy, doctor, seed, submit, status, logs, results, merge, cost,
redrive, destroy, each ``invoke <task>`` in a subprocess with only the emulator's variables,
as an operator's shell would have them. What moto cannot do stands in as little as possible:
``invoke build push`` (no Docker engine here) is an image manifest put into the stack's ECR
repository, ``aws s3 sync`` is boto3 puts, and the Batch children's containers are worker
processes on this machine (``batchspot.fleet``), as ``invoke local`` runs them.

Where moto differs from AWS, AWS's documentation is what the walk holds the tasks to:

- a job definition image that ECR does not hold makes every child fail with
  CannotPullContainerError (Amazon ECS Developer Guide, "CannotPullContainer task errors",
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task_cannot_pull_image.html);
  moto runs the job anyway;
- an array job ends when its children have ended (AWS Batch User Guide, "Array jobs":
  "the parent array job's status is updated when all child jobs finish",
  https://docs.aws.amazon.com/batch/latest/userguide/array_jobs.html); moto leaves the parent
  SUBMITTED, so ``status --watch`` must end on the children;
- S3 Select honours ``LIMIT`` (Amazon S3 User Guide, "SELECT command", LIMIT clause,
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/s3-select-sql-reference-select.html);
  moto does not, so doctor must say the worker's QUERY_ENGINE=auto uses its local engine.

Running it with ``-s`` prints the transcript: each command, its exit status and seconds.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from batchspot import terraform as tf
from batchspot.emulators import Emulator, moto_server
from batchspot.environment import overridden
from batchspot.fleet import Fleet
from batchspot.local import worker_environment
from batchspot.sample_data import month_csv
from tests.terraform.conftest import PushStandIn

pytestmark = [pytest.mark.terraform, pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
MONTHS = 3  # input objects: three monthly taxi CSVs
WORKER_SECONDS = 120  # the stand-in containers drain three items in a few seconds


@dataclass
class Walk:
    """Runs ``invoke`` as the operator's shell would, and keeps the transcript."""

    env: dict[str, str]
    transcript: list[tuple[str, int, float]] = field(default_factory=list)

    def run(self, line: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run one command line exactly as written (``invoke ...``), with ``extra_env`` set."""
        argv = shlex.split(line)
        assert argv[0] == "invoke", line
        started = time.monotonic()
        result = subprocess.run(
            [str(INVOKE), *argv[1:]],
            cwd=ROOT,
            env={**self.env, **extra_env},
            capture_output=True,
            text=True,
            timeout=600,
        )
        shown = " ".join(f"{k}={v}" for k, v in extra_env.items())
        self.transcript.append(
            (f"{shown} {line}".strip(), result.returncode, time.monotonic() - started)
        )
        return result

    def ok(self, line: str, **extra_env: str) -> str:
        """Run a command that must succeed; return its stdout."""
        result = self.run(line, **extra_env)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        return result.stdout

    def refused(self, line: str, **extra_env: str) -> str:
        """Run a command that must fail in one ``error:`` sentence; return that sentence."""
        result = self.run(line, **extra_env)
        assert result.returncode == 1, f"{line}\n{result.stdout}\n{result.stderr}"
        (sentence,) = result.stderr.strip().splitlines()
        assert sentence.startswith("error: "), sentence
        return sentence

    def render(self) -> str:
        """The transcript as an operator's log: command, exit status, seconds."""
        return "\n".join(
            f"{code:>3} {seconds:6.1f}s  {line}" for line, code, seconds in self.transcript
        )


def printed_commands(stdout: str) -> list[str]:
    """The next-step commands a task printed (``<what>: invoke ...``), exactly as printed."""
    return [found[1] for found in re.finditer(r"^[^:\n]+:\s+(invoke .*)$", stdout, re.MULTILINE)]


def doctor_lines(stdout: str) -> dict[str, str]:
    """Doctor's checklist as {check name: its whole line}."""
    return {
        line[2:].split(":", 1)[0]: line for line in stdout.splitlines() if line[:2] in ("✓ ", "✗ ")
    }


def run_children(emulator: Emulator, outputs: dict, job_id: str, size: int, logs: Path) -> None:
    """Stand in for the array job's containers: its children as worker processes here."""
    with overridden(emulator.client_env()):  # it reads the job definition, as Batch would
        env = worker_environment(outputs, emulator.client_env())
    env.update(AWS_BATCH_JOB_ID=job_id, IDLE_EXIT_SECONDS="2")
    logs.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(env, logs)
    for slot in range(size):
        fleet.start(slot)
    assert fleet.wait(WORKER_SECONDS), "the workers did not drain the queue"
    assert [child.exit_code for child in fleet.children] == [0] * size


def stack_left(emulator: Emulator) -> dict[str, list]:
    """Whatever of the stack's kinds of resource still exists on the emulator."""
    batch, iam, ec2 = (emulator.client(name) for name in ("batch", "iam", "ec2"))
    return {
        "queues": emulator.client("sqs").list_queues().get("QueueUrls", []),
        "buckets": emulator.client("s3").list_buckets()["Buckets"],
        "repositories": emulator.client("ecr").describe_repositories()["repositories"],
        "job queues": batch.describe_job_queues()["jobQueues"],
        "compute environments": batch.describe_compute_environments()["computeEnvironments"],
        "job definitions": batch.describe_job_definitions(status="ACTIVE")["jobDefinitions"],
        "roles": [r for r in iam.list_roles()["Roles"] if "batchspot" in r["RoleName"]],
        "log groups": emulator.client("logs").describe_log_groups()["logGroups"],
        "vpcs": [v for v in ec2.describe_vpcs()["Vpcs"] if not v.get("IsDefault")],
    }


def test_the_readme_deploying_to_aws_walk(tmp_path: Path, push_stand_in: PushStandIn) -> None:
    state = tmp_path / "state"
    with moto_server(tmp_path / "moto") as emulator:
        walk = Walk(
            {
                "PATH": os.environ["PATH"],
                "HOME": str(tmp_path),
                **{k: v for k, v in os.environ.items() if k.startswith("BATCHSPOT_TF_")},
                **emulator.client_env(),
                tf.STATE_DIR_VARIABLE: str(state),
                "DOCKER_HOST": "tcp://127.0.0.1:9",  # nothing listens there
            }
        )
        try:
            _walk(walk, emulator, state, tmp_path, push_stand_in)
        finally:
            print("\n" + walk.render())


def _walk(walk: Walk, emulator: Emulator, state: Path, tmp_path: Path, push: PushStandIn) -> None:
    endpoint = emulator.endpoint
    outputs_file = state / tf.OUTPUTS_FILE
    var_file = tmp_path / "terraform.tfvars"  # `cp terraform/terraform.tfvars.example ...`
    shutil.copy(tf.TERRAFORM_DIR / "terraform.tfvars.example", var_file)

    # An emulator deploy without --local-endpoint would land there with AWS's settings.
    assert walk.refused(f"invoke deploy --var-file {var_file}") == (
        f"error: AWS_ENDPOINT_URL={endpoint} is set, which would send this AWS deploy to it: "
        f"pass --local-endpoint {endpoint} to use that emulator, or unset AWS_ENDPOINT_URL for AWS"
    )
    assert not state.exists()

    deployed = walk.ok(f"invoke deploy --var-file {var_file} --local-endpoint {endpoint}")
    outputs = json.loads(outputs_file.read_text())
    assert f"saved {len(outputs)} outputs to {outputs_file}: every task reads" in deployed
    assert deployed.count("job_queue = ") == 1, "outputs printed once, by Terraform"

    s3 = emulator.client("s3")  # `aws s3 sync ./my-inputs s3://<input_bucket>/inputs/`
    for month in range(1, MONTHS + 1):
        body = month_csv(month, rows=40).encode()
        s3.put_object(Bucket=outputs["input_bucket"], Key=f"inputs/2018-{month:02}.csv", Body=body)

    before_push = walk.run("invoke doctor")
    checks = doctor_lines(before_push.stdout)
    assert before_push.returncode == 1, before_push.stdout
    assert checks["stack outputs"].startswith(
        f"✓ stack outputs: {len(outputs)} outputs in {outputs_file}, of the stack on the "
        f"emulator at {endpoint}"
    )
    image = f"{outputs['ecr_repository_url']}:latest"
    assert checks["image"].startswith(f"✗ image: the job definition's image {image} is not in ECR")
    assert checks["S3 Select"].startswith(
        "✗ S3 Select: QUERY_ENGINE=auto uses the local engine here: S3 Select answered"
    ) and checks["S3 Select"].endswith("it does not honour LIMIT (optional)")

    seeded = walk.ok("invoke seed --prefix inputs/ --suffix .csv")
    assert f"listed {MONTHS}, skipped 0 already done, sent {MONTHS}, failed 0" in seeded

    assert walk.refused("invoke submit --size auto --per-worker 2").startswith(
        f"error: the job definition's image {image} is not in ECR (ImageNotFoundException)"
    )
    push(emulator, outputs)
    after_push = doctor_lines(walk.ok("invoke doctor"))
    assert after_push["image"] == f"✓ image: {image} (in ECR)"

    submitted = walk.ok("invoke submit --size auto --per-worker 2")
    job_id = submitted.split("children): ", 1)[1].split()[0]
    assert "(array job of 2 children)" in submitted
    next_steps = printed_commands(submitted)
    assert next_steps == [
        f"invoke status --job-id {job_id} --watch",
        f"invoke logs --job-id {job_id} --follow",
        f"invoke results --job-id {job_id}",
    ]
    run_children(emulator, outputs, job_id, 2, tmp_path / "workers")

    watched = walk.ok(next_steps[0])  # ends although moto leaves the parent SUBMITTED
    assert "2 children: SUCCEEDED 2" in watched
    assert f"items: succeeded {MONTHS}, failed 0" in watched
    assert watched.rstrip().endswith(f"dashboard: {outputs['dashboard_url']}")

    logged = walk.ok(next_steps[1])
    assert logged.startswith(f"no log lines for job {job_id}: "), logged
    assert "  SUCCEEDED x2: " in logged

    reported = walk.ok(next_steps[2])
    assert f"manifest: s3://{outputs['output_bucket']}/runs/{job_id}/manifest.json" in reported
    assert f"succeeded {MONTHS}, failed 0" in reported
    assert walk.refused("invoke results --job-id nope").startswith("error: no Batch job 'nope'")
    listed = s3.list_objects_v2(Bucket=outputs["output_bucket"], Prefix="runs/nope")
    assert listed.get("KeyCount", 0) == 0, "an unknown job's results write nothing"

    merged = walk.ok(f"invoke results --merge {tmp_path / 'all.jsonl'}")
    assert f"merged {MONTHS} result(s) into" in merged
    assert len((tmp_path / "all.jsonl").read_text().splitlines()) == MONTHS

    priced = walk.ok(f"invoke cost --job-id {job_id}")
    assert "nothing priced: none of the" in priced and "%" not in priced
    assert "chart: none, as nothing was priced" in priced
    what_if = walk.ok("invoke cost --seconds 625 --instance-type c4.4xlarge --spot-price 0.2526")
    assert "68% saved" in what_if
    assert f"chart: {state / 'cost-what-if.png'}" in what_if
    assert (state / "cost-what-if.png").stat().st_size > 1000

    emulator.client("sqs").send_message(QueueUrl=outputs["dlq_url"], MessageBody="dead letter")
    assert "moved 1 messages back" in walk.ok("invoke redrive")

    # Destroys aimed at the wrong stack fail, and the outputs stay.
    elsewhere = "http://127.0.0.1:9"
    assert walk.refused(f"invoke destroy --local-endpoint {elsewhere}") == (
        f"error: the stack in {state} is on the emulator at {endpoint}, not the emulator at "
        f"{elsewhere}: run `invoke destroy` without --local-endpoint"
    )
    empty = tmp_path / "empty-state"
    assert walk.refused("invoke destroy", BATCHSPOT_STATE_DIR=str(empty)).startswith(
        f"error: no stack was deployed from {empty} (no stack.json there)"
    )
    tfstate = state / "terraform" / "terraform.tfstate"
    tfstate.rename(tmp_path / "aside.tfstate")  # Terraform sees an empty state: would destroy 0
    assert walk.refused("invoke destroy").startswith(
        f"error: the Terraform state in {state / 'terraform'} holds no resources, but "
        f"{outputs_file} names a stack whose queue still exists: nothing destroyed"
    )
    (tmp_path / "aside.tfstate").rename(tfstate)
    assert outputs_file.is_file() and all(stack_left(emulator).values())

    destroyed = walk.ok("invoke destroy")
    summary = re.search(r"^destroyed (\d+) resources on the emulator at (.*); removed (.*)$",
                        destroyed, re.MULTILINE)  # fmt: skip
    assert summary is not None, destroyed
    assert int(summary[1]) > 40 and summary.groups()[1:] == (endpoint, str(outputs_file))
    assert not outputs_file.exists() and not (state / tf.STACK_FILE).exists()
    assert {kind: found for kind, found in stack_left(emulator).items() if found} == {}
