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
   Where that can happen we canonicalise SignedInfo from a rebuilt copy carrying every in-scope
   namespace, which gives the C14N 1.0 bytes xmlsec1 computes (tests/test_interop.py).
2. Speed: signxml re-serialises and re-parses the document five to six times per verification (about
   0.8 ms of overhead on a 6 kB message against 0.67 ms for the RSA signature itself). Here signing is
   one parse and one canonicalisation of the document; SignedInfo comes from a per-namespace-context
   template and the signature is spliced into the sender's own bytes (no re-serialisation). Verifying
   is one parse, one canonicalisation of the document and one of SignedInfo.
The narrow profile is a feature: a Reference other than URI="", or XPath/XSLT transforms, are refused.
"""

from __future__ import annotations

import base64
import copy
import functools
import hmac
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

from hub.security.errors import SecurityError
from hub.xmlsafe import XmlInputError, parse_bytes, reparse_own

DS = "http://www.w3.org/2000/09/xmldsig#"
C14N_2001 = CanonicalizationMethod.CANONICAL_XML_1_0.value
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
_XML_NS = "{http://www.w3.org/XML/1998/namespace}"
_START_TAG_NAME = re.compile(rb"<[^\s/>]+")
_SIGNATURE = f"{{{DS}}}Signature"
# Clark names of the ds: children the verifier reads: children are matched by tag, not ElementPath queries
_DS_SIGNED_INFO = f"{{{DS}}}SignedInfo"
_DS_SIGNATURE_VALUE = f"{{{DS}}}SignatureValue"
_DS_C14N_METHOD = f"{{{DS}}}CanonicalizationMethod"
_DS_SIGNATURE_METHOD = f"{{{DS}}}SignatureMethod"
_DS_REFERENCE = f"{{{DS}}}Reference"
_DS_TRANSFORMS = f"{{{DS}}}Transforms"
_DS_TRANSFORM = f"{{{DS}}}Transform"
_DS_DIGEST_METHOD = f"{{{DS}}}DigestMethod"
_DS_DIGEST_VALUE = f"{{{DS}}}DigestValue"
_DS_KEY_INFO = f"{{{DS}}}KeyInfo"
_DS_X509_DATA = f"{{{DS}}}X509Data"
_DS_X509_CERTIFICATE = f"{{{DS}}}X509Certificate"

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


def c14n_subtree(el: etree._Element, exclusive: bool = False, with_comments: bool = False) -> bytes:
    """C14N 1.0 (or exclusive C14N) of the subtree at `el` as a document subset, as xmlsec1 computes it
    for SignedInfo: the apex carries every namespace in scope and, inclusive, the inherited xml:* attributes.

    libxml2's own subtree C14N (through lxml) copies the subtree first, and the copy goes wrong twice:
    spurious `xmlns=""` under an inherited default namespace (libxml2 2.14), and every element re-bound
    to the first prefix of its namespace where two prefixes name it (`<Signature xmlns="…dsig#"
    xmlns:ds="…dsig#">`). So the subtree is serialised as it stands, the declarations inherited from
    above are added to its start tag, and that is canonicalised as a document of its own.
    """
    text = etree.tostring(el, with_tail=False)
    # the apex's own declarations are all on its start tag: parse only that (libxml2 writes ">" in an
    # attribute value as &gt;, so the first ">" ends it), not the whole subtree a second time
    head = text[: text.index(b">")].rstrip(b"/")
    own = reparse_own(head + b"/>").nsmap
    extra = "".join(f' xmlns{":" + p if p else ""}="{uri}"' for p, uri in el.nsmap.items() if p not in own)
    if extra:
        name_end = _START_TAG_NAME.match(text).end()  # type: ignore[union-attr]
        text = text[:name_end] + extra.encode() + text[name_end:]
    apex = reparse_own(text)
    if not exclusive:  # C14N 1.0 §2.4: xml:lang, xml:space ... are inherited by the apex
        for anc in el.iterancestors():
            for k, v in anc.attrib.items():
                if k.startswith(_XML_NS) and k not in apex.attrib:
                    apex.set(k, v)
    return etree.tostring(apex, method="c14n", exclusive=exclusive, with_comments=with_comments)


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
def cert_b64(cert: x509.Certificate) -> str:
    """The certificate's DER in base64, as X509Certificate carries it (each certificate encoded once)."""
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@functools.lru_cache(maxsize=1024)
def _load_cert_b64(text: str) -> x509.Certificate:
    # Peers sign with the same few certificates: parse each once (certificate objects are immutable).
    return x509.load_der_x509_certificate(base64.b64decode(text))


