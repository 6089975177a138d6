"""Interoperability, both ways: xmlsec1 for XMLDSig, openssl cms for EnvelopedData; real certificates."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from hub.security import cms
from hub.security.certs import CertificateValidator, org_no_of
from hub.security.errors import SecurityError
from hub.security.pki import load_intermediates, load_trust_anchors
from hub.security.xmldsig import sign_enveloped, verify_enveloped

XMLSEC1 = shutil.which("xmlsec1")
OPENSSL = shutil.which("openssl")
needs_xmlsec1 = pytest.mark.skipif(
    XMLSEC1 is None, reason="xmlsec1 binary not installed (apt install xmlsec1)"
)
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl binary not installed")

DOC = """<?xml version="1.0" encoding="UTF-8"?>
<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"
    xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xml:lang="no"
    xsi:schemaLocation="http://www.kith.no/xmlstds/msghead/2006-05-24 MsgHead-v1_2.xsd">
  <MsgInfo><Type V="DIALOG_NOTAT" DN="Notat"/><MIGversion>v1.2 2006-05-24</MIGversion>
    <MsgId>6f2b4c4e-1d0a-4f57-9d7e-3c0b1f7e2a10</MsgId></MsgInfo>
  <Document><RefDoc><MsgType V="XML"/><Content>
    <Notat xmlns="urn:example:notat" xmlns:x="urn:example:x" x:a="1">Prøve &amp; svar</Notat>
  </Content></RefDoc></Document>
</MsgHead>
""".encode()


def _template(sig_alg: str, digest_alg: str, doc: bytes = DOC) -> bytes:
    """A document with an empty ds:Signature for `xmlsec1 --sign` to fill in (as other vendors' tools do)."""
    sig = f"""<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo>
<CanonicalizationMethod Algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315"/>
<SignatureMethod Algorithm="{sig_alg}"/>
<Reference URI=""><Transforms><Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
</Transforms><DigestMethod Algorithm="{digest_alg}"/><DigestValue/></Reference></SignedInfo>
<SignatureValue/><KeyInfo><X509Data/></KeyInfo></Signature>"""
    # Signature in the default namespace, a newline after it, xsi and xml:lang in scope: what trips naive C14N
    return doc.replace(b"</MsgHead>", sig.encode() + b"\n</MsgHead>")


def _run(*args: object) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, timeout=30)


@needs_xmlsec1
def test_hub_signs_xmlsec1_verifies(pki, gp, tmp_path):
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_enveloped(DOC, gp.sign_key, gp.sign_cert))
    ok = _run(
        XMLSEC1,
        "--verify",
        "--trusted-pem",
        pki.layout.root_cert,
        "--untrusted-pem",
        pki.layout.issuing_cert,
        signed,
    )
    assert ok.returncode == 0, ok.stderr.decode()
    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(signed.read_bytes().replace("Prøve".encode(), b"Svar"))
    bad = _run(
        XMLSEC1,
        "--verify",
        "--trusted-pem",
        pki.layout.root_cert,
        "--untrusted-pem",
        pki.layout.issuing_cert,
        tampered,
    )
    assert bad.returncode != 0


