"""ebXML protocol logic without sockets: envelopes, signals, MIME, envelope signatures, dedup, the Msh."""

from __future__ import annotations

import email
import email.policy
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from hub.codes import EbmsError
from hub.ebxml import naming
from hub.ebxml.corpus import World, build_message, world
from hub.ebxml.dedup import MemorySeen, content_digest, decide
from hub.ebxml.envelope import (
    ManifestRef,
    MessageHeader,
    Party,
    build_envelope,
    check_envelope,
    new_id,
    parse_envelope,
    serialize,
)
from hub.ebxml.errors import LOC, EbxmlError
from hub.ebxml.mime import build_package, parse_package, split_entity
from hub.ebxml.msh import Delivery, Msh, Peers
from hub.ebxml.signals import parse_soap_fault
from hub.ebxml.signature import RSA_SHA1, SHA1, sign_envelope, verify_envelope
from hub.xmlsafe import parse_bytes

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def w() -> World:
    return world(NOW)


def receiver(w: World, delivered: list[Delivery] | None = None, **kw: object) -> Msh:
    sink = delivered if delivered is not None else []
    return Msh([w.lab], cpas=w.repository(), peers=Peers({w.gp.her_id: w.peer_of("gp")}),
               handoff=sink.append, **kw)  # type: ignore[arg-type]


def sender(w: World) -> Msh:
    return Msh([w.gp], cpas=w.repository(), peers=Peers({w.lab.her_id: w.peer_of("lab")}))


def response_errors(data: bytes) -> list[tuple[str, str | None]]:
    pkg = parse_package(data)
    fault = parse_soap_fault(pkg.soap)
    if fault is not None:
        return [(e.code, e.location) for e in fault]
    env = parse_envelope(pkg.soap)
    assert env.error_list is not None, "expected a MessageError"
    return [(e.code, e.location) for e in env.error_list.errors]


# ---------------------------------------------------------------- naming, envelope


def test_naming_follows_hisd_1209():
    n = naming.naming("EPIKRISE")
    assert (n.service, n.action, n.from_role, n.to_role) == (
        "S-EPIKRISE", "EPIKRISE", "EPIKRISEsender", "EPIKRISEreceiver")
    a = naming.naming("EPIKRISE", apprec=True)
    assert (a.action, a.from_role, a.to_role) == ("APPREC", "EPIKRISEreceiver", "EPIKRISEsender")
    assert naming.expected_roles("S-REQ_LAB", "APPREC") == ("REQ_LABreceiver", "REQ_LABsender")
    assert naming.expected_roles("BehandlerKrav", "OppgjorsMelding") is None
    assert naming.default_cpa_id(80225, "79768") == "79768_80225"
    assert naming.is_default_cpa_id("79768_80225") and not naming.is_default_cpa_id("nav:qass:31162")


def _header(**kw: object) -> MessageHeader:
    base = dict(from_party=Party.her("82001", "EPIKRISEsender"),
                to_party=Party.her("83001", "EPIKRISEreceiver"),
                cpa_id="82001_83001", conversation_id=new_id(), service="S-EPIKRISE", action="EPIKRISE",
                message_id=new_id(), timestamp=NOW, duplicate_elimination=True)
    base.update(kw)
    return MessageHeader(**base)  # type: ignore[arg-type]


def test_envelope_round_trip_keeps_every_field():
    h = _header(time_to_live=NOW + timedelta(hours=2), description="test")
    root = build_envelope(h, ack_requested=True, manifest=[ManifestRef("cid:p1@x", "Epikrise")])
    env = parse_envelope(serialize(root))
    r = env.header
    assert (r.from_party.her_id, r.from_party.role, r.to_party.her_id, r.to_party.role) == (
        "82001", "EPIKRISEsender", "83001", "EPIKRISEreceiver")
    assert (r.cpa_id, r.conversation_id, r.service, r.action, r.message_id) == (
        h.cpa_id, h.conversation_id, h.service, h.action, h.message_id)
    assert r.timestamp == NOW and r.time_to_live == NOW + timedelta(hours=2)
    assert r.duplicate_elimination and env.ack_requested and env.ack_signed and not env.sync_reply
    assert [(m.href, m.description) for m in env.manifest] == [("cid:p1@x", "Epikrise")]
    # unsigned: the only rule broken is the missing signature
    found = [(e.code, e.location) for e in check_envelope(env)]
    assert found == [(EbmsError.SECURITY_FAILURE, LOC["signature"])]


