"""The ebXML envelope signature (HIS 1037 §6, STANDARDS.md §4.4), signed and verified here.

Why not signxml: it does not implement the XPath filter transform (the framework's Reference URI=""
excludes nextMSH/next actor headers with one) and cannot resolve `cid:` references to MIME parts.
The whole job is small with lxml's C14N and `cryptography`: the XPath filter is evaluated per element
with the expression and namespace context the Transform carries; a `cid:` Reference has no transforms and
digests the raw (decoded, pre-base64) bytes of the MIME part. Checked against xmlsec1 and real NAV mail.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import re
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from lxml import etree

from hub.codes import EbmsError
from hub.ebxml.envelope import DS_NS, NEXT_MSH, NSMAP, SOAP_NEXT, SOAP_NS, Built, RefDigest, serialize
from hub.ebxml.errors import EbxmlError, err
from hub.security.xmldsig import c14n_subtree, cert_b64, cert_from_b64, remove_keeping_tail

C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
C14N_COMMENTS = C14N + "#WithComments"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
XPATH = "http://www.w3.org/TR/1999/REC-xpath-19991116"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
ACTOR_XPATH = (
    f'not(ancestor-or-self::node()[@SOAP-ENV:actor="{NEXT_MSH}"] | '
    f'ancestor-or-self::node()[@SOAP-ENV:actor="{SOAP_NEXT}"])'
)

_DIGESTS = {SHA256: hashlib.sha256, SHA1: hashlib.sha1,
            "http://www.w3.org/2001/04/xmldsig-more#sha256": hashlib.sha256}
_SIGS = {RSA_SHA256: hashes.SHA256, RSA_SHA1: hashes.SHA1}


def _ds(name: str) -> str:
    return f"{{{DS_NS}}}{name}"


# verify_envelope reads a dozen children per envelope: by tag through iterchildren (C), not ElementPath
_SIGNATURE, _SIGNED_INFO, _REFERENCE = _ds("Signature"), _ds("SignedInfo"), _ds("Reference")
_TRANSFORMS, _TRANSFORM, _XPATH_EL = _ds("Transforms"), _ds("Transform"), _ds("XPath")
_DIGEST_METHOD, _DIGEST_VALUE = _ds("DigestMethod"), _ds("DigestValue")
_HEADER, _ACTOR = f"{{{SOAP_NS}}}Header", f"{{{SOAP_NS}}}actor"
# elements carrying a SOAP actor (few): their values are then compared in Python
_WITH_ACTOR = etree.XPath("//*[@s:actor]", namespaces={"s": SOAP_NS})


def _child(el: etree._Element | None, *tags: str) -> etree._Element | None:
    """The first element down the path of child tags (ElementPath's find of "a/b/c", in document order)."""
    if el is None:
        return None
    if len(tags) == 1:
        return next(el.iterchildren(tags[0]), None)
    for c in el.iterchildren(tags[0]):
        hit = _child(c, *tags[1:])
        if hit is not None:
            return hit
    return None


def _text_of(el: etree._Element | None, tag: str) -> str:
    c = _child(el, tag)
    return (c.text or "") if c is not None else ""


def _actors_in(root: etree._Element, actors: tuple[str, ...] | frozenset[str]) -> bool:
    """Whether an element of `root`'s document carries one of these SOAP actors."""
    return any(el.get(_ACTOR) in actors for el in _WITH_ACTOR(root))


@dataclass
class Verified:
    """A valid envelope signature: who signed (KeyInfo certificate) and the reference digests."""

    certificate: x509.Certificate
    signature_method: str
    references: list[RefDigest]


def _c14n(node: etree._Element | etree._ElementTree, algorithm: str) -> bytes:
    if algorithm in (C14N, C14N_COMMENTS):
        return etree.tostring(node, method="c14n", exclusive=False, with_comments=algorithm == C14N_COMMENTS)
    if algorithm.startswith(EXC_C14N):
        comments = algorithm.endswith("WithComments")
        return etree.tostring(node, method="c14n", exclusive=True, with_comments=comments)
    raise err(EbmsError.SECURITY_FAILURE, "signature", f"canonicalization {algorithm} is not supported")


def _c14n_apex(el: etree._Element, algorithm: str) -> bytes:
    """C14N of the subtree at `el` (SignedInfo) as a document subset, by the algorithm's URI."""
    if algorithm in (C14N, C14N_COMMENTS):
        return c14n_subtree(el, False, algorithm == C14N_COMMENTS)
    if algorithm.startswith(EXC_C14N):
        return c14n_subtree(el, True, algorithm.endswith("WithComments"))
    raise err(EbmsError.SECURITY_FAILURE, "signature", f"canonicalization {algorithm} is not supported")


# The framework's actor filter as any signer writes it (spacing and the SOAP prefix vary: NAV writes
# `not (... )` with SOAP:): recognised so it runs as one attribute scan instead of an XPath per element.
_ACTOR_FILTER = re.compile(
    r"not\s*\(\s*ancestor-or-self::node\(\)\[\s*@([\w.-]+):actor\s*=\s*\"([^\"]*)\"\s*\]\s*\|"
    r"\s*ancestor-or-self::node\(\)\[\s*@([\w.-]+):actor\s*=\s*\"([^\"]*)\"\s*\]\s*\)")


def _actor_filter(text: str, ns: dict[str, str]) -> frozenset[str] | None:
    """The actor values an XPath filter drops (with their subtrees), when it is the framework's filter
    over SOAP-ENV:actor; None for any other expression (evaluated as XPath then)."""
    m = _ACTOR_FILTER.fullmatch(text.strip())
    if m is None or ns.get(m[1]) != SOAP_NS or ns.get(m[3]) != SOAP_NS:
        return None
    return frozenset((m[2], m[4]))


def _drop_outermost(dropped: list[etree._Element]) -> None:
    """Remove each dropped element whose ancestors stay (its subtree goes with it), keeping its tail."""
    gone = set(dropped)
    for el in dropped:
        if el.getparent() is not None and not any(a in gone for a in el.iterancestors()):
            remove_keeping_tail(el)


def _same_document_digest(doc: etree._Element, signature: etree._Element, reference: etree._Element) -> bytes:
    """Octets of Reference URI="" after its transforms (enveloped, XPath filter, C14N)."""
    # Work on a copy of the whole document; find our Signature in it by its position.
    steps: list[int] = []
    node = signature
    while node.getparent() is not None:
        steps.append(node.getparent().index(node))
        node = node.getparent()
    tree = copy.deepcopy(doc.getroottree())
    sig = tree.getroot()
    for i in reversed(steps):
        sig = sig[i]
    transforms = reference.findall(f"{_ds('Transforms')}/{_ds('Transform')}")
    out: bytes | None = None
    for t in transforms:
        alg = t.get("Algorithm", "")
        if alg == ENVELOPED:
            remove_keeping_tail(sig)
        elif alg == XPATH:
            xp = t.find(_ds("XPath"))
            if xp is None or not (xp.text or "").strip():
                raise err(EbmsError.SECURITY_FAILURE, "signature", "XPath transform without an expression")
            ns = {k: v for k, v in xp.nsmap.items() if k}
            actors = _actor_filter(xp.text, ns)
            if actors is not None:
                # The same node set as the expression: an element goes when it or an ancestor carries
                # one of the actors (the document node has no attributes); text and comments go with
                # their element, a tail belongs to the parent and stays.
                attr = f"{{{SOAP_NS}}}actor"
                dropped = [el for el in tree.getroot().iter(etree.Element) if el.get(attr) in actors]
            else:
                # Filter semantics: a node stays when the expression is true with it as context. For
                # an ancestor-or-self filter a false element drops with all its content.
                expr = etree.XPath(" ".join(xp.text.split()), namespaces=ns)
                dropped = [el for el in tree.getroot().iter() if isinstance(el.tag, str) and not expr(el)]
            _drop_outermost(dropped)
        elif alg in (C14N, C14N_COMMENTS) or alg.startswith(EXC_C14N):
            out = _c14n(tree, alg)
        else:
            raise err(EbmsError.SECURITY_FAILURE, "signature", f"transform {alg} is not supported")
    return out if out is not None else _c14n(tree, C14N)


def _digest(method: str, data: bytes) -> str:
    fn = _DIGESTS.get(method)
    if fn is None:
        raise err(EbmsError.SECURITY_FAILURE, "signature", f"digest method {method} is not supported")
    return base64.b64encode(fn(data).digest()).decode("ascii")


def _signature_element(header: etree._Element, cert_text: str, cids: list[str], signature_method: str,
                       digest_method: str) -> tuple[etree._Element, etree._Element, etree._Element,
                                                    list[etree._Element], etree._Element]:
    """ds:Signature as the last child of `header`, digests and SignatureValue empty: (Signature,
    SignedInfo, the DigestValue of Reference URI="", those of the cid references, SignatureValue)."""
    sig = etree.SubElement(header, _ds("Signature"), nsmap={"ds": DS_NS})
    si = etree.SubElement(sig, _ds("SignedInfo"))
    etree.SubElement(si, _ds("CanonicalizationMethod")).set("Algorithm", C14N)
    etree.SubElement(si, _ds("SignatureMethod")).set("Algorithm", signature_method)
    ref = etree.SubElement(si, _ds("Reference"))
    ref.set("URI", "")
    tr = etree.SubElement(ref, _ds("Transforms"))
    etree.SubElement(tr, _ds("Transform")).set("Algorithm", ENVELOPED)
    x = etree.SubElement(tr, _ds("Transform"))
    x.set("Algorithm", XPATH)
    etree.SubElement(x, _ds("XPath"), nsmap={"SOAP-ENV": SOAP_NS}).text = ACTOR_XPATH
    etree.SubElement(tr, _ds("Transform")).set("Algorithm", C14N)
    etree.SubElement(ref, _ds("DigestMethod")).set("Algorithm", digest_method)
    dv = etree.SubElement(ref, _ds("DigestValue"))
    cid_dvs = []
    for cid in cids:
        r = etree.SubElement(si, _ds("Reference"))
        r.set("URI", "cid:" + cid)
        etree.SubElement(r, _ds("DigestMethod")).set("Algorithm", digest_method)
        cid_dvs.append(etree.SubElement(r, _ds("DigestValue")))
    sv = etree.SubElement(sig, _ds("SignatureValue"))
    ki = etree.SubElement(sig, _ds("KeyInfo"))
    xd = etree.SubElement(ki, _ds("X509Data"))
    etree.SubElement(xd, _ds("X509Certificate")).text = cert_text
    return sig, si, dv, cid_dvs, sv


def sign_envelope(
    root: etree._Element,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    payloads: dict[str, bytes],
    *,
    signature_method: str = RSA_SHA256,
    digest_method: str = SHA256,
) -> list[RefDigest]:
    """Add ds:Signature as the last child of SOAP:Header; `payloads` maps cid (no `cid:`) to raw bytes."""
    header = root.find(f"{{{SOAP_NS}}}Header")
    if header is None:
        raise ValueError("envelope has no SOAP:Header")
    sig, si, dv, cid_dvs, sv = _signature_element(header, cert_b64(cert), list(payloads), signature_method,
                                                  digest_method)
    refs: list[RefDigest] = []
    ref = si.find(_ds("Reference"))
    for (cid, data), el in zip(payloads.items(), cid_dvs, strict=True):
        el.text = _digest(digest_method, data)
        refs.append(RefDigest("cid:" + cid, digest_method, el.text))
    dv.text = _digest(digest_method, _same_document_digest(root, sig, ref))
    refs.insert(0, RefDigest("", digest_method, dv.text))
    signed = _c14n_apex(si, C14N)
    value = key.sign(signed, padding.PKCS1v15(), _SIGS[signature_method]())
    sv.text = base64.b64encode(value).decode("ascii")
    return refs


# --- signing an envelope this process built, straight to its serialized bytes ----------------------------
#
# sign_envelope() then serialize() costs a deep copy of the document for the enveloped transform, the
# Signature's ~20 elements built one by one, a C14N of SignedInfo through a re-parse and a serialization
# of it all: ~0.15-0.25 ms of Python per envelope beside the RSA signature (one per message at the
# sending relay, one per Acknowledgment at the receiving one). For an envelope just built, with no
# Signature yet and no element the actor filter drops, Reference URI="" covers exactly the C14N of the
# envelope as it stands; SignedInfo's C14N and the Signature's serialization depend only on the
# namespaces in scope at the Header, the algorithms and the number of payloads, so they are made once per
# such context with marker values (through sign_envelope's own builder and C14N) and filled in. The bytes
# are those of sign_envelope() + serialize() (tests/test_ebxml_sign_fast.py compares them).

_XML_ATTR = "{http://www.w3.org/XML/1998/namespace}"  # xml:* on an ancestor goes into SignedInfo's C14N
_MARK_DV = "hubDigestValueMarker{}x"
_MARK_CID = "hubContentIdMarker{}x"
_MARK_SV = b"hubSignatureValueMarkerx"
_MARK_CERT = b"hubCertificateMarkerx"
# text that is written alike in C14N and in lxml's serialization, and needs no escaping in either
_PLAIN_ATTR = re.compile(r"[A-Za-z0-9._@+=/:~-]*")


@dataclass(frozen=True)
class _Template:
    signed_info: bytes  # C14N of SignedInfo, with the markers
    signature: bytes  # the serialized ds:Signature, with the markers
    close: bytes  # the Header's end tag, before which the Signature goes


_templates: dict[tuple[object, ...], _Template] = {}
_templates_lock = threading.Lock()


def _template(root: etree._Element, header: etree._Element, n: int, signature_method: str,
              digest_method: str) -> _Template | None:
    key = (tuple(sorted((k or "", v) for k, v in header.nsmap.items())), root.tag, root.prefix, header.prefix,
           n, signature_method, digest_method)
    with _templates_lock:
        hit = _templates.get(key)
    if hit is not None:
        return hit
    dummy = etree.Element(root.tag, nsmap=root.nsmap)
    head = etree.SubElement(dummy, header.tag, nsmap={k: v for k, v in header.nsmap.items()
                                                       if root.nsmap.get(k) != v})
    etree.SubElement(head, "x")  # a Header with content: it has an end tag
    before = serialize(dummy)
    close = f"</{header.prefix}:Header>".encode() if header.prefix else b"</Header>"
    _, si, dv, cid_dvs, sv = _signature_element(head, _MARK_CERT.decode(),
                                                [_MARK_CID.format(i) for i in range(n)],
                                                signature_method, digest_method)
    dv.text = _MARK_DV.format("")
    for i, el in enumerate(cid_dvs):
        el.text = _MARK_DV.format(i)
    sv.text = _MARK_SV.decode()
    after = serialize(dummy)
    k = before.find(close)
    if k < 0 or before.count(close) != 1 or not after.startswith(before[:k]) \
            or not after.endswith(before[k:]):
        return None
    t = _Template(_c14n_apex(si, C14N), after[k:len(after) - (len(before) - k)], close)
    with _templates_lock:
        _templates[key] = t
    return t


_MARKS = re.compile(rb"hub(?:DigestValueMarker\d*|ContentIdMarker\d+|SignatureValueMarker|"
                    rb"CertificateMarker)x")


def _fill(text: bytes, values: dict[bytes, bytes]) -> bytes:
    """The markers replaced in one pass (a value is never read for markers)."""
    return _MARKS.sub(lambda m: values[m[0]], text)


def sign_to_bytes(
    root: etree._Element,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    payloads: dict[str, bytes],
    *,
    signature_method: str = RSA_SHA256,
    digest_method: str = SHA256,
) -> tuple[bytes, list[RefDigest]]:
    """The serialized envelope (hub.ebxml.envelope.serialize) signed as sign_envelope() signs it, and its
    reference digests; `root` is left unsigned. For an envelope this process built."""
    header = root.find(f"{{{SOAP_NS}}}Header")
    t = None
    if header is not None and root.getparent() is None and len(header) \
            and not any(k.startswith(_XML_ATTR) for el in (root, header) for k in el.attrib) \
            and header.find(_ds("Signature")) is None and all(_PLAIN_ATTR.fullmatch(c) for c in payloads) \
            and not _actors_in(root, (NEXT_MSH, SOAP_NEXT)):
        t = _template(root, header, len(payloads), signature_method, digest_method)
    if t is None:  # anything else: the general way
        refs = sign_envelope(root, key, cert, payloads, signature_method=signature_method,
                             digest_method=digest_method)
        return serialize(root), refs
    unsigned = serialize(root)
    if unsigned.count(t.close) != 1:
        refs = sign_envelope(root, key, cert, payloads, signature_method=signature_method,
                             digest_method=digest_method)
        return serialize(root), refs
    return _sign_filled(t, unsigned, etree.tostring(root, method="c14n"), key, cert, payloads,
                        signature_method, digest_method)


def sign_built(
    built: Built,
    key: rsa.RSAPrivateKey,
    cert: x509.Certificate,
    payloads: dict[str, bytes],
    *,
    signature_method: str = RSA_SHA256,
    digest_method: str = SHA256,
) -> tuple[bytes, list[RefDigest]] | None:
    """sign_to_bytes() for an envelope from hub.ebxml.envelope.build_envelope_bytes (its serialization and
    C14N at hand, the framework's namespaces); None where the template does not apply."""
    if not all(_PLAIN_ATTR.fullmatch(c) for c in payloads):
        return None
    root = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap=NSMAP)
    t = _template(root, etree.SubElement(root, f"{{{SOAP_NS}}}Header"), len(payloads), signature_method,
                  digest_method)
    if t is None or built.data.count(t.close) != 1:
        return None
    return _sign_filled(t, built.data, built.c14n, key, cert, payloads, signature_method, digest_method)


