"""`hub conformance run|campaign|matrix|cases|systems`: vendor conformance testing."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.cli.common import JsonOpt, console, err_console, fail, print_json, print_table
from hub.config import home

conformance_app = typer.Typer(help="Vendor conformance: test catalogue, runs, campaigns, approval matrix.")

# --store as in every other command (--db: its old name, still taken)
DbOpt = typer.Option(None, "--store", "--db", help="Evidence database (default HUB_HOME/hub.sqlite).")


def _evidence(db: Path | None):  # noqa: ANN202 - lazy import keeps `hub --help` fast
    from hub.conformance.evidence import Evidence

    return Evidence(db)


def _work() -> Path:
    return home() / "conformance" / "exchange"


@conformance_app.command("systems")
def systems(as_json: bool = typer.Option(False, "--json")) -> None:
    """The vendor profiles: system, release, category, HER-id and claimed message/direction cells."""
    from hub.conformance.profiles import load_profiles

    ps = load_profiles().values()
    if as_json:
        print_json([{"name": p.name, "version": p.version, "category": p.category, "her_id": p.her_id,
                     "claims": [f"{c.message}:{c.direction}" for c in p.claims]} for p in ps])
        return
    print_table("Systems", ["system", "release", "category", "HER-id", "claims", "defects"],
                [(p.name, p.version, p.category_label, p.her_id, len(p.claims), len(p.defects)) for p in ps])


@conformance_app.command("cases")
def cases(message: str = typer.Option(..., "--message", "-m", help="e.g. Epikrise:1.0"),
          direction: str = typer.Option("M", "--direction", "-d"),
          official: bool = typer.Option(False, "--official", help="Include the official packs."),
          as_json: bool = JsonOpt) -> None:
    """The catalogue's cases of one cell."""
    from hub.conformance.catalogue import cases_for, message_type

    try:
        mt = message_type(message)
    except KeyError as exc:
        fail(str(exc))
        raise
    found = cases_for(mt, direction.upper(), official=official)
    if as_json:
        print_json({"cell": f"{mt.key} {direction.upper()}", "cases": [
            {"id": c.id, "title": c.title, "expected": c.expect.describe() if c.expect else None,
             "source": c.source, "needs": c.requires or None} for c in found]})
        return
    print_table(f"{mt.key} {direction}", ["case", "title", "expected", "source", "needs"],
                [(c.id, c.title, c.expect.describe() if c.expect else "", c.source, c.requires or "")
                 for c in found])


VENDOR_TIMEOUT = 300.0  # a person makes the system send: minutes, not seconds
SIMULATED_TIMEOUT = 5.0


