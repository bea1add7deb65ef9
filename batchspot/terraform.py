"""Deploy, plan and destroy the Terraform stack; hand its outputs to every other task.

Terraform runs through :class:`batchspot.terraform_cli.TerraformCli`. Every target keeps what
the other tasks need in one state directory (``--state-dir``, else ``$BATCHSPOT_STATE_DIR``,
else ``.batchspot``): ``outputs.json`` (the stack's names) and ``stack.json`` (where the stack
is: AWS, or the emulator's endpoint, and the directory Terraform ran in). Two targets share
one code path:

- AWS: Terraform runs in ``terraform/`` with its usual state there.
- a local emulator (``local_endpoint``): the module is copied to ``<state_dir>/terraform`` and an
  endpoint override file is added next to it, as LocalStack's ``tflocal`` does, so the very same
  configuration applies against moto's server without touching the AWS stack's state.

Other tasks never copy a queue URL or bucket by hand: they call :func:`read_outputs`. Destroy
goes where ``stack.json`` says, and forgets the outputs only once Terraform's state is empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from python_terraform import IsFlagged, IsNotFlagged

from batchspot.errors import NOT_FOUND, OperatorError
from batchspot.terraform_cli import TerraformCli, check
from worker.errors import error_code

REPO_ROOT = Path(__file__).resolve().parent.parent
# An installed wheel carries the stack as batchspot/stack (setup.py copies terraform/ there); a
# checkout, editable install or not, runs terraform/ itself.
PACKAGED_STACK = Path(__file__).resolve().parent / "stack"
INSTALLED = PACKAGED_STACK.is_dir()
TERRAFORM_DIR = PACKAGED_STACK if INSTALLED else REPO_ROOT / "terraform"
# Outputs are kept in the checkout, or, for an installed wheel, in the working directory.
DEFAULT_STATE_DIR = (Path.cwd() if INSTALLED else REPO_ROOT) / ".batchspot"
# Moves the saved outputs (and the default state) elsewhere: tests point it at a temp dir so
# no test ever reads a developer's deployed stack.
STATE_DIR_VARIABLE = "BATCHSPOT_STATE_DIR"
OUTPUTS_FILE = "outputs.json"
STACK_FILE = "stack.json"
OVERRIDE_FILE = "emulator_override.tf"
# boto3's and Terraform's AWS provider's endpoint variables (AWS_ENDPOINT_URL, ..._S3, ...).
ENDPOINT_VARIABLE = "AWS_ENDPOINT_URL"

# Services the stack calls; each is pointed at the emulator in local mode.
EMULATED_SERVICES = ("batch", "cloudwatch", "ec2", "ecr", "iam", "logs", "s3", "sqs", "sts")

# Kept when the module is re-copied into a local work dir: provider links and emulator state.
# The committed .terraform.lock.hcl is copied over each time, so local runs pin the same provider.
_KEEP_IN_WORK_DIR = {".terraform", "terraform.tfstate"}

# Exit status of `terraform plan -detailed-exitcode` (python-terraform's default) on changes.
PLAN_HAS_CHANGES = 2


@dataclass(frozen=True)
class Target:
    """Where a state directory's stack lives: AWS (``endpoint`` None) or an emulator."""

    endpoint: str | None
    working_dir: Path

    def describe(self) -> str:
        """Name the target as an operator reads it."""
        return f"the emulator at {self.endpoint}" if self.endpoint else "AWS"


@dataclass(frozen=True)
class Workspace:
    """Where Terraform runs for one target, and where that target's outputs are saved."""

    working_dir: Path
    state_dir: Path

    @property
    def outputs_path(self) -> Path:
        """JSON file of ``terraform output`` values, read by :func:`read_outputs`."""
        return self.state_dir / OUTPUTS_FILE

    @property
    def stack_path(self) -> Path:
        """JSON file naming the stack's target, read by :func:`read_target`."""
        return self.state_dir / STACK_FILE


