"""Test PKI, enveloped XMLDSig and CMS EnvelopedData: the core other areas build on."""

from __future__ import annotations

import base64
import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from lxml import etree

from hub.security import cms
from hub.security.errors import SecurityError
from hub.security.pki import PartySpec, init_pki, load_identity, load_special, load_trust_anchors
from hub.security.xmldsig import DS, ENVELOPED, sign_enveloped, verify_enveloped
from hub.xmlsafe import XmlInputError

MSGHEAD = """<?xml version="1.0" encoding="UTF-8"?>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">
  <MsgInfo>
    <Type V="DIALOG_NOTAT" DN="Notat"/>
    <MIGversion>v1.2 2006-05-24</MIGversion>
    <GenDate>2024-03-25T13:01:16</GenDate>
    <MsgId>e3ea6acc-8fc4-4fb4-917a-6c323104d0ab</MsgId>
    <Sender><Organisation><OrganisationName>Legekontoret Fjordbyen</OrganisationName>
      <Ident><Id>82001</Id><TypeId V="HER" DN="HER-id" S="2.16.578.1.12.4.1.1.9051"/></Ident>
    </Organisation></Sender>
    <Receiver><Organisation><OrganisationName>Fjordlab AS</OrganisationName>
      <Ident><Id>83001</Id><TypeId V="HER" DN="HER-id" S="2.16.578.1.12.4.1.1.9051"/></Ident>
    </Organisation></Receiver>
  </MsgInfo>
  <Document><RefDoc><MsgType V="XML" DN="XML-instans"/><Content>
    <Dialogmelding xmlns="http://www.kith.no/xmlstds/dialog/2006-10-11"><Notat><TemaKodet V="1"/>
      <TekstNotatInnhold>Blodprøve tatt 25.03 – æøå</TekstNotatInnhold></Notat></Dialogmelding>
  </Content></RefDoc></Document>
</MsgHead>
""".encode()
NS = {"ds": DS}


# --- PKI ---------------------------------------------------------------------------------------------


def test_party_certificates_carry_org_no_her_id_and_purpose_usage(pki, gp):
    for cert, sign in ((gp.sign_cert, True), (gp.enc_cert, False)):
        subj = cert.subject
        assert subj.get_attributes_for_oid(NameOID.SERIAL_NUMBER)[0].value == "921543018"
        assert subj.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "HER-id 82001"
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.digital_signature is sign and ku.content_commitment is sign
        assert ku.key_encipherment is not sign
        dp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert dp[0].full_name[0].value == pki.crl.url + "issuing.crl"
        assert cert.issuer == gp.chain[0].subject
    assert gp.chain[1] == load_trust_anchors(pki.dir)[0]
    assert gp.sign_cert.public_key() != gp.enc_cert.public_key()


def test_private_keys_are_0600(pki):
    keys = list(pki.dir.rglob("*.key.pem"))
    assert len(keys) >= 3 * 2 + 3 + 6
    for k in keys:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600, k


def test_special_certificates(pki):
    anchors = load_trust_anchors(pki.dir)
    expired, _ = load_special(pki.dir, "expired")
    future, _ = load_special(pki.dir, "not-yet-valid")
    selfsigned, _ = load_special(pki.dir, "self-signed")
    rogue, _ = load_special(pki.dir, "unknown-ca")
    now = dt.datetime.now(dt.UTC)
    assert future.not_valid_before_utc > now
    assert expired.not_valid_after_utc < now
    assert selfsigned.issuer == selfsigned.subject
    assert rogue.issuer not in {a.subject for a in anchors}


def test_init_refuses_to_overwrite_and_validates_parties(tmp_path):
    (tmp_path / "pki.json").write_text("{}")
    with pytest.raises(FileExistsError):
        init_pki(tmp_path, [PartySpec("a", "1", "2")])
    with pytest.raises(ValueError):
        PartySpec.parse("gp:82001")
    assert PartySpec.parse("gp:82001:921543018") == PartySpec("gp", "82001", "921543018")


def test_load_identity_is_cached_and_unknown_party_is_clear(pki, gp):
    again = load_identity(pki.dir, "gp")
    assert again.sign_key is gp.sign_key  # parsed once, kept
    with pytest.raises(SecurityError) as ei:
        load_identity(pki.dir, "nobody")
    assert "nobody" in ei.value.message and "gp" in ei.value.message


# --- XMLDSig -----------------------------------------------------------------------------------------


