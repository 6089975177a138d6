"""`hub ebxml inspect` over NAV's real mails and signals: each gets the verdict a careful MSH gives, and
the envelope-signature verdict agrees with xmlsec1's (run here on the same bytes); captures we build
(HTTP, gzip inside CMS under NAV's CPA) show the accepted path with the receiver's key."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from test_cpa_traffic import DOC, NAV, NOW, PARTNER, egenandel_request, nav_cpa
from typer.testing import CliRunner

from hub.cli.main import app
from hub.ebxml.cpa import CpaRepository, load_cpa
from hub.ebxml.inspect import CaptureError, inspect_message, read_capture
from hub.ebxml.mime import parse_package
from hub.ebxml.msh import LocalParty, Msh
from hub.security.pki import load_identity

NAV_FILES = ["navikt-smtp_mails_inbox_example.eml", "navikt-smtp_mails_inbox_acknowledgment.eml",
             "navikt-smtp_testmail_ebxml_no_cpaid.eml", "navikt-smtp_testmail_not_ebxml.eml",
             "navikt_signal_acknowledgment.xml", "navikt_signal_messageerror.xml"]
runner = CliRunner()


def xmlsec1_verdict(data: bytes, tmp: Path) -> bool | None:
    """Whether xmlsec1 verifies the envelope signature (cid: parts mapped to files); None: unreadable."""
    try:
        pkg = parse_package(read_capture(data).entity)
    except Exception:  # noqa: BLE001 - not MIME we can take apart: xmlsec1 gets nothing to verify
        return None
    (tmp / "env.xml").write_bytes(pkg.soap)
    args = ["xmlsec1", "verify", "--enabled-reference-uris", "empty,remote", "--insecure"]
    for i, (cid, part) in enumerate(pkg.parts.items()):
        (tmp / f"p{i}.bin").write_bytes(part)
        args += [f"--url-map:cid:{cid}", str(tmp / f"p{i}.bin")]
    r = subprocess.run([*args, str(tmp / "env.xml")], capture_output=True, text=True, timeout=30)
    return r.returncode == 0


@pytest.mark.skipif(shutil.which("xmlsec1") is None, reason="xmlsec1 not installed")
@pytest.mark.parametrize("name", NAV_FILES)
@pytest.mark.parametrize("tamper", [False, True])
def test_signature_verdict_agrees_with_xmlsec1(reference: Path, tmp_path: Path, name: str, tamper: bool):
    data = (reference / "ebxml" / name).read_bytes()
    if tamper:  # one changed character in the signed MessageId
        data = _tamper(data)
        if data is None:
            pytest.skip("nothing signed to tamper with")
    theirs = xmlsec1_verdict(data, tmp_path)
    insp = inspect_message(data, source=name)
    ours = insp.signature.valid if insp.signature is not None else None
    if theirs is None or insp.verdict == "unreadable":
        assert theirs in (None, False) and insp.verdict == "unreadable"
    else:
        assert ours == theirs, (insp.signature, theirs)


def _tamper(data: bytes) -> bytes | None:
    """The capture with one character of its signed MessageId changed, repackaged (same parts)."""
    from hub.ebxml.envelope import parse_envelope
    from hub.ebxml.mime import build_package

    try:
        pkg = parse_package(read_capture(data).entity)
        env = parse_envelope(pkg.soap)
    except Exception:  # noqa: BLE001
        return None
    mid = env.header.message_id
    if not env.signed or not mid:
        return None
    changed = pkg.soap.replace(mid.encode(), (mid[:-1] + ("0" if mid[-1] != "0" else "1")).encode())
    return build_package(changed, list(pkg.parts.items()), soap_base64=False)


def test_nav_mails_get_a_careful_msh_verdict(reference: Path):
    repo = CpaRepository.load_dir(reference / "cpa")
    got = {n: inspect_message((reference / "ebxml" / n).read_bytes(), source=n, cpas=repo) for n in NAV_FILES}
    ex = got["navikt-smtp_mails_inbox_example.eml"]
    # signed correctly by OPUS, sha256, the CMS part referenced; but its CPA (35261) is not among ours
    assert ex.signature.valid and ex.signature.algorithm.endswith("rsa-sha256")
    assert [r.uri[:4] for r in ex.signature.references] == ["", "cid:"]
    assert "OPUS SYSTEMER" in ex.signature.signer["subject"]
    assert [p.kind for p in ex.payloads] == ["encrypted"] and not ex.payloads[0].opened
    assert (ex.verdict, ex.answer) == ("rejected", "MessageError")
    assert [(e.code, e.location) for e in ex.errors] == [
        ("ValueNotRecognized", "/SOAP:Envelope/SOAP:Header/eb:MessageHeader/eb:CPAId")]
    ack = got["navikt-smtp_mails_inbox_acknowledgment.eml"]
    assert ack.message_kind == "Acknowledgment" and ack.verdict == "signal" and ack.signature.valid
    nocpa = got["navikt-smtp_testmail_ebxml_no_cpaid.eml"]
    assert nocpa.verdict == "rejected" and not nocpa.signature.valid
    assert ("OtherXml", "/SOAP:Envelope/SOAP:Header/eb:MessageHeader/eb:CPAId") in {
        (e.code, e.location) for e in nocpa.errors}
    assert got["navikt-smtp_testmail_not_ebxml.eml"].answer == "SOAP Fault"
    bad_ack = got["navikt_signal_acknowledgment.xml"]
    assert bad_ack.verdict == "rejected" and "X509Certificate" in bad_ack.signature.error
    me = got["navikt_signal_messageerror.xml"]
    assert me.message_kind == "MessageError" and not me.signature.present


def test_sha1_signals_are_refused_by_default(reference: Path):
    data = (reference / "ebxml" / "sarepta_Acknowledgment-Description.xml").read_bytes()
    insp = inspect_message(data)
    assert insp.verdict == "rejected" and insp.errors[0].code == "SecurityFailure"
    assert "SHA-1" in insp.errors[0].description


@pytest.fixture
def nav_world(reference: Path, pki, tmp_path: Path):  # noqa: ANN001, ANN201
    gp, lab = load_identity(pki.dir, "gp"), load_identity(pki.dir, "lab")
    cpas = tmp_path / "cpa"
    cpas.mkdir()
    (cpas / "nav.xml").write_bytes(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert))
    partner = LocalParty(PARTNER, gp.sign_cert, gp.sign_key, list(gp.decryption_keys))
    return partner, lab, cpas


def test_http_capture_with_a_plain_payload_accepted_under_the_cpa(nav_world, tmp_path: Path):  # noqa: ANN001
    partner, _, cpas = nav_world
    entity = egenandel_request(partner, DOC)
    capture = b"POST /ebxml/msh HTTP/1.1\r\nHost: nhn-gw-q.nav.no:9443\r\n" + entity
    (tmp_path / "req.http").write_bytes(capture)
    r = runner.invoke(app, ["ebxml", "inspect", str(tmp_path / "req.http"), "--cpa-dir", str(cpas), "--json"])
    assert r.exit_code == 0, r.output
    (m,) = json.loads(r.output)["messages"]
    assert (m["shape"], m["transport"], m["verdict"], m["answer"]) == (
        "http", "http", "accepted", "Acknowledgment")
    assert m["policy"]["encryption_required"] is False and m["sync_reply"]
    assert m["payloads"][0]["kind"] == "plain" and m["payloads"][0]["document"] == "EgenandelForesporsel"
    assert m["cpa"]["versions"][0]["applies"]


def test_gzip_inside_cms_opened_with_the_receivers_key(nav_world, pki, tmp_path: Path):  # noqa: ANN001
    partner, lab, cpas = nav_world
    repo = CpaRepository([load_cpa((cpas / "nav.xml").read_bytes())])
    out = Msh([partner], cpas=repo).send(from_her=PARTNER, to_her=NAV, payload=DOC, now=NOW,
                                         service="OppgjorsKontroll", action="Oppgjorskrav")
    mail = b"From: partner@edi.test\r\nTo: mottak@nav.test\r\nSubject: ebXML\r\n" + out.data
    (tmp_path / "m.eml").write_bytes(mail)
    base = ["ebxml", "inspect", str(tmp_path / "m.eml"), "--cpa-dir", str(cpas)]
    r = runner.invoke(app, base)
    assert r.exit_code == 0, r.output
    assert "not opened" in r.output and "ACCEPTED -> Acknowledgment" in r.output
    r = runner.invoke(app, [*base, "--pki", str(pki.dir), "--party", "lab", "--json"])
    assert r.exit_code == 0, r.output
    (p,) = json.loads(r.output)["messages"][0]["payloads"]
    assert (p["kind"], p["opened"], p["compressed"], p["document"]) == (
        "encrypted", True, True, "EgenandelForesporsel")
    # --at is the receipt time; the CPA version is chosen by the message's own Timestamp
    r = runner.invoke(app, [*base, "--at", "2027-03-01T00:00:00Z"])
    assert r.exit_code == 0, r.output
    # a message stamped before the CPA's window: refused, exit 1, the error names the window
    early = egenandel_request(partner, DOC, at=datetime(2025, 9, 1, tzinfo=UTC))
    (tmp_path / "early.http").write_bytes(b"POST /ebxml/msh HTTP/1.1\r\n" + early)
    r = runner.invoke(app, ["ebxml", "inspect", str(tmp_path / "early.http"), "--cpa-dir", str(cpas)])
    assert r.exit_code == 1 and "Inconsistent" in r.output and "2025-09-03T12:09:25Z" in r.output


def test_usage_errors_exit_2(tmp_path: Path):
    (tmp_path / "ole.msg").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100)
    r = runner.invoke(app, ["ebxml", "inspect", str(tmp_path / "ole.msg")])
    assert r.exit_code == 2 and ".eml" in r.output
    r = runner.invoke(app, ["ebxml", "inspect", str(tmp_path / "missing.eml")])
    assert r.exit_code == 2
    with pytest.raises(CaptureError):
        read_capture(b"  \n")


@pytest.mark.parametrize("allow", [False, True])
def test_register_setting_decides_sha1(pki, tmp_path: Path, allow: bool):  # noqa: ANN001
    """Without a CPA the address register names the peer; its allow_sha1 decides an rsa-sha1 envelope."""
    from hub.ebxml.signature import RSA_SHA1, SHA1

    gp, lab = load_identity(pki.dir, "gp"), load_identity(pki.dir, "lab")
    partner = LocalParty(PARTNER, gp.sign_cert, gp.sign_key, [])
    names = ("S-DIALOG_NOTAT", "DIALOG_NOTAT", "DIALOG_NOTATsender", "DIALOG_NOTATreceiver")
    msg = egenandel_request(partner, DOC, encrypt_for=lab.enc_cert, cpa_id=f"{NAV}_{PARTNER}", names=names,
                            method=RSA_SHA1, digest=SHA1)
    (tmp_path / "m.http").write_bytes(b"POST /ebxml HTTP/1.1\r\n" + msg)  # SyncReply: an HTTP request
    (tmp_path / "register.toml").write_text(
        f'[[party]]\nher_id = {PARTNER}\nname = "Apotek"\nendpoint = "mailto:apotek@edi.test"\n'
        f'sign_cert = "{pki.dir / "parties" / "gp" / "sign.pem"}"\n'
        f'enc_cert = "{pki.dir / "parties" / "gp" / "enc.pem"}"\nallow_sha1 = {str(allow).lower()}\n',
        encoding="utf-8")
    r = runner.invoke(app, ["ebxml", "inspect", str(tmp_path / "m.http"), "--register",
                            str(tmp_path / "register.toml"), "--pki", str(pki.dir), "--party", "lab",
                            "--json"])
    (m,) = json.loads(r.output)["messages"]
    if allow:
        assert r.exit_code == 0 and m["verdict"] == "accepted" and m["signature"]["valid"]
        assert m["payloads"][0]["opened"] and m["payloads"][0]["document"] == "EgenandelForesporsel"
    else:
        assert r.exit_code == 1 and m["errors"][0]["code"] == "SecurityFailure"
        assert "SHA-1" in m["errors"][0]["description"]
