"""Suite-wide settings: hypothesis runs a fixed sequence of examples in CI.

Locally each run explores new examples (that is how the fuzz tests found their defects); in CI
the same examples run every time, so a red build always means a change, not a lucky draw.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")
