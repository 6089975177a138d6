"""Conformance: profiles, catalogue, official packs, matrix logic, and the replayed 2007 campaign."""

from __future__ import annotations

import csv
import json
import re
import tomllib
from pathlib import Path

import pytest

from hub.conformance import matrix as mx
from hub.conformance.campaign import load_campaign
from hub.conformance.catalogue import cases_for, message_type, message_types
from hub.conformance.evidence import CaseRecord, Evidence
from hub.conformance.profiles import VENDORS_DIR, Profile, load_profiles, parse_profile
from hub.paths import shared_dir

CAMPAIGN_2007 = VENDORS_DIR / "campaign-elin-k-2007.toml"


@pytest.fixture(scope="session")
def conformance_dir() -> Path:
    """`../shared/conformance` (the 2007 matrix as data), or skip: it is not part of the repository."""
    s = shared_dir()
    if s is None or not (s / "conformance").is_dir():
        pytest.skip("../shared/conformance is not present; matrix oracle tests skipped")
    return s / "conformance"


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


# --- profiles and catalogue ----------------------------------------------------------------------------


def test_profiles_cover_the_13_systems_of_2007_with_their_categories(conformance_dir):
    profiles = load_profiles()
    label = {p.name: p.category_label for p in profiles.values()}
    systems = _read(conformance_dir / "elin-k-2007-systems.csv")
    assert len(systems) == 13
    for row in systems:
        assert label.get(row["system"]) == row["category"], row["system"]
    assert any(p.category == "nursing" for p in profiles.values())


def test_every_claim_and_campaign_session_names_a_catalogue_cell():
    keys = {mt.key for mt in message_types()}
    for p in load_profiles().values():
        assert {c.message for c in p.claims} <= keys, p.name
    c = load_campaign(CAMPAIGN_2007)
    assert {s.message for s in c.sessions} <= keys
    assert len(c.sessions) > 40  # the replay includes failed sessions


def test_catalogue_has_content_and_battery_cases_per_direction():
    epi = message_type("Epikrise:1.0")
    s_ids = {c.id for c in cases_for(epi, "S")}
    assert "S.content.discharge-diagnosis" in s_ids and "S.msgid" in s_ids
    assert "S.content.referral-reason" in {c.id for c in cases_for(message_type("Henvisning:0.91"), "S")}
    m = {c.variant: c.expect for c in cases_for(epi, "M")}
    assert m["not-well-formed"].codes == ("T01",) and m["unknown-receiver"].status is None
    assert m["msgid-not-uuid"].codes == ("E10",) and m["revoked-certificate"].codes == ("S03",)


# --- official packs ------------------------------------------------------------------------------------


def test_acceptance_test_cases_load_with_the_criterion_codes(reference):
    from hub.conformance.official import acceptance_cases

    dialog = {c.path.name: c.expect for c in acceptance_cases(reference) if c.pack.family == "Dialogmelding"}
    assert dialog["Case1-2.xml"].codes == ("T01",)
    for n in ("14a", "14b", "14c"):
        assert dialog[f"Case1-{n}.xml"].codes[0] == "E36"
    assert dialog["Case1-15.xml"].codes == ("E35",)
    for n in ("16a", "16b", "16c"):
        assert dialog[f"Case1-{n}.xml"].status == "2"
    assert dialog["Case1-17a.xml"].codes == dialog["Case1-17b.xml"].codes == ("E30",)
    assert dialog["Case1.xml"].status == "1"
    plo = [c for c in acceptance_cases(reference) if c.pack.family == "PLO" and c.criterion == "1-12"]
    assert plo and all(c.expect.codes == ("E35",) for c in plo)
    # Dialogmelding 1.0 is a matrix row: its acceptance cases join the M cell when asked for, and so do
    # the Dialogmelding messages of the PLO conversations (a cell takes the pack files of its namespace).
    official = [c for c in cases_for(message_type("Dialogmelding:1.0"), "M", official=True) if c.file]
    assert {c.file.name for c in official if "dialogmelding/" in c.source} == set(dialog)
    assert all("/plo/" in c.source for c in official if "dialogmelding/" not in c.source)
    assert len({c.id for c in official}) == len(official)
    plo = {c.source for c in cases_for(message_type("Innleggelsesrapport:1.5"), "M", official=True) if c.file}
    assert plo and all("Innleggelsesrapport" in s for s in plo)


