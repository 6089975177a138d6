"""Enveloped XMLDSig of KITH documents (MsgHead and message-root standards), with signxml.

Profile (STANDARDS.md §1, §4.4; NAV's real BehandlerKrav payload): one ds:Signature as the last child of
the root element; SignedInfo canonicalised with C14N 1.0 (2001); rsa-sha256; one Reference URI="" whose
only transform is enveloped-signature; digest sha256; KeyInfo/X509Data/X509Certificate with the signer's
certificate. Older senders still use rsa-sha1/sha1: verified only when the caller allows SHA-1.

Verification policy: exactly one signature, exactly one certificate, the certificate is one registered
for the sender (`expected_certs`), algorithms from an allow-list, the reference covers the whole document.
Certificate validity, path and revocation are hub.security.certs' job, not this module's.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from lxml import etree
from signxml import (
    CanonicalizationMethod,
    DigestAlgorithm,
    SignatureConfiguration,
    SignatureMethod,
    XMLSigner,
    XMLVerifier,
)
from signxml.exceptions import InvalidCertificate, InvalidDigest, InvalidInput, InvalidSignature

from hub.security.errors import SecurityError
from hub.xmlsafe import XmlInputError, parse_bytes

DS = "http://www.w3.org/2000/09/xmldsig#"
C14N_2001 = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_NS = {"ds": DS}

ALGORITHMS: dict[str, tuple[SignatureMethod, DigestAlgorithm]] = {
    "rsa-sha256": (SignatureMethod.RSA_SHA256, DigestAlgorithm.SHA256),
    "rsa-sha384": (SignatureMethod.RSA_SHA384, DigestAlgorithm.SHA384),
    "rsa-sha512": (SignatureMethod.RSA_SHA512, DigestAlgorithm.SHA512),
    "rsa-sha1": (SignatureMethod.RSA_SHA1, DigestAlgorithm.SHA1),
}
_STRONG_SIG = frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512})
_STRONG_DIGEST = frozenset({DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512})
# Transforms a Reference may carry besides enveloped-signature: only canonicalisations (no XPath/XSLT,
# which could narrow what is signed).
_C14N_URIS = frozenset(m.value for m in CanonicalizationMethod)

ExpectedCerts = Sequence[x509.Certificate] | Callable[[x509.Certificate], bool] | None


@dataclass(frozen=True)
class VerifiedSignature:
    """What a good signature proved: who signed (certificate), how, and the signed document itself."""

    certificate: x509.Certificate
    algorithm: str  # SignatureMethod URI
    digest_algorithm: str  # DigestMethod URI
    signed_element: etree._Element  # the document as signed (re-read from its canonical form)
    signed_c14n: bytes


class _Signer(XMLSigner):
    def __init__(self, sig: SignatureMethod, digest: DigestAlgorithm, allow_sha1: bool) -> None:
        self._allow_sha1 = allow_sha1
        super().__init__(signature_algorithm=sig, digest_algorithm=digest, c14n_algorithm=C14N_2001)

    def check_deprecated_methods(self) -> None:
        # signxml refuses SHA-1 outright; we sign with it only when explicitly asked (interop with old peers)
        if not self._allow_sha1:
            super().check_deprecated_methods()


_signers: dict[str, _Signer] = {}


def _root_of(doc: bytes | etree._Element | etree._ElementTree) -> etree._Element:
    if isinstance(doc, bytes | bytearray):
        return parse_bytes(bytes(doc)).getroot()
    if isinstance(doc, etree._ElementTree):
        return doc.getroot()
    return doc


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
    root = _root_of(doc)
    if root.find(".//ds:Signature", _NS) is not None:
        raise SecurityError.of("signature-multiple", "the document is already signed; will not add a second")
    signer = _signers.get(algorithm)
    if signer is None:
        sig, digest = ALGORITHMS[algorithm]
        signer = _signers[algorithm] = _Signer(sig, digest, allow_sha1=True)
    try:
        signed = signer.sign(root, key=key, cert=[cert], exclude_c14n_transform_element=True)
    except (InvalidInput, TypeError, ValueError) as exc:
        raise SecurityError.of("key-error", f"cannot sign: {exc}") from None
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


def _fail(kind: str, message: str) -> SecurityError:
    return SecurityError.of(kind, message)


def _signature_of(root: etree._Element) -> etree._Element:
    sigs = root.findall(".//ds:Signature", _NS) + ([root] if root.tag == f"{{{DS}}}Signature" else [])
    if not sigs:
        raise _fail("signature-missing", "the document carries no ds:Signature")
    if len(sigs) > 1:
        raise _fail("signature-multiple", f"{len(sigs)} ds:Signature elements; exactly one is allowed")
    sig = sigs[0]
    if sig.getparent() is not root:
        raise _fail("signature-malformed", "ds:Signature is not a child of the root element (not enveloped)")
    return sig


def _check_profile(sig: etree._Element, allow_sha1: bool) -> tuple[str, str]:
    si = sig.find("ds:SignedInfo", _NS)
    if si is None:
        raise _fail("signature-malformed", "ds:Signature has no SignedInfo")
    c14n = si.find("ds:CanonicalizationMethod", _NS)
    method = si.find("ds:SignatureMethod", _NS)
    if c14n is None or method is None:
        raise _fail("signature-malformed", "SignedInfo lacks CanonicalizationMethod or SignatureMethod")
    if c14n.get("Algorithm") not in _C14N_URIS:
        raise _fail("algorithm-not-allowed", f"canonicalization {c14n.get('Algorithm')!r} is not allowed")
    sig_alg = method.get("Algorithm") or ""
    allowed_sig = {m.value for m in _STRONG_SIG} | ({SignatureMethod.RSA_SHA1.value} if allow_sha1 else set())
    if sig_alg not in allowed_sig:
        hint = " (SHA-1 is accepted only when allowed explicitly)" if sig_alg.endswith("sha1") else ""
        raise _fail("algorithm-not-allowed", f"signature algorithm {sig_alg!r} is not allowed{hint}")
    refs = si.findall("ds:Reference", _NS)
    if len(refs) != 1:
        raise _fail("signature-malformed", f'SignedInfo has {len(refs)} References; exactly one (URI="")')
    ref = refs[0]
    if ref.get("URI") != "":
        raise _fail(
            "signature-malformed", f'the Reference URI is {ref.get("URI")!r}; it must be "" (whole document)'
        )
    transforms = [t.get("Algorithm") for t in ref.findall("ds:Transforms/ds:Transform", _NS)]
    if ENVELOPED not in transforms:
        raise _fail("signature-malformed", "the Reference lacks the enveloped-signature transform")
    other = [t for t in transforms if t != ENVELOPED and t not in _C14N_URIS]
    if other:
        raise _fail(
            "algorithm-not-allowed", f"transforms {other} not allowed (only enveloped-signature, C14N)"
        )
    dm = ref.find("ds:DigestMethod", _NS)
    digest_alg = dm.get("Algorithm") if dm is not None else None
    allowed_digest = {d.value for d in _STRONG_DIGEST} | (
        {DigestAlgorithm.SHA1.value} if allow_sha1 else set()
    )
    if digest_alg not in allowed_digest:
        raise _fail("algorithm-not-allowed", f"digest algorithm {digest_alg!r} is not allowed")
    return sig_alg, digest_alg or ""


def _certificate_of(sig: etree._Element) -> x509.Certificate:
    texts = sig.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _NS)
    if not texts:
        raise _fail("certificate-missing", "KeyInfo carries no X509Certificate")
    if len(texts) > 1:
        raise _fail(
            "certificate-multiple", f"KeyInfo has {len(texts)} certificates; exactly one (the signer's)"
        )
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((texts[0].text or "").split())))
    except ValueError as exc:
        raise _fail("certificate-invalid", f"the X509Certificate in KeyInfo cannot be read: {exc}") from None


def _describe(cert: x509.Certificate) -> str:
    issuer = cert.issuer.rfc4514_string()
    return f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}, issuer {issuer})"


def check_expected(cert: x509.Certificate, expected: ExpectedCerts) -> None:
    """The signer's certificate must be one registered for the sender (CPA / address register)."""
    if expected is None:
        return
    if callable(expected):
        ok = bool(expected(cert))
    else:
        ok = any(cert == e for e in expected)
    if not ok:
        raise _fail(
            "certificate-mismatch",
            f"signed with {_describe(cert)}: not registered for the sender",
        )


