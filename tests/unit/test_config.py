"""Configuration: the job definition's variables, and one sentence for each mistake."""

from __future__ import annotations

import pytest

from worker.config import ConfigError, load_config, parse_query_limit
from worker.final import load_final

BASE = {"SQS_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/1/work", "OUTPUT_BUCKET": "out"}


def test_defaults_suit_a_batch_job() -> None:
    config = load_config(BASE)
    assert config.default_query == "SELECT * FROM S3Object s"
    assert (config.query_engine, config.rows_format, config.concurrency) == ("auto", "json", 4)
    assert (config.job_id, config.array_index, config.attempt) == ("local", None, 1)


@pytest.mark.parametrize(
    ("raw", "limit"), [("10000", 10000), (" LIMIT 10000", 10000), ("limit 5 ", 5), ("", None)]
)
def test_query_limit_accepts_the_original_job_definitions_form(raw: str, limit: int | None) -> None:
    assert parse_query_limit(raw) == limit


def test_limit_reaches_the_default_query() -> None:
    config = load_config({**BASE, "S3_QUERY_LIMIT": " LIMIT 10000"})
    assert config.default_query == "SELECT * FROM S3Object s LIMIT 10000"


def test_batch_variables_are_read() -> None:
    config = load_config(
        {
            **BASE,
            "AWS_BATCH_JOB_ID": "j-1:3",
            "AWS_BATCH_JOB_ARRAY_INDEX": "3",
            "AWS_BATCH_JOB_ATTEMPT": "2",
        }
    )
    assert (config.job_id, config.array_index, config.attempt) == ("j-1:3", 3, 2)


def test_output_buckets_a_message_may_name() -> None:
    config = load_config({**BASE, "ALLOWED_OUTPUT_BUCKETS": "archive, legacy-results"})
    assert config.output_bucket_allowed("out")
    assert config.output_bucket_allowed("legacy-results")
    assert not config.output_bucket_allowed("someone-else")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"SQS_QUEUE_URL": " "}, "SQS_QUEUE_URL is not set"),
        ({"OUTPUT_BUCKET": ""}, "OUTPUT_BUCKET is not set"),
        ({"S3_QUERY_LIMIT": "LIMIT ten"}, "S3_QUERY_LIMIT must be a positive number"),
        ({"S3_QUERY_LIMIT": "0"}, "S3_QUERY_LIMIT must be a positive number"),
        ({"QUERY_ENGINE": "athena"}, "QUERY_ENGINE must be one of auto, s3select, local"),
        ({"ROWS_FORMAT": "xml"}, "ROWS_FORMAT must be one of json, csv"),
        ({"WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY must be at least 1"),
        ({"HANDLER_TIMEOUT": "soon"}, "HANDLER_TIMEOUT must be a number"),
        ({"HANDLER": "not a path"}, "HANDLER must look like package.module:function"),
        (
            {"HANDLER": "a:b", "HANDLER_COMMAND": "./run"},
            "set HANDLER or HANDLER_COMMAND, not both",
        ),
    ],
)
def test_mistakes_are_one_clear_sentence(override: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({**BASE, **override})
    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(("raw", "tolerated"), [("", False), ("false", False), (" True ", True)])
def test_the_final_step_reads_whether_to_tolerate_pending_items(raw: str, tolerated: bool) -> None:
    _, settings = load_final({**BASE, "RUN_JOB_ID": "j-1", "TOLERATE_PENDING": raw})
    assert settings.tolerate_pending is tolerated


def test_the_final_step_refuses_a_tolerate_pending_that_is_not_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"^TOLERATE_PENDING must be true or false, got 'yes'$"):
        load_final({**BASE, "RUN_JOB_ID": "j-1", "TOLERATE_PENDING": "yes"})


@pytest.mark.parametrize("raw", ["0", "many", "1001"])
def test_the_final_step_refuses_items_per_message_that_no_message_can_hold(raw: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_final({**BASE, "RUN_JOB_ID": "j-1", "QUEUED_ITEMS_PER_MESSAGE": raw})
    assert str(refused.value) == (
        f"QUEUED_ITEMS_PER_MESSAGE must be a number from 1 to 1000, got {raw!r}"
    )
