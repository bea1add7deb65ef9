"""The stack's saved names: where they are read from, and what an operator is told without them."""

import json

import pytest

from batchspot import stack
from batchspot import terraform as tf
from batchspot.errors import OperatorError


def test_no_test_reads_the_developers_saved_stack():
    # No fixture asked for: tests/conftest.py moves the state dir for every test by itself.
    assert tf.default_state_dir() != tf.DEFAULT_STATE_DIR
    assert not tf.default_state_dir().exists() or not any(tf.default_state_dir().iterdir())
    assert stack.outputs() is None


def test_a_given_option_wins_and_a_missing_name_says_how_to_supply_it(hermetic_state_dir):
    assert stack.value("queue_url", "https://given") == "https://given"
    with pytest.raises(OperatorError, match=r"run `invoke deploy` or pass --queue-url$"):
        stack.value("queue_url")
    (hermetic_state_dir / tf.OUTPUTS_FILE).write_text(json.dumps({"queue_url": "https://saved"}))
    assert stack.value("queue_url") == "https://saved"
    with pytest.raises(OperatorError, match=r"no output 'dlq_url': pass --dlq-url$"):
        stack.value("dlq_url")


def test_a_given_job_id_needs_no_aws_call():
    assert stack.job_id("job-1", job_queue="", name="batchspot") == "job-1"