def cert_from_b64(text: str) -> x509.Certificate:
    """The certificate an X509Certificate element's text carries (whitespace ignored), parsed once per
    distinct text. Raises ValueError when it is not base64 DER of a certificate."""
    return _load_cert_b64("".join(text.split()))


# The SignedInfo hub writes is fixed but for the DigestValue, and its canonical form depends only on what
# the root element declares (in-scope namespaces, inherited xml:* attributes). So it is canonicalised once
# per (root tag, declarations, algorithm) with placeholders, and each signature only fills them in: no
# tree is built and nothing is canonicalised for SignedInfo per message.
_DIGEST_SLOT, _VALUE_SLOT, _CERT_SLOT = "@DIGEST@", "@VALUE@", "@CERT@"
_TemplateKey = tuple[str, tuple[tuple[str | None, str], ...], tuple[tuple[str, str], ...], str]


@dataclass(frozen=True)
class _SignatureTemplate:
    signed_info_c14n: tuple[bytes, bytes]  # canonical SignedInfo around the DigestValue
    signature_xml: tuple[str, str, str, str]  # serialised ds:Signature around digest, value, certificate


@functools.lru_cache(maxsize=256)
def _template(key: _TemplateKey) -> _SignatureTemplate:
    tag, nsitems, xml_attrs, algorithm = key
    sig_uri, digest_uri, _ = ALGORITHMS[algorithm]
    root = etree.Element(tag, nsmap=dict(nsitems))
    for k, v in xml_attrs:
        root.set(k, v)
    sig = etree.SubElement(root, _SIGNATURE, nsmap={"ds": DS})
    si = _ds(sig, "SignedInfo")
    _ds(si, "CanonicalizationMethod", Algorithm=C14N_2001)
    _ds(si, "SignatureMethod", Algorithm=sig_uri)
    ref = _ds(si, "Reference", URI="")
    _ds(_ds(ref, "Transforms"), "Transform", Algorithm=ENVELOPED)
    _ds(ref, "DigestMethod", Algorithm=digest_uri)
    _ds(ref, "DigestValue").text = _DIGEST_SLOT
    _ds(sig, "SignatureValue").text = _VALUE_SLOT
    _ds(_ds(_ds(sig, "KeyInfo"), "X509Data"), "X509Certificate").text = _CERT_SLOT
    c14n = c14n_subtree(si, False, False).split(_DIGEST_SLOT.encode())
    xml = re.split(f"{_DIGEST_SLOT}|{_VALUE_SLOT}|{_CERT_SLOT}", etree.tostring(sig, encoding="unicode"))
    if len(c14n) != 2 or len(xml) != 4:
        raise AssertionError("signature template placeholders must occur exactly once")
    return _SignatureTemplate((c14n[0], c14n[1]), (xml[0], xml[1], xml[2], xml[3]))


def _template_key(root: etree._Element, algorithm: str) -> _TemplateKey:
    xml_attrs = tuple(sorted((k, v) for k, v in root.attrib.items() if k.startswith(_XML_NS)))
    nsitems = tuple(sorted(root.nsmap.items(), key=lambda kv: kv[0] or ""))
    return (root.tag, nsitems, xml_attrs, algorithm)


def _is_utf8(tree: etree._ElementTree, data: bytes) -> bool:
    enc = (tree.docinfo.encoding or "UTF-8").upper().replace("-", "").replace("_", "")
    return enc == "UTF8" and not data.startswith((b"\xff\xfe", b"\xfe\xff"))


