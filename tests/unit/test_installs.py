"""Reproducible installs: constraints.txt pins what pyproject.toml asks for, CI and the image use
it, and the Terraform provider lock is committed."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)$")


def pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}; every line must be an exact pin."""
    lines = [
        line
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    matches = [(line, PIN.match(line)) for line in lines]
    assert all(m for _, m in matches), [line for line, m in matches if not m]
    return {canonicalize_name(m["name"]): m["version"] for _, m in matches if m}


def requirements() -> list[Requirement]:
    """Every requirement of pyproject.toml: the worker's and each extra's, minus self-references."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    specs = [*project["dependencies"], *(spec for extra in extras for spec in extra)]
    return [r for r in map(Requirement, specs) if canonicalize_name(r.name) != project["name"]]


def test_constraints_pin_every_requirement_within_its_bounds():
    pinned = pins()
    for requirement in requirements():
        version = pinned.get(canonicalize_name(requirement.name))
        assert version is not None, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(version, prereleases=True), (
            f"constraints.txt pins {requirement.name}=={version} outside {requirement}"
        )


def test_the_project_itself_is_not_pinned():
    assert "batchspot" not in pins(), "constraints.txt must not pin the project it installs"


def test_sqlglot_lower_bound_is_one_the_query_parser_works_with():
    (sqlglot,) = [r for r in requirements() if r.name == "sqlglot"]
    assert not sqlglot.specifier.contains("27.29.0"), "sqlglot 27 rejects every query"
    assert sqlglot.specifier.contains("28.0.0")


def test_ci_installs_the_pinned_versions_and_runs_as_ci():
    script = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"pip install .*-c constraints\.txt .*'\.\[dev\]'", script)
    assert re.search(r"^export CI=true$", script, flags=re.MULTILINE)


def test_terraform_provider_lock_is_committed_not_ignored():
    lock = (ROOT / "terraform" / ".terraform.lock.hcl").read_text()
    assert 'provider "registry.terraform.io/hashicorp/aws"' in lock
    assert re.search(r'"h1:[A-Za-z0-9+/=]{44}"', lock), "the lock must carry the provider's hash"
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "terraform/.terraform.lock.hcl"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 1, ".gitignore must not hide the provider lock"
