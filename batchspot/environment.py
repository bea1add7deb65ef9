"""Temporary environment variables for this process and the children it starts.

Terraform (through python-terraform) and boto3 both read ``os.environ``, so pointing them at an
emulator or a CLI config for one block means setting variables and restoring them afterwards.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping


@contextlib.contextmanager
def overridden(settings: Mapping[str, str]) -> Iterator[None]:
    """Set ``settings`` in ``os.environ`` for the block, then restore what was there."""
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
