"""Enveloped XMLDSig of KITH documents (MsgHead and message-root standards).

Profile (STANDARDS.md §1, §4.4; NAV's real BehandlerKrav payload): one ds:Signature as the last child of
the root element; SignedInfo canonicalised with C14N 1.0 (2001); rsa-sha256; one Reference URI="" whose
only transform is enveloped-signature; digest sha256; KeyInfo/X509Data/X509Certificate with the signer's
certificate. Older senders still use rsa-sha1/sha1: verified only when the caller allows SHA-1.

Verification policy: exactly one signature, exactly one certificate, the certificate is one registered
for the sender (`expected_certs`), algorithms from an allow-list, the reference covers the whole document.
Certificate validity, path and revocation are hub.security.certs' job, not this module's.

Why not signxml for the work itself (it supplies the algorithm identifiers, and the tests check that
signxml verifies what we sign): two measured reasons.
1. Interop: lxml 6.1 bundles libxml2 2.14.6, whose inclusive C14N of a *subtree* of a parsed document
   writes spurious `xmlns=""` on elements two levels below the subtree's top (Reference/Transforms) when
   the elements use a default namespace. signxml canonicalises SignedInfo that way, so it rejects correct
   signatures written as `<Signature xmlns="...xmldsig#">` (xmlsec1 templates, .NET SignedXml).
   We canonicalise SignedInfo from a rebuilt copy carrying every in-scope namespace, which gives the
   C14N 1.0 bytes xmlsec1 computes (tests/test_interop.py).
2. Speed: signxml re-serialises and re-parses the document five to six times per verification (about
   0.8 ms of overhead on a 6 kB message against 0.67 ms for the RSA signature itself); this profile
   needs one canonicalisation of the document and one of SignedInfo.
The narrow profile is a feature: a Reference other than URI="", or XPath/XSLT transforms, are refused.
"""

from __future__ import annotations

import base64
import copy
import functools
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

from hub.security.errors import SecurityError
from hub.xmlsafe import XmlInputError, parse_bytes

DS = "http://www.w3.org/2000/09/xmldsig#"
C14N_2001 = CanonicalizationMethod.CANONICAL_XML_1_0.value
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_NS = {"ds": DS}
_XML_NS = "{http://www.w3.org/XML/1998/namespace}"
_SIGNATURE = f"{{{DS}}}Signature"

# name -> (SignatureMethod URI, DigestMethod URI, hash)
ALGORITHMS: dict[str, tuple[str, str, type[hashes.HashAlgorithm]]] = {
    "rsa-sha256": (SignatureMethod.RSA_SHA256.value, DigestAlgorithm.SHA256.value, hashes.SHA256),
    "rsa-sha384": (SignatureMethod.RSA_SHA384.value, DigestAlgorithm.SHA384.value, hashes.SHA384),
    "rsa-sha512": (SignatureMethod.RSA_SHA512.value, DigestAlgorithm.SHA512.value, hashes.SHA512),
    "rsa-sha1": (SignatureMethod.RSA_SHA1.value, DigestAlgorithm.SHA1.value, hashes.SHA1),
}
_SIG_HASH = {sig: h for sig, _, h in ALGORITHMS.values()}
_DIGEST_HASH = {dig: h for _, dig, h in ALGORITHMS.values()}
_SHA1 = {SignatureMethod.RSA_SHA1.value, DigestAlgorithm.SHA1.value}
# (exclusive, with_comments) per C14N algorithm; C14N 1.1 is not offered by libxml2, so not accepted
_C14N: dict[str, tuple[bool, bool]] = {
    CanonicalizationMethod.CANONICAL_XML_1_0.value: (False, False),
    CanonicalizationMethod.CANONICAL_XML_1_0_WITH_COMMENTS.value: (False, True),
    CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0.value: (True, False),
    CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0_WITH_COMMENTS.value: (True, True),
}

ExpectedCerts = Sequence[x509.Certificate] | Callable[[x509.Certificate], bool] | None


