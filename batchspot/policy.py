"""Render the worker's IAM policy exactly as Terraform does, so tests can run the worker under it.

The job role's policy is ``terraform/modules/worker_policy``. Rather than restating that
document in Python (and drifting from it), :func:`render_worker_policy` plans a throwaway root
configuration that calls the module with test values and reads the document back from
``terraform show -json``. The AWS provider computes ``aws_iam_policy_document`` locally, so the
plan needs neither credentials nor network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchspot.terraform import TERRAFORM_DIR
from batchspot.terraform_cli import TerraformError, show_offline_plan

WORKER_POLICY_MODULE = TERRAFORM_DIR / "modules" / "worker_policy"

_ROOT_CONFIG = """\
# Written by batchspot.policy.render_worker_policy; renders modules/worker_policy offline.
variable "queue_arn" {
  type = string
}

variable "input_bucket_arn" {
  type = string
}

variable "output_buckets" {
  type = list(string)
}

variable "output_prefix" {
  type = string
}

module "worker_policy" {
  source = %(source)s

  queue_arn        = var.queue_arn
  input_bucket_arn = var.input_bucket_arn
  output_buckets   = var.output_buckets
  output_prefix    = var.output_prefix
}

output "json" {
  value = module.worker_policy.json
}
"""


def render_worker_policy(
    queue_arn: str,
    input_bucket: str,
    output_buckets: list[str],
    output_prefix: str,
    work_dir: Path,
) -> dict[str, Any]:
    """Return the worker's policy document as Terraform renders it for these values.

    ``input_bucket`` and ``output_buckets`` are bucket names, as the worker is configured
    (OUTPUT_BUCKET first, then ALLOWED_OUTPUT_BUCKETS). ``work_dir`` holds the root config,
    ``.terraform`` and the plan; reusing it makes init a quick check instead of a fresh
    install. Raises :class:`TerraformError` if any Terraform step fails.
    """
    variables = {
        "queue_arn": queue_arn,
        "input_bucket_arn": f"arn:aws:s3:::{input_bucket}",
        "output_buckets": list(output_buckets),
        "output_prefix": output_prefix,
    }
    # By absolute path, init links .terraform/modules to the module itself: never a stale copy.
    config = _ROOT_CONFIG % {"source": json.dumps(str(WORKER_POLICY_MODULE))}
    return _policy_from_plan(show_offline_plan(work_dir, config, variables), work_dir)


def _policy_from_plan(shown: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Pick the ``json`` output out of ``terraform show -json``'s planned values."""
    try:
        output = shown["planned_values"]["outputs"]["json"]
        return json.loads(output["value"])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise TerraformError(
            f"the plan in {work_dir} has no known value for output json ({error!r}); "
            "did a module input come out unknown?"
        ) from error
