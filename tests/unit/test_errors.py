"""The one sentence for what stops a task, and the traceback kept for what is a bug."""

from botocore.exceptions import ClientError, EndpointConnectionError, NoRegionError

from batchspot import errors


def aws_error(code: str, message: str = "") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, "GetQueueAttributes")


def test_expired_or_wrong_credentials_say_to_refresh_them():
    for code in ("ExpiredToken", "ExpiredTokenException", "InvalidClientTokenId"):
        text = errors.sentence(aws_error(code))
        assert text and text.startswith(f"AWS rejected the credentials ({code})"), text


def test_a_missing_resource_asks_whether_the_outputs_are_from_elsewhere():
    asked = []

    def elsewhere() -> str:
        asked.append(True)
        return "the saved stack outputs are from account 111111111111"

    text = errors.sentence(aws_error("QueueDoesNotExist", "no queue"), elsewhere)
    assert text == (
        "AWS answered QueueDoesNotExist to GetQueueAttributes: no queue; "
        "the saved stack outputs are from account 111111111111"
    )
    errors.sentence(aws_error("Throttling"), elsewhere)
    assert asked == [True]  # only a not-found costs the STS call


def test_botocore_setup_errors_name_the_fix():
    assert errors.sentence(NoRegionError()) == errors.NO_REGION
    unreachable = EndpointConnectionError(endpoint_url="http://127.0.0.1:9/")
    assert errors.sentence(unreachable).startswith("cannot reach http://127.0.0.1:9/: ")


def test_a_bug_keeps_its_traceback():
    assert errors.sentence(KeyError("queue_url")) is None
    assert errors.sentence(ZeroDivisionError()) is None
    assert errors.sentence(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")) is None
    assert errors.sentence(ValueError("max_count must be at least 1")) == (
        "max_count must be at least 1"
    )


def test_debug_is_asked_for_by_variable(monkeypatch):
    monkeypatch.setenv(errors.DEBUG_VARIABLE, "1")
    assert errors.debugging()
    monkeypatch.setenv(errors.DEBUG_VARIABLE, "0")
    assert not errors.debugging()
