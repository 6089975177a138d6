"""`hub validate` exit codes and JSON shape; `hub schemas add|list`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree
from typer.testing import CliRunner

from hub.cli.main import app
from hub.fixtures.broken import build_broken
from hub.fixtures.builder import build_all

runner = CliRunner()
MESSAGES = build_all(1)


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HUB_SCHEMA_PACKS", raising=False)


def _write(d: Path, files: dict[str, bytes]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for n, b in files.items():
        (d / n).write_bytes(b)
    return d


def test_all_valid_exits_0(tmp_path: Path) -> None:
    d = _write(tmp_path / "m", {n: MESSAGES[n] for n in ("epikrise-1.2.xml", "apprec-1.0.xml")})
    res = runner.invoke(app, ["validate", str(d)])
    assert res.exit_code == 0, res.output
    assert "2 message(s): 2 valid, 0 invalid" in res.output
    assert "Epikrise 1.2 (EPIKRISE)" in res.output


def test_some_invalid_exits_1_with_json(tmp_path: Path) -> None:
    case = next(c for c in build_broken(1) if c.name == "xsd-wrong-order.xml")
    d = _write(tmp_path / "m", {"good.xml": MESSAGES["epikrise-1.1.xml"], "bad.xml": case.data})
    res = runner.invoke(app, ["validate", "--json", str(d / "good.xml"), str(d / "bad.xml")])
    assert res.exit_code == 1
    out = json.loads(res.stdout)
    assert [o["valid"] for o in out] == [True, False]
    keys = {"file", "valid", "type", "version", "sender", "receiver", "msg_id", "errors"}
    assert all(keys <= set(o) for o in out)
    err = out[1]["errors"][0]
    assert {"code", "rule", "line", "column", "xpath", "text"} <= set(err)
    assert (err["code"], err["rule"], err["xpath"]) == ("T02", "xsd", "/MsgHead/MsgInfo/Receiver")
    assert out[1]["type"] == "DIALOG_NOTAT" and out[1]["sender"] and out[1]["msg_id"]


def test_human_problem_line(tmp_path: Path) -> None:
    case = next(c for c in build_broken(1) if c.name == "msgid-not-uuid.xml")
    f = _write(tmp_path, {"x.xml": case.data}) / "x.xml"
    res = runner.invoke(app, ["validate", str(f)])
    assert res.exit_code == 1
    assert "E10 msgid.uuid 7:5 /MsgHead/MsgInfo/MsgId" in res.output


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert runner.invoke(app, ["validate", str(tmp_path / "missing.xml")]).exit_code == 2
    assert runner.invoke(app, ["validate"]).exit_code == 2
    assert runner.invoke(app, ["validate", "--schemas", str(tmp_path / "none"), str(tmp_path)]).exit_code == 2
    (tmp_path / "empty").mkdir()
    assert runner.invoke(app, ["validate", str(tmp_path / "empty")]).exit_code == 2


def test_max_bytes(tmp_path: Path) -> None:
    f = _write(tmp_path, {"e.xml": MESSAGES["epikrise-1.2.xml"]}) / "e.xml"
    res = runner.invoke(app, ["validate", "--json", "--max-bytes", "1000", str(f)])
    assert res.exit_code == 1 and json.loads(res.stdout)[0]["errors"][0]["rule"] == "xml.too-large"


def test_schemas_add_and_list(tmp_path: Path) -> None:
    pack = _write(tmp_path / "pack", {"x.xsd": b'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" '
                                               b'targetNamespace="urn:test:x"/>'})
    res = runner.invoke(app, ["schemas", "add", str(pack)])
    assert res.exit_code == 0 and "1 namespaces" in res.output
    listed = json.loads(runner.invoke(app, ["schemas", "list", "--json"]).stdout)
    assert listed["namespaces"]["urn:test:x"] == [str(pack.resolve())]
    assert listed["namespaces"]["http://www.kith.no/xmlstds/msghead/2006-05-24"] == ["ours"]
    assert runner.invoke(app, ["schemas", "add", str(tmp_path / "nope")]).exit_code == 2


def test_official_pack_via_option(reference: Path, tmp_path: Path) -> None:
    sample = reference / "samples/ksfiks_app-rec_1.0_example-avvist.xml"
    res = runner.invoke(app, ["validate", "--json", "--schemas", str(reference / "xsd"), str(sample)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["type"] == "APPREC"


def test_explain_adds_xmlschema_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*_a: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)  # a guard: xmlschema must stay local
    case = next(c for c in build_broken(1) if c.name == "xsd-missing-element.xml")
    f = _write(tmp_path, {"x.xml": case.data}) / "x.xml"
    res = runner.invoke(app, ["validate", "--explain", str(f)])
    assert res.exit_code == 1 and "TemaKodet" in res.output and "Unexpected child" in res.output


def test_parties_with_identifiers_in_human_and_json(tmp_path: Path) -> None:
    f = _write(tmp_path, {"e.xml": MESSAGES["epikrise-1.1.xml"]}) / "e.xml"
    res = runner.invoke(app, ["validate", str(f)])
    assert res.exit_code == 0, res.output
    sender = next(line for line in res.output.splitlines() if line.strip().startswith("sender:"))
    assert "[HER " in sender
    out = json.loads(runner.invoke(app, ["validate", "--json", str(f)]).stdout)[0]
    parties = out["parties"]
    assert parties["sender"]["her_id"] == out["sender"] and parties["receiver"]["her_id"] == out["receiver"]
    levels = parties["sender"]["levels"]
    assert levels[0]["level"] == "organisation" and {"type", "id"} == set(levels[0]["ids"][0])
    assert {"type": "HER", "id": out["sender"]} in [i for lvl in levels for i in lvl["ids"]]


def test_msgid_reuse_across_files_only_with_unique_msgid(tmp_path: Path) -> None:
    data = MESSAGES["dialogmelding-1.0-dialog-notat.xml"]
    d = _write(tmp_path / "m", {"a.xml": data, "b.xml": data})
    assert runner.invoke(app, ["validate", str(d)]).exit_code == 0
    res = runner.invoke(app, ["validate", "--unique-msgid", str(d)])
    assert res.exit_code == 1 and "msgid.unique" in res.output


def test_identity_numbers_masked_unless_reveal(tmp_path: Path) -> None:
    case = next(c for c in build_broken(1) if c.rule == "patient.fnr-invalid")
    f = _write(tmp_path, {"p.xml": case.data}) / "p.xml"
    mh = "{http://www.kith.no/xmlstds/msghead/2006-05-24}"
    number = etree.fromstring(case.data).findtext(f".//{mh}Patient/{mh}Ident/{mh}Id")
    assert number and len(number) == 11
    for args in (["validate", str(f)], ["validate", "--json", str(f)]):
        hidden = runner.invoke(app, args)
        assert hidden.exit_code == 1 and "patient.fnr-invalid" in hidden.output
        assert number not in hidden.output and number[:6] + "*****" in hidden.output
        shown = runner.invoke(app, [*args, "--reveal"])
        assert number in shown.output
