"""Issue 12: routing messages that carry no HER-id.

The relay resolves the receiver by HER-id; where the document names none, by organisation number (ENH)
plus department id (RSH/LAV/...) through the address register; on network intake, by the ebXML To
PartyId. Only when none resolves is it E21, at routing time, answered to the sender.

The lab result is a Svarrapport 1.3 shaped like the official samples (Requester/HCP/Inst with Dept and
HCPerson), built with the project's builder and then addressed the way lab systems do when they know
no HER-id: the GP office by organisation number, its department by a LAV id, the doctor by HPR number.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree
from relay_helpers import drop, files, make_config, wait_for
from test_relay_network import (  # noqa: F401 - pair: a fixture
    A_ADDR,
    B_ADDR,
    Pair,
    config,
    free_port,
    one,
    pair,
    party,
    register_a,
    register_b,
    smtp_to,
)

from hub.fixtures import people
from hub.fixtures.builder import build
from hub.messages.apprec import parse_apprec
from hub.relay import pipeline as pl
from hub.relay.delivery import ensure_spool
from hub.relay.lifecycle import State
from hub.relay.register import Register, RegisterError, load_nhn_xml, load_toml
from hub.relay.server import Relay, default_inspector
from hub.security.testing import shared_test_pki

ELVEBAKKEN_ENH = "974703300"
LAB_ENH = "981275721"

EXTRA = f"""
[[party]]
her_id = 83001
name = "Fjordlab AS"
kind = "lab"
local = true
orgnr = "{LAB_ENH}"

[[party]]
her_id = 83002
name = "Avdeling for medisinsk biokjemi"
parent = 83001
ids = {{ LAV = "B1" }}

[[party]]
her_id = 86001
name = "Elvebakken legesenter"
kind = "gp"
local = true
orgnr = "{ELVEBAKKEN_ENH}"

[[party]]
her_id = 86002
name = "Elvebakken avd. Sentrum"
parent = 86001
ids = {{ LAV = "4711" }}
endpoint = "folder:spool/elvebakken-sentrum"

