"""What an AWS error means for an item: the code, and whether any retry could cure it.

Retrying costs a receive each time, and every receive brings an item closer to the dead-letter
queue. So two kinds of failure are told apart from the rest here:

* throttling (``503 SlowDown``, SQS ``RequestThrottled``...) says nothing about the item; it is
  retried inside the same receive, after botocore's own retries are spent;
* permanent errors (a key S3 will never accept, no permission to write the output) fail the
  same way on every receive, so the item is given back at once, without waiting out
  RETRY_DELAY_SECONDS, and reaches the dead-letter queue within seconds.
"""

from __future__ import annotations

from botocore.exceptions import ClientError

# botocore's standard retry mode treats these as throttling too (botocore/retries/standard.py).
THROTTLING_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ServiceUnavailable",
        "503",
    }
)

# Errors on writing a result that the same write will hit again on every receive.
PERMANENT_WRITE_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "KeyTooLongError",
        "MetadataTooLarge",
        "InvalidArgument",
        "NoSuchBucket",
        "AllAccessDisabled",
    }
)


def error_code(error: ClientError) -> str:
    """Return the AWS error code of ``error`` (S3 gives the bare HTTP status for a HEAD)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def is_throttling(error: ClientError) -> bool:
    """Whether AWS asked us to slow down, rather than refused the request itself."""
    return error_code(error) in THROTTLING_CODES


def describe(error: ClientError) -> str:
    """Return one line for logs and reasons: operation, code and AWS's message."""
    details = error.response.get("Error", {})
    return f"{error.operation_name} failed: {details.get('Code')}: {details.get('Message')}"
