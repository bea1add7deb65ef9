"""The IAM evaluator behind the rules layer's 403-or-404 answer (IAM User Guide, "Policy
evaluation logic" and the IAM JSON policy element reference)."""

from __future__ import annotations

import pytest

from batchspot.iam_policy import allows

BUCKET = "arn:aws:s3:::in-bucket"


def policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def allow(action: str | list[str], resource: str | list[str] = "*") -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource}


def test_nothing_is_allowed_by_default() -> None:
    """Default deny: an empty policy allows nothing."""
    assert not allows(policy(), "s3:ListBucket", BUCKET)


def test_single_statement_object_is_accepted() -> None:
    """IAM accepts ``Statement`` as one object as well as a list."""
    assert allows({"Statement": allow("s3:ListBucket", BUCKET)}, "s3:ListBucket", BUCKET)


def test_action_matches_case_insensitively_and_resource_case_sensitively() -> None:
    """Action names are case-insensitive in IAM; ARNs (bucket names, keys) are not."""
    granted = policy(allow("S3:listbucket", BUCKET))
    assert allows(granted, "s3:ListBucket", BUCKET)
    assert not allows(granted, "s3:ListBucket", "arn:aws:s3:::IN-BUCKET")


@pytest.mark.parametrize(
    ("pattern", "resource", "expected"),
    [
        ("arn:aws:s3:::in-*", BUCKET, True),
        ("arn:aws:s3:::in-bucket/*", BUCKET, False),  # objects, not the bucket itself
        ("arn:aws:s3:::in-bucke?", BUCKET, True),
        ("arn:aws:s3:::in-bucke?", "arn:aws:s3:::in-buckets", False),  # ? is exactly one
        ("arn:aws:s3:::in-[a-z]ucket", "arn:aws:s3:::in-bucket", False),  # no glob classes
        ("arn:aws:s3:::in-[a-z]ucket", "arn:aws:s3:::in-[a-z]ucket", True),
        ("*", BUCKET, True),
    ],
)
def test_resource_wildcards(pattern: str, resource: str, expected: bool) -> None:
    """Only ``*`` (any run) and ``?`` (one character) are wildcards in IAM ARNs."""
    assert allows(policy(allow("s3:ListBucket", pattern)), "s3:ListBucket", resource) is expected


def test_action_wildcards_and_lists() -> None:
    """Action lists and ``s3:Get*``/``s3:*``-style wildcards."""
    assert allows(policy(allow(["sqs:*", "s3:Get*"])), "s3:GetObject", BUCKET)
    assert not allows(policy(allow(["sqs:*", "s3:Get*"])), "s3:ListBucket", BUCKET)
    assert allows(policy(allow("s3:List?ucket")), "s3:ListBucket", BUCKET)


def test_explicit_deny_wins_in_any_order() -> None:
    """An explicit Deny overrides any Allow, whichever statement comes first."""
    deny = {"Effect": "Deny", "Action": "s3:ListBucket", "Resource": BUCKET}
    assert not allows(policy(allow("s3:*"), deny), "s3:ListBucket", BUCKET)
    assert not allows(policy(deny, allow("s3:*")), "s3:ListBucket", BUCKET)
    assert allows(policy(deny, allow("s3:*")), "s3:GetObject", BUCKET)


def test_not_action_and_not_resource() -> None:
    """NotAction/NotResource match everything except what they list."""
    everything_but_list = {"Effect": "Allow", "NotAction": "s3:List*", "Resource": "*"}
    assert allows(policy(everything_but_list), "s3:GetObject", BUCKET)
    assert not allows(policy(everything_but_list), "s3:ListBucket", BUCKET)
    other_buckets = {"Effect": "Allow", "Action": "s3:ListBucket", "NotResource": [BUCKET]}
    assert not allows(policy(other_buckets), "s3:ListBucket", BUCKET)
    assert allows(policy(other_buckets), "s3:ListBucket", "arn:aws:s3:::out-bucket")


def test_statements_with_conditions_never_apply() -> None:
    """Without the request context a conditional Allow is treated as missing, and a
    conditional Deny as not matching (documented in the module)."""
    condition = {"Bool": {"aws:SecureTransport": "false"}}
    conditional_allow = {**allow("s3:ListBucket", BUCKET), "Condition": condition}
    assert not allows(policy(conditional_allow), "s3:ListBucket", BUCKET)
    conditional_deny = {
        "Effect": "Deny",
        "Action": "s3:*",
        "Resource": "*",
        "Condition": condition,
    }
    assert allows(policy(allow("s3:ListBucket"), conditional_deny), "s3:ListBucket", BUCKET)


@pytest.mark.parametrize(
    "statement",
    [
        {"Action": "s3:*", "Resource": "*"},
        {"Effect": "allow", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Allow", "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:*", "NotAction": "s3:Get*", "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:*"},
    ],
)
def test_malformed_statements_are_refused(statement: dict) -> None:
    """Statements IAM would reject raise instead of being silently skipped."""
    with pytest.raises(ValueError):
        allows(policy(statement), "s3:ListBucket", BUCKET)
