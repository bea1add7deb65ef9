"""The AWS rules layer in front of the session's emulator, driven by real boto3 clients.

Each test points a client at the layer exactly as the worker is pointed at it (an endpoint URL,
nothing else), and checks that the answer is the one AWS gives, where the emulator alone would
give another. The AWS documents each rule comes from are named in the test's docstring.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from batchspot.awsrules import MAX_MESSAGE_BYTES, NO_FAULTS, Faults, RulesLayer, aws_rules
from batchspot.emulators import Emulator
from worker.errors import error_code

# In a botocore Config, "max_attempts" counts retries and "total_max_attempts" attempts.
NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})
ONE_RETRY = Config(retries={"mode": "standard", "total_max_attempts": 2})
WORKER_RETRIES = Config(retries={"mode": "standard", "max_attempts": 5})  # worker/__main__.py
MiB = 1024 * 1024


def through(layer: RulesLayer, service: str, config: Config | None = None) -> Any:
    """A boto3 client whose endpoint is the layer, as the worker's would be."""
    return Emulator("rules", layer.endpoint).client(service, config=config)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def failure(raised: pytest.ExceptionInfo[ClientError]) -> tuple[int, str]:
    """(HTTP status, error code) of a failed call."""
    status = raised.value.response["ResponseMetadata"]["HTTPStatusCode"]
    return status, error_code(raised.value)


