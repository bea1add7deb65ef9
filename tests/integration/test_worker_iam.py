"""The worker under exactly the IAM policy Terraform renders, on a moto server enforcing IAM.

Every other integration test runs with moto's default of "allow everything", which would hide
a policy that is missing an action the worker calls. Here moto runs with
``INITIAL_NO_AUTH_ACTION_COUNT``: moto counts every request that reaches a service's IAM check
(one per API call; /moto-api/ calls are not counted) in one process-wide counter, lets the first
N through unchecked, and from then on requires each request to be SigV4-signed with an access
key of an IAM user of the account and allowed by that user's policies. The free window creates
an admin user and its key and nothing else; the admin then creates the queues, buckets and the
worker user, whose policy is :func:`batchspot.policy.render_worker_policy`'s document, and the
final step's user, whose policy is :func:`batchspot.policy.render_final_policy`'s.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from batchspot.emulators import Emulator, moto_server
from batchspot.policy import render_final_policy, render_worker_policy
from tests.integration.harness import (
    Stack,
    batch_of,
    drain,
    log_events,
    make_stack,
    put_sources,
    queue_depths,
    run_worker,
    send_all,
    worker_env,
)
from worker.errors import error_code

pytestmark = pytest.mark.moto_only

ADMIN_POLICY_ARN = "arn:aws:iam::aws:policy/AdministratorAccess"
# The unchecked requests: create_user, attach_user_policy and create_access_key of the admin.
FREE_REQUESTS = 3
OUTPUT_PREFIX = "results/"
ITEMS = 6
# moto checks these calls against action names IAM does not have, where AWS authorises them by
# the action they are keyed by here (SQS API reference: DeleteMessageBatch and
# ChangeMessageVisibilityBatch need DeleteMessage and ChangeMessageVisibility; S3's
# SelectObjectContent needs GetObject). Each alias is granted next to its action, on the same
# resources, so moto enforces the rendered document as AWS would.
# How a refusal reads anywhere in the worker's output: S3's and SQS's codes, botocore's text
# and the worker's own wording ("access denied reading ...").
DENIAL = re.compile(r"access ?denied|forbidden|not authori[sz]ed", re.IGNORECASE)
MOTO_ACTION_ALIASES = {
    "sqs:DeleteMessage": "sqs:DeleteMessageBatch",
    "sqs:ChangeMessageVisibility": "sqs:ChangeMessageVisibilityBatch",
    "s3:GetObject": "s3:SelectObject",
}
# AWS authorises GetQueueUrl on the queue it names (SQS Developer Guide, "Amazon SQS API
# permissions: Actions and resource reference": sqs:GetQueueUrl on
# arn:aws:sqs:region:account_id:queue_name); moto checks it against "*", as the request carries
# no QueueUrl. Where the document grants it, moto is given it on "*" too.
MOTO_UNSCOPED_ACTIONS = {"sqs:GetQueueUrl"}


@dataclass(frozen=True)
class Keys:
    """An IAM user's access key on the enforcing moto server."""

    access_key_id: str
    secret_access_key: str

    def client(self, moto: Emulator, service: str) -> Any:
        """A client signing as this user (no session token: moto would look for STS keys)."""
        session = boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name="us-east-1",
        )
        return session.client(service, endpoint_url=moto.endpoint)


@dataclass(frozen=True)
class Setup:
    """The enforcing server, its users, and the stack the worker drains."""

    moto: Emulator
    admin: Keys
    worker: Keys
    final: Keys
    stack: Stack


def user_keys(iam: Any, user: str) -> Keys:
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"])


def with_moto_aliases(document: dict[str, Any]) -> dict[str, Any]:
    """The rendered document plus moto's names for what it allows, and its resources for them."""
    statements = []
    for statement in document["Statement"]:
        actions = statement["Action"]
        actions = [actions] if isinstance(actions, str) else list(actions)
        aliases = [MOTO_ACTION_ALIASES[a] for a in actions if a in MOTO_ACTION_ALIASES]
        statements.append({**statement, "Action": actions + aliases})
        if unscoped := sorted(MOTO_UNSCOPED_ACTIONS.intersection(actions)):
            statements.append({"Effect": "Allow", "Action": unscoped, "Resource": "*"})
    return {**document, "Statement": statements}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """A moto server of its own (enforcement is process-wide), set up by the admin user."""
    if shutil.which("terraform") is None:
        pytest.skip("terraform is not installed: the worker's policy is rendered by it")
    logs = tmp_path_factory.mktemp("moto-iam-logs")
    extra_env = {"INITIAL_NO_AUTH_ACTION_COUNT": str(FREE_REQUESTS)}
    with moto_server(logs, extra_env=extra_env) as moto:
        unchecked = moto.client("iam")
        unchecked.create_user(UserName="admin")
        unchecked.attach_user_policy(UserName="admin", PolicyArn=ADMIN_POLICY_ARN)
        admin = user_keys(unchecked, "admin")

        sqs, s3, iam = (admin.client(moto, service) for service in ("sqs", "s3", "iam"))
        stack = make_stack(sqs, s3, max_receive=5)
        attributes = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["QueueArn"])
        policy = render_worker_policy(
            attributes["Attributes"]["QueueArn"],
            stack.input_bucket,
            [stack.output_bucket],
            OUTPUT_PREFIX,
            tmp_path_factory.mktemp("worker-policy"),
        )
        final_policy = render_final_policy(
            attributes["Attributes"]["QueueArn"],
            stack.output_bucket,
            OUTPUT_PREFIX,
            tmp_path_factory.mktemp("final-policy"),
        )
        for user, document in (("worker", policy), ("final", final_policy)):
            iam.create_user(UserName=user)
            iam.put_user_policy(
                UserName=user,
                PolicyName=user,
                PolicyDocument=json.dumps(with_moto_aliases(document)),
            )
        yield Setup(moto, admin, user_keys(iam, "worker"), user_keys(iam, "final"), stack)


