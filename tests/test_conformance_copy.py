"""Copy receivers (AppRec system test sheet #7-#11, #35-#40; unit sheet #9 for the Role).

The grading is a pure function of the AppRecs observed; the AppRecs graded here are written with lxml
from the sheet's rules, not by the hub's AppRec builder nor by the simulated systems' toolkit. The
simulated systems answer the cases right, and a planted defect fails exactly the cases it breaks.
"""

from __future__ import annotations

import random
import re
import tomllib

import pytest
from lxml import etree

from hub.conformance.catalogue import COPY_RECEIVER_CELLS, Expect, cases_for, message_types
from hub.conformance.evidence import Evidence
from hub.conformance.grading import Answer, grade_receivers
from hub.conformance.profiles import VENDORS_DIR, find_profile, load_profiles, parse_profile
from hub.conformance.simulated import PARTIES, TEST_CENTRE_SERVICE, register_parties, system_parties
from hub.conformance.variants import OTHER_SERVICE
from hub.fixtures import people
from hub.fixtures.builder import build

A10 = "http://www.kith.no/xmlstds/apprec/2004-11-21"
A11 = "http://www.kith.no/xmlstds/apprec/2012-02-15"
COPY_IDS = {"M.copy-primary", "M.copy-copy", "M.copy-both", "M.copy-primary-rejected", "M.copy-copy-rejected",
            "M.copy-both-rejected"}


# --- the catalogue ----------------------------------------------------------------------------------------


def test_copy_cases_belong_to_the_cells_whose_acceptance_test_has_copy_receivers_and_not_to_2007():
    for mt in message_types():
        ids = {c.id for c in cases_for(mt, "M")}
        assert (COPY_IDS <= ids) == (mt.key in COPY_RECEIVER_CELLS), mt.key
        assert not (ids & COPY_IDS) or mt.key in COPY_RECEIVER_CELLS
    elin_k = {mt.key for mt in message_types() if mt.group == "elin-k"}
    assert not elin_k & set(COPY_RECEIVER_CELLS)  # the 2007 approvals are replayed as they were tested
    by_id = {c.id: c for c in cases_for(next(m for m in message_types() if m.key == "Epikrise:1.1"), "M")}
    assert by_id["M.copy-both"].receivers == ("primary", "copy")
    assert by_id["M.copy-copy-rejected"].expect == Expect("2", ("E21",))
    assert by_id["M.copy-both-rejected"].source == "apprec-sheet#40"


def test_the_copy_receiver_cells_are_those_whose_official_mottak_test_asks_for_a_copy_receiver(reference):
    """Every Mottak acceptance test asking "Håndterer systemet å være kopimottaker av en melding?" is a
    cell of the table, and each cell's document asks it (the official documents, not ours)."""
    folder = reference / "akseptansetest-criteria"
    asking = {p.name for p in folder.glob("Akseptansetest-mottak-*.txt")
              if re.search(r"kopimottaker\s+av\s+(en\s+)?melding",
                           re.sub(r"\s+", " ", p.read_text(encoding="utf-8")), re.I)
              or "være kopimottaker" in p.read_text(encoding="utf-8")}
    assert asking == {src.split("#")[0] for src in COPY_RECEIVER_CELLS.values()}


# --- grading: a pure function of the AppRecs --------------------------------------------------------------


def _original(family: str = "Epikrise", version: str = "1.1", *, both: bool = False) -> bytes:
    parties = system_parties(find_profile("System X"))
    register_parties(parties)
    patient = people.random_person(random.Random(5), min_age=18)
    copy = parties[-1] if both else OTHER_SERVICE  # System X's second service, or another organisation
    return build(family, version, seed=5, sender=TEST_CENTRE_SERVICE, receiver=parties[1], copies=[copy],
                 patient=patient, directory=PARTIES, msg_id="6f1c1a52-3c55-4f55-9b1f-0e8f1b0d2a77")


def _inst(parent: etree._Element, ns: str, levels: list[tuple[str, str]]) -> None:
    """HCP/Inst with a Dept for the second level: (name, HER-id) each."""
    inst = etree.SubElement(etree.SubElement(parent, f"{{{ns}}}HCP"), f"{{{ns}}}Inst")
    for i, (name, her) in enumerate(levels):
        el = inst if i == 0 else etree.SubElement(inst, f"{{{ns}}}Dept")
        etree.SubElement(el, f"{{{ns}}}Name").text = name
        etree.SubElement(el, f"{{{ns}}}Id").text = her
        etree.SubElement(el, f"{{{ns}}}TypeId", V="HER", DN="HER-id")