def receive(sqs: Any, queue_url: str, count: int, visibility: int = 30) -> list[dict[str, Any]]:
    """Receive ``count`` messages, over several calls if the emulator hands out fewer at once."""
    messages: list[dict[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(messages) < count and time.monotonic() < deadline:
        messages += sqs.receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=min(10, count - len(messages)),
            VisibilityTimeout=visibility,
            WaitTimeSeconds=1,
        ).get("Messages", [])
    assert len(messages) == count, f"received {len(messages)} of {count} messages"
    return messages


@pytest.fixture
def bucket(s3: Any) -> str:
    name = unique("rules")
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def queue_url(sqs: Any) -> str:
    return sqs.create_queue(QueueName=unique("rules"))["QueueUrl"]


def reader_policy(bucket: str, *, may_list: bool) -> dict[str, Any]:
    """The worker role's kind of policy: read objects, and list the bucket only if asked."""
    statements: list[dict[str, Any]] = [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*"}
    ]
    if may_list:
        statements.append(
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{bucket}"}
        )
    return {"Version": "2012-10-17", "Statement": statements}


# --- S3 ------------------------------------------------------------------------------------


def test_missing_key_is_403_without_list_bucket(emulator: Emulator, s3: Any, bucket: str) -> None:
    """S3 API Reference, HeadObject and GetObject, "Permissions": for a key that does not
    exist, S3 answers 404 only to a caller with s3:ListBucket on the bucket, else 403
    AccessDenied. A bucket-level request is no object read: a missing bucket stays 404."""
    s3.put_object(Bucket=bucket, Key="present", Body=b"x")
    with aws_rules(emulator.endpoint, reader_policy(bucket, may_list=False)) as layer:
        client = through(layer, "s3", NO_RETRIES)
        assert client.head_object(Bucket=bucket, Key="present")["ContentLength"] == 1
        with pytest.raises(ClientError) as head:
            client.head_object(Bucket=bucket, Key="missing")
        with pytest.raises(ClientError) as get:
            client.get_object(Bucket=bucket, Key="missing")
        with pytest.raises(ClientError) as no_bucket:
            client.head_bucket(Bucket=unique("absent"))
    assert failure(head) == (403, "403")  # a HEAD answer has no body, so no code either
    assert failure(get) == (403, "AccessDenied")
    assert failure(no_bucket) == (404, "404")
    assert layer.injected["s3.403-missing-key"] == 2


@pytest.mark.parametrize("policy", ["none", "may list"])
def test_missing_key_stays_404_when_listing_is_allowed(
    emulator: Emulator, bucket: str, policy: str
) -> None:
    """Same pages: with s3:ListBucket on the bucket, a missing key is 404 (NoSuchKey); with
    no policy given, the layer has nothing to judge by and keeps the emulator's 404."""
    rules = reader_policy(bucket, may_list=True) if policy == "may list" else None
    with aws_rules(emulator.endpoint, rules) as layer:
        client = through(layer, "s3", NO_RETRIES)
        with pytest.raises(ClientError) as head:
            client.head_object(Bucket=bucket, Key="missing")
        with pytest.raises(ClientError) as get:
            client.get_object(Bucket=bucket, Key="missing")
    assert failure(head) == (404, "404")
    assert failure(get) == (404, "NoSuchKey")
    assert not layer.injected


def test_keys_over_1024_utf8_bytes_are_refused(emulator: Emulator, s3: Any, bucket: str) -> None:
    """S3 User Guide, "Naming Amazon S3 objects": a key is at most 1,024 bytes of UTF-8, and
    PutObject, CopyObject and CreateMultipartUpload refuse longer ones with KeyTooLongError.
    Two-byte characters show that bytes are counted, not characters."""
    longest = "é" * 512  # 512 characters, 1,024 bytes
    too_long = longest + "a"
    with aws_rules(emulator.endpoint) as layer:
        client = through(layer, "s3", NO_RETRIES)
        client.put_object(Bucket=bucket, Key=longest, Body=b"fits")
        assert client.get_object(Bucket=bucket, Key=longest)["Body"].read() == b"fits"
        refused = []
        for call, extra in [
            (client.put_object, {"Body": b"too long"}),
            (client.create_multipart_upload, {}),
            (client.copy_object, {"CopySource": {"Bucket": bucket, "Key": longest}}),
        ]:
            with pytest.raises(ClientError) as raised:
                call(Bucket=bucket, Key=too_long, **extra)
            refused.append(failure(raised))
    assert refused == [(400, "KeyTooLongError")] * 3
    assert layer.injected["s3.key-too-long"] == 3
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == [longest]


def test_user_metadata_over_2_kb_is_refused(emulator: Emulator, s3: Any, bucket: str) -> None:
    """S3 User Guide, "Working with object metadata": user-defined metadata is at most 2 KB,
    the sum of the UTF-8 bytes of each key (without "x-amz-meta-") and each value; more is
    refused with MetadataTooLarge."""
    fits = {"a": "x" * 1000, "bb": "y" * 1045}  # 1 + 1000 + 2 + 1045 = 2,048 bytes
    too_large = {"a": "x" * 1000, "bb": "y" * 1046}  # 2,049 bytes
    with aws_rules(emulator.endpoint) as layer:
        client = through(layer, "s3", NO_RETRIES)
        client.put_object(Bucket=bucket, Key="fits", Body=b"x", Metadata=fits)
        with pytest.raises(ClientError) as put:
            client.put_object(Bucket=bucket, Key="too-large", Body=b"x", Metadata=too_large)
        with pytest.raises(ClientError) as multipart:
            client.create_multipart_upload(Bucket=bucket, Key="too-large", Metadata=too_large)
    assert s3.head_object(Bucket=bucket, Key="fits")["Metadata"] == fits
    assert failure(put) == failure(multipart) == (400, "MetadataTooLarge")
    assert layer.injected["s3.metadata-too-large"] == 2


def test_multipart_upload_passes_through_intact(emulator: Emulator, s3: Any, bucket: str) -> None:
    """Large bodies both ways: three 5 MiB parts (S3's minimum for all but the last part) up,
    the 15 MiB object down, and a HEAD whose Content-Length is the object's, not the body's."""
    parts = [os.urandom(5 * MiB) for _ in range(3)]
    with aws_rules(emulator.endpoint) as layer:
        client = through(layer, "s3", NO_RETRIES)
        upload = client.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
        etags = [
            client.upload_part(
                Bucket=bucket, Key="big", UploadId=upload, PartNumber=number, Body=part
            )["ETag"]
            for number, part in enumerate(parts, start=1)
        ]
        client.complete_multipart_upload(
            Bucket=bucket,
            Key="big",
            UploadId=upload,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]
            },
        )
        assert client.head_object(Bucket=bucket, Key="big")["ContentLength"] == 15 * MiB
        assert client.get_object(Bucket=bucket, Key="big")["Body"].read() == b"".join(parts)
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == b"".join(parts)
    assert not layer.injected