@dataclass(frozen=True)
class VerifiedSignature:
    """What a good signature proved: who signed (certificate), how, and the signed document itself."""

    certificate: x509.Certificate
    algorithm: str  # SignatureMethod URI
    digest_algorithm: str  # DigestMethod URI
    signed_c14n: bytes  # exactly the bytes the digest covers (document without the signature)

    @cached_property
    def signed_element(self) -> etree._Element:
        """The document as signed, read back from the signed bytes (never from unsigned parts)."""
        return parse_bytes(self.signed_c14n).getroot()


# --- canonicalisation --------------------------------------------------------------------------------


def _c14n_subtree(el: etree._Element, exclusive: bool, with_comments: bool) -> bytes:
    """C14N 1.0 of the subtree at `el` as a document subset (namespace and xml:* context included).

    Rebuilt as a standalone element with every in-scope namespace declared on it, because libxml2 2.14's
    subtree C14N emits wrong `xmlns=""` deeper down (see module docstring). Inclusive C14N keeps the
    in-scope declarations and inherited xml:* attributes on the apex; exclusive drops the unused ones.
    """
    clone = etree.Element(el.tag, nsmap=el.nsmap)
    for k, v in el.attrib.items():
        clone.set(k, v)
    if not exclusive:
        for anc in el.iterancestors():  # C14N 1.0 §2.4: xml:lang, xml:space ... are inherited
            for k, v in anc.attrib.items():
                if k.startswith(_XML_NS) and k not in clone.attrib:
                    clone.set(k, v)
    clone.text = el.text
    for child in el:
        clone.append(copy.deepcopy(child))
    return etree.tostring(clone, method="c14n", exclusive=exclusive, with_comments=with_comments)


def _c14n_document(root: etree._Element, exclusive: bool, with_comments: bool) -> bytes:
    """C14N of the whole document (Reference URI=""): root element plus top-level PIs (and comments)."""
    return etree.tostring(root.getroottree(), method="c14n", exclusive=exclusive, with_comments=with_comments)


def remove_keeping_tail(el: etree._Element) -> None:
    """Remove `el` but not the text after it: the enveloped-signature transform removes only the element."""
    parent = el.getparent()
    if el.tail:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)


def _root_of(doc: bytes | etree._Element | etree._ElementTree, *, copy_element: bool) -> etree._Element:
    if isinstance(doc, bytes | bytearray):
        return parse_bytes(bytes(doc)).getroot()
    root = doc.getroot() if isinstance(doc, etree._ElementTree) else doc
    if copy_element:  # never change the caller's tree
        return copy.deepcopy(root.getroottree()).getroot()
    return root


# --- signing -----------------------------------------------------------------------------------------


def _ds(parent: etree._Element, tag: str, **attrib: str) -> etree._Element:
    return etree.SubElement(parent, f"{{{DS}}}{tag}", attrib)


@functools.lru_cache(maxsize=256)
def _cert_b64(cert: x509.Certificate) -> str:
    # A relay signs with the same few certificates all day: encode each once.
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@functools.lru_cache(maxsize=1024)
def _load_cert_b64(text: str) -> x509.Certificate:
    # Peers sign with the same few certificates: parse each once (certificate objects are immutable).
    return x509.load_der_x509_certificate(base64.b64decode(text))


