"""A fresh machine's first minutes: every task, in every missing-prerequisite state, answers in
one sentence naming what is missing and the fix, exits 1, and shows no traceback.

Each task runs as typed (`invoke ...` in a subprocess) in a scrubbed environment: no AWS
variables, an empty HOME (so no ~/.aws), an empty state dir (no saved outputs), and a PATH
with the venv but without terraform unless a test puts it back.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest

from batchspot import errors
from batchspot.emulators import Emulator
from batchspot.terraform import OUTPUTS_FILE, STATE_DIR_VARIABLE
from tests.integration.ops_support import make_queues, unique, use_emulator

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
NO_DOCKER = "tcp://127.0.0.1:9"  # nothing listens there
README_COST = "invoke cost --seconds 625 --instance-type c4.4xlarge --spot-price 0.2526 --chart ''"
NO_STACK = "error: no deployed stack found: run `invoke deploy` or pass --queue-url"
NO_REGION_NOR_STACK = f"error: {errors.NO_REGION_NOR_STACK}"
NO_TERRAFORM = "error: terraform is not installed"
STATUS_BY_HAND = [
    "status",
    "--queue-url",
    "http://q/1/q",
    "--dlq-url",
    "http://q/1/d",
    "--job-id",
    "j",
]


@pytest.fixture
def scrubbed(tmp_path: Path) -> dict[str, str]:
    """The environment of a fresh machine: the venv on PATH, nothing else configured."""
    home = tmp_path / "home"
    home.mkdir()
    return {
        "PATH": f"{INVOKE.parent}{os.pathsep}/usr/bin{os.pathsep}/bin",
        "HOME": str(home),
        STATE_DIR_VARIABLE: str(tmp_path / "state"),
        "DOCKER_HOST": NO_DOCKER,
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance-metadata probe off EC2
        "LANG": "C.UTF-8",
    }


def invoke(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run `invoke <args>` in ``env`` only, from the repository root."""
    return subprocess.run(
        [str(INVOKE), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )


def assert_one_sentence(result: subprocess.CompletedProcess[str], expected: str) -> None:
    """Exit 1, one line on stderr starting with ``expected``, and no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith(expected), result.stderr


# Every task that touches AWS, Terraform or Docker, on a machine with nothing set up.
FRESH_MACHINE = {
    "status": (["status"], NO_STACK),
    "seed": (["seed"], NO_REGION_NOR_STACK),
    "seed --dry-run": (["seed", "--dry-run"], NO_REGION_NOR_STACK),
    "submit": (["submit"], NO_REGION_NOR_STACK),
    "logs": (["logs"], NO_REGION_NOR_STACK),
    "cost of a job": (["cost"], NO_REGION_NOR_STACK),
    "cost refresh": (["cost", "--refresh-prices"], NO_REGION_NOR_STACK),
    "redrive": (["redrive"], NO_REGION_NOR_STACK),
    "results": (["results"], NO_REGION_NOR_STACK),
    "report": (["report"], NO_REGION_NOR_STACK),
    "report of a local run never run": (
        ["report", "--log-dir", "no-such-dir"],
        "error: no worker log in no-such-dir: run `invoke local` first",
    ),
    "push": (["push"], NO_REGION_NOR_STACK),
    "build": (["build"], f"error: No Docker engine is reachable at {NO_DOCKER}"),
    "deploy": (["deploy"], NO_TERRAFORM),
    "plan": (["plan"], NO_TERRAFORM),
    "destroy": (["destroy"], "error: no stack was deployed from "),  # nothing to destroy
}
# Tests that reach no emulator: `invoke test-local` would only run them again.
no_emulator = pytest.mark.once


@pytest.mark.parametrize("name", sorted(FRESH_MACHINE))
@no_emulator
def test_every_task_on_a_fresh_machine_answers_in_one_sentence(name, scrubbed):
    args, expected = FRESH_MACHINE[name]
    assert_one_sentence(invoke(scrubbed, *args), expected)


@no_emulator
def test_doctor_on_a_fresh_machine_lists_what_is_missing(scrubbed):
    result = invoke(scrubbed, "doctor")

    assert_one_sentence(result, "error: some needed checks failed: see the ✗ lines above")
    assert "✓ Python: " in result.stdout
    assert f"✗ Terraform: {NO_TERRAFORM[7:]}" in result.stdout
    assert f"✗ Docker: No Docker engine is reachable at {NO_DOCKER}" in result.stdout
    assert f"✗ AWS region and credentials: {NO_REGION_NOR_STACK[7:]}" in result.stdout


def readme_example(command: str) -> str:
    """The output the README prints under ``$ <command>`` in its console block."""
    text = (ROOT / "README.md").read_text()
    after = text.split(f"$ {command}\n", 1)[1]
    return after.split("```", 1)[0]


@no_emulator
def test_the_readme_cost_example_works_as_printed_with_no_aws_at_all(scrubbed):
    result = invoke(scrubbed, *README_COST.split()[1:-1], "")

    assert result.returncode == 0, result.stderr
    assert result.stdout == readme_example(README_COST)


@no_emulator
def test_a_dry_run_seed_from_a_saved_listing_makes_no_aws_call(scrubbed, tmp_path):
    """No region, no credentials: any client the task made would end in an error."""
    listing = tmp_path / "listing.json"
    contents = [
        {"Key": "in/a.csv", "ETag": '"1"', "Size": 4},
        {"Key": "in/", "ETag": '"2"', "Size": 0},  # the console's folder marker
        {"Key": "in/b.json", "ETag": '"3"', "Size": 4},
        {"Key": "other/c.csv", "ETag": '"4"', "Size": 4},
    ]
    listing.write_text(json.dumps({"Contents": contents}))

    args = ["--bucket", "in-bucket", "--prefix", "in/", "--suffix", ".csv"]
    result = invoke(scrubbed, "seed", "--dry-run", "--listing", str(listing), *args)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == (
        "listed 1, skipped 0 already done, would send 1, failed 0"
    )
    assert json.loads(result.stdout.splitlines()[0])["key"] == "in/a.csv"


@no_emulator
def test_a_listing_that_is_not_one_is_refused_in_one_sentence(scrubbed, tmp_path):
    listing = tmp_path / "keys.txt"
    listing.write_text("in/a.csv\n")
    result = invoke(scrubbed, "seed", "--dry-run", "--listing", str(listing), "--bucket", "b")
    assert_one_sentence(result, f"error: {listing} is not a listing")


@no_emulator
def test_no_region_with_the_names_given(scrubbed):
    assert_one_sentence(invoke(scrubbed, *STATUS_BY_HAND), NO_REGION_NOR_STACK)


@no_emulator
def test_no_credentials(scrubbed):
    env = {**scrubbed, "AWS_DEFAULT_REGION": "us-east-1"}
    assert_one_sentence(invoke(env, *STATUS_BY_HAND), f"error: {errors.NO_CREDENTIALS}")
    dry_run = invoke(env, "seed", "--dry-run", "--bucket", "b")  # lists S3, sends nothing
    assert_one_sentence(dry_run, f"error: {errors.NO_CREDENTIALS}")


@pytest.fixture
def expired_token_endpoint() -> Iterator[str]:
    """An endpoint that answers every request as AWS does an expired session token."""

    class Expired(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps(
                {"__type": "ExpiredToken", "message": "The security token is expired"}
            ).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            """Keep the test output quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Expired)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()


