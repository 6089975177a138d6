"""`hub config check|show`: which hub.toml the commands read, and whether it is valid."""

from __future__ import annotations

from pathlib import Path

import typer

from hub import config
from hub.cli.common import ConfigOpt, JsonOpt, err_console, fail, print_json

config_app = typer.Typer(help="The configuration (hub.toml): check a file, show what the commands read.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


def _problems(cfg: config.Config) -> list[str]:
    """What `hub serve` would refuse or trip over beyond the schema: missing files and folders."""
    s = cfg.settings
    out = []
    if s.her_id is None:
        out.append("her_id: missing (the relay's own HER-id; `hub serve` needs it)")
    for p in cfg.register_paths:
        if not p.exists():
            out.append(f"register: {p} does not exist")
    for key, p in (("pki", cfg.pki), ("cpa_dir", cfg.resolve(s.cpa_dir))):
        if p is not None and not p.exists():
            out.append(f"{key}: {p} does not exist")
    return out


@config_app.command()
def check(
    file: Path = typer.Argument(..., metavar="FILE", help="The hub.toml to check."),
    as_json: bool = JsonOpt,
) -> None:
    """Validate FILE: unknown keys, wrong types, missing files. Exit 0 valid, 1 not."""
    try:
        cfg = config.Config(file, config.read(file, environment=False))
    except config.ConfigError as exc:
        if as_json:
            print_json({"file": str(file), "valid": False, "errors": exc.errors})
        else:
            err_console.print(f"[bold red]invalid:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    problems = _problems(cfg)
    if as_json:
        print_json({"file": str(file), "valid": not problems, "errors": problems,
                    "store": cfg.describe()["store"]})
    elif problems:
        for p in problems:
            err_console.print(f"[bold red]invalid:[/] {file}: {p}", highlight=False)
    else:
        typer.echo(f"{file}: valid (store {cfg.describe()['store']})")
    if problems:
        raise typer.Exit(1)


@config_app.command()
def show(config_file: Path = ConfigOpt, as_json: bool = JsonOpt) -> None:
    """Which hub.toml the commands read here, and every setting with defaults filled in."""
    from hub.cli.common import load_config

    cfg = load_config(config_file)
    values = cfg.settings.model_dump(mode="json", by_alias=True)
    if as_json:
        print_json({"source": cfg.describe(), "settings": values})
        return
    typer.echo(cfg.source_line())
    if cfg.path is None:
        fail(f"no hub.toml found: give --config, set {config.CONFIG_ENV}, or put one in ./ or $HUB_HOME", 1)
    for key, value in values.items():
        if isinstance(value, dict):
            for k, v in value.items():
                typer.echo(f"{key}.{k} = {v!r}")
        else:
            typer.echo(f"{key} = {value!r}")
