"""The AppRec grading as the approval's test sheet has it: exact status and codes, the original's
identity, mirrored addresses. The AppRecs graded here are written with lxml from the sheet's rules,
not by the hub's AppRec builder."""

from __future__ import annotations

import random

from lxml import etree

from hub.conformance.catalogue import Expect
from hub.conformance.grading import grade_apprec, grade_order
from hub.conformance.profiles import find_profile
from hub.conformance.simulated import PARTIES, TEST_CENTRE_SERVICE, register_parties, system_parties
from hub.fixtures import people
from hub.fixtures.builder import build

A = "http://www.kith.no/xmlstds/apprec/2004-11-21"


def _original() -> bytes:
    parties = system_parties(find_profile("System X"))
    register_parties(parties)
    patient = people.random_person(random.Random(3), min_age=18)
    return build("Dialogmelding", "1.0", seed=3, sender=TEST_CENTRE_SERVICE, receiver=parties[1],
                 patient=patient, directory=PARTIES)


def _apprec(original: bytes, status: str, codes: list[str], *, original_id: str | None = None,
            issue: str | None = None, mirror: bool = True) -> bytes:
    """An AppRec 1.0 answering `original`, its addresses copied from the original's MsgHead."""
    o = etree.fromstring(original)
    n = {"m": o.nsmap[None]}
    info = o.find("m:MsgInfo", n)

    def party(tag: str, org: etree._Element) -> etree._Element:
        el = etree.Element(f"{{{A}}}{tag}")
        inst = etree.SubElement(etree.SubElement(el, f"{{{A}}}HCP"), f"{{{A}}}Inst")
        etree.SubElement(inst, f"{{{A}}}Name").text = org.findtext("m:OrganisationName", namespaces=n)
        etree.SubElement(inst, f"{{{A}}}Id").text = org.findtext("m:Ident/m:Id", namespaces=n)
        etree.SubElement(inst, f"{{{A}}}TypeId", V="HER", DN="HER-id")
        sub = org.find("m:Organisation", n)
        if sub is not None and mirror:
            dept = etree.SubElement(inst, f"{{{A}}}Dept")
            etree.SubElement(dept, f"{{{A}}}Name").text = sub.findtext("m:OrganisationName", namespaces=n)
            etree.SubElement(dept, f"{{{A}}}Id").text = sub.findtext("m:Ident/m:Id", namespaces=n)
            etree.SubElement(dept, f"{{{A}}}TypeId", V="HER", DN="HER-id")
        return el

    root = etree.Element(f"{{{A}}}AppRec", nsmap={None: A})
    etree.SubElement(root, f"{{{A}}}MsgType", V="APPREC", DN="Applikasjonskvittering")
    etree.SubElement(root, f"{{{A}}}MIGversion").text = "1.0 2004-11-21"
    etree.SubElement(root, f"{{{A}}}GenDate").text = "2026-12-05T08:00:00"
    etree.SubElement(root, f"{{{A}}}Id").text = "0b7d5e1c-8f0a-4a57-9a44-0d7c1f2a9b11"
    root.append(party("Sender", info.find("m:Receiver/m:Organisation", n)))
    root.append(party("Receiver", info.find("m:Sender/m:Organisation", n)))
    etree.SubElement(root, f"{{{A}}}Status", V=status, DN={"1": "OK", "2": "Avvist"}[status])
    for c in codes:
        etree.SubElement(root, f"{{{A}}}Error", V=c, S="2.16.578.1.12.4.1.1.8221", DN=c)
    orig = etree.SubElement(root, f"{{{A}}}OriginalMsgId")
    etree.SubElement(orig, f"{{{A}}}MsgType", V=info.find("m:Type", n).get("V"))
    etree.SubElement(orig, f"{{{A}}}IssueDate").text = issue or info.findtext("m:GenDate", namespaces=n)
    etree.SubElement(orig, f"{{{A}}}Id").text = original_id or info.findtext("m:MsgId", namespaces=n)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _rules(apprec: bytes, original: bytes, expect: Expect) -> list[str]:
    return [f.rule for f in grade_apprec(apprec, original, expect, schema_problems=[]).findings]


def test_a_right_apprec_passes_and_each_wrong_part_is_its_own_finding():
    o = _original()
    assert _rules(_apprec(o, "2", ["T02"]), o, Expect("2", ("T02",))) == []
    assert _rules(_apprec(o, "1", []), o, Expect("1")) == []
    assert _rules(_apprec(o, "2", ["T02"], original_id="INT-000001"), o, Expect("2", ("T02",))) == [
        "apprec.original-id"]
    assert _rules(_apprec(o, "2", ["T02"], issue="2026-12-05T07:00:00"), o, Expect("2", ("T02",))) == [
        "apprec.issue-date"]
    assert _rules(_apprec(o, "2", ["T02"], mirror=False), o, Expect("2", ("T02",))) == ["apprec.mirrored"]


def test_status_and_codes_must_be_exactly_the_expected_ones():
    o = _original()
    t02 = Expect("2", ("T02",))
    extra = grade_apprec(_apprec(o, "2", ["T02", "X99", "E21"]), o, t02, schema_problems=[])
    assert [f.rule for f in extra.findings] == ["apprec.answer"]
    assert "X99/E21" in extra.findings[0].text  # the issue's example: two wrong codes beside the right one
    assert _rules(_apprec(o, "2", ["E21"]), o, t02) == ["apprec.answer"]  # the right one missing
    assert _rules(_apprec(o, "2", ["T02", "T02"]), o, t02) == ["apprec.answer"]  # one code per error
    assert _rules(_apprec(o, "1", []), o, t02) == ["apprec.answer"]  # always OK
    assert _rules(_apprec(o, "1", ["X99"]), o, Expect("1")) == ["apprec.answer"]  # OK with an error
    # alternatives: either is right, and both where the message has both defects
    assert _rules(_apprec(o, "2", ["E36", "E32"]), o, Expect("2", ("E36", "E32"))) == []
    # T02 beside the case's code only where the original really breaks its schema (the caller says so)
    both = grade_apprec(_apprec(o, "2", ["T02", "E30"]), o, Expect("2", ("E30",)), schema_problems=[],
                        also=("T02",))
    assert both.passed


def test_the_produced_message_must_be_the_ordered_one():
    o = _original()
    fnr = etree.fromstring(o).xpath("//*[local-name()='Patient']/*[local-name()='Ident']"
                                    "/*[local-name()='Id']")
    assert grade_order(o, family=("Dialogmelding", "1.0"), fnr=fnr[0].text, receiver_her=85021) == []
    wrong = grade_order(o, family=("Epikrise", "1.0"), fnr="01018012371", receiver_her=86002)
    assert [f.rule for f in wrong] == ["order.type", "order.patient", "order.receiver"]
