"""Conventional help for every `hub` command, whoever wrote it: flags show no value placeholder, values
show an upper-case one (TEXT, INTEGER, PATH, FILE, [text|json]), arguments are written `PATHS...`
(optional ones `[REFS]...`), the way POSIX tools and click's own defaults write them."""

from __future__ import annotations

import re
from typing import Any

from typer.core import TyperArgument, TyperGroup, TyperOption

_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "Path": "PATH", "bool": "BOOLEAN",
          "datetime": "DATETIME"}


def _value_metavar(p: Any, ctx: Any) -> str:  # noqa: ANN401 - a typer parameter and click context
    label = p.display_type(ctx).strip("<>")
    inner = re.fullmatch(r"list\[(.*)\]", label)
    label = (inner.group(1) if inner else label).replace(" range", "")
    if "|" in label:
        return f"[{label}]"
    return _NAMES.get(label, label.upper())


def apply(cmd: Any, ctx: Any = None) -> None:  # noqa: ANN401 - a click command or group
    """Set conventional metavars on `cmd` and everything under it (where the author set none)."""
    for p in cmd.params:
        if p.metavar is not None:
            continue
        if isinstance(p, TyperOption):
            p.metavar = "" if p.is_flag else _value_metavar(p, ctx)
        elif isinstance(p, TyperArgument):
            name = p.name.upper()
            many = p.nargs != 1
            p.metavar = name + ("..." if many else "")
            usage = (name if p.required else f"[{name}]") + ("..." if many else "")
            p._usage_display_name = lambda usage=usage: usage  # instance attribute: this argument only
            kind = _value_metavar(p, ctx)
            p.display_type_rich = lambda ctx, kind=kind: kind
    help_option = cmd.get_help_option

    def get_help_option(ctx: Any) -> Any:  # noqa: ANN401 - made per context by click: a flag like the others
        opt = help_option(ctx)
        if opt is not None and opt.metavar is None:
            opt.metavar = ""
        return opt

    cmd.get_help_option = get_help_option
    for sub in getattr(cmd, "commands", {}).values():
        apply(sub, ctx)


class HubGroup(TyperGroup):
    """The root group: applies the conventions to the whole command tree once it is built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        super().__init__(*args, **kwargs)
        apply(self)
