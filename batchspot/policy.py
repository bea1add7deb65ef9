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

from python_terraform import IsFlagged, IsNotFlagged

from batchspot.terraform import TERRAFORM_DIR
from batchspot.terraform_cli import TerraformCli, TerraformError

WORKER_POLICY_MODULE = TERRAFORM_DIR / "modules" / "worker_policy"
PLAN_FILE = "worker_policy.tfplan"

# A provider that can plan data sources offline: fake static keys, and no STS, IAM or IMDS
# lookups. The region fixes the partition ("aws") of the ARNs the module builds.
_ROOT_CONFIG = """\
# Written by batchspot.policy.render_worker_policy; renders modules/worker_policy offline.
terraform {
  required_providers {
    aws = {
      source = "hashicorp/aws"
    }
  }
}

provider "aws" {
  region                      = "us-east-1"
  access_key                  = "offline"
  secret_key                  = "offline"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
}

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
    work_dir.mkdir(parents=True, exist_ok=True)
    # By absolute path, init links .terraform/modules to the module itself: never a stale copy.
    (work_dir / "main.tf").write_text(
        _ROOT_CONFIG % {"source": json.dumps(str(WORKER_POLICY_MODULE))}
    )
    variables = {
        "queue_arn": queue_arn,
        "input_bucket_arn": f"arn:aws:s3:::{input_bucket}",
        "output_buckets": list(output_buckets),
        "output_prefix": output_prefix,
    }
    cli = TerraformCli(work_dir, state_dir=work_dir, variables=variables)
    cli.init()
    cli.checked("plan", out=PLAN_FILE, detailed_exitcode=IsNotFlagged)
    shown = cli.checked("show", PLAN_FILE, json=IsFlagged, no_color=IsFlagged)
    return _policy_from_plan(shown, work_dir / PLAN_FILE)


def _policy_from_plan(show_json: str, plan_file: Path) -> dict[str, Any]:
    """Pick the ``json`` output out of ``terraform show -json``'s planned values."""
    try:
        output = json.loads(show_json)["planned_values"]["outputs"]["json"]
        return json.loads(output["value"])
    except (KeyError, TypeError, json.JSONDecodeError) as error:
        raise TerraformError(
            f"the plan {plan_file} has no known value for output json ({error!r}); "
            "did a module input come out unknown?"
        ) from error