def test_slowdown_is_retried_by_botocore(emulator: Emulator, s3: Any, bucket: str) -> None:
    """S3 answers 503 SlowDown when asked too fast (S3 API Reference, "Error responses";
    S3 User Guide, "Best practices design patterns: optimizing Amazon S3 performance").
    botocore's standard retry mode counts SlowDown as throttling and retries it, so at a
    moderate rate every call of a client configured like the worker's still succeeds.
    Requests to other services are not S3's to slow down."""
    with aws_rules(emulator.endpoint, faults=Faults(s3_slowdown_rate=1.0)) as layer:
        with pytest.raises(ClientError) as raised:
            through(layer, "s3", ONE_RETRY).put_object(Bucket=bucket, Key="k", Body=b"x")
        assert failure(raised) == (503, "SlowDown")
        assert layer.injected["s3.slowdown"] == 2  # the call, and botocore's one retry
        assert through(layer, "sts", NO_RETRIES).get_caller_identity()["Account"]

        layer.set_faults(Faults(s3_slowdown_rate=0.3, seed=1))
        client = through(layer, "s3", WORKER_RETRIES)
        for index in range(6):
            client.put_object(Bucket=bucket, Key=f"k{index}", Body=b"x")
    assert layer.injected["s3.slowdown"] > 2
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 6


def test_conditional_writes_get_409_conditional_request_conflict(
    emulator: Emulator, s3: Any, bucket: str
) -> None:
    """S3 answers a conditional write that meets a concurrent operation on its key with 409
    ConditionalRequestConflict, for PutObject and CompleteMultipartUpload with If-None-Match
    (S3 API Reference, PutObject and CompleteMultipartUpload, "If-None-Match"; S3 User Guide,
    "How to prevent object overwrites with conditional writes"). botocore does not retry it.
    Writes without the condition, and the parts of an upload, are never answered so."""
    with aws_rules(emulator.endpoint, faults=Faults(conditional_conflict_rate=1.0)) as layer:
        client = through(layer, "s3", WORKER_RETRIES)
        with pytest.raises(ClientError) as raised:
            client.put_object(Bucket=bucket, Key="k", Body=b"x", IfNoneMatch="*")
        assert failure(raised) == (409, "ConditionalRequestConflict")
        client.put_object(Bucket=bucket, Key="plain", Body=b"x")
        upload = client.create_multipart_upload(Bucket=bucket, Key="big")["UploadId"]
        etag = client.upload_part(
            Bucket=bucket, Key="big", UploadId=upload, PartNumber=1, Body=b"p"
        )["ETag"]
        with pytest.raises(ClientError) as raised:
            client.complete_multipart_upload(
                Bucket=bucket,
                Key="big",
                UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]},
                IfNoneMatch="*",
            )
        assert failure(raised) == (409, "ConditionalRequestConflict")
    assert layer.injected["s3.conditional-conflict"] == 2
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["plain"]


# --- SQS -----------------------------------------------------------------------------------