def test_envelope_rules_name_code_and_location():
    h = _header(conversation_id="20250124-114229-355", message_id=None, ref_to_message_id="x")
    h.to_party.party_ids.append(("HER", "55555"))
    env = parse_envelope(serialize(build_envelope(h, sync_reply=True, manifest=[ManifestRef("cid:a")])))
    found = {(e.code, e.location) for e in check_envelope(env, transport="smtp")}
    assert (EbmsError.OTHER_XML, LOC["conversation_id"]) in found
    assert (EbmsError.OTHER_XML, LOC["message_id"]) in found
    assert (EbmsError.INCONSISTENT, LOC["to_party"]) in found
    assert (EbmsError.INCONSISTENT, LOC["ref_to_message_id"]) in found
    assert (EbmsError.NOT_SUPPORTED, LOC["sync_reply"]) in found
    assert (EbmsError.NOT_SUPPORTED, LOC["sync_reply"]) not in {
        (e.code, e.location) for e in check_envelope(env, transport="http")}


def test_xxe_in_envelope_is_an_error_not_a_crash():
    xxe = (b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
           b'<SOAP:Envelope xmlns:SOAP="http://schemas.xmlsoap.org/soap/envelope/"><SOAP:Body>&x;'
           b"</SOAP:Body></SOAP:Envelope>")
    with pytest.raises(EbxmlError) as exc:
        parse_envelope(xxe)
    assert exc.value.code == EbmsError.OTHER_XML and exc.value.fault


# ---------------------------------------------------------------- real signals and mail


REAL_SIGNALS = [
    "navikt_signal_acknowledgment.xml", "navikt_signal_messageerror.xml", "sarepta_Acknowledgment.xml"]


@pytest.mark.parametrize("name", REAL_SIGNALS)
def test_real_signals_parse(reference: Path, name: str):
    env = parse_envelope((reference / "ebxml" / name).read_bytes())
    assert env.is_signal and env.header.service == naming.EBMS_SERVICE
    text = (reference / "ebxml" / name).read_text(encoding="utf-8")
    if env.acknowledgment is not None:
        assert env.header.action == "Acknowledgment"
        assert env.acknowledgment.ref_to_message_id and env.acknowledgment.ref_to_message_id in text
        assert env.acknowledgment.references and env.acknowledgment.references[0].uri == ""
    else:
        assert env.header.action == "MessageError" and env.error_list is not None
        e = env.error_list.errors[0]
        assert (e.code, e.severity, e.location) == (
            "ValueNotRecognized", "Error", "xpointer(//MessageHeader/CpaId)")
        assert env.header.ref_to_message_id == "autotest_tc_2_2_15" and env.sync_reply


def test_real_ack_with_mustunderstand_true_parses(reference: Path):
    data = (reference / "ebxml" / "navikt_signal_acknowledgment.xml").read_bytes()
    assert b'SOAP:mustUnderstand="true"' in data
    env = parse_envelope(data)
    assert env.acknowledgment is not None
    # two PartyIds (HER and ENH), exactly one HER: that is the party
    assert env.header.to_party.her_id == "79768" and len(env.header.to_party.party_ids) == 2
    assert env.header.timestamp == datetime(2025, 1, 24, 10, 42, 58, 725072, tzinfo=UTC)  # 7 digits read


def _real_mail(reference: Path, name: str) -> bytes:
    return (reference / "ebxml" / name).read_bytes()


