"""`hub queue ...`: the relay's messages for the people who run it (list, show, why, resend, export,
purge, stats, overdue). Tables for people, `--json` for scripts, short ids everywhere.

National identity numbers are masked in everything shown (payload, errors, timeline reasons) unless
`hub queue show --reveal`, which is recorded in the store's audit log with who and when first.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import re
import sys
import zipfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from hub.cli.common import (
    ID,
    LINE,
    ConfigOpt,
    JsonOpt,
    StoreOpt,
    console,
    fail,
    load_config,
    open_existing_store,
    print_json,
    print_table,
    source,
)
from hub.config import Config
from hub.ebxml.cpa import CpaRepository
from hub.privacy import mask_text
from hub.relay import lifecycle
from hub.relay.explain import ago, explain, span
from hub.relay.hop import HopChecker
from hub.relay.lifecycle import Event, IllegalTransition, State
from hub.relay.register import Register, RegisterError
from hub.relay.register import load as load_register
from hub.relay.route import CpaLookup, Resolution, cert_summary, cpa_lookup, resolve_now
from hub.store import ORIGINAL, Message, Store, TimelineEntry

queue_app = typer.Typer(help="The relay's messages: list, show, why, resend, export, purge, stats, overdue.",
                        no_args_is_help=True)

ActorOpt = typer.Option(None, "--actor", help="Who is acting, for the audit log (default: the OS user).")

_ATTENTION = {s.value for s in lifecycle.NEEDS_ATTENTION} | {State.REJECTED.value}


def register(app: typer.Typer) -> None:
    app.add_typer(queue_app, name="queue")


@queue_app.callback()
def _group(ctx: typer.Context, store: str = StoreOpt, config: Path = ConfigOpt) -> None:
    """The relay's messages: list, show, why, resend, export, purge, stats, overdue."""
    ctx.obj = {"store": store, "config": config}


# --- helpers ---------------------------------------------------------------------------------------

def _given(ctx: typer.Context | None, key: str, value: Any) -> Any:  # noqa: ANN401
    """The command's own option, else the one given to `hub queue`."""
    if value is not None:
        return value
    return (ctx.obj or {}).get(key) if ctx is not None and isinstance(ctx.obj, dict) else None


def _config(ctx: typer.Context, config: Path | None) -> Config:
    return load_config(_given(ctx, "config", config))


def store_url(ctx: typer.Context | None, given: str | None, cfg: Config) -> str:
    """--store on the command, else on `hub queue`, else the configuration's store."""
    return _given(ctx, "store", given) or cfg.store_url


def _open(ctx: typer.Context, given: str | None, cfg: Config) -> Store:
    return open_existing_store(cfg, store_url(ctx, given, cfg))


def _source(ctx: typer.Context, given: str | None, cfg: Config) -> dict[str, str | None]:
    return source(cfg, store_url(ctx, given, cfg))


def _now() -> datetime:
    return datetime.now(UTC)


def actor_name(given: str | None) -> str:
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return os.environ.get("USER") or f"uid-{os.getuid()}"


_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    m = _REL.match(text)
    if not m:
        raise ValueError(f"not a duration like 30m, 2h, 3d, 1w: {text!r}")
    return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2).lower()])


def parse_when(text: str, now: datetime) -> datetime:
    """ISO date/time (no zone: this machine's local time) or relative to now: 30m, 2h, 3d, 1w."""
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r}: use an ISO date/time (2026-03-01, 2026-03-01T08:00) "
                                 "or a relative time (30m, 2h, 3d, 1w)") from None
    return (dt if dt.tzinfo else dt.astimezone()).astimezone(UTC)


def _iso(v: Any) -> Any:  # noqa: ANN401 - JSON value
    return v.isoformat() if isinstance(v, datetime) else v


def message_json(m: Message, now: datetime, *, reveal: bool = False) -> dict[str, Any]:
    d = {f.name: _iso(getattr(m, f.name)) for f in fields(Message)}
    d["state"] = m.state.value
    d["age_s"] = int((now - m.created_at).total_seconds())
    if not reveal and d.get("last_error_text"):
        d["last_error_text"] = mask_text(d["last_error_text"])
    return d