_MH = "http://www.kith.no/xmlstds/msghead/2006-05-24"
# Shapes of input that take each of sign_enveloped's paths: the signature spliced into the sender's own
# bytes, or the document re-serialised (another encoding, something after the root, an element).
VARIANTS: dict[str, bytes] = {
    "utf8-declared": DOC,
    "latin1": DOC.decode().replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').encode("latin-1"),
    "trailing-comment": DOC + b"<!-- </MsgHead> -->\n<?pi after?>\n",
    "prefixed-root-crlf": DOC.replace(b"<MsgHead xmlns=", b"<mh:MsgHead xmlns:mh=")
    .replace(b"</MsgHead>", b"</mh:MsgHead   >")
    .replace(b"<MsgInfo>", b"<mh:MsgInfo>")
    .replace(b"</MsgInfo>", b"</mh:MsgInfo>")
    .replace(b"<Document>", b"<mh:Document>")
    .replace(b"</Document>", b"</mh:Document>")
    .replace(b"<RefDoc>", b"<mh:RefDoc>")
    .replace(b"</RefDoc>", b"</mh:RefDoc>")
    .replace(b"\n", b"\r\n"),
    "ds-prefix-taken": DOC.replace(b"<MsgHead ", b'<MsgHead xmlns:ds="urn:example:not-dsig" '),
    "bom-no-declaration": b"\xef\xbb\xbf" + DOC.split(b"?>\n", 1)[1],
    "self-closed-root": f'<MsgHead xmlns="{_MH}" xml:lang="nb"/>'.encode(),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hub_signs_every_input_shape(pki, gp, tmp_path, variant):
    """Each path of sign_enveloped gives a signature that hub and (where installed) xmlsec1 verify."""
    data = VARIANTS[variant]
    signed = sign_enveloped(data, gp.sign_key, gp.sign_cert)
    if variant in ("utf8-declared", "prefixed-root-crlf", "ds-prefix-taken", "bom-no-declaration"):
        # the sender's own bytes are kept: only the signature is inserted before the root's end tag
        end = data.rindex(b"</")
        assert signed.startswith(data[:end]) and signed.endswith(data[end:])
    else:
        assert signed.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    assert verify_enveloped(signed, expected_certs=[gp.sign_cert]).certificate == gp.sign_cert
    with pytest.raises(SecurityError) as ei:
        verify_enveloped(signed.replace(b'xml:lang="', b'xml:lang="x'), expected_certs=[gp.sign_cert])
    assert ei.value.kind == "signature-invalid"
    if XMLSEC1 is not None:
        path = tmp_path / "signed.xml"
        path.write_bytes(signed)
        trust = ("--trusted-pem", pki.layout.root_cert, "--untrusted-pem", pki.layout.issuing_cert)
        ok = _run(XMLSEC1, "--verify", *trust, path)
        assert ok.returncode == 0, ok.stderr.decode()


def test_signxml_verifies_what_hub_signs(gp):
    """An independent implementation in-process agrees with our signatures. Not with xml:lang on the root:
    C14N 1.0 makes SignedInfo inherit it (xmlsec1 agrees with us, see below); signxml drops it."""
    from signxml import XMLVerifier

    signed = sign_enveloped(DOC.replace(b' xml:lang="no"', b""), gp.sign_key, gp.sign_cert)
    result = XMLVerifier().verify(signed, x509_cert=gp.sign_cert)
    assert b"Pr\xc3\xb8ve &amp; svar" in result.signed_data


@needs_xmlsec1
@pytest.mark.parametrize(
    ("sig_alg", "digest_alg", "sha1"),
    [
        (
            "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256",
            "http://www.w3.org/2001/04/xmlenc#sha256",
            False,
        ),
        ("http://www.w3.org/2000/09/xmldsig#rsa-sha1", "http://www.w3.org/2000/09/xmldsig#sha1", True),
    ],
)
@pytest.mark.parametrize("lang", [True, False], ids=["xml-lang", "no-xml-lang"])
def test_xmlsec1_signs_hub_verifies(pki, gp, lab, tmp_path, sig_alg, digest_alg, sha1, lang):
    # without xml:lang hub canonicalises SignedInfo directly, and must see through libxml2's xmlns=""
    tpl, out = tmp_path / "tpl.xml", tmp_path / "out.xml"
    tpl.write_bytes(_template(sig_alg, digest_alg, DOC if lang else DOC.replace(b' xml:lang="no"', b"")))
    keyspec = f"{pki.layout.key('gp', 'sign')},{pki.layout.cert('gp', 'sign')}"
    r = _run(XMLSEC1, "--sign", "--privkey-pem", keyspec, "--output", out, tpl)
    assert r.returncode == 0, r.stderr.decode()
    data = out.read_bytes()
    if sha1:
        with pytest.raises(SecurityError) as ei:
            verify_enveloped(data, expected_certs=[gp.sign_cert])
        assert ei.value.kind == "algorithm-not-allowed"
    v = verify_enveloped(data, expected_certs=[gp.sign_cert], allow_sha1=sha1)
    assert v.certificate == gp.sign_cert and v.algorithm == sig_alg
    with pytest.raises(SecurityError) as ei:
        verify_enveloped(
            data.replace("Prøve".encode(), b"Svar"), expected_certs=[gp.sign_cert], allow_sha1=sha1
        )
    assert ei.value.kind == "signature-invalid" and ei.value.apprec_code == "S01"
    with pytest.raises(SecurityError) as ei:
        verify_enveloped(data, expected_certs=[lab.sign_cert], allow_sha1=sha1)
    assert ei.value.apprec_code == "S02"


@needs_xmlsec1
@pytest.mark.parametrize(
    "c14n",
    ["http://www.w3.org/TR/2001/REC-xml-c14n-20010315", "http://www.w3.org/2001/10/xml-exc-c14n#"],
    ids=["c14n", "exc-c14n"],
)
def test_xmlsec1_signature_with_two_prefixes_for_dsig(pki, gp, tmp_path, c14n):
    """Signature declares the dsig namespace twice (default and ds:) and mixes both, and the root binds
    two prefixes to one URI: a canonicaliser that re-binds elements to one prefix computes other bytes."""
    ds = "http://www.w3.org/2000/09/xmldsig#"
    sig = f"""<Signature xmlns="{ds}" xmlns:ds="{ds}"><ds:SignedInfo>\
<CanonicalizationMethod Algorithm="{c14n}"/>\
<ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>\
<Reference URI=""><Transforms><ds:Transform Algorithm="{ds}enveloped-signature"/></Transforms>\
<DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/><DigestValue/></Reference>\
</ds:SignedInfo><SignatureValue/><KeyInfo><X509Data/></KeyInfo></Signature>"""
    doc = DOC.replace(b' xml:lang="no"', b' xmlns:a="urn:example:u" xmlns:b="urn:example:u"')
    tpl, out = tmp_path / "tpl.xml", tmp_path / "out.xml"
    tpl.write_bytes(doc.replace(b"</MsgHead>", sig.encode() + b"\n</MsgHead>"))
    keyspec = f"{pki.layout.key('gp', 'sign')},{pki.layout.cert('gp', 'sign')}"
    r = _run(XMLSEC1, "--sign", "--privkey-pem", keyspec, "--output", out, tpl)
    assert r.returncode == 0, r.stderr.decode()
    v = verify_enveloped(out.read_bytes(), expected_certs=[gp.sign_cert])
    assert v.certificate == gp.sign_cert


@needs_openssl
def test_hub_encrypts_openssl_decrypts(pki, lab, tmp_path):
    payload = sign_enveloped(DOC, lab.sign_key, lab.sign_cert) + b"\r\n\x00binary tail"
    p7m, out = tmp_path / "m.p7m", tmp_path / "out"
    p7m.write_bytes(cms.encrypt(payload, [lab.enc_cert]))
    r = _run(
        OPENSSL,
        "cms",
        "-decrypt",
        "-binary",
        "-inform",
        "DER",
        "-in",
        p7m,
        "-recip",
        pki.layout.cert("lab", "enc"),
        "-inkey",
        pki.layout.key("lab", "enc"),
        "-out",
        out,
    )
    assert r.returncode == 0, r.stderr.decode()
    assert out.read_bytes() == payload
    # the profile of the real NAV .p7m: ktri by issuerAndSerialNumber, rsaEncryption, aes-256-cbc, id-data
    dump = _run(OPENSSL, "cms", "-cmsout", "-print", "-inform", "DER", "-in", p7m).stdout.decode()
    assert "d.issuerAndSerialNumber" in dump
    assert re.search(r"keyEncryptionAlgorithm:\s*\n\s*algorithm: rsaEncryption", dump)
    assert "aes-256-cbc" in dump and "contentType: pkcs7-data" in dump


@needs_openssl
def test_openssl_encrypts_hub_decrypts(pki, gp, lab, tmp_path):
    data, p7m = tmp_path / "in.bin", tmp_path / "m.p7m"
    payload = DOC + bytes(range(256))
    data.write_bytes(payload)
    # two recipients, as a sender mid certificate change might do; hub holds only lab's key
    r = _run(
        OPENSSL,
        "cms",
        "-encrypt",
        "-binary",
        "-aes256",
        "-outform",
        "DER",
        "-in",
        data,
        "-out",
        p7m,
        pki.layout.cert("gp", "enc"),
        pki.layout.cert("lab", "enc"),
    )
    assert r.returncode == 0, r.stderr.decode()
    assert cms.decrypt(p7m.read_bytes(), lab.decryption_keys) == payload
    assert cms.decrypt(p7m.read_bytes(), gp.decryption_keys) == payload


@needs_openssl
def test_openssl_verifies_our_chain_and_crl(pki, gp, tmp_path):
    """An independent verifier agrees with our PKI: chain, purposes, and the CRL revoking the revoked cert."""
    from cryptography.hazmat.primitives.serialization import Encoding

    crl_pem = tmp_path / "crl.pem"
    crl_pem.write_bytes(
        b"".join(
            x509.load_der_x509_crl((pki.dir / "crl" / n).read_bytes()).public_bytes(Encoding.PEM)
            for n in ("issuing.crl", "root.crl")
        )
    )
    base = [OPENSSL, "verify", "-CAfile", pki.layout.root_cert, "-untrusted", pki.layout.issuing_cert]
    assert _run(*base, pki.layout.cert("gp", "sign")).returncode == 0
    crl = ["-crl_check_all", "-CRLfile", crl_pem]
    assert _run(*base, *crl, pki.layout.cert("gp", "sign")).returncode == 0
    revoked = _run(*base, *crl, pki.layout.special_cert("revoked"))
    assert revoked.returncode != 0 and b"revoked" in revoked.stdout + revoked.stderr
    assert _run(*base, pki.layout.special_cert("unknown-ca")).returncode != 0


def _reference_certs(path: Path) -> list[x509.Certificate]:
    text = path.read_text(encoding="utf-8")
    return [
        x509.load_der_x509_certificate(base64.b64decode("".join(c.split())))
        for c in re.findall(r"<(?:\w+:)?X509Certificate>([^<]+)<", text)
    ]


def test_real_enterprise_certificates_from_nav_cpa(reference, pki):
    """NAV's CPA carries real Buypass test enterprise certificates: we read their org.no. and refuse them
    as from an unknown CA (they are not under our test anchors), for the right purpose."""
    certs = _reference_certs(reference / "cpa" / "navikt_nav-qass-31162.xml")
    assert certs
    assert all(org_no_of(c) and org_no_of(c).isdigit() and len(org_no_of(c)) == 9 for c in certs)
    v = CertificateValidator(load_trust_anchors(pki.dir), load_intermediates(pki.dir))
    kinds = set()
    for c in certs:
        ku = c.extensions.get_extension_for_class(x509.KeyUsage).value
        with pytest.raises(SecurityError) as ei:
            v.check(c, "encrypt" if ku.key_encipherment else "sign", c.not_valid_before_utc)
        kinds.add(ei.value.kind)
    assert kinds == {"certificate-unknown-ca"}
