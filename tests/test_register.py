"""The address register: our TOML format, NHN register responses, inheritance, lookups, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli.main import app
from hub.relay.register import RegisterError, hash_token, load, load_nhn_xml, load_toml

REGISTER = """
[[party]]
her_id = 81001
name = "Fjordbyen sykehus"
kind = "hospital"
org_no = "974557746"
endpoint = "mailto:edi@fjordbyen-sykehus.example"
sign_cert = "pki/hospital/sign.pem"
accepts = ["Henvisning:1.1", "Dialogmelding:*"]

[[party]]
her_id = 81002
name = "Medisinsk poliklinikk"
parent = 81001

[[party]]
her_id = 82001
name = "Legekontoret Fjordbyen"
kind = "gp"
local = true
endpoint = "folder:spool/gp"
token = "hemmelig"
"""


@pytest.fixture()
def register_file(tmp_path: Path) -> Path:
    p = tmp_path / "register.toml"
    p.write_text(REGISTER, encoding="utf-8")
    return p


def test_service_inherits_from_its_organisation(register_file: Path) -> None:
    reg = load_toml(register_file)
    svc = reg.resolve(81002)
    assert svc.kind == "hospital"
    assert svc.endpoint == "mailto:edi@fjordbyen-sykehus.example"
    assert svc.level == "service"
    assert svc.sign_cert == str(register_file.parent / "pki/hospital/sign.pem")
    assert [p.her_id for p in reg.chain(81002)] == [81002, 81001]
    assert reg.organisation_of(81002).her_id == 81001


def test_accepts_and_tokens(register_file: Path) -> None:
    reg = load_toml(register_file)
    hosp = reg.resolve(81002)
    assert hosp.accepts_message("Henvisning", "1.1")
    assert not hosp.accepts_message("Henvisning", "2.0")
    assert hosp.accepts_message("Dialogmelding", "1.0")
    gp = reg.resolve(82001)
    assert gp.endpoint == "folder:" + str(register_file.parent / "spool/gp")
    assert gp.token_sha256 == hash_token("hemmelig")
    assert reg.by_token("hemmelig").her_id == 82001
    assert reg.by_token("feil") is None


def test_unknown_parent_and_bad_kind_are_named(tmp_path: Path) -> None:
    p = tmp_path / "r.toml"
    p.write_text('[[party]]\nher_id = 1\nname = "x"\nparent = 99\n', encoding="utf-8")
    with pytest.raises(RegisterError, match="parent 99"):
        load_toml(p)
    p.write_text('[[party]]\nher_id = 1\nname = "x"\nkind = "bakery"\n', encoding="utf-8")
    with pytest.raises(RegisterError, match="bakery"):
        load_toml(p)


def test_nhn_register_responses_load(reference: Path) -> None:
    folder = reference / "adresseregister"
    svc = load_nhn_xml((folder / "get-communication-party-details-service-response.xml").read_bytes())
    party = svc.get(8094866)
    assert party is not None and party.level == "service"
    assert party.parent_her_id == 112374
    assert party.endpoint == "mailto:meldingsvalidator@samsvar.nhn.no"
    person = load_nhn_xml((folder / "helsenorge_CommunicationDetails_93238.xml").read_bytes())
    p = person.get(93238)
    assert p is not None and p.level == "person"
    assert p.addresses["E_SB_ASYNC"].endswith("93238_async")


def test_cli_list_show_lookup(register_file: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["registry", "list", "--register", str(register_file), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["source"] == {"config": None, "register": [str(register_file)]}
    rows = out["parties"]
    assert {r["her_id"] for r in rows} == {81001, 81002, 82001}
    assert all("token_sha256" not in r for r in rows)
    res = runner.invoke(app, ["registry", "show", "81002", "--register", str(register_file), "--json"])
    shown = json.loads(res.output)
    assert shown["chain"] == [81002, 81001] and shown["source"]["register"] == [str(register_file)]
    res = runner.invoke(app, ["registry", "lookup", "poliklinikk", "--register", str(register_file)])
    assert res.exit_code == 0 and "81002" in res.output
    res = runner.invoke(app, ["registry", "lookup", "poliklinikk", "--json",
                        "--register", str(register_file)])
    assert 81002 in {p["her_id"] for p in json.loads(res.output)["parties"]}
    res = runner.invoke(app, ["registry", "show", "424242", "--register", str(register_file)])
    assert res.exit_code == 1
    res = runner.invoke(app, ["registry", "list", "--register", str(register_file.parent / "nope.toml")])
    assert res.exit_code == 2


def test_folder_of_sources_merges(register_file: Path, reference: Path) -> None:
    reg = load([register_file, reference / "adresseregister"])
    assert reg.get(81001) is not None and reg.get(8094866) is not None
