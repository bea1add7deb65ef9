"""What every operator task needs from the deployed stack: its names, its region, its jobs.

Names come from the outputs ``invoke deploy`` saved (``batchspot.terraform.read_outputs``), so
no queue URL or bucket is copied by hand; an explicit ``--option`` wins, so each task also works
against a stack deployed some other way, or none. What is missing is raised as an
:class:`~batchspot.errors.OperatorError` whose text says how to supply it.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from batchspot import status
from batchspot.aws import client
from batchspot.errors import NO_REGION_NOR_STACK, OperatorError
from batchspot.terraform import OUTPUTS_FILE, default_state_dir, read_outputs


def outputs() -> dict[str, Any] | None:
    """Return the saved stack outputs, or None when nothing was deployed from here."""
    try:
        return read_outputs()
    except FileNotFoundError:
        return None


def value(name: str, given: Any = None) -> Any:
    """Return ``given`` if set, else the stack output ``name``; say how to supply it if absent."""
    if given not in (None, ""):
        return given
    saved = outputs()
    option = "--" + name.replace("_", "-")
    if saved is None:
        raise OperatorError(f"no deployed stack found: run `invoke deploy` or pass {option}")
    if saved.get(name) in (None, ""):
        raise OperatorError(f"the stack has no output {name!r}: pass {option}")
    return saved[name]


def optional(name: str, default: Any = None) -> Any:
    """Return the stack output ``name`` if there is one, else ``default``."""
    found = (outputs() or {}).get(name)
    return default if found in (None, "") else found


def aws(service: str, **options: Any) -> Any:
    """Return a boto3 client in the stack's region (else boto3's default region)."""
    options.setdefault("region", optional("region"))
    if options["region"] is None and boto3.session.Session().region_name is None and not outputs():
        raise OperatorError(NO_REGION_NOR_STACK)
    return client(service, **options)


def job_id(given: str, job_queue: str, name: str) -> str:
    """Return the given job id, else the newest job called ``name`` on the job queue."""
    if given:
        return given
    found = status.latest_job(aws("batch"), value("job_queue", job_queue), name)
    if not found:
        raise OperatorError(f"no job named {name!r} on the job queue: pass --job-id")
    return found


def _account_of(arn: str) -> str | None:
    parts = arn.split(":")  # arn:partition:service:region:account:resource
    return parts[4] if len(parts) > 5 and parts[4] else None


def foreign_outputs() -> str | None:
    """Say so if the saved outputs belong to another account or region than this session's.

    Asked only after AWS said a saved name does not exist: it costs one STS call.
    """
    saved = outputs()
    if not saved:
        return None
    path = default_state_dir() / OUTPUTS_FILE
    saved_account = _account_of(saved.get("queue_arn") or saved.get("job_role_arn") or "")
    try:
        account = aws("sts").get_caller_identity()["Account"]
    except (BotoCoreError, ClientError):
        return None
    if saved_account and saved_account != account:
        return (
            f"the saved stack outputs ({path}) are from account {saved_account}, these "
            f"credentials are for account {account}: use that account's AWS_PROFILE, or run "
            "`invoke deploy` here"
        )
    configured, saved_region = boto3.session.Session().region_name, saved.get("region")
    if configured and saved_region and configured != saved_region:
        return (
            f"the saved stack outputs ({path}) are from region {saved_region}, the configured "
            f"region is {configured}: set AWS_DEFAULT_REGION={saved_region}, or run `invoke "
            "deploy` here"
        )
    return None
