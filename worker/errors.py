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

from botocore.exceptions import (
    ClientError,
    ConnectionError,
    CredentialRetrievalError,
    NoCredentialsError,
)

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

# Credentials that lapsed while being refreshed (the container's role credentials rotate):
# botocore does not retry these, but the next call signs with fresh ones.
EXPIRED_CREDENTIAL_CODES = frozenset({"ExpiredToken", "ExpiredTokenException", "RequestExpired"})

# The work queue named by SQS_QUEUE_URL does not exist (the query and JSON protocols' codes).
NO_SUCH_QUEUE_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})

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


def is_transient(error: Exception) -> bool:
    """Whether the same call may well succeed in a moment: nothing says the setup is wrong.

    Throttling, a 5xx, a connection refused or timed out, credentials not yet served or
    expired mid-refresh.
    """
    if isinstance(error, (ConnectionError, NoCredentialsError, CredentialRetrievalError)):
        return True
    if not isinstance(error, ClientError):
        return False
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return is_throttling(error) or error_code(error) in EXPIRED_CREDENTIAL_CODES or status >= 500


def needs_credentials_refresh(error: Exception) -> bool:
    """Whether botocore left this error unretried though a retry with fresh credentials works."""
    return isinstance(error, ClientError) and error_code(error) in EXPIRED_CREDENTIAL_CODES