def timeline_json(tl: Sequence[TimelineEntry], *, reveal: bool = False) -> list[dict[str, Any]]:
    out = []
    for e in tl:
        d = {k: _iso(v) for k, v in asdict(e).items()}
        if not reveal:
            d["reason"] = mask_text(e.reason)
        out.append(d)
    return out


def _state_cell(state: str) -> str:
    if state in _ATTENTION:
        return f"[bold red]{state}[/]"
    if state in ("retrying", "sending", "awaiting_ack"):
        return f"[yellow]{state}[/]"
    return f"[green]{state}[/]" if state == "completed" else state


def _error_cell(m: Message, width: int = 60) -> str:
    err = m.last_error
    if err is None:
        return ""
    text = mask_text(f"{err.code}: {err.text}".strip(": "))
    return escape(text if len(text) <= width else text[: width - 1] + "…")


def _parties(m: Message) -> str:
    return f"{m.sender_her or '?'} -> {m.receiver_her or '?'}"


def require_message(store: Store, ref: str) -> Message:
    """By full or short id, ebXML MessageId, KITH MsgId, or any unique prefix of an id."""
    ref = ref.strip().rstrip("…").rstrip(".")
    m = store.get(ref)
    if m is None and len(ref) >= 3:
        hits = store.by_prefix(ref)
        if len(hits) > 1:
            fail(f"{ref!r} is the start of several messages' ids; give more of it", 1)
        m = hits[0] if hits else None
    if m is None:
        fail(f"no message {ref!r} (give an id or any unique start of one, an ebXML MessageId or a "
             "KITH MsgId; `hub queue list` shows them)", 1)
        raise AssertionError  # unreachable
    return m


def _children(store: Store, tl: Iterable[TimelineEntry]) -> list[Message]:
    """The resends of a message, from its `resent` timeline entries ("resent as <short id>")."""
    out = []
    for e in tl:
        if e.event == Event.RESENT.value:
            m = re.match(r"resent as (\S+?)(?::|$)", e.reason)
            child = store.get(m.group(1)) if m else None
            if child is not None:
                out.append(child)
    return out