def test_apprec_sheet_rows_carry_status_and_codes(reference):
    from hub.conformance.official import apprec_sheet, sheet_cases

    rows = {(s.sheet, s.number): s for s in apprec_sheet(reference)}
    assert sum(1 for k in rows if k[0] == "system") == 42 and sum(1 for k in rows if k[0] == "unit") == 9
    assert rows[("system", 21)].expect.status is None
    assert rows[("system", 28)].expect.codes == ("E10",)
    assert set(rows[("system", 16)].expect.codes) == {"T01", "T02", "T99"}
    executable = {c.source for c in sheet_cases(reference) if not c.manual}
    assert {"apprec-sheet#28", "apprec-sheet#34", "apprec-sheet#21"} <= executable


# --- matrix logic --------------------------------------------------------------------------------------


def _run(ev: Evidence, system: str, month: str, verdict: str, ruleset: str = "r1") -> int:
    rid = ev.start_run(system=system, system_version="1", category="gp", message="Epikrise:1.0",
                       direction="S",
                       month=month, transport="folder", ruleset=ruleset, message_fp="m1")
    ev.add_cases(rid, [CaseRecord("S.x", "x", "builtin", verdict)])
    ev.finish_run(rid, verdict)
    return rid


def test_matrix_approval_is_first_pass_after_last_failure_and_stale_on_rule_change(tmp_path):
    ev = Evidence(tmp_path / "e.sqlite")
    _run(ev, "A", "02.07", "fail")
    _run(ev, "A", "05.07", "pass")
    _run(ev, "A", "06.07", "pass")
    _run(ev, "B", "01.07", "pass")
    _run(ev, "B", "03.07", "fail")  # a failed retest withdraws the approval
    _run(ev, "C", "11.06", "pass", ruleset="r0")
    cells = mx.compute(ev, {}, ruleset="r1", fingerprints={"Epikrise:1.0": "m1"})
    assert {k[0]: c.approved for k, c in cells.items()} == {"A": "05.07", "C": "11.06"}
    assert cells[("C", "Epikrise:1.0", "S")].stale and not cells[("A", "Epikrise:1.0", "S")].stale


def test_approval_with_manual_criteria_open_is_marked_like_the_2007_tables_asterisk(tmp_path):
    import io

    from rich.console import Console

    ev = Evidence(tmp_path / "e.sqlite")
    for system, manual in (("System X", "manual"), ("Infodoc", "pass")):  # B's person answered: nothing open
        rid = ev.start_run(system=system, system_version="1", category="gp", message="Epikrise:1.0",
                           direction="M", month="05.07", transport="folder", ruleset="r1", message_fp="m1")
        ev.add_cases(rid, [CaseRecord("M.valid", "x", "builtin", "pass"),
                           CaseRecord("M.display", "shown to the user", "akseptansetest", manual)])
        ev.finish_run(rid, "pass")
    cells = mx.compute(ev, load_profiles(), ruleset="r1", fingerprints={"Epikrise:1.0": "m1"})
    a, b = cells[("System X", "Epikrise:1.0", "M")], cells[("Infodoc", "Epikrise:1.0", "M")]
    assert (a.manual_open, b.manual_open) == (1, 0)
    rows = {r["system"]: r for r in csv.DictReader(mx.to_csv(cells).splitlines())}
    assert (rows["System X"]["manual_open"], rows["Infodoc"]["manual_open"]) == ("1", "")
    assert rows["System X"]["run_id"] == str(a.run_id)
    page = mx.to_html(cells, load_profiles(), ev)
    assert f'href="#run-{a.run_id}">05.07</a> (*)' in page
    assert f'href="#run-{b.run_id}">05.07</a></td>' in page
    out = Console(width=40, file=io.StringIO(), color_system=None)
    out.print(mx.to_rich(cells, load_profiles(), all_systems=False, width=40))
    assert "05.07(*)" in out.file.getvalue() and "manual criteria still open" in out.file.getvalue()
    ev.confirm(a.run_id, "M.display", "pass", note="shown as in the record")  # the tester's answer
    assert mx.compute(ev, load_profiles(), ruleset="r1",
                      fingerprints={"Epikrise:1.0": "m1"})[("System X", "Epikrise:1.0", "M")].manual_open == 0