def sign_enveloped(
    doc: bytes | etree._Element,
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    algorithm: str = "rsa-sha256",
) -> bytes:
    """Sign the whole document; returns UTF-8 XML with ds:Signature appended as the root's last child.

    `algorithm`: rsa-sha256 (default, what the framework prescribes), rsa-sha384, rsa-sha512, or rsa-sha1
    for peers that still need it. An element passed in is not modified.
    """
    if algorithm not in ALGORITHMS:
        raise SecurityError.of("algorithm-not-allowed", f"unknown signature algorithm {algorithm!r}")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecurityError.of("key-error", "the signing key must be RSA (rsa-sha256 profile)")
    sig_uri, digest_uri, hash_cls = ALGORITHMS[algorithm]
    root = _root_of(doc, copy_element=True)
    if next(root.iter(_SIGNATURE), None) is not None:
        raise SecurityError.of("signature-multiple", "the document is already signed; will not add a second")
    h = hashes.Hash(hash_cls())
    h.update(_c14n_document(root, False, False))
    digest = h.finalize()

    sig = etree.SubElement(root, f"{{{DS}}}Signature", nsmap={"ds": DS})
    si = _ds(sig, "SignedInfo")
    _ds(si, "CanonicalizationMethod", Algorithm=C14N_2001)
    _ds(si, "SignatureMethod", Algorithm=sig_uri)
    ref = _ds(si, "Reference", URI="")
    _ds(_ds(ref, "Transforms"), "Transform", Algorithm=ENVELOPED)
    _ds(ref, "DigestMethod", Algorithm=digest_uri)
    _ds(ref, "DigestValue").text = base64.b64encode(digest).decode()
    value = _ds(sig, "SignatureValue")
    _ds(_ds(_ds(sig, "KeyInfo"), "X509Data"), "X509Certificate").text = _cert_b64(cert)
    signature = key.sign(_c14n_subtree(si, False, False), padding.PKCS1v15(), hash_cls())
    value.text = base64.b64encode(signature).decode()
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


# --- verification ------------------------------------------------------------------------------------


def _fail(kind: str, message: str) -> SecurityError:
    return SecurityError.of(kind, message)


def _signature_of(root: etree._Element) -> etree._Element:
    sigs = list(root.iter(_SIGNATURE))
    if not sigs:
        raise _fail("signature-missing", "the document carries no ds:Signature")
    if len(sigs) > 1:
        raise _fail("signature-multiple", f"{len(sigs)} ds:Signature elements; exactly one is allowed")
    sig = sigs[0]
    if sig.getparent() is not root:
        raise _fail("signature-malformed", "ds:Signature is not a child of the root element (not enveloped)")
    return sig


@dataclass(frozen=True)
class _Profile:
    signed_info: etree._Element
    c14n: tuple[bool, bool]
    sig_alg: str
    digest_alg: str
    doc_c14n: tuple[bool, bool]  # how the Reference canonicalises the document
    digest_value: bytes
    signature_value: bytes


def _b64(el: etree._Element | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((el.text or "").split()) if el is not None else "", validate=True)
    except ValueError:
        raise _fail("signature-malformed", f"{what} is not base64") from None


def _check_profile(sig: etree._Element, allow_sha1: bool) -> _Profile:
    si = sig.find("ds:SignedInfo", _NS)
    if si is None:
        raise _fail("signature-malformed", "ds:Signature has no SignedInfo")
    c14n = si.find("ds:CanonicalizationMethod", _NS)
    method = si.find("ds:SignatureMethod", _NS)
    if c14n is None or method is None:
        raise _fail("signature-malformed", "SignedInfo lacks CanonicalizationMethod or SignatureMethod")
    if c14n.get("Algorithm") not in _C14N:
        raise _fail("algorithm-not-allowed", f"canonicalization {c14n.get('Algorithm')!r} is not allowed")
    sig_alg = method.get("Algorithm") or ""
    if sig_alg not in _SIG_HASH or (sig_alg in _SHA1 and not allow_sha1):
        hint = " (SHA-1 is accepted only when allowed explicitly)" if sig_alg.endswith("sha1") else ""
        raise _fail("algorithm-not-allowed", f"signature algorithm {sig_alg!r} is not allowed{hint}")
    refs = si.findall("ds:Reference", _NS)
    if len(refs) != 1:
        raise _fail("signature-malformed", f'SignedInfo has {len(refs)} References; exactly one (URI="")')
    ref = refs[0]
    if ref.get("URI") != "":
        raise _fail(
            "signature-malformed", f'Reference URI {ref.get("URI")!r}; must be "" (the whole document)'
        )
    transforms = [t.get("Algorithm") or "" for t in ref.findall("ds:Transforms/ds:Transform", _NS)]
    if not transforms or transforms[0] != ENVELOPED:
        raise _fail(
            "signature-malformed", "the Reference does not start with the enveloped-signature transform"
        )
    rest = transforms[1:]
    if len(rest) > 1 or any(t not in _C14N for t in rest):
        raise _fail(
            "algorithm-not-allowed", f"transforms {rest} not allowed (only enveloped-signature, C14N)"
        )
    # with no explicit canonicalisation the node-set becomes octets by C14N 1.0 without comments
    doc_c14n = _C14N[rest[0]] if rest else (False, False)
    dm = ref.find("ds:DigestMethod", _NS)
    digest_alg = (dm.get("Algorithm") if dm is not None else None) or ""
    if digest_alg not in _DIGEST_HASH or (digest_alg in _SHA1 and not allow_sha1):
        raise _fail("algorithm-not-allowed", f"digest algorithm {digest_alg!r} is not allowed")
    return _Profile(
        signed_info=si,
        c14n=_C14N[c14n.get("Algorithm") or ""],
        sig_alg=sig_alg,
        digest_alg=digest_alg,
        doc_c14n=doc_c14n,
        digest_value=_b64(ref.find("ds:DigestValue", _NS), "DigestValue"),
        signature_value=_b64(sig.find("ds:SignatureValue", _NS), "SignatureValue"),
    )


