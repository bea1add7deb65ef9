"""Render the job roles' IAM policies exactly as Terraform does, so tests can run under them.

The worker's policy is ``terraform/modules/worker_policy`` and the final step's
``terraform/modules/final_policy``. Rather than restating those documents in Python (and
drifting from them), :func:`render_worker_policy` and :func:`render_final_policy` plan a
throwaway root configuration that calls the module with test values and read the document back
from ``terraform show -json``. The AWS provider computes ``aws_iam_policy_document`` locally,
so the plan needs neither credentials nor network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from batchspot.terraform import TERRAFORM_DIR
from batchspot.terraform_cli import TerraformError, show_offline_plan

WORKER_POLICY_MODULE = TERRAFORM_DIR / "modules" / "worker_policy"
FINAL_POLICY_MODULE = TERRAFORM_DIR / "modules" / "final_policy"

# A provider that can plan data sources offline: fake static keys, and no STS, IAM or IMDS
# lookups. The region fixes the partition ("aws") of the ARNs the module builds.
_ROOT_CONFIG = """\
# Written by batchspot.policy; renders one policy module offline.
%(variables)s
module "policy" {
  source = %(source)s
%(inputs)s
}

output "json" {
  value = module.policy.json
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
    return _render(WORKER_POLICY_MODULE, variables, work_dir)


def render_final_policy(
    queue_arn: str, output_bucket: str, output_prefix: str, work_dir: Path
) -> dict[str, Any]:
    """Return the final step's policy document as Terraform renders it for these values.

    ``work_dir`` as for :func:`render_worker_policy`, but not the same one: each holds the
    root config of its own module.
    """
    variables = {
        "queue_arn": queue_arn,
        "output_bucket": output_bucket,
        "output_prefix": output_prefix,
    }
    return _render(FINAL_POLICY_MODULE, variables, work_dir)


def _render(module: Path, variables: dict[str, Any], work_dir: Path) -> dict[str, Any]:
    """Plan ``module`` with ``variables`` (strings or lists of strings); return its document."""
    types = {
        name: "list(string)" if isinstance(value, list) else "string"
        for name, value in variables.items()
    }
    declared = "".join(
        f'\nvariable "{name}" {{\n  type = {kind}\n}}\n' for name, kind in types.items()
    )
    # By absolute path, init links .terraform/modules to the module itself: never a stale copy.
    config = _ROOT_CONFIG % {
        "variables": declared,
        "source": json.dumps(str(module)),
        "inputs": "\n".join(f"  {name} = var.{name}" for name in variables),
    }
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
