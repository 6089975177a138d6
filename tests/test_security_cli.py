"""`hub pki|sign|verify|encrypt|decrypt|cert check` run in-process against the shared test PKI."""

from __future__ import annotations

import stat

import pytest
import typer
from typer.testing import CliRunner

from hub.cli import security as security_cli
from hub.security.testing import shared_test_pki

runner = CliRunner()
# only this area's commands: another area's import problem must not hide ours
app = typer.Typer()
security_cli.register(app)

DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"><MsgInfo><Type V="DIALOG_NOTAT"/>
<MsgId>e3ea6acc-8fc4-4fb4-917a-6c323104d0ab</MsgId></MsgInfo><Document><RefDoc><MsgType V="XML"/>
<Content><Notat>Hei</Notat></Content></RefDoc></Document></MsgHead>"""


@pytest.fixture(scope="session")
def pki():
    return shared_test_pki()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def test_pki_init_with_parties(tmp_path):
    r = run(
        "pki",
        "init",
        tmp_path / "p",
        "--party",
        "a:1001:921543018",
        "--party",
        "b:1002:918773207",
        "--crl-url",
        "http://127.0.0.1:1/crl",
    )
    assert r.exit_code == 0, r.output
    assert "1001" in r.output and "http://127.0.0.1:1/crl/issuing.crl" in r.output
    assert stat.S_IMODE((tmp_path / "p/parties/a/sign.key.pem").stat().st_mode) == 0o600
    again = run("pki", "init", tmp_path / "p")
    assert again.exit_code == 2 and "--force" in again.output
    bad = run("pki", "init", tmp_path / "q", "--party", "a:x:1")
    assert bad.exit_code == 2


def test_sign_verify_and_tamper(pki, tmp_path):
    src, signed = tmp_path / "m.xml", tmp_path / "s.xml"
    src.write_bytes(DOC)
    assert run("sign", src, "-p", "gp", "--pki", pki.dir, "-o", signed).exit_code == 0
    ok = run("verify", signed, "-p", "gp", "--pki", pki.dir)
    assert ok.exit_code == 0, ok.output
    assert "signature OK" in ok.output and "good" in ok.output
    wrong = run("verify", signed, "-p", "lab", "--pki", pki.dir)
    assert wrong.exit_code == 1 and "S02" in wrong.output and "certificate-mismatch" in wrong.output
    signed.write_bytes(signed.read_bytes().replace(b"Hei", b"Hallo"))
    bad = run("verify", signed, "-p", "gp", "--pki", pki.dir)
    assert bad.exit_code == 1 and "S01" in bad.output and "signature-invalid" in bad.output


@pytest.mark.parametrize(
    ("kind", "code", "text"),
    [
        ("expired", "S02", "expired on"),
        ("not-yet-valid", "S02", "not valid until"),
        ("revoked", "S03", "revoked on"),
        ("wrong-usage", "S02", "not fit for sign"),
        ("self-signed", "S02", "self-signed"),
        ("unknown-ca", "S02", "not a trusted CA"),
    ],
)
def test_cert_check_failures(pki, kind, code, text):
    r = run("cert", "check", pki.dir / "special" / f"{kind}.pem", "--pki", pki.dir)
    assert r.exit_code == 1, r.output
    assert f"AppRec {code}" in r.output and text in " ".join(r.output.split())


def test_cert_check_good_json(pki):
    import json

    r = run(
        "cert", "check", pki.dir / "parties/lab/enc.pem", "--purpose", "encrypt", "--pki", pki.dir, "--json"
    )
    assert r.exit_code == 0, r.output
    facts = json.loads(r.output)
    assert facts["her_id"] == "83001" and facts["revocation"] == "good" and len(facts["chain"]) == 3


def test_encrypt_decrypt(pki, tmp_path):
    src, enc, out = tmp_path / "m.xml", tmp_path / "m.p7m", tmp_path / "o.xml"
    src.write_bytes(DOC)
    assert run("encrypt", src, "-p", "lab", "--pki", pki.dir, "-o", enc).exit_code == 0
    assert run("decrypt", enc, "-p", "lab", "--pki", pki.dir, "-o", out).exit_code == 0
    assert out.read_bytes() == DOC
    nope = run("decrypt", enc, "-p", "gp", "--pki", pki.dir, "-o", out)
    assert nope.exit_code == 1 and "decrypt-no-key" in nope.output


def test_verify_and_cert_check_report_in_json_both_ways(pki, tmp_path):
    import json

    src, signed = tmp_path / "m.xml", tmp_path / "s.xml"
    src.write_bytes(DOC)
    assert run("sign", src, "-p", "gp", "--pki", pki.dir, "-o", signed).exit_code == 0
    ok = run("verify", signed, "-p", "gp", "--pki", pki.dir, "--json")
    assert ok.exit_code == 0, ok.output
    got = json.loads(ok.stdout)
    assert got["ok"] is True and got["revocation"] == "good" and got["algorithm"].endswith("rsa-sha256")
    assert got["signer"].startswith("CN=") and len(got["chain"].split(" <- ")) == 3
    signed.write_bytes(signed.read_bytes().replace(b"Hei", b"Hallo"))
    bad = run("verify", signed, "-p", "gp", "--pki", pki.dir, "--json")
    assert bad.exit_code == 1
    want = {"ok": False, "kind": "signature-invalid", "message": "", "apprec_code": "S01",
            "ebms_code": "SecurityFailure", "transient": False}
    assert json.loads(bad.stdout) | {"message": ""} == want
    revoked = run("cert", "check", pki.dir / "special" / "revoked.pem", "--pki", pki.dir, "--json")
    assert revoked.exit_code == 1
    r = json.loads(revoked.stdout)
    assert r["ok"] is False and r["apprec_code"] == "S03" and "revoked on" in r["message"]
