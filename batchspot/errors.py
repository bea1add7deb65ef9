"""The one place that turns what stops a task into one sentence: what is missing, how to fix it.

Library code raises what it knows (:class:`OperatorError`, its own domain errors, botocore's);
``tasks.py`` prints :func:`sentence`'s answer instead of a traceback and exits non-zero. An
exception this module does not recognise is a bug, so it keeps its traceback. ``invoke --debug
<task>`` (invoke's own core flag) or ``BATCHSPOT_DEBUG=1`` keeps the traceback for every error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from botocore.exceptions import (
    ClientError as AwsClientError,
)
from botocore.exceptions import (
    ConnectionClosedError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOTokenLoadError,
    TokenRetrievalError,
    UnauthorizedSSOTokenError,
)
from docker.errors import DockerException

from worker.errors import error_code

DEBUG_VARIABLE = "BATCHSPOT_DEBUG"

# What AWS answers when the credentials exist but no longer (or never did) work.
REJECTED_CREDENTIALS = frozenset(
    {
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AuthFailure",
        "InvalidToken",
    }
)
# What AWS answers when a named resource is not there (or not there for this account/region).
NOT_FOUND = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "NoSuchBucket",
        "ResourceNotFoundException",
        "RepositoryNotFoundException",
        "404",
    }
)

NO_REGION = (
    "no AWS region is set: export AWS_DEFAULT_REGION (e.g. AWS_DEFAULT_REGION=us-east-1) or "
    "set `region` in ~/.aws/config, then retry"
)
NO_REGION_NOR_STACK = (
    "no AWS region is set, and no deployed stack saved one: export AWS_DEFAULT_REGION "
    "(e.g. AWS_DEFAULT_REGION=us-east-1), then run `invoke deploy` or pass the stack's names"
)
NO_CREDENTIALS = (
    "no AWS credentials were found: run `aws configure` (or `aws sso login`), or export "
    "AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, then retry"
)


class OperatorError(RuntimeError):
    """Something the operator can fix (a missing prerequisite, a bad option); the text says how.

    The message is the whole answer: one sentence naming what is missing and the fix.
    """


def debugging() -> bool:
    """Whether the operator asked for tracebacks: ``invoke --debug`` or BATCHSPOT_DEBUG=1."""
    if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
        return True
    # invoke's core --debug flag turns on DEBUG logging (invoke.util.enable_logging).
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def _client_error(error: AwsClientError, explain_not_found: Callable[[], str | None]) -> str:
    code = error_code(error)
    message = (error.response.get("Error", {}).get("Message") or "").strip()
    if code in REJECTED_CREDENTIALS:
        return (
            f"AWS rejected the credentials ({code}): they are expired or wrong; refresh them "
            "(`aws sso login`, or new keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), then retry"
        )
    if code == "RepositoryNotFoundException":
        return (
            f"the ECR repository does not exist ({message}): run `invoke deploy`, which creates "
            "it, or pass --repository-url"
        )
    said = f"AWS answered {code} to {error.operation_name}" + (f": {message}" if message else "")
    if code in NOT_FOUND:
        mismatch = explain_not_found()
        if mismatch:
            return f"{said}; {mismatch}"
        return f"{said}; check the name, or run `invoke deploy` to create it"
    if "AccessDenied" in code or code in {"UnauthorizedOperation", "Forbidden", "403"}:
        return f"{said}; these credentials lack that permission: use a role that has it"
    return said


def sentence(
    error: BaseException, explain_not_found: Callable[[], str | None] = lambda: None
) -> str | None:
    """Return the one sentence, on one line, for an error an operator can fix; None for a bug.

    ``explain_not_found`` is asked, only when AWS says a named resource does not exist, whether
    the saved stack outputs belong to another account or region (it may call STS).
    """
    text = _explain(error, explain_not_found)
    return None if text is None else " ".join(text.split())


def _explain(error: BaseException, explain_not_found: Callable[[], str | None]) -> str | None:
    from batchspot.emulators import EmulatorError
    from batchspot.image import ImageError
    from batchspot.submit import SubmitError
    from batchspot.terraform_cli import TerraformError

    if isinstance(error, OperatorError | ImageError | SubmitError | EmulatorError):
        return str(error)
    if isinstance(error, TerraformError):
        return _terraform(error)
    if isinstance(error, NoRegionError):
        return NO_REGION
    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return NO_CREDENTIALS
    if isinstance(error, ProfileNotFound):
        return f"{error}: fix AWS_PROFILE or add that profile to ~/.aws/config"
    if isinstance(error, TokenRetrievalError | SSOTokenLoadError | UnauthorizedSSOTokenError):
        return "the AWS SSO session has expired: run `aws sso login`, then retry"
    if isinstance(error, EndpointConnectionError | ConnectionClosedError):
        return (
            f"cannot reach {error.kwargs.get('endpoint_url', 'the AWS endpoint')}: if it is an "
            "emulator (AWS_ENDPOINT_URL), start it; otherwise check the network, then retry"
        )
    if isinstance(error, AwsClientError):
        return _client_error(error, explain_not_found)
    if isinstance(error, DockerException):
        return f"Docker failed ({error}): start Docker or set DOCKER_HOST, then retry"
    if type(error) in (LookupError, ValueError):  # raised on purpose, never a subclass's bug
        return str(error)
    return None


def _terraform(error: BaseException) -> str:
    """First line of Terraform's own 'Error:' text, so the cause is in the sentence."""
    text = str(error)
    if len(text.splitlines()) == 1:  # already one sentence (e.g. the binary is missing)
        return text
    head = text.splitlines()[0]
    cause = next(
        (line.strip().lstrip("│ ").strip() for line in text.splitlines() if "Error:" in line), ""
    )
    cause = cause.removeprefix("Error:").strip()
    hint = "see Terraform's output above; most often AWS credentials or region are missing"
    return f"{head.rstrip(':')}: {cause or hint}"
