"""Fixture builder: identity numbers, parties, determinism, the committed corpus and the CLI."""

from __future__ import annotations

import json
import random
from datetime import date
from pathlib import Path

import pytest
from lxml import etree
from typer.testing import CliRunner

from hub.cli.main import app
from hub.fixtures import people
from hub.fixtures.broken import build_broken
from hub.fixtures.builder import build, build_all, families
from hub.paths import FIXTURES_DIR
from hub.validation.catalog import RULES

MH = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"


# --- identity numbers ---------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["13116900216", "15076500565"])  # the standards' published examples
def test_known_fnr_pass_mod11(number: str) -> None:
    assert people.is_valid_fnr(number)


def test_generated_fnr_and_dnr_pass_and_corrupted_fail() -> None:
    rng = random.Random(7)
    for _ in range(300):
        p = people.random_person(rng, d_number=rng.random() < 0.3)
        assert p.ident is not None
        assert people.is_valid_fnr(p.ident), p
        assert not people.is_valid_fnr(people.with_wrong_check_digits(p.ident))
        day = int(p.ident[:2])
        if p.ident_type == "DNR":
            assert people.is_d_number(p.ident) and day - 40 == p.birth_date.day
        else:
            assert day == p.birth_date.day and not people.is_d_number(p.ident)
        assert p.ident[2:4] == f"{p.birth_date.month:02d}"
        # The third individual digit is odd for men, even for women.
        assert int(p.ident[8]) % 2 == (1 if p.sex == "1" else 0)


def test_make_fnr_centuries() -> None:
    rng = random.Random(1)
    assert int(people.make_fnr(date(1950, 1, 2), "2", rng)[6:9]) < 500
    assert int(people.make_fnr(date(2010, 1, 2), "1", rng)[6:9]) >= 500


def test_fnr_rejects_wrong_shape() -> None:
    assert not people.is_valid_fnr("1311690021")
    assert not people.is_valid_fnr("1311690021X")


def test_org_numbers() -> None:
    assert people.is_valid_org_no("974760673")  # Brønnøysundregistrene's own number
    assert not people.is_valid_org_no("974760674")
    for p in people.DEMO_PARTIES:
        if p.org_no:
            assert people.is_valid_org_no(p.org_no), p
    impossible = next(
        f"{n:08d}" for n in range(10**7, 10**8) if people.org_no_check_digit(f"{n:08d}") is None
    )
    with pytest.raises(ValueError):
        people.make_org_no(impossible)


def test_demo_directory_hierarchy() -> None:
    kinds = {p.kind for p in people.DEMO_PARTIES if p.parent_her_id is None}
    assert kinds == {"gp", "hospital", "lab", "nursing"}
    for p in people.DEMO_PARTIES:
        assert isinstance(p.her_id, int) and p.her_id > 0
        top = people.organisation_of(p)
        assert top.parent_her_id is None and top.kind == p.kind
    assert people.GP_FASTLEGE.level == "person" and people.GP_FASTLEGE.person is not None
    assert people.HOSP_POLIKLINIKK.level == "service"
    assert [x.her_id for x in people.chain(people.HOSP_OVERLEGE)] == [81010, 81003, 81001]
    assert len(people.DIRECTORY) == len(people.DEMO_PARTIES)


def test_register_toml_loads_in_the_relay_register(tmp_path: Path) -> None:
    from hub.relay.register import load_toml

    f = tmp_path / "r.toml"
    f.write_text(people.register_toml(), encoding="utf-8")
    reg = load_toml(f)
    assert reg.resolve(82002).kind == "gp"
    assert reg.resolve(82002).level == "person"
    assert reg.organisation_of(81010).her_id == 81001


# --- builder ------------------------------------------------------------------------------------------


def test_build_is_deterministic_and_seed_sensitive() -> None:
    a = build("Dialogmelding", "1.1", seed=5)
    assert a == build("Dialogmelding", "1.1", seed=5)
    assert a != build("Dialogmelding", "1.1", seed=6)