def _levels(original: bytes, where: str) -> list[tuple[str, str]]:
    """(name, HER-id) of the organisation and the department at an Epikrise party element."""
    root = etree.fromstring(original)
    inst = root.xpath(f"//*[local-name()='{where}']/*[local-name()='HCP']/*[local-name()='Inst']")[0]
    out = [(inst.findtext("{*}Name"), inst.findtext("{*}Id"))]
    out += [(d.findtext("{*}Name"), d.findtext("{*}Id")) for d in inst.findall("{*}Dept")]
    return out


def _apprec(original: bytes, answering: str, role: str | None, status: str = "1", codes: tuple[str, ...] = (),
            *, ns: str = A10, receiver_role: str | None = "RECEIVER") -> bytes:
    """An AppRec from the party at `answering` (Requester: the primary receiver of an Epikrise,
    CopyDest: its copy receiver) to the original's sender (ServProvider)."""
    root = etree.Element(f"{{{ns}}}AppRec", nsmap={None: ns})
    etree.SubElement(root, f"{{{ns}}}MsgType", V="APPREC", DN="Applikasjonskvittering")
    etree.SubElement(root, f"{{{ns}}}MIGversion").text = "1.0 2004-11-21" if ns == A10 else "v1.1 2012-02-15"
    etree.SubElement(root, f"{{{ns}}}GenDate").text = "2026-12-05T08:00:00"
    etree.SubElement(root, f"{{{ns}}}Id").text = "0b7d5e1c-8f0a-4a57-9a44-0d7c1f2a9b11"
    for tag, where, r in (("Sender", answering, role), ("Receiver", "ServProvider", receiver_role)):
        side = etree.SubElement(root, f"{{{ns}}}{tag}")
        if r:
            etree.SubElement(side, f"{{{ns}}}Role", V=r, DN=r)
        _inst(side, ns, _levels(original, where))
    etree.SubElement(root, f"{{{ns}}}Status", V=status, DN={"1": "OK", "2": "Avvist"}[status])
    for c in codes:
        etree.SubElement(root, f"{{{ns}}}Error", V=c, S="2.16.578.1.12.4.1.1.8221", DN=c)
    o = etree.fromstring(original)
    orig = etree.SubElement(root, f"{{{ns}}}OriginalMsgId")
    etree.SubElement(orig, f"{{{ns}}}MsgType", V=o.xpath("//*[local-name()='Type']/@V")[0], DN="Epikrise")
    etree.SubElement(orig, f"{{{ns}}}IssueDate").text = o.xpath("/*/*[local-name()='GenDate']")[0].get("V") \
        or o.xpath("/*/*[local-name()='GenDate']")[0].text
    etree.SubElement(orig, f"{{{ns}}}Id").text = o.findtext("{*}MsgId")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _rules(answers: list[bytes], original: bytes, hosted: tuple[str, ...], expect: Expect = Expect("1")
           ) -> list[str]:
    g = grade_receivers([Answer(a) for a in answers], original, expect, hosted, criterion="apprec-sheet#x")
    return sorted(f.rule for f in g.findings)


def test_the_primary_receivers_apprec_passes_with_its_role_and_fails_as_the_copy_receivers():
    o = _original()
    assert _rules([_apprec(o, "Requester", "REQ")], o, ("primary",)) == []  # sheet #8: the requester, REQ
    assert _rules([_apprec(o, "Requester", "SPR")], o, ("primary",)) == ["apprec.role"]  # not the provider
    assert _rules([_apprec(o, "Requester", None)], o, ("primary",)) == ["apprec.role"]  # Role must be there
    assert _rules([_apprec(o, "Requester", "REQ", receiver_role=None)], o, ("primary",)) == ["apprec.role"]
    # the copy receiver (another organisation) answering although the system is the primary one
    assert _rules([_apprec(o, "Requester", "REQ"), _apprec(o, "CopyDest", "COP")], o, ("primary",)) == [
        "apprec.receivers"]
    assert _rules([], o, ("primary",)) == ["apprec.receivers"]


