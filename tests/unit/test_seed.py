import json

import boto3
import pytest
from botocore.stub import Stubber

from batchspot import seed as seed_module
from batchspot.seed import Source, message_body, send_batch

QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/work"


@pytest.fixture
def sqs():
    return boto3.client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )


def entries(bodies: dict[str, str]) -> list[dict[str, str]]:
    return [{"Id": i, "MessageBody": b} for i, b in bodies.items()]


def test_message_body_is_the_worker_contract_for_any_key():
    key = "dir with space/ünïcode+plus%25?&=.csv"
    body = json.loads(message_body(Source("in", key, '"abc"'), query="SELECT * FROM S3Object"))
    assert body == {
        "version": 1,
        "bucket": "in",
        "key": key,
        "etag": '"abc"',
        "query": "SELECT * FROM S3Object",
    }


def test_only_the_failed_entries_of_a_batch_are_sent_again(sqs, monkeypatch):
    monkeypatch.setattr(seed_module, "ENTRY_BACKOFF", 0)
    bodies = [f"m{i}" for i in range(4)]
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [
                    {"Id": i, "MessageId": i, "MD5OfMessageBody": "x"} for i in ("0", "2")
                ],
                "Failed": [
                    {"Id": "1", "SenderFault": False, "Code": "InternalError"},
                    {"Id": "3", "SenderFault": False, "Code": "InternalError"},
                ],
            },
            {"QueueUrl": QUEUE, "Entries": entries({str(i): b for i, b in enumerate(bodies)})},
        )
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [
                    {"Id": i, "MessageId": i, "MD5OfMessageBody": "x"} for i in ("1", "3")
                ],
                "Failed": [],
            },
            {"QueueUrl": QUEUE, "Entries": entries({"1": "m1", "3": "m3"})},
        )
        sent, failures = send_batch(sqs, QUEUE, bodies)
        stub.assert_no_pending_responses()
    assert (sent, failures) == (4, [])


def test_sender_faults_are_reported_not_retried(sqs):
    with Stubber(sqs) as stub:
        stub.add_response(
            "send_message_batch",
            {
                "Successful": [{"Id": "0", "MessageId": "0", "MD5OfMessageBody": "x"}],
                "Failed": [
                    {
                        "Id": "1",
                        "SenderFault": True,
                        "Code": "InvalidMessageContents",
                        "Message": "bad",
                    }
                ],
            },
        )
        sent, failures = send_batch(sqs, QUEUE, ["ok", "bad body"])
    assert sent == 1
    assert [(f.body, f.code) for f in failures] == [("bad body", "InvalidMessageContents")]
