"""BatchSpot's invoke tasks: a thin table; each task calls one function of ``batchspot``.

``invoke --list`` shows them all; ``invoke <task> --help`` explains each option.
"""

from __future__ import annotations

from invoke import Collection, Context, task

# --- tests and quality -------------------------------------------------------------------

# --- infrastructure (terraform) ----------------------------------------------------------

# --- image (docker) ----------------------------------------------------------------------

# --- operations (seed, submit, status, logs, cost, redrive) ------------------------------

# --- local pipeline, chaos and benchmarks ------------------------------------------------