def test_the_copy_receiver_answers_as_itself_with_role_cop():
    o = _original()
    assert _rules([_apprec(o, "CopyDest", "COP")], o, ("copy",)) == []  # sheet #10
    # answers as the primary receiver where it is the copy receiver: the wrong party, not hosted
    g = grade_receivers([Answer(_apprec(o, "Requester", "REQ"))], o, Expect("1"), ("copy",))
    assert sorted(f.rule for f in g.findings) == ["apprec.receivers", "apprec.receivers"]
    assert "does not host" in g.findings[0].text and "no AppRec from the copy receiver" in g.findings[1].text
    # itself, mirrored, but claiming to be the primary receiver
    assert _rules([_apprec(o, "CopyDest", "REQ")], o, ("copy",)) == ["apprec.role"]


def test_primary_and_copy_receiver_in_one_organisation_give_one_apprec_each():
    o = _original(both=True)
    prim, cop = _apprec(o, "Requester", "REQ"), _apprec(o, "CopyDest", "COP")
    assert _rules([prim, cop], o, ("primary", "copy")) == []  # sheet #11
    assert _rules([prim], o, ("primary", "copy")) == ["apprec.receivers"]  # one where two are due
    assert _rules([prim, cop, cop], o, ("primary", "copy")) == ["apprec.receivers"]  # the duplicate answered
    rejected = Expect("2", ("E21",))
    both = [_apprec(o, "Requester", "REQ", "2", ("E21",)), _apprec(o, "CopyDest", "COP", "2", ("E21",))]
    assert _rules(both, o, ("primary", "copy"), rejected) == []  # sheet #40
    assert _rules([_apprec(o, "Requester", "REQ", "2", ("E21",)), _apprec(o, "CopyDest", "COP")],
                  o, ("primary", "copy"), rejected) == ["apprec.answer"]


def test_apprec_1_1_roles_are_prim_cop_and_avs():
    o = _original(both=True)
    good = [_apprec(o, "Requester", "PRIM", ns=A11, receiver_role="AVS"),
            _apprec(o, "CopyDest", "COP", ns=A11, receiver_role="AVS")]
    assert _rules(good, o, ("primary", "copy")) == []
    assert _rules([_apprec(o, "Requester", "REQ", ns=A11, receiver_role="AVS"), good[1]], o,
                  ("primary", "copy")) == ["apprec.role"]  # REQ/SPR is AppRec 1.0's


# --- the simulated systems ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def network(tmp_path_factory):
    from hub.conformance.trust import network_pki

    return network_pki(tmp_path_factory.mktemp("pki"), load_profiles())


def _planted(defect: dict | None):
    with (VENDORS_DIR / "systems" / "omsorg-pluss.toml").open("rb") as f:
        data = tomllib.load(f)
    data["defect"] = [{"id": "planted", **defect}] if defect else []
    return parse_profile(data)


@pytest.mark.parametrize(("defect", "failing"), [
    (None, set()),
    ({"kind": "copy-as-primary"},
     {"M.copy-copy", "M.copy-both", "M.copy-copy-rejected", "M.copy-both-rejected"}),
    ({"kind": "one-apprec"}, {"M.copy-both", "M.copy-both-rejected"}),
])
def test_a_simulated_nursing_system_answers_copy_receivers_and_a_planted_defect_fails_its_cases(
        tmp_path, network, defect, failing):
    from hub.conformance.campaign import Session, run_session_group
    from hub.conformance.runner import Runner

    ev = Evidence(tmp_path / "hub.sqlite")
    profile = _planted(defect)
    runner = Runner(ev, month="03.09", timeout=2.0, pki=network)
    [r] = run_session_group(runner, profile, [Session("03.09", profile.name, "Innleggelsesrapport:1.5", "M")],
                            tmp_path / "sys")
    assert {c.case_id for c in r.failed} == failing, [(c.case_id, c.observed) for c in r.failed]
    assert COPY_IDS <= {c.case_id for c in r.cases}
    for c in r.failed:
        assert {e["rule"] for e in c.errors} & {"apprec.receivers", "apprec.role", "apprec.mirrored"}
        assert ev.exchanges(r.run_id)