def refusal(call: Any, **kwargs: Any) -> ClientError:
    """The error of a call expected to be refused."""
    with pytest.raises(ClientError) as refused:
        call(**kwargs)
    return refused.value


def test_iam_is_enforced_and_the_worker_user_is_limited(setup: Setup) -> None:
    # The free window is spent: the emulator's shared test key belongs to no IAM user.
    unknown_key = refusal(setup.moto.client("iam").list_users)
    assert error_code(unknown_key) == "InvalidClientTokenId"
    s3 = setup.worker.client(setup.moto, "s3")
    bucket = setup.stack.output_bucket
    listing = refusal(s3.list_objects_v2, Bucket=bucket, Prefix=OUTPUT_PREFIX)
    assert error_code(listing) == "AccessDenied"
    outside = refusal(s3.put_object, Bucket=bucket, Key="elsewhere/x", Body=b"")
    assert error_code(outside) == "AccessDenied"
    sqs = setup.worker.client(setup.moto, "sqs")
    sending = refusal(sqs.send_message, QueueUrl=setup.stack.queue_url, MessageBody="{}")
    # moto answers SQS's JSON protocol with an XML error, which botocore leaves in the message.
    assert "not authorized to perform: sqs:SendMessage" in str(sending)


def signed_as(setup: Setup, keys: Keys, **settings: str) -> dict[str, str]:
    """A worker container's environment on the stack, signing as ``keys``' user."""
    env = worker_env(
        {
            "AWS_ENDPOINT_URL": setup.moto.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": keys.access_key_id,
            "AWS_SECRET_ACCESS_KEY": keys.secret_access_key,
            "AWS_EC2_METADATA_DISABLED": "true",
        },
        setup.stack,
        OUTPUT_PREFIX=OUTPUT_PREFIX,
        **settings,
    )
    env.pop("AWS_SESSION_TOKEN", None)
    return env


def test_worker_stores_every_item_and_settles_redeliveries(setup: Setup) -> None:
    sqs, s3 = (setup.admin.client(setup.moto, service) for service in ("sqs", "s3"))
    stack = setup.stack
    bodies = put_sources(s3, stack, ITEMS)
    send_all(sqs, stack.queue_url, bodies)
    env = signed_as(setup, setup.worker, HANDLER="tests.integration.handlers:count_rows")

    first = run_worker(env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert not DENIAL.search(first.stdout + first.stderr), first.stdout[-3000:]
    assert [e["outcome"] for e in log_events(first.stdout, "item")] == ["ok"] * ITEMS
    stored = results(s3, stack)
    assert len(stored) == ITEMS
    assert queue_depths(sqs, stack.queue_url) == (0, 0)

    # Redeliveries: the same messages again, each received once and let go, so the worker's
    # receive is attempt 2 and starts with a HEAD of the stored result.
    send_all(sqs, stack.queue_url, bodies)
    release_after_one_receive(sqs, stack.queue_url, ITEMS)
    second = run_worker(env)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert not DENIAL.search(second.stdout + second.stderr), second.stdout[-3000:]
    items = log_events(second.stdout, "item")
    assert [(e["outcome"], e["attempt"]) for e in items] == [("already-done", 2)] * ITEMS
    calls = log_events(second.stdout, "summary")[0]["calls"]
    assert calls.get("s3.HeadObject", 0) >= ITEMS
    assert calls.get("s3.PutObject", 0) == 0, "a result that exists must not be written again"
    assert results(s3, stack) == stored
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
    assert queue_depths(sqs, stack.dlq_url) == (0, 0)


def results(s3: Any, stack: Stack) -> dict[str, tuple[str, Any]]:
    """Every stored result's ETag and time of writing, by key, as the admin lists them."""
    listed = s3.list_objects_v2(Bucket=stack.output_bucket, Prefix=OUTPUT_PREFIX)
    return {e["Key"]: (e["ETag"], e["LastModified"]) for e in listed.get("Contents", [])}


def release_after_one_receive(sqs: Any, queue_url: str, count: int) -> None:
    """Receive ``count`` messages once each and make them visible again at once."""
    handles: list[str] = []
    for _ in range(count + 5):
        if len(handles) == count:
            break
        messages = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=count - len(handles), WaitTimeSeconds=1
        ).get("Messages", [])
        handles += [m["ReceiptHandle"] for m in messages]
    assert len(handles) == count, f"received {len(handles)} of {count} messages"
    for handle in handles:
        sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=handle, VisibilityTimeout=0)


