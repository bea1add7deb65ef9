"""LocalStack, run natively, serves what the worker needs and refuses what it cannot do.

These start their own LocalStack whatever BATCHSPOT_TEST_EMULATOR says, because they test
the starting itself; the first run installs LocalStack's venv (about a minute).
"""

from __future__ import annotations

import socket
import uuid

import pytest
from botocore.exceptions import ClientError

from batchspot import emulators
from batchspot.emulators import (
    EmulatorError,
    ensure_localstack_venv,
    free_port,
    localstack_server,
    running_emulator,
)
from worker.errors import error_code

pytestmark = pytest.mark.localstack


@pytest.fixture(scope="module")
def localstack(tmp_path_factory):
    with localstack_server(tmp_path_factory.mktemp("localstack-logs")) as running:
        yield running


@pytest.fixture(scope="module")
def clients(localstack):
    return {name: localstack.client(name) for name in ("s3", "sqs")}


def test_sqs_round_trip_on_a_queue_url_the_worker_can_reach(localstack, clients):
    sqs = clients["sqs"]
    queue_url = sqs.create_queue(QueueName=f"work-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    assert queue_url.startswith(localstack.endpoint + "/")

    sqs.send_message(QueueUrl=queue_url, MessageBody='{"bucket": "b", "key": "k"}')
    received = sqs.receive_message(QueueUrl=queue_url, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in received] == ['{"bucket": "b", "key": "k"}']
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=received[0]["ReceiptHandle"])

    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])
    assert attributes["Attributes"]["ApproximateNumberOfMessages"] == "0"
    assert attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "0"


def test_s3_stores_keys_with_spaces_like_the_taxi_data(clients):
    s3 = clients["s3"]
    bucket = f"input-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="trip data/yellow_tripdata_2018-01.csv", Body=b"a,b\n1,2\n")

    body = s3.get_object(Bucket=bucket, Key="trip data/yellow_tripdata_2018-01.csv")["Body"]
    assert body.read() == b"a,b\n1,2\n"


def test_s3_select_is_refused_with_internal_failure(clients):
    # The worker's QUERY_ENGINE=auto falls back to its local engine on exactly this error.
    s3 = clients["s3"]
    bucket = f"input-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="rows.csv", Body=b"a,b\n1,2\n")

    with pytest.raises(ClientError) as refused:
        s3.select_object_content(
            Bucket=bucket,
            Key="rows.csv",
            Expression="SELECT * FROM S3Object s",
            ExpressionType="SQL",
            InputSerialization={"CSV": {"FileHeaderInfo": "USE"}},
            OutputSerialization={"JSON": {}},
        )
    assert error_code(refused.value) == "InternalFailure"


def test_invoke_test_local_recognises_a_running_localstack(localstack):
    assert running_emulator(localstack.endpoint) == localstack
    assert running_emulator(f"http://127.0.0.1:{free_port()}") is None


def test_second_install_is_a_cache_hit(monkeypatch):
    """Once the venv and certificate are complete, asking again runs no install step."""
    ensure_localstack_venv()

    def no_step(*args: object) -> None:
        raise AssertionError(f"a complete cached install was redone: {args[0]}")

    monkeypatch.setattr(emulators, "_run_logged", no_step)
    monkeypatch.setattr(emulators, "_make_certificate", no_step)
    install = ensure_localstack_venv()
    assert install.python.exists() and install.cert.exists()


def test_a_taken_port_fails_at_once_with_a_sentence(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = pytest.raises(EmulatorError, match=f"{port} is already in use")
        with refused, localstack_server(tmp_path, port=port):
            pass
