"""How AWS Batch ends and retries an array child, by the job definition Terraform renders.

The exactly-once promise depends on which children Batch runs again, and emulators do not
say: moto's Batch ignores ``evaluateOnExit``. So this model reads the retry strategy and the
attempt timeout that ``terraform/modules/batch`` renders (``terraform show -json`` of an
offline plan, as :mod:`batchspot.policy` renders the job role's policy) and decides, for each
way a child can end, what Batch records and does next, following AWS's documentation:

* exit code 0 is SUCCEEDED; the retry strategy is evaluated only for a failed attempt;
* a failed attempt is matched against ``evaluateOnExit`` in order, the first entry whose
  given conditions all match decides (RETRY or EXIT), and no match at all means RETRY
  (AWS Batch API reference, "EvaluateOnExit");
* a pattern matches the whole value, or only its start when it ends with ``*``
  (same page), and the action is not case sensitive;
* never beyond ``attempts`` (API reference, "RetryStrategy");
* an attempt stopped for running past ``attemptDurationSeconds`` is not retried, whatever
  the strategy says (user guide, "Job timeouts").

``invoke chaos`` restarts a slot only when this model says RETRY.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from batchspot.terraform import TERRAFORM_DIR
from batchspot.terraform_cli import TerraformError, show_offline_plan

Decision = Literal["SUCCEEDED", "RETRY", "FAILED"]
# What Batch records as a child's statusReason (and its container's reason), as AWS writes it.
ESSENTIAL_CONTAINER_EXITED = "Essential container in task exited"
OUT_OF_MEMORY = "OutOfMemoryError: Container killed due to memory usage"
ATTEMPT_TIMED_OUT = "Job attempt duration exceeded timeout"
# The kernel's OOM killer sends SIGKILL: 128 + 9.
OOM_EXIT_CODE = 137

_ROOT_CONFIG = """\
# Written by batchspot.batchrules.render_job_definitions; renders modules/batch offline.
variable "job_attempts" {
  type = number
}

variable "job_timeout_seconds" {
  type = number
}

module "batch" {
  source = %(source)s

  name                = "batchspot"
  subnet_ids          = ["subnet-0123456789abcdef0"]
  security_group_ids  = ["sg-0123456789abcdef0"]
  image               = "123456789012.dkr.ecr.us-east-1.amazonaws.com/batchspot:rules"
  ecr_repository_arn  = "arn:aws:ecr:us-east-1:123456789012:repository/batchspot"
  queue_arn           = "arn:aws:sqs:us-east-1:123456789012:batchspot"
  queue_url           = "https://sqs.us-east-1.amazonaws.com/123456789012/batchspot"
  input_bucket_arn    = "arn:aws:s3:::batchspot-input"
  output_bucket       = "batchspot-output"
  enable_fargate_spot = true
  job_attempts        = var.job_attempts
  job_timeout_seconds = var.job_timeout_seconds
}

output "worker_container" {
  value = module.batch.worker_container
}
"""


@dataclass(frozen=True)
class ChildEnd:
    """How one attempt of a child ended, in the fields Batch matches ``evaluateOnExit`` on.

    ``exit_code`` is None when the container never reported one (its host went away).
    """

    status_reason: str
    exit_code: int | None = None
    reason: str = ""
    timed_out: bool = False

    @classmethod
    def exited(cls, code: int) -> ChildEnd:
        """Return the end of a container that exited (by itself, or a signal: 128 + N)."""
        return cls(ESSENTIAL_CONTAINER_EXITED, exit_code=code)

    @classmethod
    def host_terminated(cls, instance_id: str) -> ChildEnd:
        """Return the end of a child whose instance went away (a Spot reclaim): no exit code."""
        return cls(f"Host EC2 (instance {instance_id}) terminated.")

    @classmethod
    def out_of_memory(cls) -> ChildEnd:
        """Return the end of a container the kernel killed past its hard memory limit."""
        return cls(ESSENTIAL_CONTAINER_EXITED, exit_code=OOM_EXIT_CODE, reason=OUT_OF_MEMORY)

    @classmethod
    def attempt_timed_out(cls, exit_code: int | None = None) -> ChildEnd:
        """Batch stopped the attempt at ``attemptDurationSeconds`` (SIGTERM, then SIGKILL)."""
        return cls(ATTEMPT_TIMED_OUT, exit_code=exit_code, timed_out=True)

    def describe(self) -> str:
        """One line as ``describe-jobs`` would show the attempt."""
        parts = [self.status_reason]
        if self.exit_code is not None:
            parts.append(f"exit code {self.exit_code}")
        if self.reason:
            parts.append(self.reason)
        return ", ".join(parts)


def glob_matches(pattern: str, value: str) -> bool:
    """AWS's glob: the whole value, or only its start if the pattern ends with ``*``."""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