def _sign_filled(t: _Template, unsigned: bytes, c14n: bytes, key: rsa.RSAPrivateKey, cert: x509.Certificate,
                 payloads: dict[str, bytes], signature_method: str, digest_method: str
                 ) -> tuple[bytes, list[RefDigest]]:
    """The Signature from template `t` for the envelope `unsigned` (its C14N `c14n`), put in place."""
    k = unsigned.find(t.close)
    refs = [RefDigest("", digest_method, _digest(digest_method, c14n))]
    values = {_MARK_DV.format("").encode(): refs[0].digest_value.encode()}
    for i, (cid, data) in enumerate(payloads.items()):
        refs.append(RefDigest("cid:" + cid, digest_method, _digest(digest_method, data)))
        values[_MARK_DV.format(i).encode()] = refs[-1].digest_value.encode()
        values[_MARK_CID.format(i).encode()] = cid.encode()
    value = key.sign(_fill(t.signed_info, values), padding.PKCS1v15(), _SIGS[signature_method]())
    values[_MARK_SV] = base64.b64encode(value)
    values[_MARK_CERT] = cert_b64(cert).encode()
    return unsigned[:k] + _fill(t.signature, values) + unsigned[k:], refs


SHA1_REFUSED = ("SHA-1 is not allowed for this sender (allow it per peer in the register, `allow_sha1 = "
                "true`, or by a CPA that names rsa-sha1)")