[[party]]
her_id = 86003
name = "Elvebakken avd. Nord"
parent = 86001
ids = {{ LAV = "4712", RSH = "4201234" }}
endpoint = "folder:spool/elvebakken-nord"
"""


def readdress(doc: bytes, receiver_ids: list[tuple[str, str]], *, lab_by_enh: bool = False,
              hpr: str = people.FASTLEGE.hpr, role: str = "Requester") -> bytes:
    """An own-root message with its receiver (`role`: Svarrapport's Requester, Rekvisisjon's
    ServProvider) named without HER-ids: `receiver_ids` [(TypeId, Id), ...] are the Inst's (the first)
    and its Dept's (the second); a person below is named by HPR number. `lab_by_enh`: a Svarrapport's
    lab (ServProvider) too, by ENH + LAV."""
    root = etree.fromstring(doc)
    ns = etree.QName(root).namespace

    def k(name: str) -> str:
        return f"{{{ns}}}{name}"

    def inst_ids(inst: etree._Element, ids: list[tuple[str, str]], dept_name: str) -> None:
        inst.find(k("Id")).text = ids[0][1]
        inst.find(k("TypeId")).attrib.update({"V": ids[0][0], "DN": "Organisasjonsnummeret"})
        for d in inst.findall(k("Dept")):
            inst.remove(d)
        if len(ids) > 1:
            dept = etree.Element(k("Dept"))
            etree.SubElement(dept, k("Name")).text = dept_name
            etree.SubElement(dept, k("Id")).text = ids[1][1]
            etree.SubElement(dept, k("TypeId"), {"V": ids[1][0], "DN": "Avdelingsidentifikator"})
            inst.insert(list(inst).index(inst.find(k("TypeId"))) + 1, dept)

    inst = root.find(f".//{k(role)}/{k('HCP')}/{k('Inst')}")
    inst_ids(inst, receiver_ids, "Elvebakken avd. Sentrum")
    person = inst.find(k("HCPerson"))
    if person is not None:
        person.find(k("Id")).text = hpr
        person.find(k("TypeId")).attrib.update({"V": "HPR", "DN": "HPR-nummer"})
    if lab_by_enh:
        lab = root.find(f".//{k('ServProvider')}/{k('HCP')}/{k('Inst')}")
        inst_ids(lab, [("ENH", LAB_ENH), ("LAV", "B1")], "Avdeling for medisinsk biokjemi")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def svarrapport(receiver_ids: list[tuple[str, str]] | None, msg_id: str, *,
                lab_by_enh: bool = False) -> bytes:
    """A Svarrapport 1.3 from the lab's biochemistry to the GP, built with the project's builder;
    readdressed (above) unless `receiver_ids` is None."""
    doc = build("Svarrapport", "1.3", sender=people.LAB_BIOKJEMI, receiver=people.GP_FASTLEGE,
                msg_id=msg_id, gen_date=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
    return doc if receiver_ids is None else readdress(doc, receiver_ids, lab_by_enh=lab_by_enh)


# --- the register ----------------------------------------------------------------------------------

@pytest.fixture
def register(tmp_path: Path) -> Register:
    from relay_helpers import REGISTER

    p = tmp_path / "register.toml"
    p.write_text(REGISTER + EXTRA, encoding="utf-8")
    return load_toml(p)


def test_by_org_finds_the_department_by_its_id_and_the_organisation_without_one(register: Register) -> None:
    assert register.by_org(ELVEBAKKEN_ENH, [("LAV", "4711")]).her_id == 86002  # type: ignore[union-attr]
    assert register.by_org(ELVEBAKKEN_ENH, [("RSH", "4201234")]).her_id == 86003  # type: ignore[union-attr]
    assert register.by_org(ELVEBAKKEN_ENH).her_id == 86001  # type: ignore[union-attr]
    assert register.resolve(86003).org_no == ELVEBAKKEN_ENH  # inherited from the organisation
    # a department the register does not know is not delivered to a guess (nor to the organisation)
    assert register.by_org(ELVEBAKKEN_ENH, [("LAV", "9999")]) is None
    # the right id under another organisation number is not it
    assert register.by_org(LAB_ENH, [("LAV", "4711")]) is None
    assert register.by_org("999999999") is None
    # two departments named at once: no single party
    assert register.by_org(ELVEBAKKEN_ENH, [("LAV", "4711"), ("LAV", "4712")]) is None


def test_an_operator_finds_a_party_by_its_department_id(register: Register) -> None:
    assert [p.her_id for p in register.find("LAV:4712")] == [86003]
    assert [p.her_id for p in register.find("4201234")] == [86003]
    assert [p.her_id for p in register.find(ELVEBAKKEN_ENH)] == [86001]


def test_the_documented_register_example_routes_as_documented(tmp_path: Path) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "relay.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```toml register\n(.*?)```", doc, re.S)
    (tmp_path / "register.toml").write_text(block, encoding="utf-8")
    reg = load_toml(tmp_path / "register.toml")
    assert reg.by_org("974703300", [("LAV", "4711")]).her_id == 86002  # type: ignore[union-attr]
    assert reg.resolve(86002).org_no == "974703300"


def test_register_file_errors_name_the_party(tmp_path: Path) -> None:
    p = tmp_path / "r.toml"
    p.write_text('[[party]]\nher_id = 1\nname = "x"\norgnr = "12345"\n', encoding="utf-8")
    with pytest.raises(RegisterError, match="party 1: orgnr '12345' is not a 9-digit"):
        load_toml(p)
    p.write_text('[[party]]\nher_id = 2\nname = "x"\nids = { HER = "5" }\n', encoding="utf-8")
    with pytest.raises(RegisterError, match="party 2: ids.HER is not a department identifier type"):
        load_toml(p)


# The shape of an NHN GetCommunicationPartyDetails answer for an Organization (as in
# ../shared/reference/adresseregister): its services inside, without xsi:type, and -1 for "no parent
# organisation number".
NHN_ORG = b"""<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>
<GetCommunicationPartyDetailsResponse xmlns="http://register.nhn.no/CommunicationParty">
 <GetCommunicationPartyDetailsResult i:type="Organization" xmlns:i="http://www.w3.org/2001/XMLSchema-instance">
  <Active>true</Active>
  <ElectronicAddresses xmlns:b="http://register.nhn.no/Common"><b:ElectronicAddress>
   <b:Address>edi@org.example</b:Address><b:TypeCodeValue>E_EDI</b:TypeCodeValue></b:ElectronicAddress>
  </ElectronicAddresses>
  <HerId>8142987</HerId><Name>Eksempel AS</Name><ParentHerId>-1</ParentHerId>
  <ParentOrganizationNumber>-1</ParentOrganizationNumber><Type>Organization</Type>
  <OrganizationNumber>931796003</OrganizationNumber>
  <Services><Service>
   <Active>true</Active>
   <ElectronicAddresses xmlns:b="http://register.nhn.no/Common"><b:ElectronicAddress>
    <b:Address>edi@service.example</b:Address><b:TypeCodeValue>E_EDI</b:TypeCodeValue></b:ElectronicAddress>
   </ElectronicAddresses>
   <HerId>8143060</HerId><Name>Saksbehandling</Name><ParentHerId>8142987</ParentHerId>
   <ParentOrganizationNumber>931796003</ParentOrganizationNumber><Type>Service</Type>
  </Service></Services>
 </GetCommunicationPartyDetailsResult>