def test_messages_over_1_mib_are_refused(emulator: Emulator, sqs: Any, queue_url: str) -> None:
    """SQS Developer Guide, "Amazon SQS message quotas": a message is at most 1 MiB
    (1,048,576 bytes; raised from 256 KiB in 2025), and a SendMessageBatch at most 1 MiB for
    all its messages together (BatchRequestTooLong). moto counts characters, AWS bytes: the
    two-byte bodies below pass moto alone."""
    over_in_bytes = "é" * (MAX_MESSAGE_BYTES // 2 + 1)  # 524,289 characters, 1,048,578 bytes
    half_over = "é" * (MAX_MESSAGE_BYTES // 4 + 1)  # two of them: 1,048,580 bytes
    with aws_rules(emulator.endpoint) as layer:
        client = through(layer, "sqs", NO_RETRIES)
        client.send_message(QueueUrl=queue_url, MessageBody="x" * MAX_MESSAGE_BYTES)
        fitting_batch = [
            {"Id": str(i), "MessageBody": "y" * (MAX_MESSAGE_BYTES // 2)} for i in range(2)
        ]
        assert not client.send_message_batch(QueueUrl=queue_url, Entries=fitting_batch).get(
            "Failed"
        )
        refused = []
        for body in ["x" * (MAX_MESSAGE_BYTES + 1), over_in_bytes]:
            with pytest.raises(ClientError) as raised:
                client.send_message(QueueUrl=queue_url, MessageBody=body)
            refused.append(failure(raised))
        long_batch = [{"Id": str(i), "MessageBody": half_over} for i in range(2)]
        with pytest.raises(client.exceptions.BatchRequestTooLong) as batch:
            client.send_message_batch(QueueUrl=queue_url, Entries=long_batch)
        received = receive(client, queue_url, 3)
    assert refused == [(400, "InvalidParameterValue")] * 2
    assert failure(batch) == (400, "AWS.SimpleQueueService.BatchRequestTooLong")
    assert sorted(len(m["Body"]) for m in received) == [MAX_MESSAGE_BYTES // 2] * 2 + [
        MAX_MESSAGE_BYTES
    ]
    assert layer.injected["sqs.message-too-long"] == 2
    assert layer.injected["sqs.batch-too-long"] == 1


def test_stale_receipt_handles(emulator: Emulator, sqs: Any, queue_url: str) -> None:
    """SQS API Reference, ReceiveMessage and DeleteMessage: every receive of a message hands
    out a new receipt handle and only the latest one acts on it; DeleteMessage with an older
    one succeeds but leaves the message in the queue. moto honours every handle ever given."""
    sqs.send_message(QueueUrl=queue_url, MessageBody="once")
    with aws_rules(emulator.endpoint) as layer:
        client = through(layer, "sqs", NO_RETRIES)
        [first] = receive(client, queue_url, 1, visibility=0)
        [second] = receive(client, queue_url, 1, visibility=30)
        assert second["MessageId"] == first["MessageId"]
        old, new = first["ReceiptHandle"], second["ReceiptHandle"]

        answer = client.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": "old", "ReceiptHandle": old, "VisibilityTimeout": 0},
                {"Id": "new", "ReceiptHandle": new, "VisibilityTimeout": 30},
            ],
        )
        assert [(f["Id"], f["Code"]) for f in answer["Failed"]] == [
            ("old", "ReceiptHandleIsInvalid")
        ]
        assert [s["Id"] for s in answer["Successful"]] == ["new"]
        with pytest.raises(ClientError) as single:
            client.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=old, VisibilityTimeout=0
            )
        assert failure(single) == (400, "ReceiptHandleIsInvalid")

        client.delete_message(QueueUrl=queue_url, ReceiptHandle=old)
        deleted = client.delete_message_batch(
            QueueUrl=queue_url, Entries=[{"Id": "old", "ReceiptHandle": old}]
        )
        assert [s["Id"] for s in deleted["Successful"]] == ["old"]
        assert not deleted.get("Failed")

        # Still there: the latest handle makes it visible, and it comes back.
        client.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=new, VisibilityTimeout=0)
        [third] = receive(client, queue_url, 1)
        assert third["MessageId"] == first["MessageId"]
        both = client.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": "stale", "ReceiptHandle": new},
                {"Id": "latest", "ReceiptHandle": third["ReceiptHandle"]},
            ],
        )
        assert sorted(s["Id"] for s in both["Successful"]) == ["latest", "stale"]
    counts = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    assert set(counts.values()) == {"0"}  # the latest handle did delete it
    assert layer.injected["sqs.stale-receipt"] == 5


def test_throttling_is_retried_by_botocore(emulator: Emulator, sqs: Any, queue_url: str) -> None:
    """SQS answers RequestThrottled past its request quotas (SQS API Reference, common
    errors; SQS Developer Guide, "Amazon SQS quotas"). botocore's standard mode lists
    RequestThrottled among its throttling codes and retries it."""
    with aws_rules(emulator.endpoint, faults=Faults(sqs_throttle_rate=1.0)) as layer:
        with pytest.raises(ClientError) as raised:
            through(layer, "sqs", ONE_RETRY).send_message(QueueUrl=queue_url, MessageBody="x")
        assert failure(raised) == (400, "RequestThrottled")
        assert layer.injected["sqs.throttled"] == 2  # the call, and botocore's one retry

        layer.set_faults(Faults(sqs_throttle_rate=0.3, seed=1))
        client = through(layer, "sqs", WORKER_RETRIES)
        for index in range(6):
            client.send_message(QueueUrl=queue_url, MessageBody=str(index))
        assert layer.injected["sqs.throttled"] > 2
    bodies = sorted(m["Body"] for m in receive(sqs, queue_url, 6))
    assert bodies == [str(index) for index in range(6)]


