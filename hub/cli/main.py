"""Entry point of the `hub` command: each area registers its own sub-commands here."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="hub",
    help="Routing and conformance hub for Norwegian health e-messages (KITH XML over ebXML).",
    no_args_is_help=True,
    add_completion=False,
)



@app.callback()
def _root() -> None:
    """Routing and conformance hub for Norwegian health e-messages (KITH XML over ebXML)."""


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
