"""Validator: every rule can fire and can stay quiet; info for both layouts; hostile input; paths."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from hub.fixtures.broken import build_broken
from hub.fixtures.builder import build, build_all
from hub.messages.info import extract_info
from hub.validation.catalog import RULES
from hub.validation.registry import SchemaRegistry
from hub.validation.rules import fnr_valid, is_uuid, parse_gen_date
from hub.validation.validate import Validator

REGISTRY = SchemaRegistry([])  # ours only: the same everywhere, with or without ../shared
MESSAGES = build_all(1)
BROKEN = build_broken(1)


def _validator(**kw: object) -> Validator:
    return Validator(REGISTRY, **kw)  # type: ignore[arg-type]


def _rules(data: bytes, **kw: object) -> list[str]:
    return [p.rule for p in _validator(**kw).validate_bytes(data, "m.xml").problems]


def test_every_valid_fixture_is_quiet() -> None:
    v = _validator()
    for name, data in MESSAGES.items():
        r = v.validate_bytes(data, name)
        assert r.problems == [], (name, [(p.rule, p.text) for p in r.problems])
        assert r.family and r.version and r.type and r.msg_id and r.gen_date, name


@pytest.mark.parametrize("case", BROKEN, ids=lambda c: c.name)
def test_each_broken_case_fires_its_rule_first(case) -> None:
    v = _validator(**{k: case.options[k] for k in ("max_bytes", "unique_msgid") if k in case.options})
    for name in case.options.get("preceded_by", []):
        assert v.validate_bytes(case.companions[name], name).valid
    r = v.validate_bytes(case.data, case.name)
    assert not r.valid
    first = r.errors[0]
    assert (first.rule, first.code) == (case.rule, RULES[case.rule].code)


def test_every_catalog_rule_is_exercised() -> None:
    # Each error rule has a broken fixture case (above); warnings have tests of their own (ident.system
    # here, the others in test_rules_warnings.py).
    assert set(RULES) == {c.rule for c in BROKEN} | {r.id for r in RULES.values() if r.severity == "warning"}


def test_schema_problem_has_line_column_and_xpath() -> None:
    case = next(c for c in BROKEN if c.name == "xsd-unexpected-element.xml")
    p = _validator().validate_bytes(case.data, case.name).errors[0]
    assert p.xpath == "/MsgHead/MsgInfo/Kommentar"
    line = case.data.split(b"\n")[p.line - 1]
    assert line[p.column - 1:].startswith(b"<Kommentar")


def test_msgid_unique_is_per_run_and_opt_in() -> None:
    data = MESSAGES["dialogmelding-1.0-dialog-notat.xml"]
    plain = _validator()
    assert plain.validate_bytes(data, "a.xml").valid and plain.validate_bytes(data, "b.xml").valid
    v = _validator(unique_msgid=True)
    assert v.validate_bytes(data, "a.xml").valid
    second = v.validate_bytes(data, "b.xml")
    assert [p.rule for p in second.errors] == ["msgid.unique"] and "a.xml" in second.errors[0].text
    assert _validator(unique_msgid=True).validate_bytes(data, "b.xml").valid  # a new Validator is a new run


def test_gendate_allows_small_clock_skew() -> None:
    data = MESSAGES["dialogmelding-1.0-dialog-notat.xml"]
    gen = parse_gen_date(extract_info(etree.fromstring(data)).gen_date or "")
    assert gen is not None
    assert "gendate.future" not in _rules(data, now=gen - timedelta(minutes=5))
    assert "gendate.future" in _rules(data, now=gen - timedelta(hours=1))


def test_naive_gendate_is_norwegian_local_time() -> None:
    winter = parse_gen_date("2024-01-10T12:00:00")
    assert winter == datetime(2024, 1, 10, 11, 0, tzinfo=UTC)
    seven_digits = parse_gen_date("2024-01-10T12:00:00.1234567Z")  # .NET writes 7 fraction digits
    assert seven_digits == datetime(2024, 1, 10, 12, 0, 0, 123456, tzinfo=UTC)
    assert parse_gen_date("31.12.2023") is None


def test_fnr_and_uuid_checks() -> None:
    assert fnr_valid("13116900216")  # official Epikrise example's patient
    assert not fnr_valid("13116900217")
    assert not fnr_valid("1311690021") and not fnr_valid("1311690021x")
    assert is_uuid("8d018d60-336b-11de-8bd7-0002a5d5c51b") and is_uuid("fe6225205b3d3049e5f600a44a34ca77")
    assert not is_uuid("FJORD-2024-000417") and not is_uuid("4c661458-c412-4c14-baae-8f092g54f6e2")


def test_ident_system_is_a_warning_that_stays_valid() -> None:
    data = MESSAGES["dialogmelding-1.0-dialog-notat.xml"].replace(
        b'V="FNR" DN="F\xc3\xb8dselsnummer" S="2.16.578.1.12.4.1.1.8116"',
        b'V="FNR" DN="F\xc3\xb8dselsnummer" S="2.16.578.1.12.4.1.1.1111"')
    assert data != MESSAGES["dialogmelding-1.0-dialog-notat.xml"]
    r = _validator().validate_bytes(data)
    assert [(p.rule, p.severity) for p in r.problems] == [("ident.system", "warning")] and r.valid


def test_unknown_8279_type_is_a_code_problem() -> None:
    data = MESSAGES["henvisning-2.0.xml"]
    root = etree.fromstring(data)
    t = root.find("{*}MsgInfo/{*}Type")
    t.set("V", "HENVISNING_UKJENT")
    rules = _rules(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    assert rules[0] == "type.namespace" and "code.value" in rules


@pytest.mark.parametrize("data", [
    b"\x00\x01\x02binary", b"<a>" * 5000 + b"</a>" * 5000, b'<?xml version="1.0"?><!-- only a comment -->',
    b"<MsgHead xmlns='http://www.kith.no/xmlstds/msghead/2006-05-24'/>",
    b"<Message xmlns='http://www.kith.no/xmlstds/epikrise/2012-02-15'><Type V='X'/></Message>",
])
def test_hostile_or_odd_input_never_crashes(data: bytes) -> None:
    r = _validator().validate_bytes(data, "odd.xml")
    assert not r.valid and all(p.code in ("T01", "T02", "T10", "T99", "E10", "E21", "X99") for p in r.errors)


def test_info_msghead_layout() -> None:
    info = extract_info(etree.fromstring(MESSAGES["dialogmelding-1.0-dialog-notat.xml"]))
    assert (info.family_name, info.version, info.carrier, info.type) == (
        "Dialogmelding", "1.0", "msghead", "DIALOG_NOTAT")
    assert info.sender and info.sender.her_id and info.sender_her == info.sender.communication_her_id
    # The deepest level wins (AD2.6-AD2.8): a person or service below the organisation.
    assert info.receiver_her in {info.receiver.person_her_id, info.receiver.dept_her_id}
    assert info.receiver_her != info.receiver.her_id
    assert info.patient and any(t in ("FNR", "DNR") for t, _ in info.patient_ids)


def test_info_own_root_layout_epikrise_sender_is_serv_provider() -> None:
    data = MESSAGES["epikrise-1.2.xml"]
    root = etree.fromstring(data)
    info = extract_info(root)
    assert (info.family_name, info.version, info.carrier) == ("Epikrise", "1.2", "own")
    provider = root.find("{*}ServRprt/{*}ServProvider/{*}HCP/{*}Inst/{*}Id").text
    requester = root.find("{*}ServRprt/{*}Requester/{*}HCP/{*}Inst/{*}Id").text
    assert info.sender.her_id == provider and info.receiver.her_id == requester
    assert info.msg_id == root.findtext("{*}MsgId") and info.patient.name


def test_info_own_root_henvisning_sender_is_requester() -> None:
    root = etree.fromstring(build("Henvisning", "1.0", seed=3))
    info = extract_info(root)
    assert info.sender.her_id == root.find("{*}ServReq/{*}Requester/{*}HCP/{*}Inst/{*}Id").text
    assert info.receiver.her_id == root.find("{*}ServReq/{*}ServProvider/{*}HCP/{*}Inst/{*}Id").text


def test_validate_paths_recurses_folders(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.xml").write_bytes(MESSAGES["epikrise-1.1.xml"])
    (tmp_path / "b.xml").write_bytes(b"not xml")
    (tmp_path / "c.txt").write_bytes(b"ignored")
    results = _validator().validate_paths([tmp_path])
    assert [Path(r.file).name for r in results] == ["b.xml", "a.xml"]
    assert [r.valid for r in results] == [False, True]


def _digits_ending_in(data: bytes, last: str) -> bytes:
    """Every all-digit text node of `data` with its last digit replaced by `last`."""
    import re

    return re.sub(rb">(\d+)\d<", lambda m: b">" + m[1] + last.encode() + b"<", data)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_unicode_digits_in_identifiers_are_plain_errors(name: str) -> None:
    """'²' passes str.isdigit() but not int(): a HER-id or fødselsnummer ending in it must give the
    findings a letter there gives, never an exception."""
    with_letter = _validator().validate_bytes(_digits_ending_in(MESSAGES[name], "X"), name)
    with_superscript = _validator().validate_bytes(_digits_ending_in(MESSAGES[name], "\u00b2"), name)
    assert not with_letter.valid
    assert [(p.rule, p.code) for p in with_superscript.problems] == [
        (p.rule, p.code) for p in with_letter.problems
    ]