@conformance_app.command("run")
def run(system: str = typer.Option(None, "--system", "-s", help="A bundled (simulated) system."),
        profile_file: Path = typer.Option(None, "--profile", "-p", dir_okay=False,
                                          help="A vendor's profile (TOML like fixtures/vendors/systems/*)."),
        endpoint: str = typer.Option(None, "--endpoint", "-e",
                                     help="folder:DIR (plain KITH XML in DIR/in and DIR/out),"
                                          " http(s)://… or mailto:ADDRESS (ebXML over HTTP or SMTP,"
                                          " CPA from --cpp, --cpa or the profile); overrides the"
                                          " profile's"),
        message: list[str] = typer.Option(None, "--message", "-m", help="e.g. Epikrise:1.0 (repeatable)"),
        direction: str = typer.Option(None, "--direction", "-d", help="S or M (default both)"),
        month: str = typer.Option(None, help="MM.YY the run counts for (default this month)"),
        official: bool = typer.Option(False, "--official", help="Include the official test packs."),
        simulate: bool = typer.Option(None, "--simulate/--no-simulate",
                                      help="Start the simulated system (default: yes for --system, no for"
                                           " --profile: the vendor's own system answers)."),
        timeout: float = typer.Option(None, help=f"Seconds to wait for each answer (default"
                                                 f" {SIMULATED_TIMEOUT:g} simulated, {VENDOR_TIMEOUT:g} for a"
                                                 f" vendor's own system: a person may be in the loop)."),
        transport: str = typer.Option(None, "--transport", "-t",
                                      help="folder | http | smtp (ebXML on 127.0.0.1); default: profile's"),
        cpp: Path = typer.Option(None, "--cpp", exists=True, dir_okay=False,
                                 help="The vendor's CPP (ebXML endpoints): the CPA is made from it."),
        cpa: Path = typer.Option(None, "--cpa", exists=True, dir_okay=False,
                                 help="A CPA between the test centre (HER 86001) and the system,"
                                      " used as is: its endpoints are the system's (--endpoint may be"
                                      " left out) and the test centre's (the mailbox for mailto:)."),
        listen: int = typer.Option(0, "--listen", min=0, max=65535,
                                   help="Port of the test centre's ebXML MSH on 127.0.0.1, its HTTP or"
                                        " (mailto:) SMTP listener (default: any; a fixed one keeps the"
                                        " CPA the same from run to run)."),
        smtp: str = typer.Option(None, "--smtp", metavar="HOST[:PORT]",
                                 help="mailto: endpoints: the SMTP server the runner submits its mail to"
                                      " (the system's mail server or a smarthost; port 25 by default;"
                                      " STARTTLS when it offers it)."),
        smtp_ca: Path = typer.Option(None, "--smtp-ca", exists=True, dir_okay=False,
                                     help="PEM trust anchors for --smtp: STARTTLS is then required and the"
                                          " server's certificate checked."),
        mailbox: str = typer.Option(None, "--mailbox", metavar="ADDRESS",
                                    help="mailto: endpoints: the test centre's address, its mailto: endpoint"
                                         " in the CPA and the one recipient its SMTP listener takes"
                                         " (default ebms-runner@conformance.test; from the CPA with --cpa)."),
        as_json: bool = typer.Option(False, "--json", help="Print the verdicts as JSON on stdout."),
        db: Path = DbOpt) -> None:
    """Run the catalogue against one system's claimed cells; store the evidence.

    Exit 0 when every counted case passed, 1 when any failed, 2 for usage errors."""
    from rich.progress import Progress

    from hub.conformance.campaign import Session, run_session_group
    from hub.conformance.catalogue import message_type
    from hub.conformance.profiles import Claim, ProfileError, find_profile, load_profile
    from hub.conformance.runner import Runner

    if (system is None) == (profile_file is None):
        fail("name the system under test: --system NAME or --profile FILE (one of them)")
    try:
        profile = load_profile(profile_file) if profile_file else find_profile(system)
        keys = [message_type(m).key for m in message] if message else None
    except (ProfileError, KeyError, OSError, ValueError) as exc:
        fail(str(exc))
        raise
    if direction and direction.upper() not in ("S", "M"):
        fail(f"direction {direction!r} is not S or M")
    if simulate is None:
        simulate = profile_file is None
    dirs = [direction.upper()] if direction else ["S", "M"]
    cells = [c for c in profile.claims if c.direction in dirs and (keys is None or c.message in keys)]
    if keys and not cells:  # an explicit request runs even cells the profile does not claim
        cells = [Claim(k, d) for k in keys for d in dirs]
    if not cells:
        fail(f"{profile.name} claims none of the requested cells")
    timeout = timeout if timeout is not None else (SIMULATED_TIMEOUT if simulate else VENDOR_TIMEOUT)
    evidence = _evidence(db)
    out = err_console if as_json else console
    with Progress(console=out, transient=True) as bar:
        task = bar.add_task(profile.name, total=None)
        pki = None
        ebxml = not simulate and (cpa is not None or _is_ebxml(endpoint or profile.endpoint.address or ""))
        if not simulate and (profile.certificate or ebxml):
            # the test network's PKI issues the system's test certificate (kept under HUB_HOME)
            from hub.conformance.profiles import load_profiles
            from hub.conformance.runner import default_pki_dir
            from hub.conformance.trust import network_pki

            pki = network_pki(default_pki_dir(), {**load_profiles(), profile.name: profile})
            out.print(f"Test PKI (the system's signing certificate and key, the test CA): {pki.dir}")
        runner = Runner(evidence, month=month, timeout=timeout, official=official, pki=pki,
                        quiet=0.15 if simulate else min(timeout, 30.0), person=not simulate,
                        progress=lambda label: bar.update(task, advance=1, description=label))
        sessions = [Session(runner.month, profile.name, c.message, c.direction) for c in cells]
        try:
            if simulate:
                results = run_session_group(runner, profile, sessions, _work(), simulate=True,
                                            transport=transport or _transport_of(endpoint))
            elif ebxml:
                from hub.conformance.vendor_ebms import MailRelay, VendorEbmsExchange

                # a CPA given whole names the system's endpoint itself; the profile's is only a default
                url = endpoint or (None if cpa else profile.endpoint.address)
                exchange = VendorEbmsExchange(_work() / profile.slug, pki, profile, url,  # type: ignore[arg-type]
                                              cpp=cpp.read_bytes() if cpp else None,
                                              cpa=cpa.read_bytes() if cpa else None, port=listen,
                                              announce=_announcer(profile, out),
                                              smtp=MailRelay.parse(smtp, smtp_ca) if smtp else None,
                                              mailbox=mailbox)
                exchange.ack_wait = timeout
                listener = exchange.url if exchange.url.startswith("http") else \
                    f"{exchange.url} (SMTP on 127.0.0.1:{exchange.listener.port})"
                relay = f", mail through {smtp}" if exchange.transport == "smtp" else ""
                out.print(f"Testing {profile.name} {profile.version} (HER-id {profile.her_id}) over ebXML at"
                          f" {exchange.endpoint}{relay}: the test centre's MSH listens at {listener}; CPA"
                          f" {exchange.cpa.cpa_id} in {exchange.root / 'cpa.xml'}; {timeout:g} s per answer.")
                try:
                    results = [runner.run_cell(profile, exchange, message_type(s.message), s.direction)
                               for s in sessions]
                finally:
                    exchange.close()
            else:
                exchange = _vendor_exchange(profile, endpoint, bar, task, out)
                out.print(f"Testing {profile.name} {profile.version} (HER-id {profile.her_id}):"
                          f" messages for the system in {exchange.root / 'in'}, everything it sends into"
                          f" {exchange.root / 'out'}; {timeout:g} s per answer.")
                results = [runner.run_cell(profile, exchange, message_type(s.message), s.direction)
                           for s in sessions]
        except ValueError as exc:
            fail(str(exc))
            raise
    _report(profile.name, results, as_json)
    if any(r.verdict != "pass" for r in results):
        raise typer.Exit(1)