def test_visibility_batch_entries_fail_in_a_200_answer(
    emulator: Emulator, sqs: Any, queue_url: str
) -> None:
    """SQS API Reference, ChangeMessageVisibilityBatch: the call can succeed while some
    entries fail; each failure is listed in Failed with its Id, Code and SenderFault, and the
    caller must check that list. Failed entries change nothing."""
    sqs.send_message_batch(
        QueueUrl=queue_url, Entries=[{"Id": str(i), "MessageBody": str(i)} for i in range(10)]
    )
    with aws_rules(emulator.endpoint) as layer:
        client = through(layer, "sqs", NO_RETRIES)
        messages = receive(client, queue_url, 10)
        layer.set_faults(Faults(visibility_entry_failure_rate=0.5, seed=3))
        answer = client.change_message_visibility_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                for i, m in enumerate(messages)
            ],
        )
        layer.set_faults(NO_FAULTS)
        failed = {f["Id"] for f in answer["Failed"]}
        changed = {s["Id"] for s in answer["Successful"]}
        assert failed and changed and not failed & changed
        assert failed | changed == {str(i) for i in range(10)}
        assert {(f["Code"], f["SenderFault"]) for f in answer["Failed"]} == {
            ("InternalError", False)
        }
        assert layer.injected["sqs.visibility-entry-failed"] == len(failed)
        # Only the entries that succeeded were forwarded: only their messages are visible.
        again = receive(client, queue_url, len(changed))
        assert client.receive_message(QueueUrl=queue_url, WaitTimeSeconds=0).get("Messages") is None
    expected = {messages[int(i)]["MessageId"] for i in changed}
    assert {m["MessageId"] for m in again} == expected


# --- the proxy itself ----------------------------------------------------------------------


@contextlib.contextmanager
def recording_server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A bare HTTP server that keeps every request it gets and answers 200 with no body."""
    seen: list[dict[str, Any]] = []

    class Recorder(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append({"target": self.path, "headers": dict(self.headers), "body": body})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_requests_reach_upstream_unchanged() -> None:
    """The layer is transparent: method, path, query, the signed headers (Host included) and
    the body arrive as botocore sent them, so SigV4 would still verify; a chunked body arrives
    whole, with its length."""
    sent: list[Any] = []
    with recording_server() as (upstream, seen), aws_rules(upstream) as layer:
        client = through(layer, "s3", NO_RETRIES)
        client.meta.events.register("before-send", lambda request, **_: sent.append(request))
        client.put_object(Bucket="some-bucket", Key="dir/a key é.csv", Body=b"a,b\n1,2\n")

        port = urlsplit(layer.endpoint).port
        raw = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        raw.request("PUT", "/raw?x=1", body=iter([b"chunk one, ", b"chunk two"]))
        assert raw.getresponse().status == 200
        raw.close()

    [request] = sent
    signed, chunked = seen
    url = urlsplit(request.url)
    assert signed["target"] == url.path + (f"?{url.query}" if url.query else "")
    assert signed["body"] == b"a,b\n1,2\n"
    for name in ("Authorization", "X-Amz-Date", "X-Amz-Content-SHA256", "Content-MD5"):
        if name in request.headers:
            assert signed["headers"][name] == request.headers[name].decode()
    assert signed["headers"]["Host"] == urlsplit(layer.endpoint).netloc
    assert "Credential=testing/" in signed["headers"]["Authorization"]
    assert chunked["target"] == "/raw?x=1"
    assert chunked["body"] == b"chunk one, chunk two"
    assert "Transfer-Encoding" not in chunked["headers"]
