"""Show float options in ``invoke <task> --help`` as taking a value, as str and int ones are.

invoke infers an option's type from its default, but its help labels only ``str`` (STRING)
and ``int`` (INT) options with a value; a float option such as ``cost --spot-price`` is
listed bare, like a yes/no flag, although it takes a number (invoke 3.0,
``ParserContext.help_for``). Importing this module adds the FLOAT label; parsing is invoke's.
"""

from __future__ import annotations

from invoke.parser import ParserContext

_unlabelled_help_for = ParserContext.help_for


def help_for(context: ParserContext, flag: str) -> tuple[str, str]:
    """Return invoke's ``(flag-spec, help)`` with ``=FLOAT`` (``-x FLOAT``) on float options."""
    names, text = _unlabelled_help_for(context, flag)
    if context.flags[flag].kind is not float:
        return names, text
    labelled = [
        f"{name}=FLOAT" if name.startswith("--") else f"{name} FLOAT" for name in names.split(", ")
    ]
    return ", ".join(labelled), text


ParserContext.help_for = help_for  # type: ignore[method-assign]
