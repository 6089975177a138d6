"""A vendor's own system under test: `hub conformance run --profile FILE --endpoint folder:DIR`.

The system is tests/vendor_folder_system.py, a separate process that does not import `hub` and speaks
only plain KITH XML files in DIR/in and DIR/out. A correct release passes; each wrong one fails, with
the case that caught it and the criterion in the evidence.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli.main import app
from hub.paths import SCHEMAS_DIR

VENDOR = Path(__file__).with_name("vendor_folder_system.py")
PROFILE = """\
name = "Folder EPJ"
vendor = "Testleverandør AS"
version = "2.1"
category = "gp"
her_id = 87010
services = [87011]

[endpoint]
transport = "folder"

[[claim]]
message = "Dialogmelding"
version = "1.0"
directions = ["S", "M"]
"""


@pytest.fixture
def vendor(tmp_path: Path) -> Iterator:
    """Start the vendor's system on DIR with a behaviour; stop it (by its pid) afterwards."""
    started: list[tuple[subprocess.Popen, Path]] = []

    def start(behaviour: str) -> Path:
        folder = tmp_path / behaviour
        folder.mkdir()
        proc = subprocess.Popen([sys.executable, str(VENDOR), str(folder), "--her", "87010",
                                 "--service", "87011", "--name", "Folder EPJ", "--schemas", str(SCHEMAS_DIR),
                                 "--behaviour", behaviour, "--poll", "0.02"])
        started.append((proc, folder))
        return folder

    yield start
    for proc, folder in started:
        (folder / "stop").touch()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run(tmp_path: Path, folder: Path, *extra: str) -> tuple[int, dict]:
    profile = tmp_path / "folder-epj.toml"
    profile.write_text(PROFILE, encoding="utf-8")
    res = CliRunner().invoke(app, ["conformance", "run", "--profile", str(profile),
                                   "--endpoint", f"folder:{folder}", "--timeout", "3", "--json", *extra],
                             env={"HUB_HOME": str(tmp_path / "home")})
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.stdout)


def _failed(report: dict) -> dict[str, list[str]]:
    """case id -> the rules of its findings, for every failed case."""
    return {c["id"]: [f["rule"] for f in c["findings"]] for cell in report["cells"] for c in cell["cases"]
            if c["verdict"] == "fail"}


def test_a_correct_vendor_system_passes_both_directions_and_its_order_is_written(tmp_path, vendor):
    folder = vendor("correct")
    code, report = _run(tmp_path, folder)
    assert report["system"] == "Folder EPJ"
    assert {(c["message"], c["version"], c["direction"]) for c in report["cells"]} == {
        ("Dialogmelding", "1.0", "S"), ("Dialogmelding", "1.0", "M")}
    assert _failed(report) == {}, report
    assert code == 0
    counted = [c for cell in report["cells"] for c in cell["cases"] if c["verdict"] == "pass"]
    assert {"M.valid", "M.duplicate", "M.duplicate-rejected", "M.unknown-service", "S.order"} <= {
        c["id"] for c in counted}
    [order] = (folder / "orders").glob("*.json")
    o = json.loads(order.read_text(encoding="utf-8"))
    assert o["message"] == "Dialogmelding" and o["version"] == "1.0" and o["sender_her"] == 87010
    assert len(o["patient"]["fnr"]) == 11 and o["patient"]["name"] and o["receiver_her"]
    assert list((folder / "in").glob("*.xml")) == []  # the system took every message given to it


@pytest.mark.parametrize(("behaviour", "case", "rule"), [
    ("always-ok", "M.schema-invalid", "apprec.answer"),
    ("wrong-original-id", "M.valid", "apprec.original-id"),
    ("no-mirror", "M.valid", "apprec.mirrored"),
    ("mute", "M.valid", "apprec.missing"),
])
def test_a_wrong_vendor_system_fails_with_the_case_that_caught_it(tmp_path, vendor, behaviour, case, rule):
    code, report = _run(tmp_path, vendor(behaviour), "--direction", "M")
    assert code == 1
    failed = _failed(report)
    assert rule in failed.get(case, []), failed
    [cell] = report["cells"]
    assert cell["verdict"] == "fail"
    by_id = {c["id"]: c for c in cell["cases"]}
    assert by_id[case]["criterion"].startswith("apprec-sheet#")


def test_a_vendor_system_that_never_sends_fails_the_delivery_case(tmp_path, vendor):
    code, report = _run(tmp_path, vendor("mute"), "--direction", "S")
    assert code == 1
    assert "S.delivered" in _failed(report)


