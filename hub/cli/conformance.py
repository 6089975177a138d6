"""`hub conformance run|campaign|matrix|cases|systems`: vendor conformance testing."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.cli.common import console, fail, print_json, print_table
from hub.config import home

conformance_app = typer.Typer(help="Vendor conformance: test catalogue, runs, campaigns, approval matrix.")

DbOpt = typer.Option(None, "--db", help="Evidence database (default HUB_HOME/hub.sqlite).")


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
          official: bool = typer.Option(False, "--official", help="Include the official packs.")) -> None:
    """The catalogue's cases of one cell."""
    from hub.conformance.catalogue import cases_for, message_type

    try:
        mt = message_type(message)
    except KeyError as exc:
        fail(str(exc))
        raise
    print_table(f"{mt.key} {direction}", ["case", "title", "expected", "source", "needs"],
                [(c.id, c.title, c.expect.describe() if c.expect else "", c.source, c.requires or "")
                 for c in cases_for(mt, direction.upper(), official=official)])


@conformance_app.command("run")
def run(system: str = typer.Option(..., "--system", "-s"),
        message: list[str] = typer.Option(None, "--message", "-m", help="e.g. Epikrise:1.0 (repeatable)"),
        direction: str = typer.Option(None, "--direction", "-d", help="S or M (default both)"),
        month: str = typer.Option(None, help="MM.YY the run counts for (default this month)"),
        official: bool = typer.Option(False, "--official", help="Include the official test packs."),
        simulate: bool = typer.Option(True, "--simulate/--no-simulate",
                                      help="Start the simulated system (off: a real vendor on the folder)."),
        timeout: float = typer.Option(5.0, help="Seconds to wait for each answer."),
        transport: str = typer.Option(None, "--transport", "-t",
                                      help="folder | http | smtp (ebXML on 127.0.0.1); default: profile's"),
        db: Path = DbOpt) -> None:
    """Run the catalogue against one system's claimed cells; store the evidence."""
    from rich.progress import Progress

    from hub.conformance.campaign import Session, run_session_group
    from hub.conformance.catalogue import message_type
    from hub.conformance.profiles import Claim, ProfileError, find_profile
    from hub.conformance.runner import Runner

    try:
        profile = find_profile(system)
        keys = [message_type(m).key for m in message] if message else None
    except (ProfileError, KeyError) as exc:
        fail(str(exc))
        raise
    dirs = [direction.upper()] if direction else ["S", "M"]
    cells = [c for c in profile.claims if c.direction in dirs and (keys is None or c.message in keys)]
    if keys and not cells:  # an explicit request runs even cells the profile does not claim
        cells = [Claim(k, d) for k in keys for d in dirs]
    if not cells:
        fail(f"{profile.name} claims none of the requested cells")
    evidence = _evidence(db)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(profile.name, total=None)
        runner = Runner(evidence, month=month, timeout=timeout, official=official,
                        progress=lambda label: bar.update(task, advance=1, description=label))
        sessions = [Session(runner.month, profile.name, c.message, c.direction) for c in cells]
        try:
            results = run_session_group(runner, profile, sessions, _work(), simulate=simulate,
                                        transport=transport)
        except ValueError as exc:
            fail(str(exc))
            raise
    for r in results:
        colour = "green" if r.verdict == "pass" else "red"
        console.print(f"[{colour}]{r.verdict.upper()}[/] {r.system} {r.message} {r.direction}"
                      f" (run {r.run_id})")
        for c in r.failed:
            console.print(f"    {c.case_id}: expected {c.expected or '-'}, got {c.observed or '-'}")
    if any(r.verdict != "pass" for r in results):
        raise typer.Exit(1)


@conformance_app.command("campaign")
def campaign(file: Path = typer.Argument(..., exists=True, dir_okay=False),
             timeout: float = typer.Option(5.0), db: Path = DbOpt) -> None:
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

    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(c.name, total=len(c.sessions))
        results = run_campaign(c, evidence, _work(), timeout=timeout, on_result=done)
    passed = sum(r.verdict == "pass" for r in results)
    odd = surprises(pairs)
    console.print(f"{c.name}: {len(results)} sessions, {passed} passed, {len(results) - passed} failed;"
                  f" {len(results) - len(odd)} as recorded, {len(odd)} not")
    for x in odd:
        console.print(f"  [red]NOT AS RECORDED[/] {x.describe()}")
    if odd:
        raise typer.Exit(1)


@conformance_app.command("matrix")
def matrix(fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json | html"),
           campaign: str = typer.Option(None, help="Only runs of this campaign (its name)."),
           output: Path = typer.Option(None, "--output", "-o", help="Write to a file."),
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
              "html": lambda: mx.to_html(cells, profiles, evidence)}.get(fmt)
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