def _splice_before_end_tag(data: bytes, root: etree._Element, fragment: bytes) -> bytes | None:
    """`data` with `fragment` inserted just before the root's end tag, or None where that is not plain.

    Only when nothing but whitespace follows the root's end tag: a trailing comment or processing
    instruction (or a self-closed root) takes the tree path instead.
    """
    qname = (f"{root.prefix}:" if root.prefix else "") + etree.QName(root).localname
    end = data.rstrip()
    at = end.rfind(b"</" + qname.encode())
    if at < 0 or not end.endswith(b">") or end[at + 2 + len(qname.encode()) : -1].strip():
        return None
    return data[:at] + fragment + data[at:]


def sign_enveloped(
    doc: bytes | etree._Element,
    key: PrivateKeyTypes,
    cert: x509.Certificate,
    algorithm: str = "rsa-sha256",
) -> bytes:
    """Sign the whole document; returns UTF-8 XML with ds:Signature appended as the root's last child.

    `algorithm`: rsa-sha256 (default, what the framework prescribes), rsa-sha384, rsa-sha512, or rsa-sha1
    for peers that still need it. An element passed in is not modified. A UTF-8 document given as bytes
    keeps its own bytes (the signature is inserted before the root's end tag); any other is re-serialised.
    """
    if algorithm not in ALGORITHMS:
        raise SecurityError.of("algorithm-not-allowed", f"unknown signature algorithm {algorithm!r}")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecurityError.of("key-error", "the signing key must be RSA (rsa-sha256 profile)")
    hash_cls = ALGORITHMS[algorithm][2]
    if isinstance(doc, bytes | bytearray):
        data = bytes(doc)
        tree = parse_bytes(data)
        root = tree.getroot()
        if not _is_utf8(tree, data):
            data = etree.tostring(tree, xml_declaration=True, encoding="UTF-8")
    else:
        root = doc.getroot() if isinstance(doc, etree._ElementTree) else doc.getroottree().getroot()
        data = etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")
    if next(root.iter(_SIGNATURE), None) is not None:
        raise SecurityError.of("signature-multiple", "the document is already signed; will not add a second")
    h = hashes.Hash(hash_cls())
    h.update(_c14n_document(root, False, False))
    digest = base64.b64encode(h.finalize())
    t = _template(_template_key(root, algorithm))
    signed_info = t.signed_info_c14n[0] + digest + t.signed_info_c14n[1]
    value = base64.b64encode(key.sign(signed_info, padding.PKCS1v15(), hash_cls())).decode()
    x = t.signature_xml
    fragment = f"{x[0]}{digest.decode()}{x[1]}{value}{x[2]}{cert_b64(cert)}{x[3]}".encode()
    spliced = _splice_before_end_tag(data, root, fragment)
    if spliced is not None:
        return spliced
    whole = parse_bytes(data).getroot()  # a copy: the caller's element is never changed
    whole.append(etree.fromstring(fragment))
    return etree.tostring(whole.getroottree(), xml_declaration=True, encoding="UTF-8")


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


def _first_children(el: etree._Element) -> dict[object, etree._Element]:
    """Each child tag's first element: one pass instead of one ElementPath query per child looked for."""
    first: dict[object, etree._Element] = {}
    for child in el:
        first.setdefault(child.tag, child)
    return first