def test_real_nav_mail_signature_verifies(reference: Path):
    """A real NAV/Visma message: our XPath-filter transform and cid digest reproduce its signature."""
    pkg = parse_package(_real_mail(reference, "navikt-smtp_mails_inbox_example.eml"))
    env = parse_envelope(pkg.soap)
    assert env.header.cpa_id == "nav:qass:35261" and env.header.from_party.her_id == "431001063"
    assert [m.cid for m in env.manifest] == list(pkg.parts)
    v = verify_envelope(env.root, pkg.parts)
    assert v.signature_method.endswith("rsa-sha256") and [r.uri[:4] for r in v.references] == ["", "cid:"]
    assert "OPUS SYSTEMER" in v.certificate.subject.rfc4514_string()
    # one changed byte of the CMS part breaks the cid reference
    cid = next(iter(pkg.parts))
    bad = dict(pkg.parts)
    bad[cid] = pkg.parts[cid][:-1] + bytes([pkg.parts[cid][-1] ^ 1])
    with pytest.raises(EbxmlError) as exc:
        verify_envelope(env.root, bad)
    assert exc.value.code == EbmsError.SECURITY_FAILURE and "Reference[2]" in (exc.value.location or "")


def test_real_mails_unpack(reference: Path):
    ack = parse_package(_real_mail(reference, "navikt-smtp_mails_inbox_acknowledgment.eml"))
    assert ack.parts == {} and ack.soap_action == '"ebXML"'
    assert parse_envelope(ack.soap).acknowledgment is not None
    no_start = parse_package(_real_mail(reference, "navikt-smtp_testmail_ebxml_no_cpaid.eml"))
    env = parse_envelope(no_start.soap)  # no start parameter: the first part is the root
    assert env.header.cpa_id is None
    assert (EbmsError.OTHER_XML, LOC["cpa_id"]) in {(e.code, e.location) for e in check_envelope(env)}


# ---------------------------------------------------------------- signature