RUN_ID = "run-iam"
# The final step's reduce command: counts the merged results it reads on stdin.
COUNT_RESULTS = f'{sys.executable} -c "import sys; print(sum(1 for _ in sys.stdin))"'


def final_step(setup: Setup, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m worker.final`` as the final job does, signing as the final step's user."""
    env = signed_as(setup, setup.final, RUN_JOB_ID=RUN_ID, FINAL_COMMAND=COUNT_RESULTS, **settings)
    return run_worker(env, module="worker.final")


def test_a_failure_record_and_the_final_step_stay_within_their_rendered_policies(
    setup: Setup,
) -> None:
    """A worker records an item's last failure under ``<OUTPUT_PREFIX>.runs/<job-id>/`` with
    the worker's policy; the final step lists, reads and writes the manifest with its own, and
    fails while items are still pending in the work queue unless told to tolerate them."""
    sqs, s3 = (setup.admin.client(setup.moto, service) for service in ("sqs", "s3"))
    stack = setup.stack
    bodies = put_sources(s3, stack, 2, prefix="run/")
    bad = "run/bad.csv"
    s3.put_object(Bucket=stack.input_bucket, Key=bad, Body=b"id\nboom\n")
    send_all(
        sqs, stack.queue_url, [*bodies, json.dumps({"bucket": stack.input_bucket, "key": bad})]
    )
    env = signed_as(
        setup, setup.worker, HANDLER="tests.integration.handlers:explode", AWS_BATCH_JOB_ID=RUN_ID
    )
    worked = run_worker(env)
    output = worked.stdout + worked.stderr
    assert worked.returncode == 0, output[-3000:]
    assert not DENIAL.search(output), output[-3000:]
    items = log_events(worked.stdout, "item")
    assert sorted({e["outcome"] for e in items}) == ["failed", "ok"]
    (last,) = [e for e in items if e.get("next") == "dead-letter queue"]
    assert "failure_record" not in last, last["failure_record"]
    records = s3.list_objects_v2(
        Bucket=stack.output_bucket, Prefix=f"{OUTPUT_PREFIX}.runs/{RUN_ID}/"
    )
    assert records["KeyCount"] == 1

    done = final_step(setup)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not DENIAL.search(output), output[-3000:]
    (final,) = log_events(done.stdout, "final")
    # Not told the seeds' items per message (invoke submit tells it), it says the bound.
    assert final["counts"] == (
        "succeeded 2, failed 1, pending in the queue 0, "
        "dead-lettered 1 message(s) (each holds 1 to 1,000 items)"
    )
    reduced = s3.get_object(Bucket=stack.output_bucket, Key=f"runs/{RUN_ID}/final.json")
    assert json.loads(reduced["Body"].read()) == 2

    send_all(sqs, stack.queue_url, [bodies[0]])  # an item the array job never got to
    try:
        unfinished = final_step(setup)
        assert unfinished.returncode == 1, unfinished.stdout + unfinished.stderr
        (failed,) = log_events(unfinished.stdout, "final-failed")
        assert failed["reason"].startswith("the work queue still holds 1 message(s) waiting")
        tolerated = final_step(setup, TOLERATE_PENDING="true")
        assert tolerated.returncode == 0, tolerated.stdout + tolerated.stderr
        assert "pending in the queue 1" in log_events(tolerated.stdout, "final")[0]["counts"]
    finally:
        drain(sqs, stack.queue_url)
        drain(sqs, stack.dlq_url)


def test_a_batch_and_its_redelivery_stay_within_the_rendered_policy(setup: Setup) -> None:
    """A batch's one result lies under ``<OUTPUT_PREFIX>.batches/``, which the job role may
    write and HEAD; its redelivery HEADs it there and writes nothing."""
    sqs, s3 = (setup.admin.client(setup.moto, service) for service in ("sqs", "s3"))
    stack = setup.stack
    batch = batch_of(put_sources(s3, stack, 3, prefix="batch/"))
    send_all(sqs, stack.queue_url, [batch])
    env = signed_as(setup, setup.worker)

    first = run_worker(env)
    assert not DENIAL.search(first.stdout + first.stderr), first.stdout[-3000:]
    assert [e["outcome"] for e in log_events(first.stdout, "item")] == ["ok"]
    batches = s3.list_objects_v2(Bucket=stack.output_bucket, Prefix=f"{OUTPUT_PREFIX}.batches/")
    assert batches["KeyCount"] == 1

    send_all(sqs, stack.queue_url, [batch])
    release_after_one_receive(sqs, stack.queue_url, 1)
    second = run_worker(env)
    assert not DENIAL.search(second.stdout + second.stderr), second.stdout[-3000:]
    items = log_events(second.stdout, "item")
    assert [(e["outcome"], e["attempt"]) for e in items] == [("already-done", 2)]
    assert log_events(second.stdout, "summary")[0]["calls"].get("s3.PutObject", 0) == 0
    assert queue_depths(sqs, stack.queue_url) == (0, 0)
