"""Conformance: profiles, catalogue, official packs, matrix logic, and the replayed 2007 campaign."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import pytest

from hub.conformance import matrix as mx
from hub.conformance.campaign import load_campaign
from hub.conformance.catalogue import cases_for, message_type, message_types
from hub.conformance.evidence import CaseRecord, Evidence
from hub.conformance.profiles import CATEGORIES, VENDORS_DIR, load_profiles
from hub.paths import shared_dir

CAMPAIGN_2007 = VENDORS_DIR / "campaign-elin-k-2007.toml"
ENGINE = all(importlib.util.find_spec(m) for m in ("hub.validation.validate", "hub.messages.apprec"))
needs_engine = pytest.mark.skipif(not ENGINE, reason="the Validator / AppRec reader have not landed yet")


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
        assert dialog[f"Case1-{n}.xml"].codes == ("E36",)
    assert dialog["Case1-15.xml"].codes == ("E35",)
    for n in ("16a", "16b", "16c"):
        assert dialog[f"Case1-{n}.xml"].status == "2"
    assert dialog["Case1-17a.xml"].codes == dialog["Case1-17b.xml"].codes == ("E30",)
    assert dialog["Case1.xml"].status == "1"
    plo = [c for c in acceptance_cases(reference) if c.pack.family == "PLO" and c.criterion == "1-12"]
    assert plo and all(c.expect.codes == ("E35",) for c in plo)
    # Dialogmelding 1.0 is a matrix row: its acceptance cases join the M cell when asked for.
    official = [c for c in cases_for(message_type("Dialogmelding:1.0"), "M", official=True) if c.file]
    assert len(official) == len(dialog)


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


# --- the replayed campaign -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    if not ENGINE:
        pytest.skip("the Validator / AppRec reader have not landed yet")
    from hub.conformance.campaign import run_campaign

    tmp = tmp_path_factory.mktemp("campaign")
    ev = Evidence(tmp / "hub.sqlite")
    results = run_campaign(load_campaign(CAMPAIGN_2007), ev, tmp / "exchange", timeout=5.0)
    return ev, results


@needs_engine
def test_replayed_campaign_yields_exactly_the_40_approved_cells(replay, conformance_dir):
    ev, results = replay
    cells = mx.compute(ev, load_profiles())
    got = {(r["message"], r["version"], r["direction"], r["system"], r["approved"])
           for r in csv.DictReader(mx.to_csv(cells).splitlines())}
    want = {(r["message"], r["version"], r["direction"], r["system"], r["approved"])
            for r in _read(conformance_dir / "elin-k-2007-matrix.csv")}
    assert got == want
    assert len(want) == 40
    assert any(r.verdict == "fail" for r in results)  # tested-and-failed sessions happened


@needs_engine
def test_planted_defect_fails_exactly_its_case_with_evidence(replay):
    ev, results = replay
    epi = [r for r in results
           if r.system == "System X" and r.message == "Epikrise:1.0" and r.direction == "S"]
    first, retest = sorted(epi, key=lambda r: r.run_id)
    assert (first.month, first.verdict, retest.verdict) == ("02.07", "fail", "pass")
    assert [c.case_id for c in first.failed] == ["S.content.discharge-diagnosis"]
    failed = first.failed[0]
    assert failed.errors and failed.errors[0]["rule"] == "content.discharge-diagnosis"
    sent = ev.exchanges(first.run_id)
    assert sent and b"Diagnosis" not in ev.blob(sent[0].sha256)


@needs_engine
def test_html_matrix_links_every_cell_to_its_evidence(replay):
    ev, _ = replay
    profiles = load_profiles()
    cells = mx.compute(ev, profiles)
    page = mx.to_html(cells, profiles, ev)
    for c in cells.values():
        assert f'href="#run-{c.run_id}"' in page and f'id="run-{c.run_id}"' in page
    for label in ("Primærlegesystem", "Sykehussystem", "Labsystem"):
        assert label in page
    assert "<script" not in page and "http" not in page.split("<h2>Evidence</h2>")[0]
    assert set(CATEGORIES) >= {p.category for p in profiles.values()}
