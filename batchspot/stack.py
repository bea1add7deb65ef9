"""What every operator task needs from the deployed stack: its names and its region.

Names come from the outputs ``invoke deploy`` saved (``batchspot.terraform.read_outputs``), so
no queue URL or bucket is copied by hand; an explicit ``--option`` wins, so each task also works
against a stack deployed some other way, or none. Errors an operator can fix end the task with
one line instead of a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from functools import cache
from typing import Any

from invoke import Exit

from batchspot.aws import client
from batchspot.terraform import read_outputs


@cache
def _outputs() -> dict[str, Any] | None:
    try:
        return read_outputs()
    except FileNotFoundError:
        return None


def value(name: str, given: Any = None) -> Any:
    """Return ``given`` if set, else the stack output ``name``; exit saying how to supply it."""
    if given not in (None, ""):
        return given
    outputs = _outputs()
    option = "--" + name.replace("_", "-")
    if outputs is None:
        raise Exit(f"error: no deployed stack found: run `invoke deploy` or pass {option}", 1)
    if outputs.get(name) in (None, ""):
        raise Exit(f"error: the stack has no output {name!r}: pass {option}", 1)
    return outputs[name]


def optional(name: str, default: Any = None) -> Any:
    """Return the stack output ``name`` if there is one, else ``default``."""
    found = (_outputs() or {}).get(name)
    return default if found in (None, "") else found


def aws(service: str, **options: Any) -> Any:
    """Return a boto3 client in the stack's region (else boto3's default region)."""
    options.setdefault("region", optional("region"))
    return client(service, **options)


@contextlib.contextmanager
def reported(*errors: type[Exception]) -> Iterator[None]:
    """End the task with ``error: <message>`` for the given errors, instead of a traceback."""
    try:
        yield
    except errors as error:
        raise Exit(f"error: {error}", 1) from None
