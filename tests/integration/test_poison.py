"""Poison inputs, one kind per test, each in the middle of healthy traffic.

Every poison item must end in the dead-letter queue after maxReceiveCount receives, with a log
line saying why each time, while every healthy item around it is stored: one bad input never
stops the worker nor costs a good item.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from batchspot.emulators import EMULATOR_ENV, moto_server
from tests.integration.harness import (
    Stack,
    drain,
    log_events,
    make_stack,
    output_objects,
    put_sources,
    queue_depths,
    run_worker,
    send_all,
    worker_env,
)

HEALTHY_EACH_SIDE = 5
MAX_RECEIVE = 2
EXPLODE = "tests.integration.handlers:explode"
# A command that fails on inputs saying so and echoes a summary otherwise.
COMMAND = """input=$(cat)
case "$input" in
  *boom*) echo "cannot parse row 1" >&2; exit 3;;
  *garbage*) echo "this is not json";;
  *) echo '{"ok": true}';;
esac
"""


@dataclass(frozen=True)
class Poison:
    """One kind of input that can never succeed, and the reason the worker must log for it."""

    body: Callable[[Stack], str]
    reasons: tuple[str, ...]  # each must appear in every logged failure
    settings: dict[str, str] = field(default_factory=dict)
    source: bytes | None = None  # stored at poison.csv when the body names it


def _message(**fields: Any) -> Callable[[Stack], str]:
    return lambda stack: json.dumps({"bucket": stack.input_bucket, **fields})


POISONS = {
    "malformed JSON body": Poison(lambda stack: '{"bucket": "in", "key": ', ("body is not JSON",)),
    "wrong schema": Poison(_message(key=7), ("field 'key' in message must be str, got 7",)),
    "missing object": Poison(_message(key="absent.csv"), ("NoSuchKey",)),
    "missing bucket": Poison(
        lambda stack: json.dumps({"bucket": "no-such-bucket-here", "key": "a.csv"}),
        ("NoSuchBucket",),
    ),
    "output bucket not allowed": Poison(
        lambda stack: json.dumps(
            {
                "SourceBucketName": stack.input_bucket,
                "SourceKeyName": "src/item 0000.csv",
                "DestBucketName": "someone-elses-bucket",
            }
        ),
        ("'someone-elses-bucket' is not OUTPUT_BUCKET nor in ALLOWED_OUTPUT_BUCKETS",),
    ),
    "custom code raising": Poison(
        _message(key="poison.csv"),
        ("RuntimeError: the custom code refused this input",),
        {"HANDLER": EXPLODE},
        source=b"id\nboom\n",
    ),
    "custom code past its timeout": Poison(
        _message(key="poison.csv"),
        ("HANDLER_TIMEOUT=2",),
        # 2 s, not 1: the healthy items share the timeout, and a loaded CI machine once took
        # over a second to run one of them.
        {"HANDLER": EXPLODE, "HANDLER_TIMEOUT": "2"},
        source=b"id\nhang\n",
    ),
    "command exiting non-zero": Poison(
        _message(key="poison.csv"),
        ("exited with 3", "cannot parse row 1"),  # the tail of its stderr
        {"HANDLER_COMMAND": "sh {script}"},
        source=b"id\nboom\n",
    ),
    "command printing non-JSON": Poison(
        _message(key="poison.csv"),
        ("not JSON",),
        {"HANDLER_COMMAND": "sh {script}"},
        source=b"id\ngarbage\n",
    ),
    "oversized output": Poison(
        _message(key="poison.csv"),
        ("exceeds MAX_OUTPUT_BYTES=1024",),
        {"HANDLER": EXPLODE, "MAX_OUTPUT_BYTES": "1024"},
        source=b"id\nhuge\n",
    ),
    "unsupported SQL": Poison(
        _message(key="src/item 0000.csv", query="SELECT a.id FROM S3Object a JOIN S3Object b"),
        ("JOIN is not supported",),
        {"QUERY_ENGINE": "local"},
    ),
}


def run_amid_healthy_traffic(
    s3: Any, sqs: Any, stack: Stack, poison_body: str, env: dict[str, str]
) -> list[dict[str, Any]]:
    """Queue the poison between healthy items, run one worker; return its failure lines.

    Checks what holds for every kind: each healthy item stored, the poison (and only it) in
    the dead-letter queue, the work queue empty, and a logged failure per receive.
    """
    healthy = put_sources(s3, stack, 2 * HEALTHY_EACH_SIDE)
    send_all(
        sqs,
        stack.queue_url,
        [*healthy[:HEALTHY_EACH_SIDE], poison_body, *healthy[HEALTHY_EACH_SIDE:]],
    )
    result = run_worker(env)
    assert result.returncode == 0, result.stderr

    assert len(output_objects(s3, stack.output_bucket)) == len(healthy)
    assert drain(sqs, stack.dlq_url) == [poison_body]
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    items = log_events(result.stdout, "item")
    assert sum(e["outcome"] == "ok" for e in items) == len(healthy)
    failures = [e for e in items if e["outcome"] == "failed"]
    assert len(failures) == MAX_RECEIVE, "one logged failure per receive"
    assert failures[-1]["next"] == "dead-letter queue"
    return failures


@pytest.mark.parametrize("kind", POISONS)
def test_poison_is_dead_lettered_with_its_reason_while_healthy_items_are_served(
    tmp_path: Path, sqs, s3, aws_env, kind: str
) -> None:
    poison = POISONS[kind]
    stack = make_stack(sqs, s3, max_receive=MAX_RECEIVE)
    if poison.source is not None:
        s3.put_object(Bucket=stack.input_bucket, Key="poison.csv", Body=poison.source)
    script = tmp_path / "job.sh"
    script.write_text(COMMAND)
    settings = {name: value.format(script=script) for name, value in poison.settings.items()}
    env = worker_env(aws_env, stack, IDLE_EXIT_SECONDS="3", **settings)

    failures = run_amid_healthy_traffic(s3, sqs, stack, poison.body(stack), env)

    for failure in failures:
        for reason in poison.reasons:
            assert reason in failure["reason"]


@pytest.mark.moto_only
def test_access_denied_is_dead_lettered_with_its_reason_while_healthy_items_are_served(
    tmp_path: Path,
) -> None:
    """A private moto server with IAM enforced: the worker's role may not read ``secret/``.

    LocalStack's free edition does not enforce IAM, and turning enforcement on in the shared
    moto server would deny every other test, hence a server of its own.
    """
    with moto_server(tmp_path / "moto") as private:
        admin = _session(EMULATOR_ENV["AWS_ACCESS_KEY_ID"], EMULATOR_ENV["AWS_SECRET_ACCESS_KEY"])
        stack = make_stack(
            admin.client("sqs", endpoint_url=private.endpoint),
            admin.client("s3", endpoint_url=private.endpoint),
            max_receive=MAX_RECEIVE,
        )
        admin.client("s3", endpoint_url=private.endpoint).put_object(
            Bucket=stack.input_bucket, Key="secret/payroll.csv", Body=b"id\n1\n"
        )
        key_id, secret = _worker_role_keys(admin.client("iam", endpoint_url=private.endpoint))
        _enforce_iam(private.endpoint)
        role = _session(key_id, secret)
        env = worker_env(
            private.client_env(),
            stack,
            AWS_ACCESS_KEY_ID=key_id,
            AWS_SECRET_ACCESS_KEY=secret,
            IDLE_EXIT_SECONDS="3",
        )
        env.pop("AWS_SESSION_TOKEN")
        poison = json.dumps({"bucket": stack.input_bucket, "key": "secret/payroll.csv"})

        failures = run_amid_healthy_traffic(
            role.client("s3", endpoint_url=private.endpoint),
            role.client("sqs", endpoint_url=private.endpoint),
            stack,
            poison,
            env,
        )

    for failure in failures:
        assert re.search(r"access ?denied", failure["reason"], re.IGNORECASE), failure["reason"]


def _session(key_id: str, secret: str) -> boto3.session.Session:
    return boto3.session.Session(
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=EMULATOR_ENV["AWS_DEFAULT_REGION"],
    )


def _worker_role_keys(iam: Any) -> tuple[str, str]:
    """Create a user allowed everything but reading ``secret/``; return its access key."""
    iam.create_user(UserName="worker")
    deny_secret = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {
                "Effect": "Deny",
                "Action": ["s3:GetObject", "s3:SelectObject"],
                "Resource": "arn:aws:s3:::*/secret/*",
            },
        ],
    }
    iam.put_user_policy(
        UserName="worker", PolicyName="worker", PolicyDocument=json.dumps(deny_secret)
    )
    key = iam.create_access_key(UserName="worker")["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def _enforce_iam(endpoint: str) -> None:
    """Make moto authenticate and authorise every request from now on."""
    request = urllib.request.Request(
        f"{endpoint}/moto-api/reset-auth",
        data=b"0",  # requests served before authentication starts
        headers={"Content-Type": "text/plain"},  # a form body would be parsed away, not read
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()
