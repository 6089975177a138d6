"""`hub registry list|show|lookup`: the address register as the relay sees it."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from hub.cli.common import (
    ID,
    LINE,
    ConfigOpt,
    JsonOpt,
    err_console,
    fail,
    load_config,
    print_json,
    print_table,
)
from hub.relay.register import Register, RegisterError, load

registry_app = typer.Typer(help="The address register: parties by HER-id, endpoints, certificates.")

RegisterOpt = typer.Option(None, "--register", metavar="PATH",
                           help="Register file or folder (TOML / NHN XML); default: the config's 'register'.")


def open_register(paths: list[Path] | None, config: Path | None = None) -> Register:
    """--register, else the register the configuration names; says on stderr which it read."""
    return _open(paths, config)[0]


def _open(paths: list[Path] | None, config: Path | None) -> tuple[Register, dict[str, object]]:
    """The register and what --json says about where it came from (config file, register files)."""
    cfg_path: Path | None = None
    if not paths:
        cfg = load_config(config)
        cfg_path, paths = cfg.path, cfg.register_paths
        if not paths:
            fail(f"the config {cfg.path} names no register (key 'register'); or give --register")
        err_console.print(f"[dim]config: {cfg.path or 'none found'}; register: "
                          f"{', '.join(map(str, paths))}[/]", highlight=False)
    missing = [p for p in paths if not p.exists()]
    if missing:
        fail(f"register not found: {', '.join(map(str, missing))} (--register, or the config's 'register')")
    try:
        reg = load(paths)
    except RegisterError as exc:
        fail(str(exc))
        raise  # unreachable; keeps type checkers calm
    return reg, {"config": str(cfg_path) if cfg_path else None, "register": [str(p) for p in paths]}


def _public(p: object) -> dict:
    d = asdict(p)  # type: ignore[call-overload]
    d.pop("token_sha256", None)  # a credential hash is nobody's business in a listing
    return d


@registry_app.command("list")
def list_(
    register: list[Path] = RegisterOpt,
    config: Path = ConfigOpt,
    kind: str = typer.Option(None, "--kind", metavar="KIND",
                             help="Only parties of this kind (gp, hospital, lab, nursing ...)."),
    as_json: bool = JsonOpt,
) -> None:
    """List every party."""
    reg, src = _open(register, config)
    parties = [p for p in reg if kind is None or reg.resolve(p.her_id).kind == kind]
    if as_json:
        print_json({"source": src, "parties": [_public(reg.resolve(p.her_id)) for p in parties]})
        return
    rows = []
    for p in parties:
        r = reg.resolve(p.her_id)
        rows.append(
            (
                r.her_id,
                r.name,
                r.kind,
                r.level,
                r.parent_her_id,
                "local" if r.local else "network",
                r.endpoint,
            )
        )
    print_table(
        f"{len(rows)} parties", [("HER-id", ID), ("Name", LINE), ("Kind", ID), ("Level", ID), ("Parent", ID),
                                 ("Where", ID), ("Endpoint", LINE)], rows
    )


@registry_app.command("show")
def show(
    her_id: int = typer.Argument(..., help="HER-id of the party."),
    register: list[Path] = RegisterOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Everything the register says about one party, with what it inherits from its parents."""
    reg, src = _open(register, config)
    party = reg.resolve(her_id)
    if party is None:
        fail(f"HER-id {her_id} is not in the register", 1)
    chain = [p.her_id for p in reg.chain(her_id)]
    if as_json:
        print_json({"source": src, **_public(party), "chain": chain})
        return
    rows = [(k, v) for k, v in _public(party).items() if v not in (None, (), {})]
    rows.append(("chain", " -> ".join(map(str, chain))))
    print_table(f"{party.name} (HER {party.her_id})", ["Field", "Value"], rows)


@registry_app.command("lookup")
def lookup(
    text: str = typer.Argument(..., help="HER-id, organisation number or part of a name."),
    register: list[Path] = RegisterOpt,
    config: Path = ConfigOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Find parties by HER-id, organisation number or name."""
    reg, src = _open(register, config)
    hits = reg.find(text)
    if as_json:
        print_json({"source": src, "parties": [_public(reg.resolve(p.her_id)) for p in hits]})
    else:
        print_table(
            f"{len(hits)} match(es) for {text!r}",
            ["HER-id", "Name", "Kind", "Org.no."],
            [(p.her_id, p.name, p.kind, p.org_no) for p in hits],
        )
    if not hits:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(registry_app, name="registry")