def _is_ebxml(endpoint: str) -> bool:
    return endpoint.startswith(("http://", "https://", "mailto:"))


def _transport_of(endpoint: str | None) -> str | None:
    if endpoint is None:
        return None
    from hub.conformance.runner import parse_endpoint

    return parse_endpoint(endpoint)[0]


def _vendor_exchange(profile, endpoint: str | None, bar, task, out):  # noqa: ANN001, ANN202 - rich/lazy types
    """The vendor's own system's folder (plain KITH XML), and how a person is told what to do."""
    from hub.conformance.plain_folder import PlainFolderExchange
    from hub.conformance.runner import parse_endpoint

    kind, where = (parse_endpoint(endpoint) if endpoint
                   else (profile.endpoint.transport, profile.endpoint.address))
    if kind != "folder":
        fail(f"endpoint {endpoint or kind!r}: a vendor's own system is reached through a folder (folder:DIR)"
             " or ebXML over http(s)://")
    root = Path(where) if where else _work() / profile.slug

    def countdown(left: float) -> None:
        bar.update(task, description=f"waiting for the system: {int(left) // 60}:{int(left) % 60:02d} left")

    return PlainFolderExchange(root, announce=_announcer(profile, out), countdown=countdown)


def _announcer(profile, out):  # noqa: ANN001, ANN202 - rich/lazy types
    """How a person at the system is told what to make it send."""

    def announce(order: dict, path: Path) -> None:
        p = order["patient"]
        out.print(f"[bold]{order['case']}[/]: make {profile.name} send [bold]{order['message']}"
                  f" {order['version']}[/]\n"
                  + (f"    enter     {order['enter']}\n" if order.get("enter") else "") +
                  f"    patient   {p['fnr']} {p['name']}\n"
                  f"    to        HER-id {order['receiver_her']} ({order.get('receiver_name', '')})\n"
                  f"    from      HER-id {order['sender_her']} ({profile.name})\n"
                  f"    send to   {order['send_to']} (a .xml file)\n"
                  f"    order     {path}")

    return announce


def _report(system: str, results: list, as_json: bool) -> None:  # noqa: ANN001
    if as_json:
        print_json({"system": system, "cells": [
            {"message": r.message.rpartition(":")[0], "version": r.message.rpartition(":")[2],
             "direction": r.direction, "verdict": r.verdict, "run_id": r.run_id,
             "cases": [{"id": c.case_id, "verdict": c.verdict, "expected": c.expected,
                       "observed": c.observed, "criterion": c.source, "findings": c.errors}
                      for c in r.cases]}
            for r in results]})
        return
    for r in results:
        colour = "green" if r.verdict == "pass" else "red"
        console.print(f"[{colour}]{r.verdict.upper()}[/] {r.system} {r.message} {r.direction}"
                      f" (run {r.run_id})")
        for c in r.failed:
            console.print(f"    {c.case_id}: expected {c.expected or '-'}, got {c.observed or '-'}")
        manual = [c.case_id for c in r.cases if c.verdict == "manual"]
        if manual:
            console.print(f"    to confirm by the tester: {', '.join(manual)}"
                          f" (hub conformance confirm {r.run_id} CASE pass|fail)")