def test_sign_profile_matches_standards(gp):
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    root = etree.fromstring(signed)
    sig = root[-1]
    assert sig.tag == f"{{{DS}}}Signature"  # last child of MsgHead
    assert sig.find("ds:SignedInfo/ds:CanonicalizationMethod", NS).get("Algorithm") == (
        "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
    )
    assert sig.find("ds:SignedInfo/ds:SignatureMethod", NS).get("Algorithm") == (
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    )
    refs = sig.findall("ds:SignedInfo/ds:Reference", NS)
    assert [r.get("URI") for r in refs] == [""]
    assert [t.get("Algorithm") for t in refs[0].findall("ds:Transforms/ds:Transform", NS)] == [ENVELOPED]
    assert refs[0].find("ds:DigestMethod", NS).get("Algorithm") == "http://www.w3.org/2001/04/xmlenc#sha256"
    certs = sig.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", NS)
    assert len(certs) == 1
    assert x509.load_der_x509_certificate(base64.b64decode(certs[0].text)) == gp.sign_cert


def test_sign_verify_round_trip(gp, lab):
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    v = verify_enveloped(signed, expected_certs=[lab.sign_cert, gp.sign_cert])
    assert v.certificate == gp.sign_cert
    assert v.algorithm.endswith("rsa-sha256")
    assert v.signed_element.find(".//{*}TekstNotatInnhold").text == "Blodprøve tatt 25.03 – æøå"
    v2 = verify_enveloped(signed, expected_certs=lambda c: c.subject == gp.sign_cert.subject)
    assert v2.certificate == gp.sign_cert


def test_sign_element_input_is_not_modified(gp):
    root = etree.fromstring(MSGHEAD)
    before = etree.tostring(root)
    signed = sign_enveloped(root, gp.sign_key, gp.sign_cert)
    assert etree.tostring(root) == before
    verify_enveloped(signed, expected_certs=[gp.sign_cert])
    # an element inside a document (with namespaces and xml:lang of its own): the whole document is
    # signed, as for its root
    doc = etree.fromstring(b'<r xmlns="urn:r"><inner xmlns:x="urn:x" xml:lang="nb"><x:a/></inner></r>')
    v = verify_enveloped(sign_enveloped(doc[0], gp.sign_key, gp.sign_cert), expected_certs=[gp.sign_cert])
    assert v.signed_c14n == etree.tostring(doc, method="c14n")


def _expect(kind: str, code: str, fn, *args, **kw) -> SecurityError:
    with pytest.raises(SecurityError) as ei:
        fn(*args, **kw)
    assert ei.value.kind == kind, str(ei.value)
    assert ei.value.apprec_code == code
    assert ei.value.ebms_code == "SecurityFailure"
    assert ei.value.permanent
    return ei.value


def test_tampered_content_is_s01(gp):
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    tampered = signed.replace("Blodprøve".encode(), "Urinprøve".encode())
    assert tampered != signed
    err = _expect("signature-invalid", "S01", verify_enveloped, tampered, expected_certs=[gp.sign_cert])
    assert "changed" in err.message


def test_tampered_signed_info_is_s01(gp):
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    root = etree.fromstring(signed)
    dv = root.find(".//ds:DigestValue", NS)
    dv.text = base64.b64encode(b"\0" * 32).decode()
    _expect("signature-invalid", "S01", verify_enveloped, etree.tostring(root), expected_certs=[gp.sign_cert])


def test_wrong_certificate_is_s02(gp, lab):
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    err = _expect("certificate-mismatch", "S02", verify_enveloped, signed, expected_certs=[lab.sign_cert])
    assert "not registered for the sender" in err.message


def test_swapped_keyinfo_certificate_fails(gp, lab):
    # an attacker signs with their own key but puts the sender's certificate in KeyInfo
    signed = sign_enveloped(MSGHEAD, lab.sign_key, gp.sign_cert)
    _expect("signature-invalid", "S01", verify_enveloped, signed, expected_certs=[gp.sign_cert])


def test_unsigned_and_double_signed(gp):
    _expect("signature-missing", "S01", verify_enveloped, MSGHEAD, expected_certs=[gp.sign_cert])
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    _expect("signature-multiple", "S01", sign_enveloped, signed, gp.sign_key, gp.sign_cert)
    root = etree.fromstring(signed)
    root.append(etree.fromstring(etree.tostring(root[-1])))
    _expect(
        "signature-multiple", "S01", verify_enveloped, etree.tostring(root), expected_certs=[gp.sign_cert]
    )


