"""Parties of every kind: sender, receiver and copy receivers with every identifier on every level.

The official messages are the oracle where ../shared is present; the built-in messages below stand for
the shapes real lab traffic has (an own-root Svarrapport addressed by ENH + LAV, no HER-id at all).
"""

from __future__ import annotations

import pytest
from lxml import etree

from hub.messages.info import Party, extract_info, her_digits
from hub.paths import reference_dir

REF = reference_dir()
SAMPLES = REF / "samples" if REF else None
needs_ref = pytest.mark.skipif(SAMPLES is None or not SAMPLES.is_dir(), reason="no ../shared/reference")

LABSVAR_13 = "http://www.kith.no/xmlstds/labsvar/2008-12-01"
MSGHEAD = "http://www.kith.no/xmlstds/msghead/2006-05-24"


def _info(path: str):  # noqa: ANN202 - MessageInfo
    assert SAMPLES is not None
    return extract_info(etree.parse(str(SAMPLES / path)))


@pytest.mark.parametrize(("text", "digits"), [
    ("369.767", "369767"), ("3434.643", "3434643"), ("3469.67926", "346967926"), ("56704", "56704"),
    (".369", ".369"), ("369.", "369."), ("369..767", "369..767"), ("3.6a", "3.6a"),
    ("\u0663.767", "\u0663.767"),
])
def test_her_ids_written_with_dots_are_digits(text: str, digits: str) -> None:
    assert her_digits(text) == digits


@needs_ref
def test_epikrise_11_parties_with_her_in_additional_id() -> None:
    info = _info("akseptansetest/epikrise/Case-mottak-epikrise1_1/Epikrise1-1-case_1.xml")
    s, r = info.sender, info.receiver
    assert s is not None and r is not None
    # The sending doctor has an HPR number as Id and the HER-id `258.521` in an AdditionalId.
    assert s.org_no == "883974832" and s.dept_her_id == "3434643"
    assert s.person_ids == (("HPR", "9144900"), ("HER", "258521"))
    assert s.communication_her_id == "258521" and s.hpr == "9144900"
    assert r.ids == (("ENH", "971318864"),) and r.communication_her_id == "369767"
    assert [c.org_no for c in info.copy_receivers] == ["874545434"]
    assert info.copy_receivers[0].communication_her_id is None


@needs_ref
def test_msghead_parties_keep_every_ident() -> None:
    info = _info("ehelse-examples/test/plo/Case2_1-Dialogmelding-Foresporsel_om_tjenestetilbud.xml")
    s, r = info.sender, info.receiver
    assert s is not None and r is not None
    assert s.ids == (("ENH", "971318864"), ("HER", "56704"))
    assert s.person_ids == (("HPR", "9144897"), ("HER", "369767"))  # written 369.767
    assert info.sender_her == "369767"
    assert (r.org_no, r.her_id, r.dept_her_id, info.receiver_her) == ("333555666", "99387", "5078", "5078")


@needs_ref
def test_svarrapport_13_parties() -> None:
    info = _info("ehelse-examples/Svarrapport/Svarrapport-v-1-3/Svar_biokjemi_v1-3_Ny.xml")
    assert info.sender is not None and info.receiver is not None
    assert [lvl for lvl, _name, _ids in info.sender.levels()] == ["organisation", "department"]
    assert (info.sender_her, info.receiver_her) == ("91126", "258521")


def _svar(requester_inst: str, provider_inst: str) -> bytes:
    return f"""<Message xmlns="{LABSVAR_13}"><Type V="S"/><MIGversion>v1.3 2008-12-01</MIGversion>
<GenDate>2020-01-01T10:00:00</GenDate><MsgId>8a7b3c1e-1111-4222-8333-444455556666</MsgId>
<ServReport><ServProvider><HCP><Inst>{provider_inst}</Inst></HCP></ServProvider>
<Requester><HCP><Inst>{requester_inst}</Inst></HCP></Requester>
<CopyDest><HCP><HCProf><Name>Kari Kopi</Name><Id>1234567</Id><TypeId V="HPR"/></HCProf></HCP></CopyDest>
</ServReport></Message>""".encode()


def test_own_root_party_by_org_no_and_department_without_her() -> None:
    data = _svar(
        '<Name>Legesenteret</Name><Id>971318864</Id><TypeId V="ENH"/>'
        '<Dept><Name>Lab</Name><Id>12</Id><TypeId V="LAV"/></Dept>'
        '<HCPerson><Name>Rita Lin</Name><Id>9144900</Id><TypeId V="HPR"/></HCPerson>',
        '<Name>Laboratoriet</Name><Id>974749025</Id><TypeId V="ENH"/>'
        '<AdditionalId><Id>369.767</Id><Type V="HER"/></AdditionalId>'
        '<AdditionalId><Id>4001</Id><Type V="RSH"/></AdditionalId>')
    info = extract_info(etree.fromstring(data))
    r, s = info.receiver, info.sender
    assert r is not None and s is not None
    assert (r.org_no, r.dept_ident, r.dept_id, r.hpr, r.communication_her_id) == (
        "971318864", ("LAV", "12"), "12", "9144900", None)
    assert s.ids == (("ENH", "974749025"), ("HER", "369767"), ("RSH", "4001"))
    assert s.communication_her_id == "369767"
    assert info.copy_receivers == [Party(person_name="Kari Kopi", person_ids=(("HPR", "1234567"),))]
    assert r.to_dict() == {
        "her_id": None, "org_no": "971318864", "dept_id": "12", "hpr": "9144900",
        "levels": [
            {"level": "organisation", "name": "Legesenteret", "ids": [{"type": "ENH", "id": "971318864"}]},
            {"level": "department", "name": "Lab", "ids": [{"type": "LAV", "id": "12"}]},
            {"level": "person", "name": "Rita Lin", "ids": [{"type": "HPR", "id": "9144900"}]},
        ]}


def test_msghead_party_by_org_no_and_rsh() -> None:
    xml = f"""<MsgHead xmlns="{MSGHEAD}"><MsgInfo><Type V="DIALOG_NOTAT"/>
<MIGversion>v1.2 2006-05-24</MIGversion>
<GenDate>2020-01-01T10:00:00</GenDate><MsgId>8a7b3c1e-1111-4222-8333-444455556666</MsgId>
<Sender><Organisation><OrganisationName>A</OrganisationName><Ident><Id>1.000</Id><TypeId V="HER"/></Ident>
</Organisation></Sender>
<Receiver><Organisation><OrganisationName>B</OrganisationName>
<Ident><Id>974703300</Id><TypeId V="ENH"/></Ident>
<Organisation><OrganisationName>B1</OrganisationName>
<Ident><Id>104</Id><TypeId V="RSH"/></Ident></Organisation>
<HealthcareProfessional><GivenName>Ola</GivenName><FamilyName>Lege</FamilyName>
<Ident><Id>7654321</Id><TypeId V="HPR"/></Ident></HealthcareProfessional>
</Organisation></Receiver></MsgInfo></MsgHead>"""
    info = extract_info(etree.fromstring(xml.encode()))
    r = info.receiver
    assert r is not None and info.sender_her == "1000"
    assert (r.org_no, r.dept_id, r.dept_name, r.person_name, r.hpr) == ("974703300", "104", "B1", "Ola Lege",
                                                                        "7654321")
    assert r.communication_her_id is None
