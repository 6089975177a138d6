"""`hub cpa show FILE|ID`, `hub cpa check RECEIVER`: what a CPA says (every version of its id) and what
sending would use at a moment; `hub ebxml inspect FILE...`: what a receiving MSH would do with a capture."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from cryptography import x509

from hub.cli.common import console, fail, load_config, print_json, print_table
from hub.config import load_settings
from hub.ebxml.cpa import Cpa, CpaRepository, load_cpa_file, plan_send, select, window
from hub.ebxml.envelope import parse_time

cpa_app = typer.Typer(help="ebXML CPAs: show one, dry-run what sending to a receiver would use.",
                      no_args_is_help=True)


def _configured_cpa_dir() -> Path | None:
    """hub.toml's cpa_dir (or the older settings.json entry), when that folder exists."""
    old = load_settings().get("cpa_dir")
    for d in (load_config().cpa_dir, Path(old) if old else None):
        if d is not None and d.is_dir():
            return d
    return None


def _cpa_dir(option: Path | None) -> Path:
    if option is not None:
        return option
    configured = _configured_cpa_dir()
    if configured is None:
        fail("no CPA folder: give --cpa-dir or set cpa_dir in hub.toml")
    return configured  # type: ignore[return-value]


def _at(text: str | None) -> datetime:
    try:
        return parse_time(text) if text else datetime.now(UTC)
    except ValueError:
        fail(f"--at {text!r} is not a time (xs:dateTime, e.g. 2023-11-17T10:08:35Z)")
        raise