def test_a_vendor_system_that_answers_apprecs_fails_exactly_the_sheet_13_case(tmp_path, vendor):
    code, report = _run(tmp_path, vendor("answers-apprecs"), "--direction", "S")
    assert code == 1
    assert _failed(report) == {"S.apprec-twice": ["apprec.answered"]}
    [cell] = report["cells"]
    assert {c["id"]: c["verdict"] for c in cell["cases"]}["S.manual.apprec-shown"] == "manual"


def test_the_testers_answer_to_a_manual_criterion_is_kept_and_a_failed_one_fails_the_cell(tmp_path, vendor):
    from hub.conformance import matrix as mx
    from hub.conformance.evidence import Evidence
    from hub.conformance.profiles import load_profile

    code, report = _run(tmp_path, vendor("correct"), "--direction", "M")
    assert code == 0
    [cell] = report["cells"]
    run = str(cell["run_id"])
    ev = Evidence(tmp_path / "home" / "hub.sqlite")
    profiles = {"Folder EPJ": load_profile(tmp_path / "folder-epj.toml")}
    [approved] = mx.compute(ev, profiles).values()
    assert approved.manual_open == 3
    assert set(ev.open_manual(int(run))) == {"M.manual.display", "M.manual.print", "M.manual.import"}
    env = {"HUB_HOME": str(tmp_path / "home")}
    for case in ("M.manual.display", "M.manual.print"):
        res = CliRunner().invoke(app, ["conformance", "confirm", run, case, "pass", "--note", "screenshot 3"],
                                 env=env)
        assert res.exit_code == 0, res.output
    [approved] = mx.compute(ev, profiles).values()
    assert approved.manual_open == 1 and ev.open_manual(int(run)) == ["M.manual.import"]
    assert ev.confirmations(int(run))["M.manual.display"][:2] == ("pass", "screenshot 3")
    case = {c.case_id: c for c in ev.cases(int(run))}["M.manual.display"]
    assert (case.verdict, case.observed) == ("pass", "confirmed by the tester: screenshot 3")
    res = CliRunner().invoke(app, ["conformance", "confirm", run, "M.valid", "pass"], env=env)
    assert res.exit_code == 2 and "no manual case" in res.output
    res = CliRunner().invoke(app, ["conformance", "confirm", run, "M.manual.import", "fail", "--note",
                                   "the rejected Dialogmelding was filed"], env=env)
    assert res.exit_code == 0
    assert mx.compute(ev, profiles) == {}  # the cell is no longer approved


def test_usage_errors_exit_2(tmp_path):
    res = CliRunner().invoke(app, ["conformance", "run", "--endpoint", "folder:x"],
                             env={"HUB_HOME": str(tmp_path)})
    assert res.exit_code == 2
    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE, encoding="utf-8")
    res = CliRunner().invoke(app, ["conformance", "run", "--profile", str(profile), "--endpoint", "gopher:x"],
                             env={"HUB_HOME": str(tmp_path)})
    assert res.exit_code == 2


def test_answer_key_cases_compare_the_entered_case_with_the_packs_fasit(tmp_path, reference):
    """Henvisning 1.0 Sending with the official pack: for each case the tester enters, the message must
    carry what Fasit_case_N has. A harness answers the orders: case 1 with a message carrying exactly the
    key's content (fresh MsgId), case 2 with case 3's content, case 3 not at all."""
    import threading
    import uuid

    from lxml import etree

    keys = reference / "samples" / "akseptansetest" / "henvisning" / "FasitHenvisningSending"
    answer = {"S.fasit.case-1": keys / "Fasit_case_1.xml", "S.fasit.case-2": keys / "Fasit_case_3.xml"}
    folder = tmp_path / "epj"
    stop = threading.Event()

    def harness() -> None:
        seen: set[str] = set()
        while not stop.is_set():
            for order in (folder / "orders").glob("*.json") if (folder / "orders").is_dir() else []:
                case = json.loads(order.read_text(encoding="utf-8"))["case"]
                if case in seen or case not in answer:
                    continue
                seen.add(case)
                root = etree.parse(str(answer[case])).getroot()
                root.find("{*}MsgId").text = str(uuid.uuid4())
                tmp = folder / "out" / f".{case}.part"
                tmp.write_bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
                tmp.rename(folder / "out" / f"{case}.xml")
            stop.wait(0.02)

    profile = tmp_path / "p.toml"
    profile.write_text(PROFILE.replace('message = "Dialogmelding"\nversion = "1.0"',
                                       'message = "Henvisning"\nversion = "1.0"'), encoding="utf-8")
    thread = threading.Thread(target=harness, daemon=True)
    thread.start()
    try:
        res = CliRunner().invoke(app, ["conformance", "run", "--profile", str(profile), "--endpoint",
                                       f"folder:{folder}", "--direction", "S", "--official", "--timeout", "2",
                                       "--json"], env={"HUB_HOME": str(tmp_path / "home")})
    finally:
        stop.set()
        thread.join(timeout=5)
    assert res.exit_code == 1, res.output
    [cell] = json.loads(res.stdout)["cells"]
    fasit = {c["id"]: c for c in cell["cases"] if c["id"].startswith("S.fasit.")}
    assert sorted(fasit) == ["S.fasit.case-1", "S.fasit.case-2", "S.fasit.case-3"]
    assert fasit["S.fasit.case-1"]["verdict"] == "pass", fasit["S.fasit.case-1"]
    rules = {f["rule"] for f in fasit["S.fasit.case-2"]["findings"]}
    assert fasit["S.fasit.case-2"]["verdict"] == "fail" and {"fasit.patient-id", "fasit.diagnoses"} <= rules
    assert [f["rule"] for f in fasit["S.fasit.case-3"]["findings"]] == ["fasit.delivered"]
    assert all(c["criterion"].endswith(".xml") for c in fasit.values())
    orders = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in (folder / "orders").glob("*.json")}
    assert orders["S.fasit.case-1"]["patient"] == {"fnr": "15076500565", "name": "Gundersen, Roland"}
    assert "case 1" in orders["S.fasit.case-1"]["enter"]