def parse_vars(pairs: Sequence[str]) -> dict[str, Any]:
    """Turn ``name=value`` strings (``invoke deploy --var``) into typed Terraform variables.

    Values are read as JSON when they parse (``max_vcpus=256``, ``instance_types=["c7g"]``)
    and as plain strings otherwise, since python-terraform passes variables in a JSON var file
    where a list written as a string would not convert.
    """
    variables: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"expected name=value, got {pair!r}")
        try:
            variables[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            variables[name.strip()] = raw
    return variables


def endpoint_override(endpoint: str) -> str:
    """Return the provider block that sends every AWS call of the stack to ``endpoint``."""
    endpoints = "\n".join(f'    {service:<10} = "{endpoint}"' for service in EMULATED_SERVICES)
    return (
        "# Written by batchspot.terraform for a run against a local emulator; not committed.\n"
        'provider "aws" {\n'
        '  access_key                  = "testing"\n'
        '  secret_key                  = "testing"\n'
        "  skip_credentials_validation = true\n"
        "  skip_metadata_api_check     = true\n"
        "  skip_region_validation      = true\n"
        "  s3_use_path_style           = true\n"
        "\n"
        "  endpoints {\n"
        f"{endpoints}\n"
        "  }\n"
        "}\n"
    )


def prepare_workspace(local_endpoint: str | None, state_dir: Path | None) -> Workspace:
    """Pick (and for local runs, refresh) the directory Terraform runs in.

    AWS from a checkout: ``terraform/`` itself, state and all. A local emulator, or an installed
    wheel (whose stack must not keep state inside site-packages): a copy under ``state_dir``.
    """
    state_dir = state_dir or default_state_dir()
    if local_endpoint is None and not INSTALLED:
        return Workspace(TERRAFORM_DIR, state_dir)
    work = state_dir / "terraform"
    work.mkdir(parents=True, exist_ok=True)
    for entry in work.iterdir():
        if entry.name in _KEEP_IN_WORK_DIR or entry.name.startswith("terraform.tfstate"):
            continue
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    shutil.copytree(
        TERRAFORM_DIR,
        work,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns(".terraform", "*.tfstate*", "*_override.tf", "tests"),
    )
    if local_endpoint:
        (work / OVERRIDE_FILE).write_text(endpoint_override(local_endpoint))
    return Workspace(work, state_dir)


class _Runner:
    """One target's Terraform: init on demand, then plan, apply, destroy and outputs."""

    def __init__(
        self,
        workspace: Workspace,
        var_file: str | os.PathLike[str] | None,
        variables: Mapping[str, Any] | None,
        targets: Sequence[str],
        stream: bool,
    ) -> None:
        self.workspace = workspace
        self.stream = stream
        self.cli = TerraformCli(
            workspace.working_dir,
            state_dir=workspace.state_dir,
            variables=variables,
            var_file=var_file,
            targets=targets,
        )

    def init(self) -> None:
        self.cli.init(capture_output=not self.stream)

    def plan(self) -> bool:
        code, out, err = self.cli.run("plan", capture_output=not self.stream)
        if code not in (0, PLAN_HAS_CHANGES):
            check((code, out, err), "plan")
        return code == PLAN_HAS_CHANGES

    def apply(self) -> None:
        self.cli.checked("apply", skip_plan=True, capture_output=not self.stream)

    def destroy(self) -> None:
        self.cli.checked(
            "destroy", force=IsNotFlagged, auto_approve=IsFlagged, capture_output=not self.stream
        )

    def resources(self) -> list[str]:
        """Return the addresses of the managed resources Terraform's state holds."""
        shown = json.loads(self.cli.checked("cmd", "show", json=IsFlagged) or "{}")
        return _managed(shown.get("values", {}).get("root_module", {}))

    def record_target(self, endpoint: str | None) -> None:
        path = self.workspace.stack_path
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"endpoint": endpoint, "working_dir": str(self.workspace.working_dir)}
        path.write_text(json.dumps(record, indent=2) + "\n")

    def forget(self) -> None:
        self.workspace.outputs_path.unlink(missing_ok=True)
        self.workspace.stack_path.unlink(missing_ok=True)

    def save_outputs(self) -> dict[str, Any]:
        raw = json.loads(self.cli.checked("output_cmd", json=IsFlagged))
        outputs = {name: item["value"] for name, item in raw.items()}
        path = self.workspace.outputs_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
        return outputs