def test_build_uses_given_parties_patient_and_overrides() -> None:
    patient = people.random_person(random.Random(3))
    data = build(
        "Dialogmelding",
        "1.0",
        seed=2,
        sender=people.NURSING_SYKEPLEIER,
        receiver=people.GP_FASTLEGE,
        patient=patient,
        msg_type="DIALOG_FORESPORSEL",
        msg_id="0f6b5bde-8f2b-4b8a-9d55-2f3c0d6b1e11",
        gen_date="2024-05-02T10:00:00",
    )
    root = etree.fromstring(data)
    assert root.findtext(f"{MH}MsgInfo/{MH}MsgId") == "0f6b5bde-8f2b-4b8a-9d55-2f3c0d6b1e11"
    assert root.findtext(f"{MH}MsgInfo/{MH}GenDate") == "2024-05-02T10:00:00"
    assert root.find(f"{MH}MsgInfo/{MH}Type").get("V") == "DIALOG_FORESPORSEL"
    assert root.findtext(f"{MH}MsgInfo/{MH}Patient/{MH}Ident/{MH}Id") == patient.ident
    sender_ids = [i.text for i in root.iterfind(f"{MH}MsgInfo/{MH}Sender//{MH}Id")]
    assert ["84001", "84003", "84010"] == [x for x in sender_ids if x in ("84001", "84003", "84010")]
    receiver_ids = [i.text for i in root.iterfind(f"{MH}MsgInfo/{MH}Receiver//{MH}Id")]
    assert "82001" in receiver_ids and "82002" in receiver_ids


CLINIC = people.Party(97001, "Fjellet legesenter", None, "gp")
CLINIC_DOCTOR = people.Party(97002, "Henrik Vold", None, "gp", parent_her_id=97001, person=people.FASTLEGE_2)


def test_build_takes_the_callers_directory_and_leaves_the_global_alone() -> None:
    before = dict(people.DIRECTORY)
    directory = {**people.DIRECTORY, CLINIC.her_id: CLINIC, CLINIC_DOCTOR.her_id: CLINIC_DOCTOR}
    with pytest.raises(KeyError, match="97001"):
        build("Henvisning", "1.0", sender=CLINIC_DOCTOR)
    data = build("Henvisning", "1.0", sender=CLINIC_DOCTOR, directory=directory)
    root = etree.fromstring(data)
    inst = root.find("{*}ServReq/{*}Requester/{*}HCP/{*}Inst")
    assert inst.findtext("{*}Id") == "97001" and inst.findtext("{*}Name") == "Fjellet legesenter"
    assert inst.findtext("{*}HCPerson/{*}Id") == "97002"
    # MsgHead carriers (Dialogmelding, PLO) and AppRec resolve through the same directory.
    for family, version in (("Dialogmelding", "1.1"), ("AppRec", "1.0"), ("Innleggelsesrapport", "1.5")):
        data = build(family, version, receiver=CLINIC_DOCTOR, directory=directory)
        assert b"97001" in data and b"Fjellet legesenter" in data, family
    assert people.DIRECTORY == before
    # The default directory still gives the same bytes as before.
    same = build("Henvisning", "1.0", seed=4, directory=people.DIRECTORY)
    assert build("Henvisning", "1.0", seed=4) == same


def test_own_root_parties_sit_where_the_standard_says() -> None:
    # Epikrise: sender = ServProvider, receiver = Requester (STANDARDS.md §3).
    root = etree.fromstring(build("Epikrise", "1.2", seed=1))
    assert root.findtext("{*}ServRprt/{*}ServProvider/{*}HCP/{*}Inst/{*}Id") == "81001"
    assert root.findtext("{*}ServRprt/{*}Requester/{*}HCP/{*}Inst/{*}HCPerson/{*}Id") == "82002"
    # Henvisning <= 1.1: sender = Requester, receiver = ServProvider.
    root = etree.fromstring(build("Henvisning", "1.0", seed=1))
    assert root.findtext("{*}ServReq/{*}ServProvider/{*}HCP/{*}Inst/{*}Dept/{*}Id") == "81002"


