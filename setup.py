"""Ship the Terraform stack inside the wheel, so an installed BatchSpot deploys without a checkout.

Everything else about the build is in pyproject.toml. ``terraform/`` stays at the top of the
repository (the layout the project promises); the wheel carries a copy as ``batchspot/stack``,
which ``batchspot.terraform`` prefers when it is there. The worker image builds from a context
without ``terraform/`` and gets no copy.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

STACK = Path(__file__).resolve().parent / "terraform"
# What a deploy does not need: provider caches, state, local overrides, Terraform's own tests.
NOT_SHIPPED = shutil.ignore_patterns(".terraform", "*.tfstate*", "*_override.tf", "tests")


class BuildWithStack(build_py):
    """setuptools' build_py, plus the copy of ``terraform/`` as ``batchspot/stack``."""

    def run(self) -> None:
        """Build the packages, then add the stack beside them."""
        super().run()
        if STACK.is_dir() and not self.editable_mode:
            target = Path(self.build_lib) / "batchspot" / "stack"
            shutil.copytree(STACK, target, ignore=NOT_SHIPPED, dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithStack})