def _is_unsigned_c14n(root: etree._Element, signature: etree._Element, reference: etree._Element) -> bool:
    """Whether Reference URI="" covers exactly hub.ebxml.dedup.unsigned_c14n's octets: enveloped
    signature, at most the framework's actor filter dropping nothing, inclusive C14N without comments;
    the Signature without a tail (that C14N drops it, the transform keeps it) and no PI or comment
    beside the root (a document's C14N has them, the root element's has not)."""
    if signature.tail or root.getparent() is not None or root.getprevious() is not None \
            or root.getnext() is not None:
        return False
    transforms = [t for ts in reference.iterchildren(_TRANSFORMS) for t in ts.iterchildren(_TRANSFORM)]
    algs = [t.get("Algorithm", "") for t in transforms]
    if algs[-1:] == [C14N]:
        algs.pop()
    if algs == [ENVELOPED]:
        return True
    if algs != [ENVELOPED, XPATH]:
        return False
    xp = _child(transforms[1], _XPATH_EL)
    if xp is None:
        return False
    actors = _actor_filter(xp.text or "", {k: v for k, v in xp.nsmap.items() if k})
    return actors is not None and not _actors_in(root, actors)


def verify_envelope(root: etree._Element, payloads: dict[str, bytes], *,
                    allow_sha1: bool = False, unsigned_c14n: bytes | None = None) -> Verified:
    """Check the envelope's one ds:Signature; raise EbxmlError(SecurityFailure) saying what is wrong.

    rsa-sha256/sha256 always; rsa-sha1/sha1 (HTTP sync in 2024 still signs with it) only with
    `allow_sha1` (the peer's or the CPA's setting). `payloads` maps cid to the raw part bytes. Whether
    the signer is the right party is the caller's check (CPA/register). `unsigned_c14n`: the envelope's
    C14N without its signature when the caller has it (duplicate elimination made it): used for
    Reference URI="" where its transforms give exactly those octets, instead of canonicalising again.
    """
    header = _child(root, _HEADER)
    sigs = list(header.iterchildren(_SIGNATURE)) if header is not None else []
    if not sigs:
        raise err(EbmsError.SECURITY_FAILURE, "signature", "the envelope is not signed")
    if len(sigs) > 1:
        raise err(EbmsError.SECURITY_FAILURE, "signature",
                  "more than one ds:Signature (HIS 1037: exactly one)")
    sig = sigs[0]
    si = _child(sig, _SIGNED_INFO)
    if si is None:
        raise err(EbmsError.SECURITY_FAILURE, "signature", "ds:Signature has no ds:SignedInfo")
    cm = _child(si, _ds("CanonicalizationMethod"))
    sm = _child(si, _ds("SignatureMethod"))
    method = sm.get("Algorithm", "") if sm is not None else ""
    if method not in _SIGS:
        raise err(EbmsError.SECURITY_FAILURE, "signature", f"signature method {method!r} is not supported")
    if method == RSA_SHA1 and not allow_sha1:
        raise err(EbmsError.SECURITY_FAILURE, "signature", f"signature method rsa-sha1: {SHA1_REFUSED}")
    cert_el = _child(sig, _ds("KeyInfo"), _ds("X509Data"), _ds("X509Certificate"))
    if cert_el is None or not (cert_el.text or "").strip():
        raise err(EbmsError.SECURITY_FAILURE, "key_info", "KeyInfo carries no X509Certificate")
    try:
        cert = cert_from_b64(cert_el.text)
    except ValueError as exc:
        raise err(EbmsError.SECURITY_FAILURE, "key_info", f"X509Certificate cannot be read: {exc}") from None
    refs: list[RefDigest] = []
    for i, ref in enumerate(si.iterchildren(_REFERENCE), 1):
        uri = ref.get("URI")
        dm = _child(ref, _DIGEST_METHOD)
        alg = dm.get("Algorithm", "") if dm is not None else ""
        stated = "".join(_text_of(ref, _DIGEST_VALUE).split())
        where = f"/SOAP:Envelope/SOAP:Header/ds:Signature/ds:SignedInfo/ds:Reference[{i}]"
        if alg == SHA1 and not allow_sha1:
            raise EbxmlError(EbmsError.SECURITY_FAILURE, f"digest method sha1: {SHA1_REFUSED}", where)
        if uri == "":
            octets = unsigned_c14n if unsigned_c14n is not None and _is_unsigned_c14n(root, sig, ref) \
                else _same_document_digest(root, sig, ref)
            actual = _digest(alg, octets)
        elif uri is not None and uri.startswith("cid:"):
            if uri[4:] not in payloads:
                raise EbxmlError(EbmsError.MIME_PROBLEM, f"signed part {uri} is not in the package", where)
            if _child(ref, _TRANSFORMS) is not None:
                raise EbxmlError(EbmsError.SECURITY_FAILURE, f"{uri}: transforms on a cid reference", where)
            actual = _digest(alg, payloads[uri[4:]])
        else:
            raise EbxmlError(EbmsError.SECURITY_FAILURE, f"reference URI {uri!r} is not supported", where)
        if actual != stated:
            raise EbxmlError(EbmsError.SECURITY_FAILURE,
                             f"digest of {uri or 'the envelope'} does not match (content changed)", where)
        refs.append(RefDigest(uri, alg, stated))
    if not any(r.uri == "" for r in refs):
        raise err(EbmsError.SECURITY_FAILURE, "signature", "no Reference URI=\"\" covers the envelope")
    signed = _c14n_apex(si, cm.get("Algorithm", C14N) if cm is not None else C14N)
    value = base64.b64decode("".join(_text_of(sig, _ds("SignatureValue")).split()))
    pub = cert.public_key()
    if not isinstance(pub, rsa.RSAPublicKey):
        raise err(EbmsError.SECURITY_FAILURE, "key_info", "only RSA signing keys are supported")
    try:
        pub.verify(value, signed, padding.PKCS1v15(), _SIGS[method]())
    except InvalidSignature:
        raise err(EbmsError.SECURITY_FAILURE, "signature", "SignatureValue does not verify") from None
    return Verified(cert, method, refs)