def _states(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [s.strip() for v in values for s in v.split(",") if s.strip()]
    bad = [s for s in out if s not in State._value2member_map_]
    if bad:
        known = ", ".join(s.value for s in State)
        raise typer.BadParameter(f"unknown state {', '.join(bad)}; states: {known}")
    return out


# --- list ------------------------------------------------------------------------------------------

# no short flags: -s, -r and -t mean --system, --register... elsewhere; one letter, one idea
StateOpt = typer.Option(None, "--state", help="Only these states (repeatable or comma-separated).")
ReceiverOpt = typer.Option(None, "--receiver", help="Receiver HER-id.")
SenderOpt = typer.Option(None, "--sender", help="Sender HER-id.")
TypeOpt = typer.Option(None, "--type", help="Message type, e.g. DIALOG_NOTAT, APPREC.")
SinceOpt = typer.Option(None, "--since", help="Created since: ISO date/time or relative (30m, 2h, 3d).")


@queue_app.command("list")
def list_(
    ctx: typer.Context,
    state: list[str] = StateOpt,
    receiver: str = ReceiverOpt,
    sender: str = SenderOpt,
    msg_type: str = TypeOpt,
    since: str = SinceOpt,
    limit: int = typer.Option(50, "--limit", "-n", min=1, help="At most this many, newest first."),
    as_json: bool = JsonOpt,
    store: str = StoreOpt,
    config: Path = ConfigOpt,
) -> None:
    """Messages, newest first: id, state, type, sender -> receiver, age, attempts, last error."""
    now = _now()
    states = _states(state)
    since_dt = parse_when(since, now) if since else None
    cfg = _config(ctx, config)
    with _open(ctx, store, cfg) as st:
        msgs = st.list_messages(state=states, receiver=receiver, sender=sender, msg_type=msg_type,
                                since=since_dt, limit=limit)
    if as_json:
        print_json({"source": _source(ctx, store, cfg), "messages": [message_json(m, now) for m in msgs]})
        return
    if not msgs:
        console.print("no messages match")
        return
    print_table(
        f"{len(msgs)} message(s)" + (" (limit reached: --limit for more)" if len(msgs) == limit else ""),
        (("id", ID), ("state", ID), ("type", LINE), ("from -> to", ID), ("age", ID), ("tries", ID),
         ("last error", LINE)),
        [(m.short_id, _state_cell(m.state.value), escape(m.msg_type or "?"), _parties(m),
          span(now - m.created_at), f"{m.attempts}/{m.max_retries + 1}", _error_cell(m)) for m in msgs],
    )


# --- show ------------------------------------------------------------------------------------------

def payload_text(data: bytes) -> str:
    """The original for reading: XML re-indented; other text as is; binary summarised."""
    from lxml import etree

    from hub.xmlsafe import XmlInputError, parse_bytes

    try:
        tree = parse_bytes(data)
    except XmlInputError:
        text = data.decode("utf-8", errors="replace")
        printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
        if text and printable / len(text) < 0.95:
            return f"({len(data)} bytes, not text: `hub queue export` writes them out)"
        return text
    etree.indent(tree, space="  ")
    return etree.tostring(tree, encoding="unicode")


@queue_app.command()
def show(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Short id, full id, ebXML MessageId or KITH MsgId."),
    reveal: bool = typer.Option(False, "--reveal", help="Show national identity numbers (audited)."),
    actor: str = ActorOpt,
    show_payload: bool = typer.Option(False, "--payload", help="Also print the payload (--json always "
                                      "carries it)."),
    no_payload: bool = typer.Option(False, "--no-payload", hidden=True, help="The default now."),
    as_json: bool = JsonOpt,
    store: str = StoreOpt,
    config: Path = ConfigOpt,
) -> None:
    """Headers, last error and timeline; the payload with --payload (identity numbers masked unless
    --reveal, which is audited)."""
    now = _now()
    cfg = _config(ctx, config)
    with _open(ctx, store, cfg) as st:
        m = require_message(st, ref)
        tl = st.timeline(m.id)
        kinds = st.blob_kinds(m.id)
        data = st.blob(m.id) if (as_json or show_payload) and not no_payload else None
        children = _children(st, tl)
        parent = st.get(m.parent_id) if m.parent_id else None
        if reveal:
            # recorded (durably) before anything is shown
            st.audit(actor_name(actor), "reveal", m.id,
                     f"hub queue show {m.short_id} --reveal: national identity numbers shown")
    payload = None
    if data is not None:
        payload = payload_text(data)
        if not reveal:
            payload = mask_text(payload)
    if as_json:
        print_json({
            "source": _source(ctx, store, cfg),
            "message": message_json(m, now, reveal=reveal),
            "timeline": timeline_json(tl, reveal=reveal),
            "artefacts": kinds,
            "parent": parent.short_id if parent else None,
            "children": [c.short_id for c in children],
            "masked": not reveal,
            "payload": payload,
        })
        return
    err = m.last_error
    rows: list[tuple[str, Any]] = [
        ("id", f"{m.short_id}  ({m.id})"),
        ("state", _state_cell(m.state.value)),
        ("type", " ".join(x for x in (m.msg_type, f"({m.family} {m.version})" if m.family else None) if x)),
        ("sender -> receiver", _parties(m)),
        ("direction / channel", f"{m.direction or '?'} / {m.channel or '?'}"),
        ("KITH MsgId", m.kith_msg_id),
        ("ebXML MessageId in / out", f"{m.ebxml_message_id or '-'} / {m.out_message_id or '-'}"),
        ("conversation / CPA", f"{m.conversation_id or '-'} / {m.cpa_id or '-'}"),
        ("created", f"{_iso(m.created_at)} ({ago(m.created_at, now)})"),
        ("GenDate", _iso(m.gen_date)),
        ("attempts", f"{m.attempts} of {m.max_retries + 1}, "
                     f"every {span(timedelta(seconds=m.retry_interval_s))}"),
        ("next attempt", _iso(m.next_attempt_at)),
        ("expires (TimeToLive)", _iso(m.expires_at)),
        ("AppRec due / status", f"{_iso(m.apprec_due_at) or '-'} / {m.apprec_status or '-'}"),
        ("size", f"{m.size} bytes"),
        ("sha256", m.sha256),
        ("artefacts", ", ".join(kinds)),
    ]
    if parent:
        rows.append(("resend of", parent.short_id))
    if children:
        rows.append(("resent as", ", ".join(f"{c.short_id} ({c.state.value})" for c in children)))
    if err:
        rows.append(("last error", escape(mask_text(f"{err.code}: {err.text}") if not reveal
                                          else f"{err.code}: {err.text}")
                     + (" (permanent: not retried)" if err.permanent else " (transient)")))
    heads = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    heads.add_column(no_wrap=True)
    heads.add_column(overflow="fold")  # ids and digests wrap whole, never cut
    for k, v in rows:
        heads.add_row(f"[bold]{k}[/]", v if k in ("state", "last error") else escape(str(v or "-")))
    console.print(heads)
    # one line per step: the reason is cut at the terminal's edge (the last error is in full above,
    # `--json` has every reason in full)
    print_table("timeline", (("time (UTC)", ID), ("event", ID), ("-> state", ID), ("reason", LINE),
                             ("actor", ID)), [
        (e.at.strftime("%m-%d %H:%M:%S"), e.event, e.to_state,
         escape(e.reason if reveal else mask_text(e.reason)), escape(e.actor)) for e in tl])
    if payload is not None:
        note = ("national identity numbers REVEALED (audited)" if reveal
                else "national identity numbers masked; --reveal shows them (audited)")
        console.print(f"[bold]payload[/] ({note}):")
        typer.echo(payload)


# --- why -------------------------------------------------------------------------------------------

@queue_app.command()
def why(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Short id, full id, ebXML MessageId or KITH MsgId."),
    as_json: bool = JsonOpt,
    store: str = StoreOpt,
    config: Path = ConfigOpt,
) -> None:
    """Why the message is where it is: what happened, what the hub did, what next, what you can do."""
    now = _now()
    cfg = _config(ctx, config)
    with _open(ctx, store, cfg) as st:
        m = require_message(st, ref)
        tl = st.timeline(m.id)
        children = _children(st, tl)
        parent = st.get(m.parent_id) if m.parent_id else None
    text = mask_text(explain(m, tl, now=now, parent=parent, children=children))
    if as_json:
        err = m.last_error
        print_json({"source": _source(ctx, store, cfg), "id": m.id, "short_id": m.short_id,
                    "state": m.state.value, "explanation": text,
                    "last_error": None if err is None else {"code": err.code, "text": mask_text(err.text),
                                                            "permanent": err.permanent}})
        return
    console.print(f"[bold]{m.short_id}[/] {_state_cell(m.state.value)}")
    typer.echo(text)


# --- resend ----------------------------------------------------------------------------------------

def _register(paths: list[Path] | None, cfg: Config) -> tuple[Register | None, str | None]:
    """The address register (--register, else the config's 'register'), or why there is none."""
    paths = paths or cfg.register_paths
    if not paths:
        return None, f"no address register: the config {cfg.path} names none (--register)"
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        return None, f"no address register at {', '.join(missing)} (--register or the config's 'register')"
    try:
        return load_register(paths), None
    except RegisterError as exc:
        return None, str(exc)


def _cpa_lookup(cpa_dir: Path | None, cfg: Config) -> CpaLookup | None:
    if cpa_dir is None:
        cpa_dir = cfg.cpa_dir
        if cpa_dir is None or not cpa_dir.is_dir():
            return None  # no repository: CPA ids are shown unchecked
    return cpa_lookup(CpaRepository.load_dir(cpa_dir))


def _resolution_json(r: Resolution) -> dict[str, Any]:
    return json.loads(json.dumps(r.as_dict(), default=_iso))


def _cert_cell(r: Resolution) -> str:
    c = r.enc_cert
    if c is None:
        return "-"
    if c.problem:
        return f"{c.path}: {c.problem}"
    until = f", until {c.not_after.date()}" if c.not_after else ""
    return f"{c.subject or c.path}{until}"


def _can_resend(m: Message) -> bool:
    return Event.RESENT in lifecycle.allowed_events(m.state)


@queue_app.command()
def resend(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(None, help="Message ids; or select with --state/--receiver/..."),
    state: list[str] = StateOpt,
    receiver: str = ReceiverOpt,
    sender: str = SenderOpt,
    msg_type: str = TypeOpt,
    since: str = SinceOpt,
    limit: int = typer.Option(500, "--limit", "-n", min=1, help="At most this many in a bulk resend."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Change nothing; check the hop a copy would take "
                                 "now (endpoint reachable, SMTP relay, certificates, CPA, retries). "
                                 "Exit 1 when a copy would not be delivered."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before a bulk resend."),
    reason: str = typer.Option("", "--reason", help="Why (recorded in both timelines)."),
    actor: str = ActorOpt,
    register_paths: list[Path] = typer.Option(None, "--register", help="Address register file/folder."),
    cpa_dir: Path = typer.Option(None, "--cpa-dir", help="Folder of CPA XML files."),
    as_json: bool = JsonOpt,
    store: str = StoreOpt,
    config: Path = ConfigOpt,
) -> None:
    """Send copies of messages again: each copy is a new message whose parent is the original.

    One or more ids, or a bulk selection (`--state undelivered --receiver 79768`). A copy for an ebXML
    route gets its own MessageId; the running relay delivers it. `--dry-run` changes nothing and checks
    the hop each copy would take now (route, CPA, certificates, SMTP relay or endpoint reachable, the
    configured retries); exit 1 when one would not be delivered.
    """
    now = _now()
    bulk = not refs
    states = _states(state)
    if bulk and not any((states, receiver, sender, msg_type, since)):
        fail("give message ids, or select with --state/--receiver/--sender/--type/--since")
    if not bulk and any((states, receiver, sender, msg_type, since)):
        fail("give either message ids or a selection, not both")
    who = actor_name(actor)
    cfg = _config(ctx, config)
    reg, reg_problem = _register(register_paths, cfg)
    cpas = _cpa_lookup(cpa_dir, cfg)
    spool = cfg.spool_root

    def route(m: Message) -> Resolution:
        if reg is None:
            return Resolution(m.receiver_her, problems=(reg_problem or "no address register",))
        return resolve_now(m.receiver_her, reg, spool, now=now, cpas=cpas, certs=cert_summary,
                           recorded_cpa_id=m.cpa_id)

    with _open(ctx, store, cfg) as st:
        if bulk:
            msgs = st.list_messages(state=states, receiver=receiver, sender=sender, msg_type=msg_type,
                                    since=parse_when(since, now) if since else None, limit=limit)
        else:
            msgs = [require_message(st, r) for r in refs]
        routes = {m.id: route(m) for m in msgs}
        if dry_run:
            if not _dry_run_report(msgs, routes, as_json, _source(ctx, store, cfg), HopChecker(cfg, now)):
                raise typer.Exit(1)
            return
        if not msgs:
            console.print("no messages match: nothing resent")
            if as_json:
                print_json({"source": _source(ctx, store, cfg), "resent": [], "skipped": []})
            return
        if bulk and not yes:
            by_state = Counter(m.state.value for m in msgs)
            console.print(f"About to resend {len(msgs)} message(s) ("
                          + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())) + f") as {who}.")
            checker = HopChecker(cfg, now)  # the same checks as --dry-run, asked before acting
            bad = sum(1 for r in routes.values() if not checker.check(r).ok)
            if bad:
                console.print(f"[yellow]{bad} of them would not be deliverable now[/] (see --dry-run).")
            if not typer.confirm("Resend?", default=False):
                raise typer.Exit(1)
        resent: list[tuple[Message, Message]] = []
        skipped: list[tuple[Message, str]] = []
        for m in msgs:
            if not _can_resend(m):
                skipped.append((m, f"state {m.state.value} cannot be resent (still in progress or done)"))
                continue
            try:
                child = st.resend(m.id, actor=who, reason=reason)
            except IllegalTransition as exc:  # its state moved on since we listed it
                skipped.append((m, str(exc)))
                continue
            st.audit(who, "resend", m.id, f"{m.short_id} resent as {child.short_id}"
                     + (f": {reason}" if reason else ""))
            resent.append((m, child))
    if as_json:
        print_json({
            "source": _source(ctx, store, cfg),
            "actor": who,
            "resent": [{"parent": p.short_id, "parent_id": p.id, "id": c.short_id, "full_id": c.id,
                        "state": c.state.value, "route": _resolution_json(routes[p.id])} for p, c in resent],
            "skipped": [{"id": m.short_id, "state": m.state.value, "reason": why} for m, why in skipped],
        })
    else:
        if resent:
            print_table(f"resent {len(resent)} message(s) as {who}",
                        (("original", ID), ("new", ID), ("receiver", ID), ("endpoint now", LINE),
                         ("problems", LINE)),
                        [(p.short_id, c.short_id, p.receiver_her or "?", escape(routes[p.id].endpoint or "-"),
                          escape("; ".join(routes[p.id].problems)) or "none") for p, c in resent])
        for m, why in skipped:
            console.print(f"[yellow]skipped[/] {m.short_id}: {escape(why)}")
        console.print(f"{len(resent)} resent, {len(skipped)} skipped. The copies are queued for the "
                      "running relay; `hub queue why ID` follows each.")
    if skipped:
        raise typer.Exit(1)