def _managed(module: Mapping[str, Any]) -> list[str]:
    """Addresses of the managed resources of a ``terraform show -json`` module, recursively."""
    found = [r["address"] for r in module.get("resources", []) if r.get("mode") == "managed"]
    for child in module.get("child_modules", []):
        found += _managed(child)
    return found


def _local_defaults(local_endpoint: str | None) -> dict[str, Any]:
    # An emulator stack is throwaway: let destroy remove buckets and images that still hold
    # data. Emulators speak plain HTTP, which the TLS-only bucket policy would refuse.
    return {"force_destroy": True, "deny_insecure_transport": False} if local_endpoint else {}


@contextlib.contextmanager
def _runner(
    var_file: str | os.PathLike[str] | None,
    variables: Mapping[str, Any] | None,
    local_endpoint: str | None,
    state_dir: Path | None,
    targets: Sequence[str],
    stream: bool,
) -> Iterator[_Runner]:
    if local_endpoint is None:
        refuse_ambient_endpoint()
    workspace = prepare_workspace(local_endpoint, state_dir)
    merged = {**_local_defaults(local_endpoint), **(variables or {})}
    runner = _Runner(workspace, var_file, merged, targets, stream)
    runner.init()
    yield runner


def deploy(
    var_file: str | os.PathLike[str] | None = None,
    variables: Mapping[str, Any] | None = None,
    local_endpoint: str | None = None,
    state_dir: Path | None = None,
    targets: Sequence[str] = (),
    stream: bool = True,
) -> dict[str, Any]:
    """Apply the stack (to AWS, or to the emulator at ``local_endpoint``); return its outputs.

    ``targets`` (``module.queue``, ...) limits the apply to part of the stack, for emulators that
    host only some services; ``stream`` shows Terraform's progress instead of capturing it.
    """
    recorded = read_target(state_dir)
    if recorded is not None and (recorded.endpoint is None) != (local_endpoint is None):
        raise OperatorError(
            f"{resolve_state_dir(state_dir)} holds the stack deployed to {recorded.describe()}: "
            "`invoke destroy` it first, or pass another --state-dir"
        )
    with _runner(var_file, variables, local_endpoint, state_dir, targets, stream) as runner:
        runner.record_target(local_endpoint)  # before apply: a half-applied stack is destroyable
        runner.apply()
        return runner.save_outputs()


def plan(
    var_file: str | os.PathLike[str] | None = None,
    variables: Mapping[str, Any] | None = None,
    local_endpoint: str | None = None,
    state_dir: Path | None = None,
    targets: Sequence[str] = (),
    stream: bool = True,
) -> bool:
    """Show what a deploy would change; return whether it would change anything."""
    with _runner(var_file, variables, local_endpoint, state_dir, targets, stream) as runner:
        return runner.plan()


def destroy(
    var_file: str | os.PathLike[str] | None = None,
    variables: Mapping[str, Any] | None = None,
    local_endpoint: str | None = None,
    state_dir: Path | None = None,
    targets: Sequence[str] = (),
    stream: bool = True,
) -> Destroyed:
    """Delete the stack the state directory's ``stack.json`` names; then forget its outputs.

    ``local_endpoint`` may be left out (the recorded one is used); one that is not the
    recorded one is refused. Terraform's state holding nothing while the saved outputs name a
    stack that still answers is refused too, outputs kept: that destroy would remove nothing.
    """
    where = resolve_state_dir(state_dir)
    recorded = read_target(where)
    if recorded is None:
        raise OperatorError(
            f"no stack was deployed from {where} (no {STACK_FILE} there): pass the --state-dir "
            "(or BATCHSPOT_STATE_DIR) the deploy used"
        )
    if local_endpoint not in (None, recorded.endpoint):
        raise OperatorError(
            f"the stack in {where} is on {recorded.describe()}, not the emulator at "
            f"{local_endpoint}: run `invoke destroy` without --local-endpoint"
        )
    with _runner(var_file, variables, recorded.endpoint, state_dir, targets, stream) as runner:
        resources = runner.resources()
        if not resources:
            _refuse_if_stack_answers(runner.workspace, recorded)
        else:
            runner.destroy()
            left = runner.resources()
            if left:
                raise OperatorError(
                    f"{len(left)} resources are still in the state ({left[0]}, ...): fix what "
                    f"Terraform said above and run `invoke destroy` again; outputs kept"
                )
        runner.forget()
        return Destroyed(recorded, len(resources), runner.workspace.outputs_path)


