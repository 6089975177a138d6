"""`hub cpa show FILE|ID` and `hub cpa check RECEIVER`: what a CPA says, and what sending would use now."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from cryptography import x509

from hub.cli.common import console, fail, print_json, print_table
from hub.config import load_settings
from hub.ebxml.cpa import Cpa, CpaRepository, load_cpa_file, plan_send
from hub.ebxml.envelope import parse_time

cpa_app = typer.Typer(help="ebXML CPAs: show one, dry-run what sending to a receiver would use.",
                      no_args_is_help=True)


def _cpa_dir(option: Path | None) -> Path:
    if option is not None:
        return option
    configured = load_settings().get("cpa_dir")
    if not configured:
        fail("no CPA folder: give --cpa-dir or set \"cpa_dir\" in HUB_HOME/settings.json")
    return Path(configured)


def _cert(c: x509.Certificate | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
            "serial": format(c.serial_number, "x"), "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat()}


def describe(cpa: Cpa) -> dict[str, Any]:
    """Everything `cpa show` prints, as plain data."""
    parties = []
    for p in cpa.parties:
        channels = []
        for ch in p.channels.values():
            tr, de = p.transport_of(ch), p.doc_exchange_of(ch)
            rel = de.sender if de else None
            channels.append({
                "id": ch.channel_id,
                "protocol": tr.receiver_protocol if tr else None,
                "endpoints": [u for u, _ in tr.endpoints] if tr else [],
                "ackRequested": ch.ack_requested, "duplicateElimination": ch.duplicate_elimination,
                "syncReplyMode": ch.sync_reply_mode,
                "retries": rel.retries if rel else None,
                "retryInterval": str(rel.retry_interval) if rel else None,
                "persistDuration": str(rel.persist_duration) if rel and rel.persist_duration else None,
                "signatureAlgorithm": de.signature_algorithm if de else None,
            })
        parties.append({
            "name": p.name, "her_id": p.her_id, "party_ids": [f"{t}:{v}" for t, v in p.party_ids],
            "roles": [{"role": r.role, "service": r.service, "send": r.actions("send"),
                       "receive": r.actions("receive")} for r in p.roles],
            "channels": channels,
            "signing_certificate": _cert(p.signing_certificate()),
            "encryption_certificate": _cert(p.encryption_certificate()),
        })
    return {"cpa_id": cpa.cpa_id, "kind": cpa.kind, "status": cpa.status,
            "start": cpa.start.isoformat() if cpa.start else None,
            "end": cpa.end.isoformat() if cpa.end else None,
            "valid_now": cpa.valid_at(datetime.now(UTC)), "source": cpa.source, "parties": parties}


@cpa_app.command("show")
def show(
    what: str = typer.Argument(..., help="a CPA/CPP file, or a CPAId in the CPA folder"),
    cpa_dir: Path | None = typer.Option(None, "--cpa-dir", help="folder of CPA files (default: settings)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Parties, roles, services/actions, channels, endpoints, certificates, reliability, validity."""
    path = Path(what)
    if path.is_file():
        try:
            cpa = load_cpa_file(path)
        except ValueError as exc:
            fail(str(exc))
    else:
        repo = CpaRepository.load_dir(_cpa_dir(cpa_dir))
        found = repo.get(what)
        if found is None:
            fail(f"no CPA with id {what!r} in the CPA folder ({len(repo)} CPAs)")
        cpa = found  # type: ignore[assignment]
    d = describe(cpa)
    if as_json:
        print_json(d)
        return
    console.print(f"[bold]{d['kind']} {d['cpa_id']}[/]  status {d['status']}  "
                  f"valid {d['start']} .. {d['end']}"
                  f"  ({'valid now' if d['valid_now'] else 'NOT valid now'})")
    for p in d["parties"]:
        console.print(f"\n[bold]{p['name']}[/]  HER {p['her_id']}  ({', '.join(p['party_ids'])})")
        print_table("roles", ["role", "service", "can send", "can receive"],
                    [(r["role"], r["service"], " ".join(r["send"]), " ".join(r["receive"]))
                     for r in p["roles"]])
        print_table("channels", ["channel", "protocol", "endpoint", "ack", "dup.elim", "sync", "retries",
                                 "interval", "persist", "signature"],
                    [(c["id"], c["protocol"], " ".join(c["endpoints"]), c["ackRequested"],
                      c["duplicateElimination"], c["syncReplyMode"], c["retries"], c["retryInterval"],
                      c["persistDuration"], (c["signatureAlgorithm"] or "").rsplit("#", 1)[-1])
                     for c in p["channels"]])
        for kind in ("signing_certificate", "encryption_certificate"):
            c = p[kind]
            console.print(f"{kind.replace('_', ' ')}: " + (f"{c['subject']} (serial {c['serial']}, "
                                                           f"{c['not_before'][:10]}..{c['not_after'][:10]})"
                                                           if c else "none"))


@cpa_app.command("check")
def check(
    receiver: str = typer.Argument(..., help="the receiver's HER-id"),
    our_her: str | None = typer.Option(None, "--from", help="our HER-id (default: settings her_id, or the "
                                       "other party of the receiver's only CPA)"),
    service: str | None = typer.Option(None, "--service"),
    action: str | None = typer.Option(None, "--action"),
    at: str | None = typer.Option(None, "--at", help="a moment other than now (xs:dateTime)"),
    cpa_dir: Path | None = typer.Option(None, "--cpa-dir", help="folder of CPA files (default: settings)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Dry run: the CPA, endpoint, certificates and retries that sending to RECEIVER would use now."""
    when = parse_time(at) if at else datetime.now(UTC)
    repo = CpaRepository.load_dir(_cpa_dir(cpa_dir))
    ours = our_her or load_settings().get("her_id")
    if ours is None:
        candidates = {p.her_id for c in repo if c.party(receiver) and c.valid_at(when)
                      for p in c.parties if p.her_id and p.her_id != receiver}
        if len(candidates) != 1:
            fail(f"give --from: HER {receiver} has valid CPAs with {sorted(candidates) or 'nobody'}")
        ours = candidates.pop()
    plan = plan_send(repo, str(ours), receiver, when, service, action)
    d = {
        "from": str(ours), "receiver": receiver, "at": when.isoformat(),
        "cpa_id": plan.cpa_id, "source": plan.cpa.source if plan.cpa else "register defaults (no CPA)",
        "endpoints": plan.endpoints, "encryption_certificate": _cert(plan.encryption_certificate),
        "receiver_signing_certificate": _cert(plan.signing_certificate),
        "retries": plan.reliability.retries, "retry_interval": str(plan.reliability.retry_interval),
        "persist_duration": (str(plan.reliability.persist_duration)
                             if plan.reliability.persist_duration else None),
        "ack_requested": plan.ack_requested, "duplicate_elimination": plan.duplicate_elimination,
        "sync_reply_mode": plan.sync_reply_mode, "signature_algorithm": plan.signature_algorithm,
        "problems": repo.problems,
    }
    if as_json:
        print_json(d)
        return
    print_table(f"sending {ours} -> {receiver} at {when:%Y-%m-%d %H:%M}Z", ["what", "value"], [
        (k.replace("_", " "),
         v if not isinstance(v, dict) else f"{v['subject']} (until {v['not_after'][:10]})")
        for k, v in d.items() if k not in ("from", "receiver", "at")])


def register(app: typer.Typer) -> None:
    app.add_typer(cpa_app, name="cpa")
