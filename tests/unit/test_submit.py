import pytest

from batchspot.submit import SubmitError, auto_size, parse_env, resolve_size


def test_auto_size_is_one_child_per_target_messages():
    assert auto_size(queued=1001, per_worker=100, max_vcpus=256, vcpus_per_child=4) == 11


def test_auto_size_is_capped_by_the_compute_environment():
    # 64 vCPUs hold 16 children of 4 vCPUs: more would wait in RUNNABLE
    assert auto_size(queued=100_000, per_worker=100, max_vcpus=64, vcpus_per_child=4) == 16


def test_auto_size_never_exceeds_the_array_limit_nor_goes_below_one():
    assert auto_size(10**9, 1, 10**6, 1) == 10_000
    assert auto_size(1, 100, 2, 4) == 1


def test_env_overrides_parse_and_keep_equals_in_values():
    assert parse_env(["S3_QUERY_LIMIT=10", "HANDLER=pkg.mod:fn", "X=a=b"]) == {
        "S3_QUERY_LIMIT": "10",
        "HANDLER": "pkg.mod:fn",
        "X": "a=b",
    }
    with pytest.raises(SubmitError, match="KEY=VALUE"):
        parse_env(["NOEQUALS"])


@pytest.mark.parametrize("size", ["0", "10001", "-3", "many"])
def test_explicit_size_outside_batch_limits_is_refused(size):
    with pytest.raises(SubmitError, match="--size"):
        resolve_size(size, sqs=None, batch=None, queue_url="", job_queue="", job_definition="")