def _dry_run_report(msgs: Sequence[Message], routes: dict[str, Resolution], as_json: bool,
                    src: dict[str, str | None], checker: HopChecker) -> bool:
    """Per message: would it be resent, and would the copy be delivered now (the real hop checked).
    True when every one would; the command's exit code says the same."""
    hops = {m.id: checker.check(routes[m.id]) for m in msgs}
    verdicts = {m.id: _can_resend(m) and hops[m.id].ok for m in msgs}
    if as_json:
        print_json({"source": src, "ok": all(verdicts.values()), "messages": [
            {"id": m.short_id, "full_id": m.id, "state": m.state.value, "receiver": m.receiver_her,
             "would_resend": _can_resend(m), "would_deliver_now": verdicts[m.id],
             "route": _resolution_json(routes[m.id]), "hop": hops[m.id].as_dict()} for m in msgs]})
        return all(verdicts.values())
    if not msgs:
        console.print("no messages match")
        return True
    # one block per message: endpoints, subjects and paths are long and must not be cut
    console.print(f"[bold]dry run[/]: {len(msgs)} message(s), nothing changed")
    for m in msgs:
        r, hop = routes[m.id], hops[m.id]
        if not _can_resend(m):
            verdict = "[yellow]not resendable in this state[/]"
        elif hop.ok:
            verdict = "[green]would resend; the copy can be delivered now[/]"
        else:
            verdict = "[bold red]would resend, but the copy would NOT be delivered now[/]"
        console.print(f"\n[bold]{m.id}[/] {_state_cell(m.state.value)} -> "
                      f"{escape(m.receiver_her or '?')} {escape(r.party or '')}  {verdict}")
        if r.kind:
            console.print(f"  route    {r.kind} {escape(r.endpoint or '')}")
        if r.cpa_id or r.kind in ("smtp", "http"):
            cpa = r.cpa
            extra = "" if cpa is None else " (" + ", ".join(x for x in (
                cpa.status, f"until {cpa.end.date()}" if cpa.end else None) if x) + ")"
            console.print(f"  CPA      {escape(r.cpa_id or 'none')}{escape(extra)}"
                          + ("" if cpa is not None or r.cpa_id is None else " (not checked: no CPA folder)"))
        if r.enc_cert is not None:
            c = r.enc_cert
            serial = f", serial {c.serial}" if c.serial else ""
            console.print(f"  cert     {escape(_cert_cell(r))}{serial}")
        for c in hop.checks:
            mark = "ok      " if c.ok else "[bold red]FAILS[/]   "
            console.print(f"  {mark} {escape(c.what)}: {escape(c.detail)}")
        if hop.retries is not None and hop.interval is not None:
            console.print(f"  retries  {hop.retries} after the first attempt, every {span(hop.interval)} "
                          "(as configured)")
        for p in r.problems:
            console.print(f"  [bold red]BLOCKS[/]   {escape(p)}")
        for n in r.notes:
            console.print(f"  note     {escape(n)}")
    bad = sum(1 for v in verdicts.values() if not v)
    console.print(f"\n{len(msgs) - bad} of {len(msgs)} would be resent and delivered now"
                  + (f"; {bad} would not (exit 1)" if bad else ""))
    return not bad


