"""The one way this project runs the ``terraform`` binary: python-terraform, with our environment.

Deploys (:mod:`batchspot.terraform`), the worker-policy render (:mod:`batchspot.policy`), the
linters (:mod:`batchspot.linters`) and the Terraform test suite all go through
:class:`TerraformCli`, so every call gets the same things right in one place:

- the provider comes from the local mirror when there is one (offline machines and CI);
- Terraform never prompts (``TF_INPUT=0``) and prints automation-friendly text;
- a failing command raises :class:`TerraformError` with the end of its output, and a missing
  binary is one clear sentence instead of a ``FileNotFoundError`` traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from python_terraform import IsFlagged, IsNotFlagged, Terraform

from batchspot.environment import overridden

# Where CI machines and this project's dev boxes keep hashicorp/aws, so init works offline.
PLUGIN_MIRROR = Path(os.environ.get("BATCHSPOT_TF_PLUGIN_MIRROR", "/opt/tf-plugins"))

# A provider that plans offline: fake static keys, and no STS, IAM or IMDS lookups. The region
# fixes the partition ("aws") of the ARNs modules build. Heads the throwaway root configs that
# render one module's values (:func:`show_offline_plan`).
OFFLINE_PROVIDER = """\
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
"""
PLAN_FILE = "render.tfplan"

NOT_INSTALLED = "terraform is not installed or not on PATH: install Terraform 1.5 or newer"

Result = tuple[int, str | None, str | None]


class TerraformError(RuntimeError):
    """A Terraform command failed; the message carries the end of its output."""


class TerraformNotInstalled(TerraformError):
    """No ``terraform`` binary on PATH: nothing was run."""


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


@contextlib.contextmanager
def terraform_env(state_dir: Path, data_dir: Path | None = None) -> Iterator[None]:
    """Environment for the Terraform child processes (python-terraform copies os.environ).

    ``data_dir`` moves ``.terraform`` out of the working directory, so checks of the committed
    tree (lint, tests) never touch a deploy's provider links.
    """
    settings = {"TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
    config = cli_config(state_dir)
    if config is not None:
        settings["TF_CLI_CONFIG_FILE"] = str(config)
    if data_dir is not None:
        settings["TF_DATA_DIR"] = str(data_dir)
    with overridden(settings):
        yield


def check(result: Result, what: str) -> None:
    """Raise :class:`TerraformError` with the end of the output if a command failed."""
    code, out, err = result
    if code != 0:
        detail = (err or out or "see the output above").strip()[-4000:]
        raise TerraformError(f"terraform {what} failed with exit code {code}:\n{detail}")


class TerraformCli:
    """Terraform in one working directory: python-terraform plus the environment above.

    ``variables``, ``var_file`` and ``targets`` are python-terraform's defaults for plan, apply
    and destroy; ``state_dir`` holds the CLI config; ``data_dir`` (optional) is ``TF_DATA_DIR``.
    """

    def __init__(
        self,
        working_dir: Path,
        *,
        state_dir: Path,
        data_dir: Path | None = None,
        variables: Mapping[str, Any] | None = None,
        var_file: str | os.PathLike[str] | None = None,
        targets: Sequence[str] = (),
    ) -> None:
        self.state_dir = state_dir
        self.data_dir = data_dir
        self.tf = Terraform(
            working_dir=str(working_dir),
            targets=list(targets),
            var_file=str(Path(var_file).resolve()) if var_file else None,
            variables=dict(variables or {}),
        )

    def run(self, command: str, *args: str, **options: Any) -> Result:
        """Run ``terraform <command>``; return (exit status, stdout, stderr), even on failure.

        ``command`` names python-terraform's method (``init``, ``plan``, ``apply`` and
        ``destroy`` add the default variables and targets; ``output_cmd``, ``fmt``, ``test``...
        run as given). Options follow python-terraform: ``no_color=IsFlagged`` is ``-no-color``,
        ``capture_output=False`` streams the output instead of returning it.
        """
        with terraform_env(self.state_dir, self.data_dir):
            try:
                return getattr(self.tf, command)(*args, **options)
            except FileNotFoundError:
                raise TerraformNotInstalled(NOT_INSTALLED) from None

    def checked(self, command: str, *args: str, **options: Any) -> str:
        """Run ``terraform <command>``; return its stdout, or raise :class:`TerraformError`."""
        result = self.run(command, *args, **options)
        check(result, " ".join((command.removesuffix("_cmd"), *args)))
        return result[1] or ""

    def init(self, capture_output: bool = True, **options: Any) -> None:
        """Install the provider and link the modules (variables are not init options).

        Raises :class:`TerraformError` if init fails; ``options`` as for :meth:`run`.
        """
        self.checked("init", capture_output=capture_output, var=None, var_file=None, **options)


def installed_version() -> str:
    """Return the first line of ``terraform version``; raise :class:`TerraformNotInstalled`.

    Runs in a scratch directory so no configuration nearby is read.
    """
    with tempfile.TemporaryDirectory() as scratch:
        cli = TerraformCli(Path(scratch), state_dir=Path(scratch))
        return cli.checked("version").splitlines()[0]


def show_offline_plan(
    work_dir: Path, config: str, variables: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Plan ``config`` (a root module, after :data:`OFFLINE_PROVIDER`) in ``work_dir``.

    Returns ``terraform show -json`` of the plan: what Terraform would render, computed
    locally, without credentials or network. Reusing ``work_dir`` makes init a quick check
    instead of a fresh install. Raises :class:`TerraformError` if any step fails.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "main.tf").write_text(OFFLINE_PROVIDER + "\n" + config)
    cli = TerraformCli(work_dir, state_dir=work_dir, variables=variables)
    cli.init()
    cli.checked("plan", out=PLAN_FILE, detailed_exitcode=IsNotFlagged)
    shown = cli.checked("show", PLAN_FILE, json=IsFlagged, no_color=IsFlagged)
    return json.loads(shown)