@dataclass(frozen=True)
class ExitRule:
    """One ``evaluateOnExit`` entry: its action, if every condition given matches."""

    action: Literal["RETRY", "EXIT"]
    on_exit_code: str | None = None
    on_reason: str | None = None
    on_status_reason: str | None = None

    def matches(self, end: ChildEnd) -> bool:
        """Whether every condition this entry gives matches ``end``.

        An exit-code pattern cannot match an attempt that has no exit code.
        """
        if self.on_exit_code is not None and (
            end.exit_code is None or not glob_matches(self.on_exit_code, str(end.exit_code))
        ):
            return False
        if self.on_reason is not None and not glob_matches(self.on_reason, end.reason):
            return False
        return self.on_status_reason is None or glob_matches(
            self.on_status_reason, end.status_reason
        )


@dataclass(frozen=True)
class BatchRules:
    """A job definition's retry strategy and attempt timeout."""

    attempts: int
    rules: tuple[ExitRule, ...]
    attempt_timeout: int | None

    def decide(self, end: ChildEnd, attempt: int) -> Decision:
        """Return what Batch does when attempt number ``attempt`` (from 1) ends as ``end``."""
        if end.exit_code == 0 and not end.timed_out:
            return "SUCCEEDED"
        if end.timed_out or attempt >= self.attempts:
            return "FAILED"
        for rule in self.rules:
            if rule.matches(end):
                return "RETRY" if rule.action == "RETRY" else "FAILED"
        return "RETRY"

    @classmethod
    def from_planned(cls, values: dict[str, Any]) -> BatchRules:
        """Read an ``aws_batch_job_definition``'s planned values (``terraform show -json``)."""
        strategy = (values.get("retry_strategy") or [{}])[0]
        timeout = (values.get("timeout") or [{}])[0]
        rules = tuple(
            ExitRule(
                action=entry["action"].upper(),
                on_exit_code=entry.get("on_exit_code"),
                on_reason=entry.get("on_reason"),
                on_status_reason=entry.get("on_status_reason"),
            )
            for entry in strategy.get("evaluate_on_exit") or []
        )
        return cls(
            attempts=int(strategy.get("attempts") or 1),
            rules=rules,
            attempt_timeout=timeout.get("attempt_duration_seconds"),
        )


_DEFAULTS = {"job_attempts": 3, "job_timeout_seconds": 21600}  # the root module's defaults


def _batch_module() -> str:
    """Return the ``source`` of ``modules/batch``, quoted for HCL."""
    return json.dumps(f"{TERRAFORM_DIR}//modules/batch")


def render_job_definitions(
    work_dir: Path, job_attempts: int = 3, job_timeout_seconds: int = 21600
) -> dict[str, dict[str, Any]]:
    """Return each job definition of ``modules/batch`` as Terraform plans it, by name.

    The names are the resources' own: ``ec2``, ``fargate_spot`` and ``final``.

    Raises :class:`TerraformError` if Terraform fails or renders no job definition.
    """
    config = _ROOT_CONFIG % {"source": _batch_module()}
    variables = {"job_attempts": job_attempts, "job_timeout_seconds": job_timeout_seconds}
    shown = show_offline_plan(work_dir, config, variables)
    modules = shown["planned_values"]["root_module"].get("child_modules", [])
    found = {
        resource["name"]: resource["values"]
        for module in modules
        for resource in module.get("resources", [])
        if resource["type"] == "aws_batch_job_definition"
    }
    if not found:
        raise TerraformError(f"the plan in {work_dir} renders no aws_batch_job_definition")
    return found


def render_worker_container(work_dir: Path) -> dict[str, Any]:
    """Return what a worker container is given by default: vCPUs, memory, scratch, environment.

    That is ``modules/batch``'s ``worker_container`` output, planned offline. Batch kills a
    container past its memory (an OOM kill, FAILED); the container tests run the image under
    exactly these limits, which moto's Batch does not apply.
    """
    shown = show_offline_plan(work_dir, _ROOT_CONFIG % {"source": _batch_module()}, _DEFAULTS)
    return shown["planned_values"]["outputs"]["worker_container"]["value"]


def batch_rules(
    work_dir: Path, job_attempts: int = 3, job_timeout_seconds: int = 21600
) -> BatchRules:
    """Return the rules of the worker's EC2 Spot job definition, as Terraform renders it."""
    rendered = render_job_definitions(work_dir, job_attempts, job_timeout_seconds)
    return BatchRules.from_planned(rendered["ec2"])
