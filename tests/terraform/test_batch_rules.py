"""The model of AWS Batch's rules, read from the job definitions Terraform renders.

Each decision follows AWS's documentation, cited per test:

* AWS Batch API reference, "EvaluateOnExit"
  (https://docs.aws.amazon.com/batch/latest/APIReference/API_EvaluateOnExit.html): up to 5
  conditions; the action applies if *all* of the given conditions match; a pattern may end
  with ``*`` so that only the start must match exactly; if none match, the job is retried.
* AWS Batch API reference, "RetryStrategy": ``attempts`` (1 to 10) bounds the attempts.
* AWS Batch user guide, "Automated job retries": the strategy is evaluated for a failed
  attempt, in order; a Spot reclaim is recorded as ``Host EC2 (instance i-…) terminated.``.
* AWS Batch user guide, "Job timeouts"
  (https://docs.aws.amazon.com/batch/latest/userguide/job_timeouts.html): "If a job is
  terminated for exceeding the timeout duration, it isn't retried."
"""

from __future__ import annotations

import pytest

from batchspot.batchrules import BatchRules, ChildEnd, ExitRule, render_job_definitions

pytestmark = pytest.mark.terraform

RECLAIM = ChildEnd.host_terminated("i-0123456789abcdef0")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BatchRules]:
    """The stack's job definitions as ``terraform show -json`` of a plan renders them."""
    work = tmp_path_factory.mktemp("job-definitions")
    return {
        name: BatchRules.from_planned(values)
        for name, values in render_job_definitions(work).items()
    }


def test_every_job_definition_renders_the_one_strategy(rendered: dict[str, BatchRules]) -> None:
    assert rendered["ec2"] == rendered["final"]
    assert rendered["ec2"].attempts == 3 and rendered["ec2"].attempt_timeout == 21600
    fargate = rendered["fargate_spot"]
    assert fargate.rules[1:] == rendered["ec2"].rules[1:]
    assert fargate.decide(ChildEnd("Your Spot Task was interrupted."), 1) == "RETRY"


@pytest.mark.parametrize(
    ("end", "decision"),
    [
        # Exit 0 is SUCCEEDED: the strategy is evaluated only for a failed attempt.
        (ChildEnd.exited(0), "SUCCEEDED"),
        # A Spot reclaim: the host goes away under the child, which reports no exit code.
        (RECLAIM, "RETRY"),
        # The worker's "stuck" and "come back later" codes.
        (ChildEnd.exited(3), "RETRY"),
        (ChildEnd.exited(75), "RETRY"),
        # A configuration error, a crash, a SIGTERM ending the process: the catch-all EXIT.
        (ChildEnd.exited(2), "FAILED"),
        (ChildEnd.exited(1), "FAILED"),
        (ChildEnd.exited(143), "FAILED"),
        # 30 must not pass for 3, nor 750 for 75: a pattern without * matches the whole code.
        (ChildEnd.exited(30), "FAILED"),
        (ChildEnd.exited(750), "FAILED"),
        # The same image on a smaller host would be killed again: not retried.
        (ChildEnd.out_of_memory(), "FAILED"),
        # Batch stopped the attempt at its timeout: never retried, whatever the exit code.
        (ChildEnd.attempt_timed_out(75), "FAILED"),
        (ChildEnd.attempt_timed_out(), "FAILED"),
    ],
    ids=lambda value: value if isinstance(value, str) else value.describe(),
)
def test_each_end_of_a_first_attempt_under_the_rendered_strategy(
    rendered: dict[str, BatchRules], end: ChildEnd, decision: str
) -> None:
    assert rendered["ec2"].decide(end, attempt=1) == decision


def test_no_retry_beyond_attempts(rendered: dict[str, BatchRules]) -> None:
    """RetryStrategy: ``attempts`` is the number of times a job moves to RUNNABLE."""
    rules = rendered["ec2"]
    assert [rules.decide(RECLAIM, attempt) for attempt in (1, 2, 3)] == [
        "RETRY",
        "RETRY",
        "FAILED",
    ]
    assert rules.decide(ChildEnd.exited(0), rules.attempts) == "SUCCEEDED"


def test_first_match_wins_all_given_conditions_must_match_and_none_matching_retries() -> None:
    """EvaluateOnExit: all conditions of an entry must match; entries in order; no match, RETRY."""
    rules = BatchRules(
        attempts=5,
        rules=(
            ExitRule("EXIT", on_exit_code="1*", on_reason="Out*"),
            ExitRule("RETRY", on_exit_code="13*"),
            ExitRule("EXIT", on_status_reason="Essential container in task exited"),
        ),
        attempt_timeout=None,
    )
    # 137 with the OOM reason: the first entry matches both of its conditions.
    assert rules.decide(ChildEnd.out_of_memory(), 1) == "FAILED"
    # 137 without that reason: the first entry fails one condition, the second matches.
    assert rules.decide(ChildEnd.exited(137), 1) == "RETRY"
    # 12: only the third entry (its status reason) matches.
    assert rules.decide(ChildEnd.exited(12), 1) == "FAILED"
    # A reclaim matches none of them (no exit code, another status reason): retried.
    assert rules.decide(RECLAIM, 1) == "RETRY"


def test_an_exit_code_pattern_never_matches_a_host_that_went_away() -> None:
    """A reclaimed host reports no exit code: only a status-reason rule can retry it."""
    rules = BatchRules(
        attempts=3,
        rules=(ExitRule("EXIT", on_exit_code="*"), ExitRule("RETRY", on_reason="*")),
        attempt_timeout=None,
    )
    assert rules.decide(RECLAIM, 1) == "RETRY"
    assert rules.decide(ChildEnd.exited(75), 1) == "FAILED"
