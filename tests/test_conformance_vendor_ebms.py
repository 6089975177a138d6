"""A vendor's own system under test over ebXML: `hub conformance run --profile … --endpoint http://…`.

The vendor's message service is tests/conformance_vendor_msh.py in a process of its own (the hub's Msh
behind a simulated receiving system, reached over real HTTP on 127.0.0.1); the runner makes the CPA from
the CPP that process wrote. A correct one passes, including duplicate elimination and the tampered
envelope; one that never sends an ebMS signal fails with the ebMS cases that caught it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli.main import app
from hub.conformance.vendor_ebms import (
    SECURITY_FAILURE,
    Signal,
    counter_role,
    grade_duplicate,
    grade_tampered,
    tamper_envelope,
)

VENDOR = Path(__file__).with_name("conformance_vendor_msh.py")
PROFILE = """\
name = "Ebxml EPJ"
vendor = "Testleverandør AS"
version = "3.0"
category = "hospital"
her_id = 87110
services = [87111]
certificate = "CN=Ebxml EPJ, O=Testleverandør AS, C=NO"

[endpoint]
transport = "http"

[[claim]]
message = "Henvisning"
version = "0.91"
directions = ["M"]

[[claim]]
message = "Dialogmelding"
version = "1.0"
directions = ["S"]
"""


@pytest.fixture
def vendor(tmp_path: Path) -> Iterator:
    """Start the vendor's message service (its own process); stop it by its pid afterwards."""
    started: list[subprocess.Popen] = []
    home = tmp_path / "home"
    profile = tmp_path / "ebxml-epj.toml"
    profile.write_text(PROFILE, encoding="utf-8")

    def start(*flags: str) -> tuple[str, Path]:
        # the tester's side of the system shares the exchange folder (registered patients, cpa.xml)
        root = home / "conformance" / "exchange" / "ebxml-epj"
        root.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, str(VENDOR), str(profile), str(home / "conformance" / "pki"),
                                 str(root), *flags], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "HUB_HOME": str(home)})
        started.append(proc)
        assert proc.stdout is not None
        # HTTP: its URL; SMTP (--smtp): `mailto:ADDRESS 127.0.0.1:PORT`, its address and its listener
        url = proc.stdout.readline().strip()
        assert url.startswith(("http://127.0.0.1:", "mailto:")), url
        return url, root

    yield start
    for proc in started:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _run(tmp_path: Path, url: str, root: Path, *extra: str) -> tuple[int, dict]:
    res = CliRunner().invoke(app, ["conformance", "run", "--profile", str(tmp_path / "ebxml-epj.toml"),
                                   "--endpoint", url, "--cpp", str(root / "cpp.xml"), "--timeout", "4",
                                   "--json", *extra],
                             env={"HUB_HOME": str(tmp_path / "home")})
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.stdout)


def _cases(report: dict) -> dict[str, dict]:
    return {c["id"]: c for cell in report["cells"] for c in cell["cases"]}


def test_a_correct_vendor_msh_passes_ebms_cases_included(tmp_path, vendor):
    url, root = vendor()
    code, report = _run(tmp_path, url, root)
    cases = _cases(report)
    failed = {k: c["observed"] for k, c in cases.items() if c["verdict"] == "fail"}
    assert code == 0, failed
    assert cases["M.ebms-ack"]["verdict"] == "pass"
    assert cases["M.ebms-duplicate"]["observed"] == "Acknowledgment, Acknowledgment; 1 AppRec(s)"
    assert cases["M.ebms-tampered"]["observed"] == f"MessageError {SECURITY_FAILURE}; 0 AppRec(s)"
    # the Sending cell: the system's message came over ebXML, signed and sent as the CPA says
    assert [c["verdict"] for c in report["cells"]] == ["pass", "pass"]
    assert cases["S.ebxml"]["verdict"] == cases["S.signature"]["verdict"] == "pass"
    cpa = (root / "cpa.xml").read_text(encoding="utf-8")
    assert "87110" in cpa and "86001" in cpa and url in cpa  # the CPA binds both, with the vendor's endpoint


def test_a_vendor_msh_that_never_acknowledges_fails_the_ebms_cases(tmp_path, vendor):
    url, root = vendor("--mute")
    code, report = _run(tmp_path, url, root, "--direction", "M")
    cases = _cases(report)
    assert code == 1
    assert cases["M.ebms-ack"]["verdict"] == "fail"
    assert cases["M.ebms-duplicate"]["verdict"] == "fail"
    assert "transmission 1: none" in cases["M.ebms-duplicate"]["findings"][0]["text"]
    assert cases["M.ebms-tampered"]["verdict"] == "fail"
    # the business level still works: the AppRec cases pass, only the message service is at fault
    assert cases["M.valid"]["verdict"] == "pass"


def test_a_vendor_msh_that_acknowledges_a_tampered_envelope_fails_that_case(tmp_path, vendor):
    url, root = vendor("--ack-everything")
    code, report = _run(tmp_path, url, root, "--direction", "M")
    failed = {k: c for k, c in _cases(report).items() if c["verdict"] == "fail"}
    assert code == 1
    assert "M.ebms-tampered" in failed
    assert failed["M.ebms-tampered"]["findings"][0]["text"].startswith("Acknowledgment")
    assert set(failed) == {"M.ebms-tampered"}, {k: c["observed"] for k, c in failed.items()}


def test_grading_of_the_ebms_cases():
    ack, err = Signal("ack"), Signal("error", [SECURITY_FAILURE])
    assert grade_duplicate([ack, ack], 1) == []
    assert grade_duplicate([ack, Signal("none")], 1) == ["transmission 2: none, not an Acknowledgment"]
    assert grade_duplicate([ack, ack], 2) == ["2 AppRecs: the message was delivered 2 times, expected once"]
    assert grade_duplicate([ack, Signal("ack", problems=["SecurityFailure unsigned"])], 1)
    assert grade_tampered(err, 0) == []
    assert grade_tampered(ack, 0) == [f"Acknowledgment, expected a MessageError with {SECURITY_FAILURE}"]
    assert grade_tampered(Signal("error", ["Inconsistent"]), 0)
    assert grade_tampered(err, 1) == ["1 AppRec(s): the altered message was delivered"]
    assert counter_role("EPIKRISEsender") == "EPIKRISEreceiver"
    assert counter_role("EPIKRISEreceiver") == "EPIKRISEsender"
    with pytest.raises(ValueError):
        counter_role("Saksbehandler")
    assert tamper_envelope(b"a<eb:ConversationId>c1</eb:ConversationId>b", "c1") != b"a"
    with pytest.raises(ValueError):
        tamper_envelope(b"nothing", "c1")