@conformance_app.command("confirm")
def confirm(run_id: int = typer.Argument(..., help="The run (its number in the run's output)."),
            case: str = typer.Argument(..., help="A manual case of the run, e.g. M.manual.display"),
            verdict: str = typer.Argument(..., help="pass | fail"),
            note: str = typer.Option(None, "--note", help="What the tester saw (kept in the evidence)."),
            db: Path = DbOpt) -> None:
    """The tester's answer to a criterion only a person can judge (display, print, import)."""
    evidence = _evidence(db)
    try:
        evidence.run(run_id)
    except KeyError:
        fail(f"no run {run_id} in {evidence.path}")
    try:
        evidence.confirm(run_id, case, verdict, note)
    except (KeyError, ValueError) as exc:
        fail(str(exc.args[0]) if exc.args else str(exc))
    left = evidence.open_manual(run_id)
    rest = f"; still to confirm: {', '.join(left)}" if left else "; every manual criterion answered"
    console.print(f"run {run_id} {case}: {verdict}" + (f" ({note})" if note else "") + rest)


@conformance_app.command("campaign")
def campaign(file: Path = typer.Argument(..., exists=True, dir_okay=False),
             timeout: float = typer.Option(5.0), db: Path = DbOpt, as_json: bool = JsonOpt) -> None:
    """Replay a campaign file (fixtures/vendors/campaign-*.toml) against the simulated systems.
    Exit 1 when a session did not go as the file records (`expect`), listing each one."""
    from rich.progress import Progress

    from hub.conformance.campaign import load_campaign, run_campaign, surprises

    c = load_campaign(file)
    evidence = _evidence(db)
    pairs = []

    def done(s, r) -> None:  # noqa: ANN001 - Session, CellResult
        pairs.append((s, r))
        bar.update(task, advance=1, description=f"{s.month} {s.system}")

    with Progress(console=err_console if as_json else console, transient=True) as bar:
        task = bar.add_task(c.name, total=len(c.sessions))
        results = run_campaign(c, evidence, _work(), timeout=timeout, on_result=done)
    passed = sum(r.verdict == "pass" for r in results)
    odd = surprises(pairs)
    if as_json:
        print_json({"campaign": c.name, "sessions": [
            {"month": s.month, "system": s.system, "message": s.message, "direction": s.direction,
             "verdict": r.verdict, "recorded": s.expect, "as_recorded": r.verdict == s.expect,
             "run_id": r.run_id} for s, r in pairs], "passed": passed, "not_as_recorded": len(odd)})
        if odd:
            raise typer.Exit(1)
        return
    console.print(f"{c.name}: {len(results)} sessions, {passed} passed, {len(results) - passed} failed;"
                  f" {len(results) - len(odd)} as recorded, {len(odd)} not")
    for x in odd:
        console.print(f"  [red]NOT AS RECORDED[/] {x.describe()}")
    if odd:
        raise typer.Exit(1)


@conformance_app.command("matrix")
def matrix(fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json | html"),
           campaign: str = typer.Option(None, help="Only runs of this campaign (its name)."),
           output: Path = typer.Option(None, "--out", "--output", "-o", help="Write to a file."),
           db: Path = DbOpt) -> None:
    """Systems x message/version x S/M -> approval month (MM.YY), grouped by category."""
    from hub.conformance import matrix as mx
    from hub.conformance.profiles import load_profiles

    evidence = _evidence(db)
    profiles = load_profiles()
    cells = mx.compute(evidence, profiles, campaign=campaign)
    if fmt == "table":
        # narrower than the grid (15 systems): a compact form that an 80-column terminal can show
        console.print(mx.to_rich(cells, profiles, width=console.width))
        return
    render = {"csv": lambda: mx.to_csv(cells), "json": lambda: mx.to_json(cells),
              "html": lambda: mx.to_html(cells, profiles, evidence, campaign=campaign)}.get(fmt)
    if render is None:
        fail(f"unknown format {fmt!r} (table, csv, json, html)")
        raise typer.Exit(2)
    text = render()
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    app.add_typer(conformance_app, name="conformance")