@no_emulator
def test_expired_credentials(scrubbed, expired_token_endpoint):
    env = {
        **scrubbed,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "ASIAEXPIRED",
        "AWS_SECRET_ACCESS_KEY": "expired",
        "AWS_SESSION_TOKEN": "expired",
        "AWS_ENDPOINT_URL": expired_token_endpoint,
    }
    assert_one_sentence(
        invoke(env, *STATUS_BY_HAND), "error: AWS rejected the credentials (ExpiredToken)"
    )


@no_emulator
def test_an_emulator_that_is_not_running(scrubbed):
    env = {
        **scrubbed,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_MAX_ATTEMPTS": "1",
    }
    assert_one_sentence(invoke(env, *STATUS_BY_HAND), "error: cannot reach http://127.0.0.1:9")


@no_emulator
def test_terraform_failing_without_credentials_ends_in_one_sentence(scrubbed):
    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("terraform is not installed")
    env = {
        **scrubbed,
        "PATH": f"{scrubbed['PATH']}{os.pathsep}{Path(terraform).parent}",
        "TF_DATA_DIR": str(Path(scrubbed["HOME"]) / "tf-data"),  # not the repo's .terraform
    }
    # No credentials: Terraform's provider refuses; its own error is printed above the line.
    result = invoke(env, "plan", "--var", "region=us-east-1")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: terraform ")