</GetCommunicationPartyDetailsResponse></s:Body></s:Envelope>"""


def test_nhn_organisation_with_its_services_and_organisation_numbers() -> None:
    reg = load_nhn_xml(NHN_ORG)
    org, svc = reg.get(8142987), reg.get(8143060)
    assert org is not None and svc is not None
    assert (org.org_no, org.parent_her_id, org.endpoint) == ("931796003", None, "mailto:edi@org.example")
    assert (svc.level, svc.parent_her_id, svc.org_no) == ("service", 8142987, "931796003")
    assert svc.endpoint == "mailto:edi@service.example"  # its own, not mixed with its organisation's
    assert reg.by_org("931796003") == org


def test_real_nhn_responses_record_organisation_numbers(reference: Path) -> None:
    folder = reference / "adresseregister"
    org = load_nhn_xml((folder / "get-communication-party-details-organzation-response.xml").read_bytes())
    assert {p.her_id for p in org} == {8142987, 8143040, 8143060}
    assert {p.org_no for p in org} == {"931796003"}
    assert org.by_org("931796003").her_id == 8142987  # type: ignore[union-attr]
    svc = load_nhn_xml((folder / "get-communication-party-details-service-response.xml").read_bytes())
    assert svc.get(8094866).org_no == "994598759"  # type: ignore[union-attr] - its ParentOrganizationNumber


# --- pure decisions --------------------------------------------------------------------------------

LAB_LOCAL = pl.Submitted(pl.Channel.FOLDER, 83001)


def _facts(data: bytes) -> pl.Facts:
    return default_inspector()(data, "svar.xml")


def test_the_document_names_enh_and_lav_and_the_register_resolves_them(register: Register) -> None:
    f = _facts(svarrapport([("ENH", ELVEBAKKEN_ENH), ("LAV", "4711")], str(uuid.uuid4())))
    assert f.receiver_her is None and f.receiver_org == pl.Org(ELVEBAKKEN_ENH, (("LAV", "4711"),))
    r = pl.resolve_parties(f, LAB_LOCAL, register)
    assert r.receiver_her == 86002
    assert r.receiver_via == f"ENH {ELVEBAKKEN_ENH} + LAV 4711 in the address register"
    assert not [e for e in r.errors if e.rule in pl.PARTY_RULES]
    d = pl.decide_intake(f, LAB_LOCAL, register, Path("/spool"))
    assert isinstance(d, pl.Accept) and d.route.her_id == 86002
    assert d.route.endpoint.endswith("elvebakken-sentrum")
    assert "found by ENH" in d.reason


def test_an_unknown_department_is_e21_at_routing_answered_to_the_sender(register: Register) -> None:
    f = _facts(svarrapport([("ENH", ELVEBAKKEN_ENH), ("LAV", "9999")], str(uuid.uuid4())))
    d = pl.decide_intake(f, LAB_LOCAL, register, Path("/spool"))
    assert isinstance(d, pl.Reject) and d.code == "E21" and d.answer is pl.Answer.APPREC
    assert f"ENH {ELVEBAKKEN_ENH} + LAV 9999" in d.text


def test_a_sender_named_by_an_unknown_organisation_is_refused_naming_it(register: Register) -> None:
    f = _facts(svarrapport([("ENH", ELVEBAKKEN_ENH), ("LAV", "4711")], str(uuid.uuid4()), lab_by_enh=True))
    assert f.sender_her is None and f.sender_org == pl.Org(LAB_ENH, (("LAV", "B1"),))
    d = pl.decide_intake(replace(f, sender_org=pl.Org("999999999")), LAB_LOCAL, register, Path("/s"))
    assert isinstance(d, pl.Reject) and d.code == "X99" and "ENH 999999999" in d.text
    # found by the register, the lab's department must still lie under the submitting system
    d = pl.decide_intake(f, pl.Submitted(pl.Channel.FOLDER, 84001), register, Path("/s"))
    assert isinstance(d, pl.Reject) and "83002 is not the submitting local system" in d.text


def test_network_intake_falls_back_to_the_ebxml_to_party(register: Register) -> None:
    f = _facts(svarrapport([("ENH", "999999999")], str(uuid.uuid4())))  # an organisation we do not know
    net = pl.Submitted(pl.Channel.SMTP, 83001, to_her=86003)
    r = pl.resolve_parties(f, net, register)
    assert r.receiver_her == 86003 and r.receiver_via == "the ebXML To PartyId 86003"
    # the register's answer comes first; it must lie under the To party
    f2 = _facts(svarrapport([("ENH", ELVEBAKKEN_ENH), ("LAV", "4711")], str(uuid.uuid4())))
    d = pl.decide_intake(f2, pl.Submitted(pl.Channel.SMTP, 83001, to_her=86003), register, Path("/s"))
    assert isinstance(d, pl.Reject) and d.code == "E21" and d.answer is pl.Answer.MESSAGE_ERROR
    assert pl.resolve_parties(f2, pl.Submitted(pl.Channel.SMTP, 83001, to_her=86001), register).receiver_her \
        == 86002


# --- end to end: the relay -------------------------------------------------------------------------

@pytest.fixture
def relay(tmp_path: Path) -> Iterator[Relay]:
    r = Relay(make_config(tmp_path / "hub", extra_register=EXTRA, worker={"apprec_limit_s": 3600}))
    for dept in ("elvebakken-sentrum", "elvebakken-nord"):  # the departments' systems keep these
        ensure_spool(r.cfg.spool_root / dept)
    r.start()
    yield r
    r.stop()


def _one(r: Relay, mid: str, state: State):  # noqa: ANN202
    return lambda: next((m for m in r.store.find_by_kith_msg_id(mid)
                         if m.msg_type != "APPREC" and m.state is state), None)


@pytest.mark.parametrize("lab_by_enh", [False, True], ids=["lab-by-her", "lab-by-enh-too"])
def test_svarrapport_addressed_by_enh_and_lav_reaches_that_department(relay: Relay, lab_by_enh: bool) -> None:
    mid = str(uuid.uuid4())
    doc = svarrapport([("ENH", ELVEBAKKEN_ENH), ("LAV", "4711")], mid, lab_by_enh=lab_by_enh)
    assert b'V="HER"' not in doc.split(b"<Requester>")[1].split(b"</Requester>")[0]
    drop(relay.cfg.spool_root / "83001", "svar.xml", doc)
    m = wait_for(_one(relay, mid, State.AWAITING_APPREC), what="the result delivered")
    assert m.receiver_her == "86002" and m.sender_her == "83002"  # by HER-id, or by ENH + LAV B1
    assert m.family == "Svarrapport" and m.version == "1.3"
    sentrum = relay.cfg.spool_root / "elvebakken-sentrum" / "in"
    got = wait_for(lambda: files(sentrum), what="the file in Sentrum's in/")
    assert got[0].read_bytes() == doc  # the lab's bytes, unchanged
    assert files(relay.cfg.spool_root / "elvebakken-nord" / "in") == []
    validated = next(e for e in relay.store.timeline(m.id) if e.event == "validated")
    assert f"ENH {ELVEBAKKEN_ENH} + LAV 4711 in the address register" in validated.reason

    # the department's system answers from its own HER-id: the AppRec reaches the lab and closes the result
    f = default_inspector()(doc, "x")
    assert f.gen_date is not None and f.msg_type
    org = people.Party(86001, "Elvebakken legesenter", ELVEBAKKEN_ENH, "gp")
    sentrum_party = people.Party(86002, "Elvebakken avd. Sentrum", None, "gp", parent_her_id=86001)
    directory = {**people.DIRECTORY, 86001: org, 86002: sentrum_party}
    apprec = build("AppRec", "1.0", sender=sentrum_party, receiver=people.LAB_BIOKJEMI, status="1",
                   original=(f.msg_type, f.gen_date.replace(tzinfo=None).isoformat(), mid),
                   directory=directory, msg_id=str(uuid.uuid4()))
    drop(relay.cfg.spool_root / "86001", "apprec.xml", apprec)
    done = wait_for(_one(relay, mid, State.COMPLETED), what="the result closed by the AppRec")
    assert done.apprec_status == "1"
    back = wait_for(lambda: files(relay.cfg.spool_root / "83001" / "in"), what="the AppRec at the lab")
    assert mid.encode() in back[0].read_bytes()


ST_OLAV = """
[[party]]
her_id = 59
name = "ST OLAVS HOSPITAL HF"
kind = "lab"
local = true