# --- export ----------------------------------------------------------------------------------------

def _ext(data: bytes) -> str:
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:200].lower()
    if head.startswith(b"<"):
        return ".xml"
    if b"mime-version" in head or b"content-type" in head:
        return ".eml"
    return ".bin"


@queue_app.command()
def export(
    ctx: typer.Context,
    ref: str = typer.Argument(..., help="Short id, full id, ebXML MessageId or KITH MsgId."),
    out: Path = typer.Option(None, "--out", "-o", help="File to write (default: standard output)."),
    everything: bool = typer.Option(False, "--all", help="A .zip (or folder) with the original, artefacts, "
                                    "message.json and timeline.json."),
    actor: str = ActorOpt,
    as_json: bool = JsonOpt,
    store: str = StoreOpt,
    config: Path = ConfigOpt,
) -> None:
    """The original bytes exactly as received (unmasked; the export is recorded in the audit log)."""
    import hashlib

    now = _now()
    if as_json and out is None and not everything:
        fail("--json describes a written file: add --out or --all")
    cfg = _config(ctx, config)
    with _open(ctx, store, cfg) as st:
        m = require_message(st, ref)
        data = st.blob(m.id)
        if data is None or hashlib.sha256(data).hexdigest() != m.sha256:
            fail(f"{m.short_id}: the stored original does not match its recorded sha256; not exported", 1)
        assert data is not None
        files: dict[str, bytes] = {f"original{_ext(data)}": data}
        if everything:
            for kind in st.blob_kinds(m.id):
                if kind != ORIGINAL:
                    files[f"artefacts/{kind}"] = st.blob(m.id, kind) or b""
            files["message.json"] = json.dumps(message_json(m, now, reveal=True), indent=2,
                                               ensure_ascii=False).encode()
            files["timeline.json"] = json.dumps(timeline_json(st.timeline(m.id), reveal=True), indent=2,
                                                ensure_ascii=False).encode()
        target = out if out is not None else (Path(f"{m.short_id}.zip") if everything else None)
        st.audit(actor_name(actor), "export", m.id,
                 f"{'all' if everything else 'original'} to {target if target else 'stdout'}")
    if target is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)  # bytes exactly as stored: no decoding, no newline added
        sys.stdout.buffer.flush()
        return
    if everything and target.suffix != ".zip":
        target.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            (target / name).write_bytes(content)
    elif everything:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for name, content in files.items():
                z.writestr(f"{m.short_id}/{name}", content)
        target.write_bytes(buf.getvalue())
    else:
        target.write_bytes(data)
    if as_json:
        print_json({"source": _source(ctx, store, cfg),
                    "id": m.short_id, "path": str(target), "bytes": len(data), "sha256": m.sha256,
                    "files": sorted(files) if everything else [target.name]})
    else:
        console.print(f"{m.short_id}: wrote {escape(str(target))} ({len(data)} bytes original"
                      + (f", {len(files) - 1} more file(s)" if everything else "") + ")")