@dataclass(frozen=True)
class Destroyed:
    """What ``destroy`` removed, for the operator's summary line."""

    target: Target
    resources: int
    outputs_path: Path

    def summary(self) -> str:
        """Return one line: how many resources went, where, and that the outputs are gone."""
        return (
            f"destroyed {self.resources} resources on {self.target.describe()}; "
            f"removed {self.outputs_path}"
        )


def _refuse_if_stack_answers(workspace: Workspace, target: Target) -> None:
    """Raise if the saved outputs name a work queue that still exists on the target."""
    try:
        outputs = read_outputs(workspace.state_dir)
    except FileNotFoundError:
        return  # an apply that failed before any output: nothing is known to exist
    if not outputs.get("queue_url"):
        return  # a partial stack (LocalStack's targets) without a queue: nothing to ask
    sqs = boto3.client("sqs", endpoint_url=target.endpoint, region_name=outputs.get("region"))
    try:
        sqs.get_queue_attributes(QueueUrl=outputs["queue_url"], AttributeNames=["QueueArn"])
    except ClientError as error:
        if error_code(error) in NOT_FOUND:
            return  # the stack is gone already (an emulator restarted): forget its outputs
        raise
    raise OperatorError(
        f"the Terraform state in {target.working_dir} holds no resources, but "
        f"{workspace.outputs_path} names a stack whose queue still exists: nothing destroyed, "
        "outputs kept; run destroy where that stack's terraform.tfstate is"
    )


def refuse_ambient_endpoint() -> None:
    """Refuse an AWS deploy while ``AWS_ENDPOINT_URL`` would send Terraform to an emulator.

    Terraform's AWS provider honours that variable, so the "AWS" stack would land on the
    emulator with production settings and its state in ``terraform/``.
    """
    ambient = sorted(name for name in os.environ if name.startswith(ENDPOINT_VARIABLE))
    if ambient:
        endpoint = os.environ[ambient[0]]
        raise OperatorError(
            f"{ambient[0]}={endpoint} is set, which would send this AWS deploy to it: pass "
            f"--local-endpoint {endpoint} to use that emulator, or unset {ambient[0]} for AWS"
        )


def default_state_dir() -> Path:
    """Where deploy saves outputs and tasks read them: $BATCHSPOT_STATE_DIR, else .batchspot."""
    return Path(os.environ.get(STATE_DIR_VARIABLE) or DEFAULT_STATE_DIR)


def resolve_state_dir(state_dir: Path | None) -> Path:
    """Return ``state_dir`` if given, else :func:`default_state_dir`."""
    return state_dir or default_state_dir()


def read_target(state_dir: Path | None = None) -> Target | None:
    """Return where the stack of ``state_dir`` was deployed, or None if nothing was."""
    path = resolve_state_dir(state_dir) / STACK_FILE
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return Target(record["endpoint"], Path(record["working_dir"]))


def read_outputs(state_dir: Path | None = None) -> dict[str, Any]:
    """Return the deployed stack's names (queue URLs, buckets, job queue, ...) saved by deploy."""
    path = resolve_state_dir(state_dir) / OUTPUTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `invoke deploy` first")
    return json.loads(path.read_text())
