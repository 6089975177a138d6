"""Entry point of the `hub` command: each area registers its own sub-commands here."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from hub.cli.common import ConfigOpt, set_root_config
from hub.cli.conventions import HubGroup

app = typer.Typer(
    name="hub",
    help="Routing and conformance hub for Norwegian health e-messages (KITH XML over ebXML).",
    no_args_is_help=True,
    add_completion=False,
    cls=HubGroup,  # conventional metavars on every command (hub.cli.conventions)
)


def _version(value: bool) -> None:
    if value:
        from hub import __version__

        typer.echo(f"hub {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    config: Path = ConfigOpt,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the hub's version and exit."),
) -> None:
    """Routing and conformance hub for Norwegian health e-messages (KITH XML over ebXML)."""
    set_root_config(config)


@app.command()
def version() -> None:
    """Print the hub's version."""
    from hub import __version__

    typer.echo(__version__)


# Each module exposes `register(app)`; a module that is not there yet is simply not offered.
_AREAS = [
    "hub.cli.validate",
    "hub.cli.security",
    "hub.cli.ebxml",
    "hub.cli.registry",
    "hub.cli.queue",
    "hub.cli.serve",
    "hub.cli.conformance",
    "hub.cli.fixtures",
    "hub.cli.configure",
    "hub.cli.audit",
]

for _mod in _AREAS:
    try:
        module = importlib.import_module(_mod)
    except ModuleNotFoundError as exc:
        if exc.name != _mod:
            raise
        continue
    module.register(app)


def main() -> None:
    app()
