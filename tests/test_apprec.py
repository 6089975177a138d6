"""AppRec 1.0/1.1: built for any verdict, valid against our schema and the official one, parsed back."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.codes import APPREC_ERROR_OID, AppRecStatus
from hub.fixtures.broken import build_broken
from hub.fixtures.builder import build_all
from hub.messages.apprec import NotAnAppRec, build_apprec, parse_apprec
from hub.messages.info import Party
from hub.validation.registry import SchemaRegistry
from hub.validation.validate import Validator
from hub.xmlsafe import XmlInputError

OURS = SchemaRegistry([])
HUB = Party(name="Fjordbyen sykehus", her_id="81001", dept_name="Poliklinikk", dept_her_id="81002")
GP = Party(name="Legekontoret", her_id="82001", person_name="Kari Fjeld", person_her_id="82002")
MESSAGES = build_all(1)
CASES = {c.name: c for c in build_broken(1)}


def _roundtrip(registry: SchemaRegistry, version: str) -> None:
    judge = Validator(OURS)
    for data, name in [(MESSAGES["dialogmelding-1.1-dialog-helsefaglig.xml"], "ok"),
                       (CASES["xsd-missing-element.xml"].data, "xsd"),
                       (CASES["not-well-formed.xml"].data, "t01"),
                       (CASES["patient-fnr-invalid.xml"].data, "fnr")]:
        original = judge.validate_bytes(data, name)
        apprec = build_apprec(original, sender=HUB, receiver=GP, version=version)
        check = Validator(registry).validate_bytes(apprec, f"apprec-{name}")
        assert check.valid, (name, [(p.rule, p.text) for p in check.problems])
        assert (check.family, check.version, check.type) == ("AppRec", version, "APPREC")
        got = parse_apprec(apprec)
        assert got.version == version
        assert got.status == (AppRecStatus.OK if original.valid else AppRecStatus.REJECTED)
        assert {e.code for e in got.errors} == {p.code for p in original.errors}
        assert all(e.system == APPREC_ERROR_OID and e.text and e.detail for e in got.errors)
        assert got.original_msg_id == original.msg_id
        if original.type:
            assert got.original_msg_type == original.type and got.original_issue_date == original.gen_date
        assert got.sender.communication_her_id == "81002" and got.receiver.communication_her_id == "82002"
        assert (got.sender_role, got.receiver_role) == (("PRIM", "AVS") if version == "1.1" else (None, None))


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_roundtrip_valid_against_our_schema(version: str) -> None:
    _roundtrip(OURS, version)


@pytest.mark.parametrize("version", ["1.0", "1.1"])
def test_roundtrip_valid_against_official_schema(reference: Path, version: str) -> None:
    _roundtrip(SchemaRegistry([reference / "xsd"]), version)


def test_explicit_status_ok_with_part_error_keeps_errors() -> None:
    r = Validator(OURS).validate_bytes(CASES["msgid-not-uuid.xml"].data, "x")
    got = parse_apprec(build_apprec(r, sender=HUB, receiver=GP, status=AppRecStatus.OK_PART_ERROR,
                                    gen_date="2024-05-01T10:00:00",
                                    msg_id="5f1c1b8e-3d0a-4e55-9a43-2c1f0b7d6e21"))
    assert got.status == AppRecStatus.OK_PART_ERROR and got.ok and [e.code for e in got.errors] == ["E10"]
    assert (got.gen_date, got.msg_id) == ("2024-05-01T10:00:00", "5f1c1b8e-3d0a-4e55-9a43-2c1f0b7d6e21")


def test_parse_official_apprecs(reference: Path) -> None:
    avvist = parse_apprec((reference / "samples/ksfiks_app-rec_1.0_example-avvist.xml").read_bytes())
    assert avvist.status == AppRecStatus.REJECTED and not avvist.ok
    assert [(e.code, e.system, e.detail) for e in avvist.errors] == [
        ("E21", APPREC_ERROR_OID, "Legen har sluttet")]
    assert avvist.original_msg_type == "EPIKRISE"
    assert avvist.original_msg_id == "a6967e6a-8c0a-4be4-a647-c921d3086423"
    assert avvist.sender.her_id == "56704" and avvist.sender.communication_her_id == "258521"  # " HER"
    assert avvist.receiver.communication_her_id == "91126"
    ok = parse_apprec((reference / "samples/ksfiks_app-rec_1.0_example-ok.xml").read_bytes())
    assert ok.status == AppRecStatus.OK and ok.errors == []


def test_parse_rejects_other_documents() -> None:
    with pytest.raises(NotAnAppRec):
        parse_apprec(MESSAGES["epikrise-1.2.xml"])
    with pytest.raises(XmlInputError):
        parse_apprec(b"<AppRec>")


def test_fixture_apprecs_parse() -> None:
    got = parse_apprec(MESSAGES["apprec-1.1.xml"])
    assert got.version == "1.1" and got.status == AppRecStatus.OK and got.original_msg_id