@no_emulator
def test_debug_shows_the_traceback(scrubbed):
    assert "Traceback" in invoke({**scrubbed, "BATCHSPOT_DEBUG": "1"}, "status").stderr
    assert "Traceback" in invoke(scrubbed, "--debug", "status").stderr


# --- against the emulator ---------------------------------------------------------------


@pytest.fixture
def on_emulator(emulator: Emulator, scrubbed) -> Iterator[dict[str, str]]:
    """The scrubbed environment pointed at the session's moto server, and this process too."""
    with use_emulator(emulator):
        yield {**scrubbed, **emulator.client_env()}


def _save_outputs(env: dict[str, str], **outputs: str) -> None:
    state = Path(env[STATE_DIR_VARIABLE])
    state.mkdir(parents=True, exist_ok=True)
    (state / OUTPUTS_FILE).write_text(json.dumps(outputs))


@pytest.mark.moto_only
def test_outputs_from_another_account(on_emulator):
    _save_outputs(
        on_emulator,
        region="us-east-1",
        queue_url=f"{on_emulator['AWS_ENDPOINT_URL']}/111111111111/gone",
        queue_arn="arn:aws:sqs:us-east-1:111111111111:gone",
        dlq_url=f"{on_emulator['AWS_ENDPOINT_URL']}/111111111111/gone-dlq",
    )
    result = invoke(on_emulator, "status", "--job-id", "none")
    assert_one_sentence(result, "error: AWS answered ")
    assert "are from account 111111111111, these credentials are for account" in result.stderr


@pytest.mark.moto_only
def test_outputs_from_another_region(on_emulator):
    queue_url, dlq_url = make_queues("first-contact")  # made in the session's us-east-1
    account = queue_url.rstrip("/").split("/")[-2]
    _save_outputs(
        on_emulator,
        region="eu-west-1",
        queue_url=queue_url,
        queue_arn=f"arn:aws:sqs:eu-west-1:{account}:x",
        dlq_url=dlq_url,
    )
    env = {**on_emulator, "AWS_DEFAULT_REGION": "us-east-1"}
    result = invoke(env, "status", "--job-id", "none")
    assert_one_sentence(result, "error: AWS answered ")
    assert "are from region eu-west-1, the configured region is us-east-1" in result.stderr


@pytest.mark.moto_only
@pytest.mark.parametrize(
    "args",
    [
        ["logs", "--job-id", "no-such-job", "--log-group", "g"],
        ["cost", "--job-id", "no-such-job"],
        ["doctor", "--job-id", "no-such-job"],
    ],
    ids=lambda args: args[0],
)
def test_an_unknown_job_id(on_emulator, args):
    result = invoke(on_emulator, *args)
    if args[0] == "doctor":  # the checklist, then the job's own line
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "✗ job: no Batch job 'no-such-job'" in result.stdout
        return
    assert_one_sentence(result, "error: no Batch job 'no-such-job'")


@pytest.mark.moto_only
def test_status_of_an_unknown_job_id(on_emulator):
    queue_url, dlq_url = make_queues("first-contact")
    result = invoke(
        on_emulator, "status", "--queue-url", queue_url, "--dlq-url", dlq_url, "--job-id", "nope"
    )
    assert_one_sentence(result, "error: no Batch job 'nope'")


@pytest.mark.moto_only
def test_a_missing_ecr_repository(on_emulator):
    url = "123456789012.dkr.ecr.us-east-1.amazonaws.com/not-there"
    assert_one_sentence(
        invoke(on_emulator, "push", "--repository-url", url),
        "error: the ECR repository does not exist",
    )


@pytest.mark.moto_only
def test_a_dry_run_seed_lists_the_bucket_and_needs_no_queue(on_emulator):
    s3 = boto3.client("s3")
    bucket = unique("first-contact")
    s3.create_bucket(Bucket=bucket)
    for key in ("in/a.csv", "in/b.csv"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"a\n1\n")

    result = invoke(on_emulator, "seed", "--dry-run", "--bucket", bucket, "--prefix", "in/")

    assert result.returncode == 0, result.stderr
    assert "listed 2, skipped 0 already done, would send 2, failed 0" in result.stdout