def _check_profile(sig: etree._Element, allow_sha1: bool) -> _Profile:
    sig_parts = _first_children(sig)
    si = sig_parts.get(_DS_SIGNED_INFO)
    if si is None:
        raise _fail("signature-malformed", "ds:Signature has no SignedInfo")
    parts = _first_children(si)
    c14n = parts.get(_DS_C14N_METHOD)
    method = parts.get(_DS_SIGNATURE_METHOD)
    if c14n is None or method is None:
        raise _fail("signature-malformed", "SignedInfo lacks CanonicalizationMethod or SignatureMethod")
    if c14n.get("Algorithm") not in _C14N:
        raise _fail("algorithm-not-allowed", f"canonicalization {c14n.get('Algorithm')!r} is not allowed")
    sig_alg = method.get("Algorithm") or ""
    if sig_alg not in _SIG_HASH or (sig_alg in _SHA1 and not allow_sha1):
        hint = " (SHA-1 is accepted only when allowed explicitly)" if sig_alg.endswith("sha1") else ""
        raise _fail("algorithm-not-allowed", f"signature algorithm {sig_alg!r} is not allowed{hint}")
    refs = [child for child in si if child.tag == _DS_REFERENCE]
    if len(refs) != 1:
        raise _fail("signature-malformed", f'SignedInfo has {len(refs)} References; exactly one (URI="")')
    ref = refs[0]
    if ref.get("URI") != "":
        raise _fail(
            "signature-malformed", f'Reference URI {ref.get("URI")!r}; must be "" (the whole document)'
        )
    ref_parts = _first_children(ref)
    transforms = [
        t.get("Algorithm") or ""
        for ts in ref
        if ts.tag == _DS_TRANSFORMS
        for t in ts
        if t.tag == _DS_TRANSFORM
    ]
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
    dm = ref_parts.get(_DS_DIGEST_METHOD)
    digest_alg = (dm.get("Algorithm") if dm is not None else None) or ""
    if digest_alg not in _DIGEST_HASH or (digest_alg in _SHA1 and not allow_sha1):
        raise _fail("algorithm-not-allowed", f"digest algorithm {digest_alg!r} is not allowed")
    return _Profile(
        signed_info=si,
        c14n=_C14N[c14n.get("Algorithm") or ""],
        sig_alg=sig_alg,
        digest_alg=digest_alg,
        doc_c14n=doc_c14n,
        digest_value=_b64(ref_parts.get(_DS_DIGEST_VALUE), "DigestValue"),
        signature_value=_b64(sig_parts.get(_DS_SIGNATURE_VALUE), "SignatureValue"),
    )


def _certificate_of(sig: etree._Element) -> x509.Certificate:
    texts = [
        c
        for ki in sig
        if ki.tag == _DS_KEY_INFO
        for xd in ki
        if xd.tag == _DS_X509_DATA
        for c in xd
        if c.tag == _DS_X509_CERTIFICATE
    ]
    if not texts:
        raise _fail("certificate-missing", "KeyInfo carries no X509Certificate")
    if len(texts) > 1:
        raise _fail(
            "certificate-multiple", f"KeyInfo has {len(texts)} certificates; exactly one (the signer's)"
        )
    try:
        return cert_from_b64(texts[0].text or "")
    except ValueError as exc:
        raise _fail("certificate-invalid", f"the X509Certificate in KeyInfo cannot be read: {exc}") from None


@functools.lru_cache(maxsize=1024)
def _public_key(cert: x509.Certificate) -> PublicKeyTypes:
    return cert.public_key()  # parsed anew on every call otherwise


def _describe(cert: x509.Certificate) -> str:
    issuer = cert.issuer.rfc4514_string()
    return f"{cert.subject.rfc4514_string()} (serial {cert.serial_number:x}, issuer {issuer})"


def check_expected(cert: x509.Certificate, expected: ExpectedCerts) -> None:
    """The signer's certificate must be one registered for the sender (CPA / address register)."""
    if expected is None:
        return
    ok = bool(expected(cert)) if callable(expected) else any(cert is e or cert == e for e in expected)
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
    public_key = _public_key(cert)
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise _fail("algorithm-not-allowed", "the signer's key is not RSA")
    try:
        public_key.verify(
            p.signature_value,
            c14n_subtree(p.signed_info, *p.c14n),
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
    "cert_b64",
    "cert_from_b64",
    "c14n_subtree",
    "check_expected",
    "remove_keeping_tail",
    "sign_enveloped",
    "verify_enveloped",
]