[[party]]
her_id = 91126
name = "Medisinsk mikrobiologi"
parent = 59
"""


def test_an_official_svarrapport_readdressed_by_enh_and_lav_is_routed(tmp_path: Path,
                                                                      reference: Path) -> None:
    """The official biochemistry sample (St. Olavs laboratory to a GP), its Requester named by ENH +
    LAV instead of HER-ids: the lab's own bytes reach the department the register names."""
    sample = reference / "samples/ehelse-examples/Svarrapport/Svarrapport-v-1-3/Svar_biokjemi_v1-3_Ny.xml"
    doc = readdress(sample.read_bytes(), [("ENH", ELVEBAKKEN_ENH), ("LAV", "4712")], hpr="9144889")
    mid = etree.fromstring(doc).findtext("{*}MsgId")
    assert mid
    r = Relay(make_config(tmp_path / "hub", extra_register=EXTRA + ST_OLAV, worker={"apprec_limit_s": 3600}))
    ensure_spool(r.cfg.spool_root / "elvebakken-nord")
    r.start()
    try:
        drop(r.cfg.spool_root / "59", "Svar_biokjemi_v1-3_Ny.xml", doc)
        m = wait_for(_one(r, mid, State.AWAITING_APPREC), what="the official result delivered")
        assert (m.sender_her, m.receiver_her, m.family, m.version) == ("91126", "86003", "Svarrapport", "1.3")
        got = wait_for(lambda: files(r.cfg.spool_root / "elvebakken-nord" / "in"), what="the file at Nord")
        assert got[0].read_bytes() == doc
    finally:
        r.stop()