# --- purge -----------------------------------------------------------------------------------------

@queue_app.command()
def purge(
    ctx: typer.Context,
    before: str = typer.Option(..., "--before", metavar="WHEN",
                               help="Last changed before: ISO date/time or age (30d)."),
    force: bool = typer.Option(False, "--force", help="Also undelivered, failed, expired, overdue ones."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be deleted; delete nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before deleting."),
    actor: str = ActorOpt,
    as_json: bool = JsonOpt,
    store: str = StoreOpt,
    config: Path = ConfigOpt,
) -> None:
    """Delete finished messages (with artefacts and timeline), after asking. Undelivered/failed ones
    stay unless --force; messages in progress always stay."""
    now = _now()
    cutoff = parse_when(before, now)
    in_progress = set(State) - lifecycle.FINAL - {State.APPREC_OVERDUE}
    attention = set() if force else set(lifecycle.NEEDS_ATTENTION)
    if as_json and not (yes or dry_run):
        fail("--json cannot ask: add --yes (or --dry-run)")
    cfg = _config(ctx, config)
    when = cutoff.strftime("%Y-%m-%d %H:%M")
    with _open(ctx, store, cfg) as st:
        counts = st.counts_before(cutoff)
        doomed = {s: c for s, c in counts.items() if State(s) not in in_progress | attention}
        total = sum(doomed.values())
        n = 0
        if not dry_run and total:
            if not yes:
                console.print(f"About to delete {total} message(s) last changed before {when} UTC ("
                              + ", ".join(f"{c} {s}" for s, c in sorted(doomed.items())) + "), with their "
                              "originals, artefacts and timelines. This cannot be undone.")
                if not typer.confirm("Delete?", default=False):
                    raise typer.Exit(1)
            n = st.purge(cutoff, actor=actor_name(actor), force=force)
    need = {s: c for s, c in counts.items() if State(s) in attention}
    busy = {s: c for s, c in counts.items() if State(s) in in_progress}
    if as_json:
        print_json({"source": _source(ctx, store, cfg),
                    "before": cutoff.isoformat(), "dry_run": dry_run, "purged": n,
                    "would_purge": doomed if dry_run else None, "forced": force,
                    "kept": {"needs_attention": need, "in_progress": busy}})
        return
    if dry_run:
        which = ", ".join(f"{c} {s}" for s, c in sorted(doomed.items()))
        console.print(f"dry run: would purge {total} message(s) last changed before {when} UTC"
                      + (f" ({which})" if total else "") + (" (forced)" if force else "")
                      + "; nothing deleted")
    else:
        console.print(f"purged {n} message(s) last changed before {when} UTC"
                      + (" (forced)" if force else ""))
    if need:
        console.print("kept " + ", ".join(f"{c} {s}" for s, c in sorted(need.items()))
                      + ": they need a person's attention (--force purges them too)")
    if busy:
        console.print("kept " + ", ".join(f"{c} {s}" for s, c in sorted(busy.items()))
                      + ": still in progress")


# --- stats and overdue -----------------------------------------------------------------------------

@queue_app.command()
def stats(ctx: typer.Context, as_json: bool = JsonOpt, store: str = StoreOpt,
          config: Path = ConfigOpt) -> None:
    """Messages per state; those needing attention first."""
    cfg = _config(ctx, config)
    with _open(ctx, store, cfg) as st:
        counts = st.stats()
    need = sum(n for s, n in counts.items() if s in _ATTENTION)
    if as_json:
        print_json({"source": _source(ctx, store, cfg),
                    "states": counts, "total": sum(counts.values()), "needs_attention": need})
        return
    order = sorted(counts.items(), key=lambda kv: (kv[0] not in _ATTENTION, -kv[1], kv[0]))
    console.print(f"{sum(counts.values())} message(s), {need} needing attention")
    if any(counts.values()):
        print_table(None, ("state", "messages"), [(_state_cell(s), n) for s, n in order if n])


@queue_app.command()
def overdue(
    ctx: typer.Context,
    after: str = typer.Option(None, "--after", metavar="DURATION", help="Overdue this long after GenDate "
                              "(default: the config's worker.apprec_limit_s, else 96h)."),
    as_json: bool = JsonOpt,
    store: str = StoreOpt,
    config: Path = ConfigOpt,
) -> None:
    """Delivered messages still without an AppRec after the configured time."""
    now = _now()
    cfg = _config(ctx, config)
    try:
        limit = parse_duration(after) if after else cfg.apprec_limit
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with _open(ctx, store, cfg) as st:
        msgs = st.overdue_apprecs(now, after=limit)
    if as_json:
        src = _source(ctx, store, cfg)
        print_json({"source": src, "limit_s": int(limit.total_seconds()), "messages": [
            {**message_json(m, now),
             "overdue_s": int((now - (m.gen_date or m.created_at) - limit).total_seconds())} for m in msgs]})
        return
    if not msgs:
        console.print(f"no delivered message is waiting for its AppRec longer than {span(limit)}")
        return
    print_table(f"{len(msgs)} message(s) without an AppRec after {span(limit)}",
                (("id", ID), ("state", ID), ("type", LINE), ("from -> to", ID), ("sent (UTC)", ID),
                 ("overdue by", ID)),
                [(m.short_id, _state_cell(m.state.value), escape(m.msg_type or "?"), _parties(m),
                  (m.gen_date or m.created_at).strftime("%m-%d %H:%M"),
                  span(now - (m.gen_date or m.created_at) - limit))
                 for m in msgs])
