"""The conformance runner against an ebXML message service the project did not build on its own code.

tests/independent_vendor_msh.py is a vendor's MSH with a GP system behind it, in a process of its own,
that does not import `hub` (MIME with `email`, signatures with signxml, CMS with `cryptography`, the
payload judged with xmlschema against the official XSDs). The runner is the test centre's MSH
(`hub conformance run --profile … --endpoint http://… --cpp …`); the two meet over real HTTP on
127.0.0.1 with the CPA the runner makes from the vendor's CPP. A correct vendor passes every case,
ebMS cases included; each broken release fails with the case that caught it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import xmlschema
from lxml import etree
from typer.testing import CliRunner

from hub.cli.main import app
from hub.conformance.profiles import load_profile, load_profiles
from hub.conformance.runner import default_pki_dir
from hub.conformance.trust import network_pki
from hub.ebxml.cpa import load_cpa

VENDOR = Path(__file__).with_name("independent_vendor_msh.py")
OFFICIAL_XSD = Path(__file__).resolve().parents[1] / ".." / "shared" / "reference" / "xsd"
PROFILE = """\
name = "Uavhengig EPJ"
vendor = "Uavhengig Leverandør AS"
version = "1.0"
category = "gp"
her_id = 87210
services = [87211]
certificate = "CN=Uavhengig EPJ, O=Uavhengig Leverandør AS, C=NO"

[endpoint]
transport = "http"

[[claim]]
message = "Dialogmelding"
version = "1.0"
directions = ["M"]
"""

pytestmark = pytest.mark.skipif(
    not (OFFICIAL_XSD / "MsgHead-v1_2.xsd").exists(),
    reason="the official KITH XSDs (../shared/reference/xsd) are not here",
)


@pytest.fixture
def vendor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """Start the vendor's message service with a behaviour; stop it by its pid afterwards."""
    started: list[subprocess.Popen] = []
    home = tmp_path / "home"
    monkeypatch.setenv("HUB_HOME", str(home))
    profile_path = tmp_path / "uavhengig-epj.toml"
    profile_path.write_text(PROFILE, encoding="utf-8")
    profile = load_profile(profile_path)
    # The test centre issues the system its enterprise certificates (the runner reuses this PKI)
    pki = network_pki(default_pki_dir(), {**load_profiles(), profile.name: profile})
    keys = pki.dir / "parties" / profile.slug

    def start(behaviour: str = "correct") -> tuple[str, Path]:
        # the exchange folder the runner uses for this system: cpa.xml, patients.json
        root = home / "conformance" / "exchange" / profile.slug
        root.mkdir(parents=True, exist_ok=True)
        args = [
            "--her",
            "87210",
            "--service",
            "87211",
            "--name",
            profile.name,
            "--keys",
            str(keys),
            "--network",
            str(pki.dir),
            "--xsd",
            str(OFFICIAL_XSD),
            "--behaviour",
            behaviour,
        ]
        proc = subprocess.Popen(
            [sys.executable, str(VENDOR), str(root), *args], stdout=subprocess.PIPE, text=True
        )
        started.append(proc)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), url
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
    res = CliRunner().invoke(
        app,
        [
            "conformance",
            "run",
            "--profile",
            str(tmp_path / "uavhengig-epj.toml"),
            "--endpoint",
            url,
            "--cpp",
            str(root / "cpp.xml"),
            "--timeout",
            "4",
            "--json",
            *extra,
        ],
        env={"HUB_HOME": str(tmp_path / "home")},
    )
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.stdout)


def cppa_problems(data: bytes) -> list[str]:
    """What the official CPPA 2.0 schema (with its imports from the same folder) finds in a CPP or CPA."""
    x = OFFICIAL_XSD
    local = {
        "http://www.w3.org/TR/xmldsig-core/xmldsig-core-schema.xsd": str(x / "xmldsig-core-schema.xsd"),
        "http://www.w3.org/2001/03/xml.xsd": str(x / "xml.xsd"),
        "http://www.oasis-open.org/committees/ebxml-msg/schema/xlink.xsd": str(x / "xlink.xsd"),
    }
    schema = xmlschema.XMLSchema(str(x / "cpp-cpa-2_0.xsd"), uri_mapper=local, allow="local")
    return [f"{e.path}: {e.reason}" for e in schema.iter_errors(etree.fromstring(data))]


def _cases(report: dict) -> dict[str, dict]:
    return {c["id"]: c for cell in report["cells"] for c in cell["cases"]}


def _failed(report: dict) -> dict[str, str]:
    return {k: c["observed"] for k, c in _cases(report).items() if c["verdict"] == "fail"}