def test_a_bundled_system_without_its_simulation_is_tested_like_a_vendors_own(tmp_path):
    """`--system NAME --no-simulate` once crashed in the receiving direction (KeyError on the system's
    service HER-id): now it sends the battery into the system's folder and says where; nobody answers."""
    res = CliRunner().invoke(app, ["conformance", "run", "--system", "System X", "--no-simulate", "-m",
                                   "Epikrise:1.0", "-d", "M", "--timeout", "0.5", "--json"],
                             env={"HUB_HOME": str(tmp_path)})
    assert res.exit_code == 1, res.output
    [cell] = json.loads(res.stdout)["cells"]
    assert {c["id"]: c["verdict"] for c in cell["cases"]}["M.valid"] == "fail"
    folder = tmp_path / "conformance" / "exchange" / "system-x"
    sent = list((folder / "in").glob("*.xml"))
    assert len(sent) >= 10 and sum(b"85021" in p.read_bytes() for p in sent) >= 10  # its service
    assert f"{folder / 'in'}" in res.stderr.replace("\n", "")


# --- copy receivers (AppRec sheet #7-#11, #35-#40): a PLO cell, whose acceptance test has them ------------

PLO_PROFILE = PROFILE + """
[[claim]]
message = "Innleggelsesrapport"
version = "1.5"
directions = ["M"]
"""
COPY_CASES = {"M.copy-primary", "M.copy-copy", "M.copy-both", "M.copy-primary-rejected",
              "M.copy-copy-rejected", "M.copy-both-rejected"}


def _run_plo(tmp_path: Path, folder: Path) -> tuple[int, dict]:
    profile = tmp_path / "folder-epj-plo.toml"
    profile.write_text(PLO_PROFILE, encoding="utf-8")
    res = CliRunner().invoke(app, ["conformance", "run", "--profile", str(profile), "--endpoint",
                                   f"folder:{folder}", "--message", "Innleggelsesrapport:1.5",
                                   "--direction", "M", "--timeout", "3", "--json"],
                             env={"HUB_HOME": str(tmp_path / "home")})
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.stdout)


@pytest.mark.parametrize(("behaviour", "failing"), [
    ("correct", set()),
    ("copy-as-primary", {"M.copy-copy", "M.copy-both", "M.copy-copy-rejected", "M.copy-both-rejected"}),
    ("one-apprec", {"M.copy-both", "M.copy-both-rejected"}),
])
def test_copy_receiver_cases_pass_a_correct_vendor_system_and_catch_a_wrong_one(tmp_path, vendor, behaviour,
                                                                                failing):
    """The vendor's system answers once per receiver of its own: as the primary (Role SPR), as the copy
    receiver (Role COP), as both when both are in its organisation (the second message a duplicate)."""
    code, report = _run_plo(tmp_path, vendor(behaviour))
    [cell] = report["cells"]
    by_id = {c["id"]: c for c in cell["cases"]}
    assert COPY_CASES <= set(by_id)
    assert set(_failed(report)) == failing, _failed(report)
    assert code == (1 if failing else 0)
    for case in failing:
        assert "apprec.receivers" in _failed(report)[case]
        assert by_id[case]["criterion"].startswith("apprec-sheet#")
    if not failing:
        assert by_id["M.copy-both"]["observed"].count("(COP)") == 1
        assert by_id["M.copy-both"]["observed"].count("(SPR)") == 1
