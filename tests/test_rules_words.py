"""Warnings (said, never rejected), errors in plain words at element-name paths, and the official samples.

- Every warning rule fires where it should and leaves the message valid.
- libxml2's positional paths become element names; its XSD wording becomes plain words; an empty value
  is called empty; a MIGversion of another version than the namespace's is said once, first.
- The official example messages (../shared/reference/samples/ehelse-examples) carry no error at all
  with the official schema pack, business rules included; the deliberately broken KS FIKS samples are
  caught by the rule their defect is about.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from hub.fixtures.builder import build_all
from hub.validation.catalog import RULES
from hub.validation.plain import element_at, plain
from hub.validation.registry import SchemaRegistry
from hub.validation.validate import Validator

MESSAGES = build_all(1)
MH = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"
NPR = {"eksempel.xml", "npr-bkm-ncrp-eksempel-kith.xml"}  # their payload schema is not in the pack


@pytest.fixture(scope="module")
def official(reference: Path) -> Validator:
    return Validator(SchemaRegistry([reference / "xsd"]))


def _edit(name: str, fn) -> bytes:  # noqa: ANN001
    root = etree.fromstring(MESSAGES[name])
    fn(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def _rules(data: bytes) -> tuple[set[str], set[str]]:
    r = Validator().validate_bytes(data, "m.xml")
    return {p.rule for p in r.errors}, {p.rule for p in r.problems if p.severity == "warning"}


def test_every_warning_rule_is_a_warning() -> None:
    warnings = {r.id for r in RULES.values() if r.severity == "warning"}
    assert warnings == {"ident.system", "receiver.her-missing", "sender.her-missing", "patient.absent"}


def test_msghead_party_without_her_is_routed_not_rejected() -> None:
    def receiver_by_org_no(root: etree._Element) -> None:
        org = root.find(f"{MH}MsgInfo/{MH}Receiver/{MH}Organisation")
        for el in org.findall(f"{MH}Organisation") + org.findall(f"{MH}HealthcareProfessional"):
            org.remove(el)
        for ident in org.findall(f"{MH}Ident"):
            if ident.find(f"{MH}TypeId").get("V") == "HER":
                org.remove(ident)

    data = _edit("dialogmelding-1.0-dialog-notat.xml", receiver_by_org_no)
    r = Validator().validate_bytes(data, "m.xml")
    assert r.valid and r.receiver is None and r.info.receiver.org_no
    assert [p.rule for p in r.problems] == ["receiver.her-missing"]


def test_dialogmelding_without_patient_is_a_warning() -> None:
    data = _edit("dialogmelding-1.0-dialog-avvik.xml",
                 lambda r: r.find(f"{MH}MsgInfo").remove(r.find(f"{MH}MsgInfo/{MH}Patient")))
    errors, warnings = _rules(data)
    assert not errors and warnings == {"patient.absent"}


@pytest.mark.parametrize(("message", "words"), [
    ("Element 'SvarPaaForesporsel': '' is not a valid value of the atomic type 'xs:boolean'.",
     "SvarPaaForesporsel is empty; it must hold true or false"),
    ("Element 'Dato': '2020-13' is not a valid value of the local union type.",
     "Dato: '2020-13' has none of the forms this value allows"),
    ("Element 'GenDate', attribute 'V': 'igår' is not a valid value of the atomic type 'xs:dateTime'.",
     "GenDate/@V: 'igår' is not a date and time (YYYY-MM-DDThh:mm:ss)"),
    ("Element 'Kommentar': This element is not expected. Expected is one of ( Sender, Receiver ).",
     "Kommentar is not allowed here; expected one of Sender, Receiver"),
    ("Element 'Sender': Missing child element(s). Expected is ( Organisation ).",
     "Sender lacks a required child element: Organisation"),
    ("Element 'Status', attribute 'V': [facet 'enumeration'] The value '' is not an element of the set "
     "{'1', '2'}.", "Status/@V is empty; allowed: 1, 2"),
    ("Element 'Id': [facet 'minLength'] The value has a length of '0'; this underruns the allowed minimum "
     "length of '1'.", "Id is empty"),
])
def test_libxml2_words_become_plain(message: str, words: str) -> None:
    out = plain(message)
    assert out == words
    assert "atomic type" not in out and "union type" not in out


def test_libxml2_paths_are_walked_to_element_names() -> None:
    root = etree.fromstring(
        b'<a:MsgHead xmlns:a="urn:m"><a:MsgInfo/><a:Document><a:RefDoc><a:Content>'
        b'<p:Konsultasjon xmlns:p="urn:k"><p:Info/><p:Info><p:Svar/></p:Info></p:Konsultasjon>'
        b'</a:Content></a:RefDoc></a:Document></a:MsgHead>')
    tree = root.getroottree()
    el = element_at(tree, "/*/*[2]/*/*/p6:Konsultasjon/*[2]/*")
    assert el is not None and etree.QName(el).localname == "Svar"
    assert element_at(tree, "/*/*[3]") is None and element_at(tree, "/x:Other") is None


def test_schema_errors_in_payloads_are_named_by_element_names(official: Validator) -> None:
    def empty_date(root: etree._Element) -> None:
        next(root.iter("{*}GodkjentDato")).text = ""

    data = _edit("innleggelsesrapport-1.5.xml", empty_date)
    r = official.validate_bytes(data, "m.xml")  # (the official PLO schema types the date; ours is lenient)
    xsd = [p for p in r.errors if p.rule == "xsd"]
    assert xsd, [(p.rule, p.text) for p in r.problems]
    for p in xsd:
        assert p.xpath and p.xpath.startswith("/MsgHead/Document/RefDoc/Content/Innleggelsesrapport/"), p
        assert "*" not in p.xpath and ":" not in p.xpath
    assert any(p.text.startswith("GodkjentDato is empty") for p in xsd), [p.text for p in xsd]


def test_mig_version_of_another_version_is_said_first_and_once() -> None:
    def other_version(root: etree._Element) -> None:
        next(root.iter("{*}MIGversion")).text = "v1.2 2005-03-14"

    r = Validator().validate_bytes(_edit("svarrapport-1.3-biokjemi.xml", other_version), "m.xml")
    assert [p.rule for p in r.errors][:1] == ["ns.mig-version"]
    assert "says version 1.2" in r.errors[0].text and "1.3" in r.errors[0].text


def test_official_examples_carry_no_error(reference: Path, official: Validator) -> None:
    examples = sorted((reference / "samples/ehelse-examples").rglob("*.xml"))
    assert len(examples) == 147
    bad = {}
    for f in examples:
        r = official.validate_bytes(f.read_bytes(), f.name)
        if f.name in NPR:
            assert {p.rule for p in r.errors} == {"ns.payload-unknown"}, f
        elif r.errors:
            bad[str(f.relative_to(reference))] = [(p.rule, p.text) for p in r.errors]
    assert bad == {}


def test_broken_official_samples_are_caught_by_their_rule(reference: Path, official: Validator) -> None:
    samples = reference / "samples"
    empty = official.validate_bytes((samples / "ksfiks_app-rec_missing-migversion.xml").read_bytes())
    assert not empty.valid and empty.errors[0].rule == "xsd"  # an AppRec with no children at all
    assert empty.errors[0].text == "AppRec lacks a required child element: MsgType"
    version = official.validate_bytes((samples / "ksfiks_dialogmelding_invalid-version.xml").read_bytes())
    assert version.errors[0].rule == "ns.mig-version"


def test_empty_codes_are_called_empty() -> None:
    def empty_codes(root: etree._Element) -> None:
        root.find(f".//{MH}Patient/{MH}Sex").set("V", "")
        root.find(f".//{MH}Sender//{MH}TypeId").set("V", "")

    r = Validator().validate_bytes(_edit("dialogmelding-1.0-dialog-notat.xml", empty_codes), "m.xml")
    texts = {p.rule: p.text for p in r.errors}
    assert texts["code.value"] == "Sex V is empty (KITH code list 3101)"
    assert texts["ident.type"] == "the TypeId is empty (code list 9051)"
