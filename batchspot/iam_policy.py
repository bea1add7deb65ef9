"""A minimal IAM policy evaluator, enough to answer "may this role do X on Y?" offline.

The AWS rules layer (``batchspot.awsrules``) needs one answer that changes S3's behaviour:
whether the caller has ``s3:ListBucket`` on a bucket, which decides if a missing key reads as
404 or 403. It answers it from the worker role's identity policy, evaluated here as IAM does
for a single identity policy (IAM User Guide, "Policy evaluation logic"):

* statements with ``Effect`` ``Allow`` or ``Deny``; ``Action``/``NotAction`` and
  ``Resource``/``NotResource`` given as a string or a list;
* ``*`` matches any run of characters and ``?`` exactly one; actions match case-insensitively,
  resources case-sensitively (IAM JSON reference, "Action" and "Resource" elements);
* an explicit Deny wins over any Allow; with no matching Allow the answer is deny.

What it does not know, it does not guess in the caller's favour where it can avoid it:

* a statement with a ``Condition`` never applies. We have no request context (source IP,
  TLS, tags...) to test the condition against. For an Allow that is conservative: the
  permission is treated as missing. For a Deny it is the one lenient choice, taken because
  the usual conditional Denies (``aws:SecureTransport`` false, foreign VPC endpoints) cannot
  match the requests this project's code makes.
* policy variables (``${aws:username}``) are not expanded and match only themselves;
  ``Principal`` is ignored, as identity policies have none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any


def allows(policy: dict[str, Any], action: str, resource: str) -> bool:
    """Whether ``policy`` allows ``action`` (``service:Name``) on the ARN ``resource``.

    Raises ``ValueError`` for a statement IAM itself would reject (no Effect, or neither or
    both of Action/NotAction or Resource/NotResource), rather than silently skipping it.
    """
    allowed = False
    for statement in _statements(policy):
        effect = statement.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise ValueError(f"statement needs Effect Allow or Deny: {statement}")
        if "Condition" in statement:
            continue
        if not _applies(statement, "Action", action, ignore_case=True):
            continue
        if not _applies(statement, "Resource", resource, ignore_case=False):
            continue
        if effect == "Deny":
            return False
        allowed = True
    return allowed


def _statements(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the policy's statements; IAM accepts a single statement object as well as a list."""
    statements = policy.get("Statement", [])
    return [statements] if isinstance(statements, dict) else list(statements)


def _applies(statement: dict[str, Any], element: str, value: str, *, ignore_case: bool) -> bool:
    """Whether ``element`` (or its ``Not`` form) of ``statement`` covers ``value``."""
    negated = f"Not{element}"
    if (element in statement) == (negated in statement):
        raise ValueError(f"statement needs exactly one of {element} or {negated}: {statement}")
    if element in statement:
        return _any_match(statement[element], value, ignore_case)
    return not _any_match(statement[negated], value, ignore_case)


def _any_match(patterns: str | Iterable[str], value: str, ignore_case: bool) -> bool:
    """Whether any IAM wildcard pattern in ``patterns`` matches all of ``value``."""
    if isinstance(patterns, str):
        patterns = [patterns]
    return any(_compile(pattern, ignore_case).fullmatch(value) for pattern in patterns)


@lru_cache(maxsize=1024)
def _compile(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """Translate an IAM pattern: only ``*`` and ``?`` are special (no ``[...]`` as in glob)."""
    regex = "".join(
        ".*" if char == "*" else "." if char == "?" else re.escape(char) for char in pattern
    )
    return re.compile(regex, re.DOTALL | (re.IGNORECASE if ignore_case else 0))