def test_an_independent_vendor_msh_passes(tmp_path, vendor):
    url, root = vendor()
    code, report = _run(tmp_path, url, root)
    cases = _cases(report)
    assert code == 0, _failed(report)
    assert cases["M.ebms-ack"]["verdict"] == "pass"
    assert cases["M.ebms-duplicate"]["observed"] == "Acknowledgment, Acknowledgment; 1 AppRec(s)"
    assert cases["M.ebms-tampered"]["observed"] == "MessageError SecurityFailure; 0 AppRec(s)"
    # the business cases ran over it: AppRecs built by the vendor, signed and encrypted by its MSH
    assert {k for k, c in cases.items() if c["verdict"] == "pass"} >= {
        "M.valid",
        "M.not-well-formed",
        "M.schema-invalid",
        "M.unknown-service",
        "M.unknown-receiver",
        "M.fnr-invalid",
        "M.unknown-patient",
        "M.duplicate",
        "M.duplicate-rejected",
    }
    # the KITH document's own signature, judged with signxml and the network's CRL: S01, S02, S03
    security = ("M.bad-signature", "M.expired-certificate", "M.revoked-certificate", "M.unknown-ca")
    assert {k: (cases[k]["verdict"], cases[k]["observed"].split(";")[0]) for k in security} == {
        "M.bad-signature": ("pass", "2 S01"),
        "M.expired-certificate": ("pass", "2 S02"),
        "M.revoked-certificate": ("pass", "2 S03"),
        "M.unknown-ca": ("pass", "2 S02"),
    }
    assert cppa_problems((root / "cpp.xml").read_bytes()) == []  # the vendor's CPP, as the standard has it
    # the vendor's side of it: what its MSH refused, and how the test centre answered each AppRec
    log = (root / "msh.log").read_text(encoding="utf-8").splitlines()
    refused = [line for line in log if line.startswith("MessageError")]
    assert len(refused) == 2, refused  # the tampered envelope, and the receiver outside the CPA
    assert any("SecurityFailure" in line and "Digest mismatch" in line for line in refused)
    answers = [line for line in log if line.startswith("POST")]
    assert answers and all(line.endswith(": 200, Acknowledgment verified") for line in answers), answers


def test_a_vendor_msh_that_accepts_a_tampered_envelope_fails_that_case(tmp_path, vendor):
    url, root = vendor("accept-tampered")
    code, report = _run(tmp_path, url, root)
    failed = _failed(report)
    assert code == 1
    assert set(failed) == {"M.ebms-tampered"}, failed
    case = _cases(report)["M.ebms-tampered"]
    assert case["findings"][0]["text"] == "Acknowledgment, expected a MessageError with SecurityFailure"
    # It was delivered too, and answered in the altered conversation (the ConversationId is what was
    # changed): the runner counts that AppRec for the case as well.
    assert case["observed"] == "Acknowledgment; 1 AppRec(s)"
    assert case["findings"][1]["text"] == "1 AppRec(s): the altered message was delivered"


def test_a_vendor_msh_without_duplicate_elimination_fails_that_case(tmp_path, vendor):
    url, root = vendor("deliver-duplicates")
    code, report = _run(tmp_path, url, root)
    failed = _failed(report)
    assert code == 1
    assert set(failed) == {"M.ebms-duplicate"}, failed
    case = _cases(report)["M.ebms-duplicate"]
    assert case["observed"] == "Acknowledgment, Acknowledgment; 2 AppRec(s)"
    assert case["findings"][0]["text"] == "2 AppRecs: the message was delivered 2 times, expected once"


def test_a_vendor_msh_that_refuses_a_tampered_envelope_but_delivers_it_fails_that_case(tmp_path, vendor):
    url, root = vendor("refuse-but-deliver")
    code, report = _run(tmp_path, url, root)
    assert _failed(report).keys() == {"M.ebms-tampered"}
    assert code == 1


def test_the_cpa_the_runner_makes_from_a_valid_cpp_is_valid(tmp_path, monkeypatch):
    from independent_vendor_msh import Msh

    from hub.conformance.vendor_ebms import VendorEbmsExchange

    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    (tmp_path / "p.toml").write_text(PROFILE, encoding="utf-8")
    profile = load_profile(tmp_path / "p.toml")
    pki = network_pki(default_pki_dir(), {**load_profiles(), profile.name: profile})
    msh = Msh(tmp_path, "87210", ["87211"], profile.name, pki.dir / "parties" / profile.slug, None, "correct")  # type: ignore[arg-type]
    msh.url = "http://127.0.0.1:9/ebxml"
    exchange = VendorEbmsExchange(tmp_path / "exchange", pki, profile, msh.url, cpp=msh.cpp())
    try:
        cpa = (tmp_path / "exchange" / "cpa.xml").read_bytes()
    finally:
        exchange.close()
    assert cppa_problems(cpa) == []
    # the vendor's side as its CPP wrote it; the test centre plays the counter role in the same process
    agreed, written = load_cpa(cpa), load_cpa(msh.cpp())
    assert agreed.party("87210") == written.parties[0]
    assert set(agreed.packages) >= set(written.packages)
    (theirs,), (ours,) = written.parties[0].roles, agreed.party("86001").roles
    assert ours.role == "DIALOG_FORESPORSELsender" and ours.process_spec == theirs.process_spec
    assert ours.role_href == theirs.role_href.replace("receiver", "sender")
    assert ours.actions("send") == theirs.actions("receive") == ["DIALOG_FORESPORSEL"]
    assert ours.actions("receive") == theirs.actions("send") == ["APPREC"]