def test_unresolvable_receiver_is_e21_at_routing_with_an_apprec_to_the_lab(relay: Relay) -> None:
    mid = str(uuid.uuid4())
    doc = svarrapport([("ENH", ELVEBAKKEN_ENH), ("LAV", "0000")], mid)
    drop(relay.cfg.spool_root / "83001", "svar.xml", doc)
    m = wait_for(_one(relay, mid, State.REJECTED), what="the refusal")
    assert m.last_error_code == "E21" and "LAV 0000" in (m.last_error_text or "")
    tl = relay.store.timeline(m.id)
    assert [e.event for e in tl] == ["accept", "reject"] and "E21" in tl[-1].reason
    back = wait_for(lambda: files(relay.cfg.spool_root / "83001" / "in"), what="the negative AppRec")
    ar = parse_apprec(back[0].read_bytes())
    assert ar.status == "2" and ar.original_msg_id == mid and [e.code for e in ar.errors] == ["E21"]
    assert "ENH 974703300 + LAV 0000" in (ar.errors[0].detail or "")
    for folder in ("elvebakken-sentrum", "elvebakken-nord", "86001"):
        assert files(relay.cfg.spool_root / folder / "in") == []


# --- network: the peer relay knows the department by the ebXML To PartyId only ---------------------


@pytest.mark.timeout(60)
def test_over_the_network_the_to_party_routes_what_the_document_does_not_name(
        pair: Pair,  # noqa: F811 - the imported fixture
) -> None:
    assert pair.a.network is not None
    mid = str(uuid.uuid4())
    # a document naming its receiver by an organisation number relay B's register does not record
    doc = svarrapport([("ENH", "999999999")], mid)
    out = pair.a.network.msh.send(from_her="82002", to_her="81002", payload=doc.replace(
        b"<Id>83001</Id>", b"<Id>82001</Id>").replace(b"<Id>83002</Id>", b"<Id>82002</Id>"),
        now=datetime.now(UTC), message_type="SVAR")
    smtp_to(pair.pb, out.data, "edi@relay-b.test")
    got = wait_for(_one(pair.b, mid, State.AWAITING_APPREC), 15, "B: delivered by the To party")
    assert got.receiver_her == "81002" and got.direction == "in"
    assert len(files(pair.spool(pair.b, 81001) / "in")) == 1
    validated = next(e for e in pair.b.store.timeline(got.id) if e.event == "validated")
    assert "the ebXML To PartyId 81002" in validated.reason