def verify_enveloped(
    doc: bytes | etree._Element,
    *,
    expected_certs: ExpectedCerts = None,
    allow_sha1: bool = False,
) -> VerifiedSignature:
    """Verify the document's one enveloped signature; raise SecurityError (S01/S02) on any failure.

    `expected_certs`: the certificates registered for the sender, or a callable judging one; None skips
    the check (only for tools that report who signed). Raises XmlInputError if `doc` is not XML.
    """
    root = _root_of(doc)
    sig = _signature_of(root)
    sig_alg, digest_alg = _check_profile(sig, allow_sha1)
    cert = _certificate_of(sig)
    check_expected(cert, expected_certs)
    config = SignatureConfiguration(
        location="./",
        expect_references=1,
        signature_methods=frozenset({SignatureMethod(sig_alg)}),
        digest_algorithms=frozenset({DigestAlgorithm(digest_alg)}),
        # validity in time is the certificate validator's decision (at the message's time), not signxml's
        verification_time=cert.not_valid_before_utc,
    )
    try:
        result = XMLVerifier().verify(root, x509_cert=cert, expect_config=config)
    except InvalidDigest as exc:
        raise _fail("signature-invalid", f"the signed content was changed after signing: {exc}") from None
    except InvalidSignature as exc:
        raise _fail(
            "signature-invalid", f"the signature does not verify with the signer's key: {exc}"
        ) from None
    except InvalidCertificate as exc:
        raise _fail("certificate-invalid", str(exc)) from None
    except (InvalidInput, XmlInputError, ValueError) as exc:
        raise _fail("signature-malformed", f"the signature cannot be processed: {exc}") from None
    return VerifiedSignature(cert, sig_alg, digest_alg, result.signed_xml, result.signed_data)
