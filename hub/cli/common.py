"""Small helpers shared by the CLI areas: the configuration, output as tables for people, JSON for scripts."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from hub import config
from hub.store import MissingStore, Store, open_store

console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # error lines stay whole for grep

CONFIG_HELP = "hub.toml to read (default: $HUB_CONFIG, else ./hub.toml, else $HUB_HOME/hub.toml)."
ConfigOpt = typer.Option(None, "--config", "-c", metavar="FILE", help=CONFIG_HELP)
StoreOpt = typer.Option(None, "--store", metavar="URL", envvar="HUB_STORE",
                        help="Store URL (sqlite:///path or postgresql://...); default: the config's 'store'.")
JsonOpt = typer.Option(False, "--json", help="JSON for scripts.")

# `hub --config FILE <command>`: the root option, used when the command has none of its own
_root: dict[str, Path | None] = {"config": None}


def set_root_config(path: Path | None) -> None:
    _root["config"] = path


def root_config() -> Path | None:
    return _root["config"]


def load_config(given: Path | None = None) -> config.Config:
    """The configuration a command runs with; a bad or missing given file is a usage error."""
    try:
        return config.load(given or root_config())
    except config.ConfigError as exc:
        fail(str(exc))
        raise  # unreachable


def open_existing_store(cfg: config.Config, url: str | None = None, *, quiet: bool = False) -> Store:
    """The store named by `url` (--store) or the configuration; never creates an empty one.

    Says on stderr which config and store were read (stdout stays clean for --json)."""
    url = url or cfg.store_url
    if not quiet:
        where = str(cfg.path) if cfg.path is not None else f"none found (defaults under {config.home()})"
        err_console.print(f"[dim]config: {where}; store: {config.redact(url)}[/]", highlight=False)
    try:
        return open_store(url, create=False, postgres=cfg.settings.postgres)
    except MissingStore as exc:
        demo = config.home() / "demo" / config.FILE_NAME
        hint = f"; the demo's is read with --config {demo}" if cfg.path is None and demo.is_file() else ""
        fail(f"{exc}; give --config or --store (`hub config show` says which config is read){hint}", 1)
        raise
    except Exception as exc:  # noqa: BLE001 - any connection/URL problem is the operator's to see
        fail(f"cannot open the store {config.redact(url)}: {exc}")
        raise


def source(cfg: config.Config, url: str | None = None) -> dict[str, str | None]:
    """What --json says about where its data came from."""
    d = cfg.describe()
    if url:
        d["store"] = config.redact(url)
    return d


def print_json(data: Any) -> None:  # noqa: ANN401 - any JSON-serialisable value
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


ID = {"no_wrap": True}  # an id column: never cut, never wrapped (hub accepts any unique start of one)
LINE = {"no_wrap": True, "overflow": "ellipsis"}  # one line, cut with … when the terminal is narrow


def print_table(title: str | None, columns: Sequence[str | tuple[str, dict[str, Any]]],
                rows: Iterable[Sequence[Any]]) -> None:
    """A table that reads at 80 columns: light rules, no outer edge; a column is a name, or
    (name, rich column options) such as ID and LINE; the others fold."""
    table = Table(title=title, show_lines=False, header_style="bold", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False, padding=(0, 1, 0, 0))
    for c in columns:
        name, opts = (c, {}) if isinstance(c, str) else c
        table.add_column(name, **({"overflow": "fold"} | opts))
    rows = list(rows)
    natural = [Text.from_markup(str(c.header)).cell_len for c in table.columns]
    for i, cells in enumerate(zip(*rows, strict=False) if rows else ()):
        widths = (Text.from_markup("" if v is None else str(v)).cell_len for v in cells)
        natural[i] = max(natural[i], *widths)
    # one-line columns give way (cut with …) so that ids and states keep their full width
    cut = [i for i, c in enumerate(table.columns) if c.overflow == "ellipsis"]
    spare = console.width - sum(w + 2 for i, w in enumerate(natural) if i not in cut)
    if cut and sum(natural[i] + 2 for i in cut) > spare:
        # the earlier ones (a type) keep up to 16 characters while the last (an error) keeps 12
        for i in cut[:-1]:
            table.columns[i].width = w = max(6, min(natural[i], 16, spare - 2 - 14))
            spare -= w + 2
        table.columns[cut[-1]].width = max(6, spare - 2)
    for i, c in enumerate(table.columns):
        if c.no_wrap and i not in cut:
            c.min_width = natural[i]
    for r in rows:
        table.add_row(*["" if v is None else str(v) for v in r])
    console.print(table)


def fail(message: str, code: int = 2) -> None:
    """Print a clear error and exit (2 = usage/configuration error)."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)