@pytest.mark.timeout(90)
def test_a_requisition_by_enh_and_rsh_crosses_the_network_to_that_department(tmp_path: Path) -> None:
    """Relay A's register knows the hospital's organisation number and the clinic's RSH id and sends
    the requisition to it (ebXML To = the clinic); relay B's register records neither and delivers by
    the To party."""
    pki = shared_test_pki().dir
    to_b = {"endpoint": f"mailto:{B_ADDR}", "pki_party": "lab", "pki": pki}
    extra = (party(81001, "Fjordbyen sykehus HF", **to_b, extra='orgnr = "983015549"')
             + party(81002, "Medisinsk poliklinikk", parent=81001, extra='ids = { RSH = "4201234" }'))
    pa, pb = free_port(), free_port()
    a = Relay(config(tmp_path / "a", 80000, "hub", register_a(pki) + extra, pa, pb, A_ADDR))
    b = Relay(config(tmp_path / "b", 81000, "lab", register_b(pki), pb, pa, B_ADDR))
    a.start()
    b.start()
    try:
        mid = str(uuid.uuid4())
        doc = build("Rekvisisjon", "1.6", sender=people.GP_FASTLEGE, receiver=people.HOSP_POLIKLINIKK,
                    msg_id=mid, gen_date=datetime.now(UTC).replace(tzinfo=None, microsecond=0))
        doc = readdress(doc, [("ENH", "983015549"), ("RSH", "4201234")], role="ServProvider")
        drop(a.cfg.spool_root / "82001", "rekvisisjon.xml", doc)
        sent = wait_for(one(a, mid, State.AWAITING_APPREC), 30, "A: acknowledged by B")
        assert sent.receiver_her == "81002" and sent.direction == "out"
        why = next(e for e in a.store.timeline(sent.id) if e.event == "validated").reason
        assert "ENH 983015549 + RSH 4201234 in the address register" in why
        got = wait_for(one(b, mid, State.AWAITING_APPREC), 15, "B: delivered to the hospital")
        assert got.receiver_her == "81002"
        why = next(e for e in b.store.timeline(got.id) if e.event == "validated").reason
        assert "the ebXML To PartyId 81002" in why
        assert [f.read_bytes() for f in files(b.cfg.spool_root / "81001" / "in")] == [doc]
    finally:
        a.stop()
        b.stop()