def test_two_certificates_in_keyinfo_rejected(gp, lab):
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    root = etree.fromstring(signed)
    x509data = root.find(".//ds:X509Data", NS)
    extra = etree.SubElement(x509data, f"{{{DS}}}X509Certificate")
    extra.text = base64.b64encode(lab.sign_cert.public_bytes(Encoding.DER)).decode()
    _expect(
        "certificate-multiple", "S02", verify_enveloped, etree.tostring(root), expected_certs=[gp.sign_cert]
    )


def test_sha1_only_when_allowed(gp):
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert, algorithm="rsa-sha1")
    err = _expect("algorithm-not-allowed", "S01", verify_enveloped, signed, expected_certs=[gp.sign_cert])
    assert "SHA-1" in err.message
    v = verify_enveloped(signed, expected_certs=[gp.sign_cert], allow_sha1=True)
    assert v.algorithm == "http://www.w3.org/2000/09/xmldsig#rsa-sha1"


def test_reference_must_cover_whole_document(gp):
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    root = etree.fromstring(signed)
    root.find(".//ds:Reference", NS).set("URI", "#x")
    _expect(
        "signature-malformed", "S01", verify_enveloped, etree.tostring(root), expected_certs=[gp.sign_cert]
    )


def test_xpath_transform_not_allowed(gp):
    signed = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    root = etree.fromstring(signed)
    transforms = root.find(".//ds:Transforms", NS)
    etree.SubElement(
        transforms, f"{{{DS}}}Transform", Algorithm="http://www.w3.org/TR/1999/REC-xpath-19991116"
    )
    _expect(
        "algorithm-not-allowed", "S01", verify_enveloped, etree.tostring(root), expected_certs=[gp.sign_cert]
    )


def test_not_xml_and_dtd_refused(gp):
    with pytest.raises(XmlInputError):
        verify_enveloped(b"not xml", expected_certs=[gp.sign_cert])
    with pytest.raises(XmlInputError):
        verify_enveloped(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>', expected_certs=[gp.sign_cert])


# --- CMS ---------------------------------------------------------------------------------------------


def test_cms_round_trip(gp, lab):
    payload = sign_enveloped(MSGHEAD, gp.sign_key, gp.sign_cert)
    der = cms.encrypt(payload, [lab.enc_cert])
    assert der[:1] == b"\x30" and payload not in der
    assert cms.decrypt(der, lab.decryption_keys) == payload


def test_cms_binary_payload_is_untouched(lab):
    data = bytes(range(256)) * 3 + b"\r\n\n\r"
    assert cms.decrypt(cms.encrypt(data, [lab.enc_cert]), lab.decryption_keys) == data


def test_cms_not_for_us(gp, lab):
    der = cms.encrypt(b"secret", [lab.enc_cert])
    err = _expect("decrypt-no-key", "S99", cms.decrypt, der, gp.decryption_keys)
    assert "not encrypted for any certificate we hold" in err.message


def test_cms_garbage(lab):
    _expect("decrypt-failed", "S99", cms.decrypt, b"MIAGCSqGSIb3DQEHA", lab.decryption_keys)
    der = cms.encrypt(b"secret" * 100, [lab.enc_cert])
    _expect("decrypt-failed", "S99", cms.decrypt, der[:-20], lab.decryption_keys)  # truncated
    # CBC has no integrity: a zeroed tail is refused unless its garbage happens to end in valid padding
    # (about 1 in 256); then the plaintext differs, and the KITH signature or the parser catches it
    broken = der[:-20] + bytes(20)
    try:
        out = cms.decrypt(broken, lab.decryption_keys)
    except SecurityError as exc:
        assert (exc.kind, exc.apprec_code) == ("decrypt-failed", "S99")
    else:
        assert out != b"secret" * 100


def test_cms_refuses_signing_certificate(lab):
    _expect("certificate-wrong-usage", "S02", cms.encrypt, b"x", [lab.sign_cert])


def test_cms_certificate_change_keeps_old_key(tmp_path):
    """During a certificate change, messages encrypted to the old certificate still open."""
    from hub.security.pki import renew_encryption

    init_pki(tmp_path, [PartySpec("p", "1", "2")], special=False)
    before = load_identity(tmp_path, "p")
    to_old = cms.encrypt(b"old", [before.enc_cert])
    after = renew_encryption(tmp_path, "p")
    assert after.enc_cert != before.enc_cert
    assert [c for c, _ in after.previous_enc] == [before.enc_cert]
    to_new = cms.encrypt(b"new", [after.enc_cert])
    assert cms.decrypt(to_old, after.decryption_keys) == b"old"
    assert cms.decrypt(to_new, after.decryption_keys) == b"new"
    with pytest.raises(SecurityError):
        cms.decrypt(to_old, [(after.enc_cert, after.enc_key)])
