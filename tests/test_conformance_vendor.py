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
