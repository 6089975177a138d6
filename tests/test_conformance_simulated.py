"""The simulated vendor systems judge with their own code, not the hub's: a bug in the hub's rules
shows up as a disagreement between the hub and the system instead of both agreeing."""

from __future__ import annotations

import random
import subprocess
import sys
import tomllib

import pytest

from hub.conformance.evidence import Evidence
from hub.conformance.profiles import VENDORS_DIR, load_profiles, parse_profile
from hub.fixtures import people


def test_no_module_the_simulated_systems_use_imports_hub_validation():
    """Imported in a fresh interpreter: the systems, their message service and their toolkit load
    without a single hub.validation module (nor the hub's AppRec or message-info readers)."""
    code = ("import sys, hub.conformance.simulated, hub.conformance.ebms, hub.conformance.simkit;"
            "print(sorted(m for m in sys.modules if m.startswith(('hub.validation', 'hub.messages.apprec',"
            " 'hub.messages.info'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_own_fnr_check_agrees_with_the_published_check_digits():
    from hub.conformance.simkit import fnr_ok

    # Skatteetaten's mod-11 control digits computed by hand for 01.01.1980, individual number 123:
    # k1 = 11 - (0*3+1*7+0*6+1*1+8*8+0*9+1*4+2*5+3*2) % 11 = 11 - 92 % 11 = 7,
    # k2 = 11 - (0*5+1*4+0*3+1*2+8*7+0*6+1*5+2*4+3*3+7*2) % 11 = 11 - 98 % 11 = 1.
    assert fnr_ok("01018012371")
    assert not fnr_ok("01018012372") and not fnr_ok("01018012361")
    assert not fnr_ok("0101801237") and not fnr_ok("0101801237x")
    person = people.random_person(random.Random(7), min_age=18)
    assert person.ident and fnr_ok(person.ident)
    assert not fnr_ok(people.with_wrong_check_digits(person.ident))


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    from hub.conformance.trust import network_pki

    return network_pki(tmp_path_factory.mktemp("pki"), load_profiles())


def _system_x(defect: dict | None = None):
    with (VENDORS_DIR / "systems" / "system-x.toml").open("rb") as f:
        data = tomllib.load(f)
    data["defect"] = [{"id": "planted", **defect}] if defect else []
    return parse_profile(data)


def _mottak(tmp_path, network, profile) -> dict[str, object]:
    from hub.conformance.campaign import Session, run_session_group
    from hub.conformance.runner import Runner

    ev = Evidence(tmp_path / "hub.sqlite")
    runner = Runner(ev, month="06.07", timeout=2.0, pki=network)
    [r] = run_session_group(runner, profile, [Session("06.07", profile.name, "Epikrise:1.0", "M")],
                            tmp_path / profile.slug)
    return {c.case_id: c for c in r.cases}


@pytest.mark.parametrize("broken", ["accepts-every-number", "rejects-every-number"])
def test_a_broken_hub_fnr_rule_does_not_change_what_the_simulated_system_answers(tmp_path, network,
                                                                                   monkeypatch, broken):
    """The hub's fødselsnummer check broken both ways: the hub's Validator now judges the battery's
    FNR messages wrongly (shown below), the simulated system still answers them as the standard says,
    so hub and system disagree; a system whose own check is switched off still fails its case."""
    from hub.conformance.catalogue import message_type
    from hub.conformance.simulated import PARTIES, register_parties, system_parties
    from hub.conformance.variants import make_variant
    from hub.validation import rules
    from hub.validation.validate import Validator

    monkeypatch.setattr(rules, "fnr_valid", (lambda _n: True) if broken == "accepts-every-number"
                        else (lambda _n: False))
    patient = people.random_person(random.Random(3), min_age=18)
    variant = "fnr-invalid" if broken == "accepts-every-number" else "valid"
    register_parties(system_parties(_system_x()))
    msg = make_variant(message_type("Epikrise:1.0"), variant, PARTIES[85021], patient=patient,
                       stranger=patient)
    hub_codes = {p.code for p in Validator().validate_bytes(msg, "m.xml").errors}
    # The bug is live in the hub: it now agrees with a wrong FNR, or refuses a right one.
    assert ("E31" in hub_codes) is (broken == "rejects-every-number")

    cases = _mottak(tmp_path / "clean", network, _system_x())
    case = cases["M.fnr-invalid" if broken == "accepts-every-number" else "M.valid"]
    assert case.verdict == "pass", (case.expected, case.observed)
    assert case.observed == ("2 E31" if broken == "accepts-every-number" else "1")
    if broken == "accepts-every-number":
        blind = _mottak(tmp_path / "blind", network, _system_x({"kind": "ignores", "codes": ["E31"]}))
        assert blind["M.fnr-invalid"].verdict == "fail" and blind["M.fnr-invalid"].observed == "1"


def test_simulated_systems_validate_with_the_official_xsds_when_present(reference, monkeypatch):
    """With ../shared/reference the official XSDs judge (xmlschema, imports resolved in their own
    folder); the pack's correct messages validate and its schema-error cases do not."""
    from hub.conformance import simkit
    from hub.messages.families import by_key
    from hub.paths import SCHEMAS_DIR

    epikrise = by_key("Epikrise", "1.1")
    assert simkit.schema_files(epikrise, "own") == (reference / "xsd" / "Epikrise-v1.1.xsd",)
    plo = reference / "samples" / "akseptansetest" / "plo" / "Testcase-mottak-Innleggelsesrapport-v1_5"
    good, bad = plo / "Case1-Innleggelsesrapport-v1_5.xml", plo / "Case1-15a-Innleggelsesrapport-v1_5.xml"
    for path, valid in ((good, True), (bad, False)):
        doc = simkit.read(simkit.parse(path.read_bytes()))
        assert doc.family is not None and doc.family.name == "Innleggelsesrapport"
        assert simkit.schema_files(doc.family, doc.carrier)[0].parent == reference / "xsd"
        assert (simkit.schema_errors(doc) == []) is valid, simkit.schema_errors(doc)
    monkeypatch.setattr(simkit, "reference_dir", lambda: None)
    assert simkit.schema_files(epikrise, "own") == (SCHEMAS_DIR / "Epikrise-v1.1.xsd",)


def test_a_broken_hub_signature_check_does_not_change_what_the_simulated_system_answers(tmp_path, network,
                                                                                        monkeypatch):
    """The hub's signature judgement made to trust everything: the simulated system checks signatures
    itself (signxml and the network's CRLs) and still refuses a changed, a revoked and an expired one."""
    import hub.security.xmldsig as xmldsig
    from hub.conformance import trust

    def trusting(data: bytes, _pki: object, _registered: object = None) -> trust.SignatureCheck:
        return trust.SignatureCheck(True)

    monkeypatch.setattr(trust, "check_signature", trusting)
    monkeypatch.setattr(xmldsig, "verify_enveloped", lambda *_a, **_k: None)
    cases = _mottak(tmp_path, network, _system_x())
    observed = {cid: cases[cid].observed for cid in ("M.bad-signature", "M.revoked-certificate",
                                                     "M.expired-certificate", "M.unknown-ca")}
    assert observed == {"M.bad-signature": "2 S01", "M.revoked-certificate": "2 S03",
                        "M.expired-certificate": "2 S02", "M.unknown-ca": "2 S02"}