def _certificate_of(sig: etree._Element) -> x509.Certificate:
    texts = sig.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _NS)
    if not texts:
        raise _fail("certificate-missing", "KeyInfo carries no X509Certificate")
    if len(texts) > 1:
        raise _fail(
            "certificate-multiple", f"KeyInfo has {len(texts)} certificates; exactly one (the signer's)"
        )
    try:
        return _load_cert_b64("".join((texts[0].text or "").split()))
    except ValueError as exc:
        raise _fail("certificate-invalid", f"the X509Certificate in KeyInfo cannot be read: {exc}") from None


def _describe(cert: x509.Certificate) -> str:
    issuer = cert.issuer.rfc4514_string()
    return f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}, issuer {issuer})"


def check_expected(cert: x509.Certificate, expected: ExpectedCerts) -> None:
    """The signer's certificate must be one registered for the sender (CPA / address register)."""
    if expected is None:
        return
    ok = bool(expected(cert)) if callable(expected) else any(cert == e for e in expected)
    if not ok:
        raise _fail("certificate-mismatch", f"signed with {_describe(cert)}: not registered for the sender")


def verify_enveloped(
    doc: bytes | etree._Element,
    *,
    expected_certs: ExpectedCerts = None,
    allow_sha1: bool = False,
) -> VerifiedSignature:
    """Verify the document's one enveloped signature; raise SecurityError (S01/S02) on any failure.

    `expected_certs`: the certificates registered for the sender, or a callable judging one; None skips
    the check (only for tools that report who signed). Raises XmlInputError if `doc` is not XML.
    An element passed in is not modified.
    """
    root = _root_of(doc, copy_element=True)
    sig = _signature_of(root)
    p = _check_profile(sig, allow_sha1)
    cert = _certificate_of(sig)
    check_expected(cert, expected_certs)
    public_key = cert.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise _fail("algorithm-not-allowed", "the signer's key is not RSA")
    try:
        public_key.verify(
            p.signature_value,
            _c14n_subtree(p.signed_info, *p.c14n),
            padding.PKCS1v15(),
            _SIG_HASH[p.sig_alg](),
        )
    except InvalidSignature:
        raise _fail(
            "signature-invalid",
            "the signature does not verify with the signer's key "
            "(SignedInfo changed, or signed with another key)",
        ) from None
    # SignedInfo is now authentic: its DigestValue says what the document must be
    remove_keeping_tail(sig)
    signed = _c14n_document(root, *p.doc_c14n)
    h = hashes.Hash(_DIGEST_HASH[p.digest_alg]())
    h.update(signed)
    if not hmac.compare_digest(h.finalize(), p.digest_value):
        raise _fail("signature-invalid", "the signed content was changed after signing (digest mismatch)")
    return VerifiedSignature(cert, p.sig_alg, p.digest_alg, signed)


__all__ = [
    "ALGORITHMS",
    "DS",
    "ENVELOPED",
    "ExpectedCerts",
    "VerifiedSignature",
    "XmlInputError",
    "check_expected",
    "remove_keeping_tail",
    "sign_enveloped",
    "verify_enveloped",
]
