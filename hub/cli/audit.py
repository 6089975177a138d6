"""`hub audit list`: the store's audit log - who revealed identity numbers, who resent, exported or
purged what, and when."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.markup import escape

from hub.cli.common import (
    ID,
    LINE,
    ConfigOpt,
    JsonOpt,
    StoreOpt,
    console,
    load_config,
    open_existing_store,
    print_json,
    print_table,
    source,
)
from hub.privacy import mask_text

audit_app = typer.Typer(help="The audit log: who revealed, resent, exported or purged what.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("list")
def list_(
    actor: str = typer.Option(None, "--actor", help="Only what this person did."),
    action: str = typer.Option(None, "--action", help="Only this action: reveal, resend, export, purge."),
    ref: str = typer.Option(None, "--message", metavar="ID", help="Only about this message (any unique "
                            "start of its id)."),
    since: str = typer.Option(None, "--since", metavar="WHEN", help="ISO date/time or age (30m, 2h, 3d)."),
    limit: int = typer.Option(100, "--limit", "-n", min=1, help="At most this many, newest first."),
    as_json: bool = JsonOpt,
    store: str = StoreOpt,
    config: Path = ConfigOpt,
) -> None:
    """The audit log, newest first."""
    from hub.cli.queue import parse_when, require_message

    now = datetime.now(UTC)
    cfg = load_config(config)
    with open_existing_store(cfg, store) as st:
        target = require_message(st, ref).id if ref else None
        # filters the store does not take are applied here, over a generous window
        entries = st.audit_log(limit=limit if not (actor or action) else 100_000,
                               since=parse_when(since, now) if since else None, target=target)
        short = {}
        for e in entries:
            if e.target and e.target not in short:
                m = st.get(e.target)
                short[e.target] = m.short_id if m is not None else e.target
    entries = [e for e in entries if (actor is None or e.actor == actor)
               and (action is None or e.action == action)][:limit]
    if as_json:
        print_json({"source": source(cfg, store), "entries": [
            {"seq": e.seq, "at": e.at.isoformat(), "actor": e.actor, "action": e.action,
             "target": e.target, "message": short.get(e.target or ""), "detail": mask_text(e.detail or "")}
            for e in entries]})
        return
    if not entries:
        console.print("no audit entries match")
        return
    print_table(f"{len(entries)} audit entr{'y' if len(entries) == 1 else 'ies'}",
                (("time (UTC)", ID), ("actor", ID), ("action", ID), ("message", ID), ("detail", LINE)),
                [(e.at.strftime("%Y-%m-%d %H:%M:%S"), escape(e.actor), e.action,
                  short.get(e.target or "", "-"), escape(mask_text(e.detail or ""))) for e in entries])
