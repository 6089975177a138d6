"""The CPAs and the CPP the hub writes (hub/ebxml/corpus.py), judged by the official CPPA 2.0 schema.

The schema is cpp-cpa-2_0.xsd with its imports (xmldsig, xml, xlink) from ../shared/reference/xsd, read
by xmlschema; those tests skip when the folder is absent. The others check that the CPAs still say what
the hub acts on (signing, encryption, endpoints), whatever shape the schema asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import xmlschema
from conformance_vendor_msh import cpp_of
from lxml import etree

import hub.conformance.vendor_ebms as ve
from hub.conformance.vendor_ebms import agreement
from hub.ebxml.corpus import CpaParty, Role, build_cpa, build_cpp, cpa_from_cpp, world
from hub.ebxml.cpa import CPPA_NS, ProcessSpec, load_cpa, plan_send, protection
from hub.security.pki import Identity, load_identity
from hub.security.testing import shared_test_pki

C = f"{{{CPPA_NS}}}"
NOW = datetime.now(UTC)
NOTAT_SENDER = [("DIALOG_NOTATsender", "S-DIALOG_NOTAT", ["DIALOG_NOTAT"], ["APPREC"])]
NOTAT_RECEIVER = [("DIALOG_NOTATreceiver", "S-DIALOG_NOTAT", ["APPREC"], ["DIALOG_NOTAT"])]


@pytest.fixture(scope="module")
def cppa(reference: Path) -> Callable[[bytes], list[str]]:
    """What the official schema finds in a CPA or CPP (empty: valid)."""
    x = reference / "xsd"
    if not (x / "cpp-cpa-2_0.xsd").exists():
        pytest.skip("the official cpp-cpa-2_0.xsd is not in ../shared/reference/xsd")
    local = {
        "http://www.w3.org/TR/xmldsig-core/xmldsig-core-schema.xsd": str(x / "xmldsig-core-schema.xsd"),
        "http://www.w3.org/2001/03/xml.xsd": str(x / "xml.xsd"),
        "http://www.oasis-open.org/committees/ebxml-msg/schema/xlink.xsd": str(x / "xlink.xsd"),
    }
    schema = xmlschema.XMLSchema(str(x / "cpp-cpa-2_0.xsd"), uri_mapper=local, allow="local")

    def problems(data: bytes) -> list[str]:
        return [f"{e.path}: {e.reason}" for e in schema.iter_errors(etree.fromstring(data))]

    return problems


def _ids() -> tuple[Identity, Identity, Identity]:
    pki = shared_test_pki().dir
    gp, lab, hub_ = (load_identity(pki, n) for n in ("gp", "lab", "hub"))
    return gp, lab, hub_


def _party(who: Identity, her: str, endpoint: str, roles: list, **kw: object) -> CpaParty:
    return CpaParty(her, who.name, who.sign_cert, who.enc_cert, endpoint, roles, **kw)  # type: ignore[arg-type]


def test_the_validator_is_not_blind(cppa):
    """The schema test can fail: a corpus CPA without PartyRef, or with a HER-id as an xs:ID, is refused."""
    data = world().cpas["corpus:valid"]
    root = etree.fromstring(data)
    for ref in root.iter(f"{C}PartyRef"):
        ref.getparent().remove(ref)
    assert any("PartyRef" in p for p in cppa(etree.tostring(root)))
    root = etree.fromstring(data)
    next(root.iter(f"{C}ThisPartyActionBinding")).set(f"{C}id", "86001_0_HENVISNING")
    assert any("86001_0_HENVISNING" in p for p in cppa(etree.tostring(root)))


def test_the_corpus_cpas_are_valid(cppa):
    for cpa_id, data in world().cpas.items():
        assert cppa(data) == [], cpa_id


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:8089/ebxml", "https://epj.test/ebxml",
                                      "mailto:ebxml@epj.test"])
def test_the_hubs_cpp_and_the_cpas_the_runner_makes_are_valid(cppa, endpoint):
    """The hub's own CPP (tests/conformance_vendor_msh.py hands it to the runner), and the CPA the runner
    makes from it and from a profile without a CPP (hub.conformance.vendor_ebms.agreement)."""
    gp, _, hub_ = _ids()
    vendor = _party(gp, "87110", endpoint, NOTAT_RECEIVER)
    ours = ve.test_centre_party(  # imported by name it would be collected as a test
        hub_, 86001, endpoint.replace("epj", "testsenter"))
    cpp = cpp_of(vendor)
    assert cppa(cpp) == []
    from_cpp = agreement("conformance_86001_87110", ours, cpp, NOW, NOW + timedelta(days=30))
    assert cppa(from_cpp) == []
    ours.roles = NOTAT_SENDER
    from_profile = agreement("conformance_86001_87110", ours, vendor, NOW, NOW + timedelta(days=30))
    assert cppa(from_profile) == []
    for data in (from_cpp, from_profile):
        cpa = load_cpa(data)
        assert cpa.party("87110").roles[0].role == "DIALOG_NOTATreceiver"
        assert cpa.party("86001").roles[0].role == "DIALOG_NOTATsender"


def test_a_party_that_takes_payloads_in_clear_has_a_valid_cpa_without_the_encryption_layer(cppa):
    gp, lab, _ = _ids()
    parties = [_party(gp, "82001", "mailto:gp@x.test", NOTAT_SENDER, confidential="none"),
               _party(lab, "83001", "mailto:lab@x.test", NOTAT_RECEIVER, confidential="none")]
    data = build_cpa("plain:1", parties, NOW, NOW + timedelta(days=1))
    assert cppa(data) == []
    cpa = load_cpa(data)
    prot = protection(cpa, cpa.party("82001"), cpa.party("83001"), "S-DIALOG_NOTAT", "DIALOG_NOTAT")
    assert prot.package is not None and not prot.package.encrypted
    assert not prot.encrypt and not prot.encryption_required and prot.signature_required


def test_ids_stay_unique_and_ncnames_whatever_the_cpp_and_the_actions(cppa):
    """A CPP whose ids start like ours, and actions that are no NCNames (an action is any string)."""
    gp, _, hub_ = _ids()
    odd = [Role("Saksbehandler", "HarBorgerEgenandelFritak", ["Svar", "urn:nav:Avvisning"],
                ["Egenandel Foresporsel", "Egenandel Foresporsel"],
                ProcessSpec("EgenandelFritak", "1.0", "http://www.helsedirektoratet.no/processes/Egenandel.xml"))]
    cpp = build_cpp(_party(gp, "87110", "https://epj.test/ebxml", odd, id_prefix="her86001"))
    assert cppa(cpp) == []
    ours = _party(hub_, "86001", "https://testsenter.test/ebxml",
                  [Role("Utleverer", "HarBorgerEgenandelFritak", ["Egenandel Foresporsel"],
                        ["Svar", "urn:nav:Avvisning"], odd[0].process)])
    data = cpa_from_cpp("c:odd", ours, cpp, NOW, NOW + timedelta(days=1))
    assert cppa(data) == []
    cpa = load_cpa(data)
    assert cpa.party("87110") == load_cpa(cpp).parties[0]  # the CPP's side as written
    assert [b.action for b in cpa.party("86001").roles[0].bindings] == [
        "Egenandel Foresporsel", "Svar", "urn:nav:Avvisning"]
    # both sides cite one process
    assert cpa.party("86001").roles[0].process_spec == cpa.party("87110").roles[0].process_spec
    with pytest.raises(ValueError, match="two parties"):
        build_cpa("c:1", [ours], NOW, NOW)
    with pytest.raises(ValueError, match="id_prefix"):
        build_cpa("c:2", [ours, _party(gp, "87110", "mailto:x@y.test", NOTAT_RECEIVER, id_prefix="her86001")],
                  NOW, NOW)
    with pytest.raises(ValueError, match="NCName"):
        build_cpp(_party(gp, "87110", "mailto:x@y.test", NOTAT_RECEIVER, id_prefix="1st"))


# --- what the hub acts on (no official schema needed) ---------------------------------------------------


def test_a_corpus_cpa_asks_for_signing_and_encryption_in_its_characteristics_and_its_package():
    w = world()
    cpa = w.repository().get("corpus:valid")
    assert cpa is not None
    gp, lab = cpa.party(w.gp.her_id), cpa.party(w.lab.her_id)
    prot = protection(cpa, gp, lab, "S-DIALOG_NOTAT", "DIALOG_NOTAT")
    assert prot.confidential == "persistent" and prot.package is not None and prot.package.encrypted
    assert prot.encrypt and prot.encryption_required and prot.signature_required
    plan = plan_send(w.repository(), w.gp.her_id, w.lab.her_id, w.now, "S-DIALOG_NOTAT", "DIALOG_NOTAT")
    assert plan.endpoints == ["mailto:lab@edi.test"] and plan.encrypt and plan.sign
    assert plan.encryption_certificate == w.lab_enc and plan.signing_certificate == w.lab.sign_cert
    assert plan.signature_algorithm == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"


def test_a_roles_process_and_href_are_read_as_written(reference):
    """What a CPA made from a CPP keeps of the CPP's roles: NAV's CPA, as the register hands it out."""
    cpa = load_cpa((reference / "cpa" / "navikt_nav-qass-31162.xml").read_bytes())
    role = cpa.parties[0].roles[0]
    assert role.process_spec is not None
    assert (role.process_spec.name, role.process_spec.version, role.process_spec.href) == (
        "Reseptoppgjor", "2.5", "http://www.helsedirektoratet.no/processes/eResept.xml")
    assert role.role_href == "http://www.nav.no/processes#Utleverer"