def test_builder_covers_the_family_table() -> None:
    from hub.messages.families import FAMILIES

    # MsgHead is the envelope of other families' fixtures, never a message of its own.
    for f in FAMILIES:
        if (f.name, f.version) == ("MsgHead", "1.2"):
            continue
        data = build(f.name, f.version, seed=3)
        root = etree.fromstring(data)
        carried = root.find(".//{*}Content")
        payload = carried[0] if f.carrier == "msghead" and carried is not None else root
        assert etree.QName(payload).namespace == f.namespace, f.key


def test_build_rejects_unknowns() -> None:
    with pytest.raises(ValueError, match="unknown family"):
        build("Sykmelding", "1.0")
    with pytest.raises(ValueError, match="no version"):
        build("Epikrise", "2.0")
    with pytest.raises(TypeError, match="colour"):
        build("Epikrise", "1.2", colour="red")


def test_build_all_covers_every_family_and_version() -> None:
    msgs = build_all(1)
    for family, versions in families().items():
        for v in versions:
            assert any(n.startswith(f"{family.lower()}-{v}") for n in msgs), (family, v)
    roots = [etree.fromstring(d) for d in msgs.values()]
    ids = [r.findtext(".//{*}MsgId") or r.findtext("{*}Id") for r in roots]
    assert len(set(ids)) == len(ids), "every fixture has its own MsgId"
    patients = {p.ident for p in [people.random_person(random.Random(f"patient|{s}")) for s in range(1, 20)]}
    assert len(patients) > 15


# --- broken corpus ------------------------------------------------------------------------------------

# Warnings never make a message invalid (no AppRec error), so no broken file can fail by one.
SINGLE_FILE_RULES = {rule_id for rule_id, rule in RULES.items() if rule.severity != "warning"}


def test_broken_cases_cover_every_catalog_rule() -> None:
    cases = build_broken(1)
    assert {c.rule for c in cases} == SINGLE_FILE_RULES
    assert len({c.name for c in cases}) == len(cases)
    for c in cases:
        assert c.code == RULES[c.rule].code
    big = next(c for c in cases if c.rule == "xml.too-large")
    assert len(big.data) > big.options["max_bytes"]
    reused = next(c for c in cases if c.rule == "msgid.unique")
    first = reused.companions[reused.options["preceded_by"][0]]
    assert first != reused.data
    msg_id = etree.fromstring(first).findtext(f".//{MH}MsgId")
    assert msg_id and msg_id == etree.fromstring(reused.data).findtext(f".//{MH}MsgId")


def test_broken_patient_identity_numbers_fail_mod11() -> None:
    for c in build_broken(1):
        if c.rule == "patient.fnr-invalid":
            number = etree.fromstring(c.data).findtext(f".//{MH}Patient/{MH}Ident/{MH}Id")
            assert number and len(number) == 11 and not people.is_valid_fnr(number)


# --- committed corpus and CLI -------------------------------------------------------------------------


def _tree(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_committed_corpus_equals_builder_output(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["fixtures", "build", str(tmp_path)])
    assert result.exit_code == 0, result.output
    fresh = _tree(tmp_path)
    committed = {k: v for k, v in _tree(FIXTURES_DIR).items() if k.split("/")[0] in ("messages", "broken")}
    assert sorted(fresh) == sorted(committed), "run `hub fixtures build` and commit fixtures/"
    for name, data in fresh.items():
        assert committed[name] == data, f"{name} differs: run `hub fixtures build` and commit fixtures/"
    manifest = json.loads((tmp_path / "broken" / "manifest.json").read_text(encoding="utf-8"))
    listed = {c["file"] for c in manifest["cases"]} | {f for c in manifest["cases"] for f in c["companions"]}
    assert listed == {p.name for p in (tmp_path / "broken").glob("*.xml")}