def test_signature_verifies_with_xmlsec1_and_sha1(w: World, tmp_path: Path):
    data = build_message(w.gp, w.lab.her_id, w.lab_enc, NOW)
    pkg = parse_package(data)
    env = parse_envelope(pkg.soap)
    assert verify_envelope(env.root, pkg.parts).certificate == w.gp.sign_cert
    if shutil.which("xmlsec1"):
        (tmp_path / "env.xml").write_bytes(pkg.soap)
        (cid, part), = pkg.parts.items()
        (tmp_path / "part.bin").write_bytes(part)
        r = subprocess.run(["xmlsec1", "verify", "--enabled-reference-uris", "empty,remote",
                            f"--url-map:cid:{cid}", str(tmp_path / "part.bin"), "--insecure",
                            str(tmp_path / "env.xml")], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and "References (ok/all): 2/2" in r.stderr, r.stderr
    # rsa-sha1 as HTTP sync still uses it: verified too
    root = build_envelope(_header(), manifest=[ManifestRef("cid:a@b")])
    sign_envelope(root, w.gp.sign_key, w.gp.sign_cert, {"a@b": b"cms"}, signature_method=RSA_SHA1,
                  digest_method=SHA1)
    again = parse_bytes(serialize(root)).getroot()
    assert verify_envelope(again, {"a@b": b"cms"}, allow_sha1=True).signature_method == RSA_SHA1
    with pytest.raises(EbxmlError):
        verify_envelope(again, {"a@b": b"cmz"}, allow_sha1=True)
    # ...but only where allowed: by default SHA-1 is a SecurityFailure that says how to allow it
    with pytest.raises(EbxmlError) as refused:
        verify_envelope(again, {"a@b": b"cms"})
    assert refused.value.code == EbmsError.SECURITY_FAILURE and "allow_sha1" in refused.value.description


def test_nextmsh_headers_are_outside_the_signature(w: World):
    """The XPath transform leaves out headers for the next MSH: a hop may change them."""
    from lxml import etree

    from hub.ebxml.envelope import NEXT_MSH, SOAP_NS
    root = build_envelope(_header(), manifest=[ManifestRef("cid:a@b")])
    hop = etree.SubElement(root.find(f"{{{SOAP_NS}}}Header"), "{urn:x}Hop")
    hop.set(f"{{{SOAP_NS}}}actor", NEXT_MSH)
    hop.text = "first"
    sign_envelope(root, w.gp.sign_key, w.gp.sign_cert, {"a@b": b"cms"})
    hop.text = "changed by a hop"
    verify_envelope(root, {"a@b": b"cms"})
    root.find(f".//{{{SOAP_NS}}}Body").set("x", "y")
    with pytest.raises(EbxmlError):
        verify_envelope(root, {"a@b": b"cms"})
    # and an independent signer agrees on what was signed: RSA over the canonical SignedInfo
    from hub.ebxml.signature import C14N, _c14n_apex
    si = root.find(".//{http://www.w3.org/2000/09/xmldsig#}SignedInfo")
    import base64
    value = base64.b64decode(root.findtext(".//{http://www.w3.org/2000/09/xmldsig#}SignatureValue"))
    w.gp.sign_cert.public_key().verify(value, _c14n_apex(si, C14N), padding.PKCS1v15(), hashes.SHA256())


# ---------------------------------------------------------------- MIME


def test_mime_package_shape():
    entity = build_package(b"<soap/>", [("p1@hub", b"\x30\x82binary")], soap_cid="s@hub")
    headers, body = split_entity(entity)
    h = dict(headers)
    assert h["SOAPAction"] == '"ebXML"' and h["MIME-Version"] == "1.0"
    msg = email.message_from_bytes(entity, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/related"
    assert msg.get_param("type") == "text/xml" and msg.get_param("start") == "<s@hub>"
    soap, part = msg.get_payload()
    assert soap["Content-ID"] == "<s@hub>" and soap.get_content_type() == "text/xml"
    assert part.get_content_type() == "application/pkcs7-mime"
    assert part.get_param("smime-type") == "enveloped-data"
    assert part["Content-Transfer-Encoding"] == "base64"
    assert part.get_payload(decode=True) == b"\x30\x82binary"
    pkg = parse_package(entity)
    assert pkg.soap == b"<soap/>" and pkg.parts == {"p1@hub": b"\x30\x82binary"}
    signal = build_package(b"<ack/>")
    assert email.message_from_bytes(signal).get_content_type() == "text/xml"
    assert parse_package(signal).soap == b"<ack/>"


@pytest.mark.parametrize("bad,where", [
    (b"MIME-Version: 1.0\r\nContent-Type: application/pdf\r\n\r\nxx", "Content-Type"),
    (b"MIME-Version: 1.0\r\nContent-Type: multipart/related; boundary=\"b\"; start=\"<nope>\"\r\n\r\n"
     b"--b\r\nContent-Type: text/xml\r\nContent-ID: <s>\r\n\r\n<x/>\r\n--b--\r\n", "Content-Type; start"),
    (b"Subject: no content type\r\n\r\n<x/>", "Content-Type"),
    (b"Content-Type: text/xml\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!notbase64",
     "Content-Transfer-Encoding"),
])
def test_mime_problems_are_faults(bad: bytes, where: str):
    with pytest.raises(EbxmlError) as exc:
        parse_package(bad)
    assert exc.value.code == EbmsError.MIME_PROBLEM and exc.value.fault and exc.value.location == where


# ---------------------------------------------------------------- duplicate elimination


def test_dedup_decisions():
    seen = MemorySeen()
    assert decide(seen, "m1", "d1").kind == "new"
    seen.seen_put("m1", "d1", b"ACK")
    seen.seen_put("m1", "d2", b"OTHER")  # the first record wins
    assert decide(seen, "m1", "d1").kind == "duplicate" and decide(seen, "m1", "d1").response == b"ACK"
    assert decide(seen, "m1", "d2").kind == "conflict"


def test_digest_ignores_signature_and_transfer_form(w: World):
    data = build_message(w.gp, w.lab.her_id, w.lab_enc, NOW)
    pkg = parse_package(data)
    env = parse_envelope(pkg.soap)
    d1 = content_digest(env.root, pkg.parts)
    # the same message through another mail server: 8bit SOAP part, other boundary
    (cid, part), = pkg.parts.items()
    again = parse_package(build_package(pkg.soap, [(cid, part)], soap_base64=False))
    assert content_digest(parse_envelope(again.soap).root, again.parts) == d1
    changed = dict(pkg.parts)
    changed[cid] = part + b"\0"
    assert content_digest(env.root, changed) != d1


# ---------------------------------------------------------------- the Msh


def test_msh_exchange_ack_matched_and_duplicate_replayed(w: World):
    delivered: list[Delivery] = []
    a, b = sender(w), receiver(w, delivered)
    out = a.send(from_her=w.gp.her_id, to_her=w.lab.her_id, message_type="DIALOG_NOTAT",
                 payload=b"<MsgHead>hei</MsgHead>", now=NOW)
    assert out.plan.cpa_id == "corpus:valid" and out.endpoints == ["mailto:lab@edi.test"]
    assert out.plan.reliability.retries == 4
    o = b.receive(out.data, NOW + timedelta(seconds=3))
    assert o.status == "delivered" and o.response_kind == "ack" and o.reply_to == "mailto:gp@edi.test"
    assert [d.payloads for d in delivered] == [{out.references[1].uri[4:]: b"<MsgHead>hei</MsgHead>"}]
    assert delivered[0].cpa is not None and delivered[0].signer == w.gp.sign_cert
    ack = parse_envelope(parse_package(o.response).soap)
    assert ack.header.ref_to_message_id == out.message_id and ack.header.action == "Acknowledgment"
    assert ack.header.from_party.her_id == w.lab.her_id and ack.header.conversation_id == out.conversation_id
    assert ack.signed and ack.acknowledgment is not None
    s = a.receive(o.response, NOW + timedelta(seconds=4))
    assert s.status == "signal" and s.matched is a.sent[out.message_id] and s.matched.acked_at is not None
    # the same message again: the stored ack, byte for byte, nothing delivered twice
    d = b.receive(out.data, NOW + timedelta(minutes=5))
    assert d.status == "duplicate" and d.response == o.response and len(delivered) == 1


def test_reused_message_id_with_other_content_is_an_error(w: World):
    delivered: list[Delivery] = []
    b = receiver(w, delivered)
    first = build_message(w.gp, w.lab.her_id, w.lab_enc, NOW)
    mid = parse_envelope(parse_package(first).soap).header.message_id

    def same_id(h: MessageHeader) -> None:
        h.message_id = mid

    second = build_message(w.gp, w.lab.her_id, w.lab_enc, NOW, payload=b"<other/>", header_edit=same_id)
    assert b.receive(first, NOW).status == "delivered"
    o = b.receive(second, NOW)
    assert o.status == "rejected" and response_errors(o.response) == [("Inconsistent", LOC["message_id"])]
    assert len(delivered) == 1


def test_rejected_message_replays_the_same_error(w: World):
    b = receiver(w)
    bad = w.corpus()[2].data  # conversationid-not-uuid
    first, again = b.receive(bad, NOW), b.receive(bad, NOW)
    assert first.status == "rejected" and again.status == "duplicate" and again.response == first.response


def test_negative_corpus_each_defect_gives_its_code_and_location(w: World):
    cases = w.corpus()
    assert {str(c.code) for c in cases} >= {e.value for e in EbmsError} - {"Unknown"}
    for case in cases:
        delivered: list[Delivery] = []
        o = receiver(w, delivered).receive(case.data, NOW + timedelta(seconds=1), transport=case.transport)
        assert o.status == "rejected", case.name
        assert o.response_kind == case.answer, (case.name, o.errors)
        found = response_errors(o.response)
        assert any(code == case.code and (loc or "").startswith(case.location) for code, loc in found), \
            (case.name, found)
        assert delivered == [], case.name


def test_unknown_error_when_the_store_fails(w: World):
    class BrokenStore:
        def seen_get(self, message_id: str) -> None:
            raise OSError("disk gone")

        def seen_put(self, message_id: str, digest: str, response: bytes) -> None:
            raise OSError("disk gone")

    o = receiver(w, seen=BrokenStore()).receive(build_message(w.gp, w.lab.her_id, w.lab_enc, NOW), NOW)
    assert o.status == "rejected" and response_errors(o.response) == [("Unknown", LOC["envelope"])]


def test_handoff_failure_is_delivery_failure_and_not_remembered(w: World):
    calls: list[str] = []

    def flaky(d: Delivery) -> None:
        calls.append(d.message_id)
        if len(calls) == 1:
            raise RuntimeError("store unavailable")

    b = Msh([w.lab], cpas=w.repository(), peers=Peers({w.gp.her_id: w.peer_of("gp")}), handoff=flaky)
    data = build_message(w.gp, w.lab.her_id, w.lab_enc, NOW)
    o = b.receive(data, NOW)
    assert o.status == "failed" and response_errors(o.response) == [("DeliveryFailure", LOC["envelope"])]
    assert b.receive(data, NOW).status == "delivered" and len(calls) == 2  # the retry goes through


def test_apprec_back_uses_reversed_roles_without_cpa(w: World):
    """No CPA between them: CPAId HER_HER, register certificates, APPREC with the roles reversed."""
    a = Msh([w.lab], peers=Peers({w.gp.her_id: w.peer_of("gp", "mailto:gp@edi.test")}))
    got: list[Delivery] = []
    b = Msh([w.gp], peers=Peers({w.lab.her_id: w.peer_of("lab")}), handoff=got.append)
    out = a.send(from_her=w.lab.her_id, to_her=w.gp.her_id, message_type="REQ_LAB", action="APPREC",
                 payload=b"<AppRec/>", now=NOW)
    assert out.plan.cpa is None and out.plan.reliability.retries == 5
    assert out.plan.reliability.retry_interval == timedelta(hours=12)
    o = b.receive(out.data, NOW)
    assert o.status == "delivered", o.errors
    h = got[0].envelope.header
    assert (h.cpa_id, h.action, h.from_party.role, h.to_party.role) == (
        naming.default_cpa_id(w.gp.her_id, w.lab.her_id), "APPREC", "REQ_LABreceiver", "REQ_LABsender")
    # the same roles the wrong way round are refused
    bad = build_message(w.lab, w.gp.her_id, w.gp_enc, NOW, message_type="REQ_LAB", action="APPREC")
    r = b.receive(bad, NOW)
    assert r.status == "rejected" and ("ValueNotRecognized", LOC["from_role"]) in response_errors(r.response)


def test_duplicates_survive_a_restart_with_the_durable_store(w: World, tmp_path: Path):
    """The store's seen_get/seen_put plug into the Msh: a resend after a restart gets the same bytes."""
    from hub.store.sqlite import SQLiteStore

    data = build_message(w.gp, w.lab.her_id, w.lab_enc, NOW)
    delivered: list[Delivery] = []
    store = SQLiteStore(tmp_path / "hub.sqlite")
    try:
        first = receiver(w, delivered, seen=store).receive(data, NOW)
    finally:
        store.close()
    store = SQLiteStore(tmp_path / "hub.sqlite")
    try:
        again = receiver(w, delivered, seen=store).receive(data, NOW + timedelta(hours=1))
    finally:
        store.close()
    assert first.status == "delivered" and again.status == "duplicate"
    assert again.response == first.response and len(delivered) == 1


def test_corpus_writer_makes_files_and_manifest(tmp_path: Path):
    import json

    from hub.ebxml.corpus import write_corpus

    cases = write_corpus(tmp_path / "corpus")
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text(encoding="utf-8"))
    assert [m["file"] for m in manifest] == [f"{c.name}.eml" for c in cases]
    for m in manifest:
        data = (tmp_path / "corpus" / m["file"]).read_bytes()
        assert b"SOAPAction" in data and m["code"] in {e.value for e in EbmsError}


def test_certificate_validator_hook_rejects_a_revoked_signer(w: World):
    """hub.security.certs.CertificateValidator plugs in: chain and CRL checked at the message's time."""
    from hub.ebxml.msh import LocalParty
    from hub.security.certs import CertificateValidator
    from hub.security.pki import load_intermediates, load_special, load_trust_anchors
    from hub.security.testing import shared_test_pki

    pki = shared_test_pki()
    validator = CertificateValidator(load_trust_anchors(pki.dir), load_intermediates(pki.dir))

    def check(cert: object, at: datetime) -> None:
        validator.check(cert, "sign", at)  # type: ignore[arg-type]

    cert, key = load_special(pki.dir, "revoked")
    revoked_gp = LocalParty(w.gp.her_id, cert, key, w.gp.decryption_keys)
    peers = Peers({w.gp.her_id: w.peer_of("gp")})
    now = datetime.now(UTC)
    ok = Msh([w.lab], peers=peers, validate_certificate=check).receive(
        build_message(w.gp, w.lab.her_id, w.lab_enc, now), now)
    assert ok.status == "delivered", ok.errors
    peers[w.gp.her_id].sign_cert = cert  # registered, but revoked since
    bad = Msh([w.lab], peers=peers, validate_certificate=check).receive(
        build_message(revoked_gp, w.lab.her_id, w.lab_enc, now), now)
    assert bad.status == "rejected"
    assert response_errors(bad.response) == [("SecurityFailure", LOC["key_info"])]
    assert "revoked" in bad.errors[0].description


def test_unreachable_crl_defers_without_answer_or_memory(w: World):
    """A CRL outage is transient (issue #3): no MessageError, no duplicate record; a later try succeeds."""
    from hub.security.errors import SecurityError

    outage = {"on": True}

    def check(cert: object, at: datetime) -> None:
        if outage["on"]:
            raise SecurityError.of("crl-unavailable", "CRL at http://127.0.0.1:9/ca.crl did not answer")

    seen = MemorySeen()
    peers = Peers({w.gp.her_id: w.peer_of("gp")})
    now = datetime.now(UTC)
    package = build_message(w.gp, w.lab.her_id, w.lab_enc, now)
    first = Msh([w.lab], peers=peers, seen=seen, validate_certificate=check).receive(package, now)
    assert first.status == "deferred" and first.response is None
    assert "transient" in first.errors[0].description
    assert seen.seen_get(first.envelope.header.message_id) is None
    outage["on"] = False
    again = Msh([w.lab], peers=peers, seen=seen, validate_certificate=check).receive(package, now)
    assert again.status == "delivered", again.errors


def test_actor_filter_shortcut_gives_the_xpath_node_set(w: World):
    """The recognised actor filter (an attribute scan) canonicalises byte for byte like the same filter
    evaluated as XPath per element (written so that the shortcut does not recognise it)."""
    import copy

    from lxml import etree

    from hub.ebxml.envelope import NEXT_MSH, SOAP_NEXT, SOAP_NS
    from hub.ebxml.signature import _same_document_digest
    root = build_envelope(_header(), manifest=[ManifestRef("cid:a@b")])
    header = root.find(f"{{{SOAP_NS}}}Header")
    for i, actor in enumerate([NEXT_MSH, SOAP_NEXT, "urn:other"]):
        hop = etree.SubElement(header, "{urn:x}Hop")
        hop.set(f"{{{SOAP_NS}}}actor", actor)
        hop.text, hop.tail = f"t{i}", f" tail{i} "
        etree.SubElement(hop, "{urn:x}Inner").set(f"{{{SOAP_NS}}}actor", NEXT_MSH)
    sign_envelope(root, w.gp.sign_key, w.gp.sign_cert, {"a@b": b"cms"})
    ds = "{http://www.w3.org/2000/09/xmldsig#}"
    sig = root.find(f"{{{SOAP_NS}}}Header/{ds}Signature")
    ref = sig.find(f"{ds}SignedInfo/{ds}Reference")
    fast = _same_document_digest(root, sig, ref)
    assert b"t0" not in fast and b"t1" not in fast and b"t2" in fast and b"tail0" in fast
    slow_ref = copy.deepcopy(ref)
    xp = slow_ref.find(f"{ds}Transforms/{ds}Transform/{ds}XPath")
    xp.text = f"boolean({xp.text})"
    assert _same_document_digest(root, sig, slow_ref) == fast