# --- the replayed campaign, run as a new user would: the CLI with a fresh HUB_HOME ---------------------


@pytest.fixture(scope="module")
def campaign_home(tmp_path_factory) -> Path:
    """`hub conformance campaign` once, in-process, with HUB_HOME in a fresh folder (PKI made there)."""
    from typer.testing import CliRunner

    from hub.cli.main import app

    home = tmp_path_factory.mktemp("hub-home")
    res = CliRunner().invoke(app, ["conformance", "campaign", str(CAMPAIGN_2007), "--timeout", "2"],
                             env={"HUB_HOME": str(home)})
    assert res.exit_code == 0, res.output
    assert "sessions" in res.output
    return home


def _cli(home: Path, *args: str) -> str:
    from typer.testing import CliRunner

    from hub.cli.main import app

    res = CliRunner().invoke(app, ["conformance", *args], env={"HUB_HOME": str(home), "COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    return res.output


def _cells(rows: list[dict[str, str]]) -> set[tuple[str, ...]]:
    return {(r["message"], r["version"], r["direction"], r["system"], r["approved"]) for r in rows}


def test_replayed_campaign_yields_exactly_the_40_approved_cells(campaign_home, conformance_dir):
    # The expected matrix is read here only: the simulated systems act from their profiles.
    got = _cells(list(csv.DictReader(_cli(campaign_home, "matrix", "--format", "csv").splitlines())))
    want = _cells(_read(conformance_dir / "elin-k-2007-matrix.csv"))
    assert len(want) == 40
    assert got == want
    ev = Evidence(campaign_home / "hub.sqlite")
    runs = ev.runs()
    assert len(runs) == len(load_campaign(CAMPAIGN_2007).sessions)
    assert sum(r.verdict == "fail" for r in runs) >= 10  # tested-and-failed sessions happened


def test_security_cases_count_in_the_campaign(campaign_home):
    """Signature and certificate cases ran (not skipped) in every cell that has them."""
    ev = Evidence(campaign_home / "hub.sqlite")
    security = {"S.signature", "S.certificate", "M.bad-signature", "M.expired-certificate",
                "M.revoked-certificate", "M.unknown-ca"}
    # Every AppRec is graded in full: a release that writes its AppRecs wrongly fails these cases too,
    # for that reason and no other.
    writing = {"apprec.issue-date", "apprec.original-id", "apprec.code-system", "apprec.mirrored"}
    seen: dict[str, set[str]] = {}
    for run in ev.runs():
        for c in ev.cases(run.id):
            if c.case_id in security:
                wrong_writing = c.errors and {e["rule"] for e in c.errors} <= writing
                seen.setdefault(c.case_id, set()).add("pass" if wrong_writing else c.verdict)
            if c.verdict == "skip":
                assert c.case_id in ("S.ebxml", "M.ebms-ack"), (run.system, c.case_id)
    assert set(seen) == security
    assert all(v == {"pass"} for v in seen.values()), seen


def test_campaign_runs_hospital_and_lab_systems_over_ebxml(campaign_home):
    """Hospital systems are reached over ebXML on HTTP, lab systems over ebXML on SMTP: their runs
    count the ebXML cases (envelope, Acknowledgment) instead of skipping them."""
    ev = Evidence(campaign_home / "hub.sqlite")
    profiles = load_profiles()
    runs = ev.runs()
    assert {r.transport for r in runs} == {"folder", "http", "smtp"}
    judged: dict[str, int] = {}
    for r in runs:
        assert r.transport == profiles[r.system].endpoint.transport, r.system
        verdicts = {c.case_id: c.verdict for c in ev.cases(r.id)}
        ebxml = {k: v for k, v in verdicts.items() if k in ("S.ebxml", "M.ebms-ack")}  # not in AppRec S
        if r.transport == "folder":
            assert set(ebxml.values()) <= {"skip"}
            continue
        assert "skip" not in ebxml.values(), (r.system, r.message, ebxml)
        judged[r.transport] = judged.get(r.transport, 0) + len(ebxml)
        if r.verdict == "pass":
            assert set(ebxml.values()) <= {"pass"}
    assert judged["http"] >= 5 and judged["smtp"] >= 3, judged
    assert {profiles[r.system].category for r in runs if r.transport != "folder"} == {"hospital", "lab"}


def test_campaign_lists_every_session_not_as_recorded_and_exits_1(campaign_home, tmp_path):
    from typer.testing import CliRunner

    from hub.cli.main import app

    (tmp_path / "c.toml").write_text(
        'name = "history check"\n'
        '[[test]]\nmonth = "02.07"\nsystem = "System X"\nmessage = "Epikrise:1.0"\ndirection = "S"\n'
        '[[test]]\nmonth = "05.07"\nsystem = "System X"\nmessage = "Epikrise:1.0"\ndirection = "S"\n'
        'expect = "fail"\n'
        '[[test]]\nmonth = "05.07"\nsystem = "System X"\nmessage = "Svarrapport Radiologi:1.2"\n'
        'direction = "M"\n', encoding="utf-8")
    res = CliRunner().invoke(app, ["conformance", "campaign", str(tmp_path / "c.toml"), "--timeout", "2",
                                   "--db", str(tmp_path / "e.sqlite")],
                             env={"HUB_HOME": str(campaign_home), "COLUMNS": "250"})
    assert res.exit_code == 1, res.output
    odd = [line for line in res.output.splitlines() if "NOT AS RECORDED" in line]
    assert len(odd) == 2, res.output
    assert "02.07 System X Epikrise:1.0 S: expected pass, got fail" in odd[0]
    assert "S.content.discharge-diagnosis" in odd[0]
    assert "05.07 System X Epikrise:1.0 S: expected fail, got pass" in odd[1]
    assert "1 as recorded, 2 not" in res.output
    js = CliRunner().invoke(app, ["conformance", "campaign", str(tmp_path / "c.toml"), "--timeout", "2",
                                  "--store", str(tmp_path / "e2.sqlite"), "--json"],
                            env={"HUB_HOME": str(campaign_home), "COLUMNS": "250"})
    assert js.exit_code == 1
    got = json.loads(js.stdout)
    assert [(x["month"], x["verdict"], x["as_recorded"]) for x in got["sessions"]] == [
        ("02.07", "fail", False), ("05.07", "pass", False), ("05.07", "pass", True)]
    assert got["not_as_recorded"] == 2 and got["campaign"] == "history check"


def test_cases_in_json():
    from typer.testing import CliRunner

    from hub.cli.main import app

    res = CliRunner().invoke(app, ["conformance", "cases", "-m", "Epikrise:1.0", "--json"])
    got = json.loads(res.stdout)
    assert res.exit_code == 0 and got["cell"] == "Epikrise:1.0 M"
    assert "M.valid" in [c["id"] for c in got["cases"]] and all(c["title"] for c in got["cases"])


def test_campaign_defect_fails_exactly_its_case_with_evidence(campaign_home):
    ev = Evidence(campaign_home / "hub.sqlite")
    epi = [r for r in ev.runs() if (r.system, r.message, r.direction) == ("System X", "Epikrise:1.0", "S")]
    first, retest = sorted(epi, key=lambda r: r.id)
    assert (first.month, first.verdict, retest.month, retest.verdict) == ("02.07", "fail", "05.07", "pass")
    failed = [c for c in ev.cases(first.id) if c.verdict in ("fail", "blocked")]
    assert [c.case_id for c in failed] == ["S.content.discharge-diagnosis"]
    assert failed[0].errors[0]["rule"] == "content.discharge-diagnosis"
    sent = ev.exchanges(first.id)
    assert sent and b"Diagnosis" not in ev.blob(sent[0].sha256)
    assert b"Diagnosis" in ev.blob(ev.exchanges(retest.id)[0].sha256)


def test_matrix_table_and_self_contained_html_link_every_cell_to_its_evidence(campaign_home, tmp_path):
    table = _cli(campaign_home, "matrix", "--format", "table")
    assert "System X" in table and "05.07" in table and "Epikrise 1.0" in table
    out = tmp_path / "matrix.html"
    _cli(campaign_home, "matrix", "--format", "html", "--output", str(out))
    page = out.read_text(encoding="utf-8")
    ev = Evidence(campaign_home / "hub.sqlite")
    cells = mx.compute(ev, load_profiles())
    assert len(cells) == 40
    for c in cells.values():
        assert f'href="#run-{c.run_id}">{c.approved}</a>' in page and f'id="run-{c.run_id}"' in page
    for label in ("Primærlegesystem", "Sykehussystem", "Labsystem"):
        assert label in page
    # The page says what it is: the campaign, when it was made, by which hub.
    from hub import __version__

    about = re.search(r'<p id="about">(.*?)</p>', page).group(1)
    assert "ELIN-k 2007" in about and f"hub {__version__}" in about
    assert re.search(r"Made \d{4}-\d{2}-\d{2} \d{2}:\d{2} UTC", about)
    # Every session, failed ones included, has its evidence on the page and a link to it.
    runs = ev.runs()
    failed = [r for r in runs if r.verdict == "fail"]
    assert len(failed) >= 10
    for r in runs:
        assert f'href="#run-{r.id}">run {r.id}</a>' in page and f'id="run-{r.id}"' in page
    epi = [r for r in failed if (r.system, r.message, r.direction) == ("System X", "Epikrise:1.0", "S")]
    first_epi = min(epi, key=lambda r: r.id)
    section = page[page.index(f'id="run-{first_epi.id}"'):]
    section = section[:section.index("</section>")]
    assert "fail" in section and "content.discharge-diagnosis" in section and "<details>" in section
    # The CSV names the run behind every approval.
    rows = list(csv.DictReader(_cli(campaign_home, "matrix", "--format", "csv").splitlines()))
    assert {int(r["run_id"]) for r in rows} == {c.run_id for c in cells.values()}
    # Self-contained: no scripts, no external style sheets or images, every link an anchor on the page.
    assert "<script" not in page and "<link" not in page and " src=" not in page
    hrefs = re.findall(r'href="([^"]*)"', page)
    assert hrefs and all(h.startswith("#run-") for h in hrefs)
    assert all(f'id="{h[1:]}"' in page for h in hrefs)


def test_matrix_table_is_readable_in_an_80_column_console_and_full_when_wide(campaign_home):
    import io

    from rich.console import Console

    ev = Evidence(campaign_home / "hub.sqlite")
    profiles = load_profiles()
    cells = mx.compute(ev, profiles)

    def render(width: int) -> str:
        console = Console(width=width, file=io.StringIO(), color_system=None)
        console.print(mx.to_rich(cells, profiles, width=width))
        return console.file.getvalue()  # type: ignore[attr-defined]

    wide, narrow, tiny = render(400), render(80), render(40)
    # wide: the full grid, every system a column of one table (one header line names them all)
    assert any(all(n in line for n in ("System X", "Infodoc")) for line in wide.splitlines())
    for text, width in ((narrow, 80), (tiny, 40)):
        assert max(len(line) for line in text.splitlines()) <= width
    # narrow: one table per category, system codes with a legend, every approval month in its row
    for label in ("Primærlegesystem", "Sykehussystem", "Labsystem", "P2 = System X", "L4 = Safir LIS v4.2"):
        assert label in narrow
    rows = narrow.splitlines()
    for c in cells.values():
        assert any(line.startswith(f"│{c.name} {c.version} {c.direction} ") and c.approved in line
                   for line in rows), (c.system, c.message, c.direction)
    # tiny: even the compact tables do not fit; a list of approved cells per system
    assert "System X (Primærlegesystem)" in tiny and "Epikrise 1.0 S: 05.07" in tiny


# --- planted defects: one defect, one failing case ------------------------------------------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    from hub.conformance.trust import network_pki

    return network_pki(tmp_path_factory.mktemp("pki"), load_profiles())


def _planted(defect: dict | None, system: str = "system-x") -> Profile:
    """A system's profile (System X by default) without its own defects, plus the planted one."""
    with (VENDORS_DIR / "systems" / f"{system}.toml").open("rb") as f:
        data = tomllib.load(f)
    data["defect"] = [{"id": "planted", **defect}] if defect else []
    return parse_profile(data)


PLANTED = [
    # (cell, defect, the case(s) it must fail, the error code in their evidence)
    ("Epikrise:1.0", "S", {"kind": "bad-signature"}, "S.signature", "S01"),
    ("Epikrise:1.0", "S", {"kind": "signs-with", "cert": "revoked"}, "S.certificate", "S03"),
    ("Epikrise:1.0", "S", {"kind": "signs-with", "cert": "expired"}, "S.certificate", "S02"),
    ("Epikrise:1.0", "S", {"kind": "signs-with", "cert": "unknown-ca"}, "S.certificate", "S02"),
    ("Henvisning:0.91", "S", {"kind": "msgid-not-uuid"}, "S.msgid", "E10"),
    ("Henvisning:0.91", "S", {"kind": "omit-content", "content": "referral-reason"},
     "S.content.referral-reason", "X99"),
    ("Epikrise:1.0", "M", {"kind": "accepts", "codes": ["S01"]}, "M.bad-signature", "X99"),
    ("Epikrise:1.0", "M", {"kind": "accepts", "codes": ["S03"]}, "M.revoked-certificate", "X99"),
    ("Epikrise:1.0", "M", {"kind": "wrong-code", "code": "S03", "answers": "S02"}, "M.revoked-certificate",
     "X99"),
    ("Epikrise:1.0", "M", {"kind": "no-patient-check"}, "M.unknown-patient", "X99"),
    ("Epikrise:1.0", "M", {"kind": "answers-duplicates"}, "M.duplicate M.duplicate-rejected", "X99"),
    ("Epikrise:1.0", "M", {"kind": "silent", "codes": ["E10"]}, "M.msgid-not-uuid", "X99"),
]


@pytest.mark.parametrize(("message", "direction", "defect", "case", "code"), PLANTED,
                         ids=[f"{p[2]['kind']}-{p[3]}" for p in PLANTED])
def test_planted_defect_fails_exactly_the_case_that_targets_it(tmp_path, network, message, direction,
                                                               defect, case, code):
    from hub.conformance.campaign import Session, run_session_group
    from hub.conformance.runner import Runner

    ev = Evidence(tmp_path / "hub.sqlite")
    results = {}
    for label, d in (("clean", None), ("planted", defect)):
        profile = _planted(d)
        runner = Runner(ev, month="06.07", timeout=2.0, pki=network)
        [results[label]] = run_session_group(runner, profile, [Session("06.07", profile.name, message,
                                                                       direction)], tmp_path / label)
    assert results["clean"].verdict == "pass", [(c.case_id, c.observed) for c in results["clean"].failed]
    planted = results["planted"]
    assert planted.verdict == "fail"
    assert [c.case_id for c in planted.failed] == case.split()
    assert all([e["code"] for e in c.errors] == [code] for c in planted.failed)
    assert ev.exchanges(planted.run_id)  # the messages behind the verdict are kept


# --- a system reached over ebXML on HTTP ---------------------------------------------------------------


def test_system_over_ebxml_http_acknowledges_and_passes_with_ebxml_cases_counted(tmp_path, network):
    from hub.conformance.campaign import Session, run_session_group
    from hub.conformance.runner import Runner

    ev = Evidence(tmp_path / "hub.sqlite")
    profile = _planted(None)
    runner = Runner(ev, month="06.07", timeout=3.0, pki=network)
    cells = [("Epikrise:1.0", "S"), ("Epikrise:1.0", "M"), ("Applikasjons-kvittering:1.0", "S")]
    results = run_session_group(runner, profile, [Session("06.07", profile.name, m, d) for m, d in cells],
                                tmp_path / "ex", transport="http")
    assert [r.verdict for r in results] == ["pass"] * 3, [(r.message, r.failed) for r in results]
    by_id = {c.case_id: c for r in results for c in r.cases}
    assert by_id["S.ebxml"].verdict == by_id["M.ebms-ack"].verdict == "pass"
    assert "ebMS Acknowledgment" in (by_id["M.ebms-ack"].observed or "")
    assert not [c.case_id for r in results for c in r.cases if c.verdict == "skip"]
    assert {ev.run(r.run_id).transport for r in results} == {"http"}


def test_system_over_ebxml_smtp_acknowledges_by_mail_and_passes(tmp_path, network):
    """The same cells over SMTP on 127.0.0.1: packages and Acknowledgments travel as mails."""
    from hub.conformance.campaign import Session, run_session_group
    from hub.conformance.runner import Runner

    ev = Evidence(tmp_path / "hub.sqlite")
    profile = _planted(None)
    runner = Runner(ev, month="06.07", timeout=3.0, pki=network)
    cells = [("Epikrise:1.0", "S"), ("Epikrise:1.0", "M")]
    results = run_session_group(runner, profile, [Session("06.07", profile.name, m, d) for m, d in cells],
                                tmp_path / "ex", transport="smtp")
    assert [r.verdict for r in results] == ["pass"] * 2, [(r.message, r.failed) for r in results]
    by_id = {c.case_id: c for r in results for c in r.cases}
    assert by_id["S.ebxml"].verdict == by_id["M.ebms-ack"].verdict == "pass"
    assert "ebMS Acknowledgment" in (by_id["M.ebms-ack"].observed or "")
    assert {ev.run(r.run_id).transport for r in results} == {"smtp"}
    # A system whose message service never answers by mail fails exactly the acknowledgment case.
    mute = _planted({"kind": "no-ebms-ack"})
    [r] = run_session_group(Runner(ev, month="06.07", timeout=1.0, pki=network), mute,
                            [Session("06.07", mute.name, "Epikrise:1.0", "M")], tmp_path / "mute",
                            transport="smtp")
    assert [c.case_id for c in r.failed] == ["M.ebms-ack"]
    assert r.failed[0].errors[0]["rule"] == "ebxml.acknowledgment"


# --- the official acceptance-test packs, run on receipt --------------------------------------------------


def test_official_pack_cases_run_and_a_planted_fnr_defect_fails_exactly_the_fnr_cases(tmp_path, network,
                                                                                      reference):
    """A nursing system (PLO 1.5) and a hospital system (Epikrise 1.1, Henvisning 1.0) get the pack
    messages of their cells, re-addressed to them; a correct release passes every case, a release that
    takes a named patient without a usable FNR fails exactly the FNR cases (pack and battery)."""
    from hub.conformance.campaign import Session, run_session_group
    from hub.conformance.runner import Runner

    cells = {"omsorg-pluss": ["Innleggelsesrapport:1.5"], "documentarive": ["Epikrise:1.1", "Henvisning:1.0"]}
    ev = Evidence(tmp_path / "hub.sqlite")
    for label, defect in (("clean", None), ("planted", {"kind": "ignores", "codes": ["E30", "E31", "E36"]})):
        results = []
        for system, messages in cells.items():
            profile = _planted(defect, system)
            # the wait ends when the last expected AppRec came: a long limit
            # costs nothing when the system answers, and a loaded machine gets its time
            runner = Runner(ev, month="06.09", timeout=30.0, pki=network, official=True)
            results += run_session_group(runner, profile, [Session("06.09", profile.name, m, "M")
                                                           for m in messages], tmp_path / label,
                                         transport="folder")  # the packs, not ebXML, are tested here
        official = [c for r in results for c in r.cases if c.source.startswith("akseptansetest/")]
        assert len(official) > 50 and all(c.verdict != "skip" for c in official)
        if label == "clean":
            assert [r.verdict for r in results] == ["pass"] * 3, [(c.case_id, c.expected, c.observed)
                                                                  for r in results for c in r.failed]
            continue
        cases = {c.id: c for r in results for c in
                 cases_for(message_type(r.message), "M", official=True)}
        fnr = {cid for cid, c in cases.items()
               if c.topic == "fnr" or c.variant in ("fnr-missing", "fnr-invalid")}
        failed = {c.case_id for r in results for c in r.failed}
        assert failed == fnr
        criteria = {c.split(".")[-1].split("-")[1] for c in failed if "akseptansetest" in c}
        assert criteria >= {"11c", "14a", "14b", "22"}  # PLO, Epikrise 1.1 and Henvisning 1.0 FNR cases