def _cert(c: x509.Certificate | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
            "serial": format(c.serial_number, "x"), "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat()}


def versions(repo: CpaRepository | None, cpa: Cpa, at: datetime) -> list[dict[str, Any]]:
    """Every version of the CPA's id (the file given alone when there is no folder), and which applies."""
    found = repo.versions(cpa.cpa_id) if repo is not None else []
    if not any(c.source == cpa.source for c in found):
        found = sorted([*found, cpa], key=lambda c: c.start or datetime.min.replace(tzinfo=UTC))
    chosen = select(found, at)
    return [{"source": c.source, "status": c.status, "window": window(c), "valid_at": c.valid_at(at),
             "applies": c is chosen} for c in found]


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
                "endpoints": [u if t == "allPurpose" else f"{u} ({t})"
                              for u, t in (tr.endpoints if tr else [])],
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
    cpa_dir: Path | None = typer.Option(None, "--cpa-dir", help="folder of CPA files (default: hub.toml)"),
    at: str | None = typer.Option(None, "--at", help="which version applies at this moment (default now)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Parties, roles, services/actions, channels, endpoints, certificates, reliability, validity; every
    version of the CPA's id in the folder, and which one applies --at a time."""
    when = _at(at)
    path = Path(what)
    repo: CpaRepository | None = None
    if path.is_file():
        try:
            cpa = load_cpa_file(path)
        except ValueError as exc:
            fail(str(exc))
        folder = cpa_dir or _configured_cpa_dir()
        repo = CpaRepository.load_dir(folder) if folder is not None else None
    else:
        repo = CpaRepository.load_dir(_cpa_dir(cpa_dir))
        found = repo.get(what, when)
        if found is None:
            fail(f"no CPA with id {what!r} in the CPA folder ({len(repo)} CPAs)")
        cpa = found  # type: ignore[assignment]
    d = describe(cpa)
    d["at"] = when.isoformat()
    d["versions"] = versions(repo, cpa, when)
    if as_json:
        print_json(d)
        return
    console.print(f"[bold]{d['kind']} {d['cpa_id']}[/]  status {d['status']}  "
                  f"valid {d['start']} .. {d['end']}"
                  f"  ({'valid now' if d['valid_now'] else 'NOT valid now'})  {d['source']}")
    print_table(f"versions of {d['cpa_id']} at {when:%Y-%m-%d %H:%M}Z", ["file", "validity (status)", ""],
                [(v["source"], v["window"], "applies" if v["applies"] else
                  "valid" if v["valid_at"] else "not valid") for v in d["versions"]])
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
    our_her: str | None = typer.Option(None, "--from", help="our HER-id (default: hub.toml's her_id, or the "
                                       "other party of the receiver's only CPA)"),
    service: str | None = typer.Option(None, "--service"),
    action: str | None = typer.Option(None, "--action"),
    protocol: str | None = typer.Option(None, "--transport", help="SMTP or HTTP, where the CPA binds both"),
    at: str | None = typer.Option(None, "--at", help="a moment other than now (xs:dateTime)"),
    cpa_dir: Path | None = typer.Option(None, "--cpa-dir", help="folder of CPA files (default: hub.toml)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Dry run: the CPA version, channel, endpoint, packaging, certificates and retries that sending to
    RECEIVER would use now (or --at a time)."""
    when = _at(at)
    repo = CpaRepository.load_dir(_cpa_dir(cpa_dir))
    her = load_config().settings.her_id  # hub.toml's her_id
    ours = our_her or (str(her) if her is not None else load_settings().get("her_id"))
    if ours is None:
        candidates = {p.her_id for c in repo if c.party(receiver) and c.valid_at(when)
                      for p in c.parties if p.her_id and p.her_id != receiver}
        if len(candidates) != 1:
            fail(f"give --from: HER {receiver} has valid CPAs with {sorted(candidates) or 'nobody'}")
        ours = candidates.pop()
    plan = plan_send(repo, str(ours), receiver, when, service, action, protocol)
    d = {
        "from": str(ours), "receiver": receiver, "at": when.isoformat(),
        "cpa_id": plan.cpa_id, "source": plan.cpa.source if plan.cpa else "register defaults (no CPA)",
        "versions": versions(repo, plan.cpa, when) if plan.cpa else [],
        "channel": plan.channel_id, "protocol": plan.protocol,
        "endpoints": plan.endpoints, "error_endpoints": plan.error_endpoints,
        "encrypt": plan.encrypt, "compress": plan.compress,
        "encryption_certificate": _cert(plan.encryption_certificate),
        "receiver_signing_certificate": _cert(plan.signing_certificate),
        "retries": plan.reliability.retries, "retry_interval": str(plan.reliability.retry_interval),
        "persist_duration": (str(plan.reliability.persist_duration)
                             if plan.reliability.persist_duration else None),
        "ack_requested": plan.ack_requested, "duplicate_elimination": plan.duplicate_elimination,
        "sync_reply_mode": plan.sync_reply_mode, "signature_algorithm": plan.signature_algorithm,
        "digest_algorithm": plan.digest_algorithm,
        "problems": repo.problems,
    }
    if as_json:
        print_json(d)
        return
    def cell(v: Any) -> Any:  # noqa: ANN401
        if isinstance(v, dict):
            return f"{v['subject']} (until {v['not_after'][:10]})"
        if isinstance(v, list) and v and isinstance(v[0], dict):  # versions
            return "; ".join(f"{x['window']} {x['source']}" + (" [applies]" if x["applies"] else "")
                             for x in v)
        return v

    print_table(f"sending {ours} -> {receiver} at {when:%Y-%m-%d %H:%M}Z", ["what", "value"], [
        (k.replace("_", " "), cell(v)) for k, v in d.items() if k not in ("from", "receiver", "at")])


ebxml_app = typer.Typer(help="ebXML messages: what a receiving MSH would do with a captured one.",
                        no_args_is_help=True)


@ebxml_app.command("inspect")
def inspect(
    files: list[Path] = typer.Argument(..., help="captured messages: MIME mail (.eml/.msg), HTTP capture, "
                                       "or a bare SOAP envelope"),
    cpa_dir: Path | None = typer.Option(None, "--cpa-dir", help="folder of CPA files (default: hub.toml)"),
    at: str | None = typer.Option(None, "--at", help="when it is received (default: its own Timestamp)"),
    register_files: list[Path] = typer.Option([], "--register", help="address register (.toml/.xml): "
                                              "peers' certificates, endpoints, SHA-1 setting"),
    pki: Path | None = typer.Option(None, "--pki", help="PKI folder holding the receiver's keys"),
    party: str | None = typer.Option(None, "--party", help="the receiver's identity in --pki: its "
                                     "decryption key opens encrypted payloads"),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Parties, CPA version, service/action, envelope signature, payload packaging and (with the
    receiver's key) the payload's own verdict; then the answer: Acknowledgment or MessageError.
    Exit 0 when every file would be accepted, 1 when one would be rejected, 2 on usage errors."""
    from hub.ebxml.inspect import CaptureError, inspect_message, render

    when = _at(at) if at else None
    folder = cpa_dir or _configured_cpa_dir()
    if folder is not None and not folder.is_dir():
        fail(f"--cpa-dir {folder} is not a folder")
    repo = CpaRepository.load_dir(folder) if folder is not None else None
    peers = None
    if register_files:
        from hub.relay.register import RegisterError, load
        from hub.relay.unwrap import RegisterPeers

        try:
            peers = RegisterPeers(load(register_files))
        except (RegisterError, OSError) as exc:
            fail(f"--register: {exc}")
    keys: list[Any] = []
    if party:
        from hub.security.errors import SecurityError
        from hub.security.pki import load_identity

        try:
            keys = list(load_identity(pki or load_config().pki or Path("pki"), party).decryption_keys)
        except (SecurityError, OSError) as exc:
            fail(f"--party {party}: {getattr(exc, 'message', exc)}")
    results = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            fail(f"{f}: {exc.strerror or exc}")
        try:
            results.append(inspect_message(data, source=str(f), cpas=repo, peers=peers, keys=keys,
                                           key_name=party, at=when))
        except CaptureError as exc:
            fail(f"{f}: {exc}")
    if as_json:
        print_json({"cpa_dir": str(folder) if folder else None, "cpa_problems": repo.problems if repo else [],
                    "messages": [r.to_dict() for r in results]})
    else:
        for r in results:
            for line in render(r):
                typer.echo(line)
    raise typer.Exit(0 if all(r.accepted for r in results) else 1)


def register(app: typer.Typer) -> None:
    app.add_typer(cpa_app, name="cpa")
    app.add_typer(ebxml_app, name="ebxml")
