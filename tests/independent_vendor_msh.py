"""A vendor's ebXML message service with its EPJ behind it, written for the tests WITHOUT importing `hub`.

It is what a vendor brings to the test centre: an ebMS 2.0 MSH over HTTP and a GP system that receives
Dialogmelding 1.0. Nothing here comes from the hub: MIME with the stdlib `email` package, SOAP and
CPPA with lxml, XMLDSig verification with signxml (signing: lxml C14N + `cryptography`), CMS with
`cryptography`'s pkcs7 functions, the KITH payload judged with xmlschema against the official XSDs, the
AppRec (Applikasjonskvittering v1.1) built with lxml. A bug in the hub's ebXML code then shows up as a
disagreement instead of both sides agreeing.

    python tests/independent_vendor_msh.py ROOT --her 87210 --service 87211 --name "Uavhengig EPJ" \
        --keys DIR --xsd DIR [--network PKI_DIR] [--behaviour correct]

DIR (--keys) holds the enterprise certificates the test PKI issued to the system: sign.pem, sign.key.pem,
enc.pem, enc.key.pem. The service listens on 127.0.0.1 (any port), writes its CPP to ROOT/cpp.xml, prints
its URL on the first line of stdout, and installs the CPA the test centre writes to ROOT/cpa.xml (read
again whenever it changes). Registered patients: ROOT/patients.json. SIGTERM stops it.

What it does with each ebXML message (ebMS 2.0):
- the envelope signature is verified (§4.1: enveloped-signature + the XPath filter of the nextMSH/next
  actors, C14N; one `cid:` reference per payload) against the signing certificate the CPA gives the
  sender; any failure is answered with a MessageError SecurityFailure and nothing is delivered;
- a MessageId seen before is acknowledged again and not delivered again (§6.4.1 duplicate elimination);
- the payload is decrypted (CMS EnvelopedData for our encryption certificate), refused if the CPA wants
  it encrypted and it is not;
- the signal goes back on the same HTTP exchange when the message asks for SyncReply and the CPA's
  syncReplyMode allows it, else it is POSTed to the sender's endpoint in the CPA;
- the application answers every message for it with an AppRec (OK, or AVVIST with the codes of what it
  found), sent as a new signed, encrypted ebXML message in the same conversation. With --network it
  first checks the KITH document's own signature (signxml, the chain to the network's CA certificates,
  the issuing CA's CRL): S01, S02, S03.

Behaviours (--behaviour), each a defect a real release could have: correct | mute (never sends an ebMS
signal) | deliver-duplicates (no duplicate elimination: a repeated ebXML message is delivered and
answered again) | accept-tampered (never checks the envelope
signature) | refuse-but-deliver (answers a tampered envelope with the right MessageError, and delivers it
anyway) | wrong-original-id (AppRecs name another OriginalMsgId).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import email
import email.policy
import gzip
import hashlib
import json
import re
import signal
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from pathlib import Path

import xmlschema
from aiohttp import ClientSession, ClientTimeout, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidCertificate

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
EB = "http://www.oasis-open.org/committees/ebxml-msg/schema/msg-header-2_0.xsd"
XLINK = "http://www.w3.org/1999/xlink"
DS = "http://www.w3.org/2000/09/xmldsig#"
CPPA = "http://www.oasis-open.org/committees/ebxml-cppa/schema/cpp-cpa-2_0.xsd"
MH = "http://www.kith.no/xmlstds/msghead/2006-05-24"
DIALOG = "http://www.kith.no/xmlstds/dialog/2006-10-11"
AR = "http://www.kith.no/xmlstds/apprec/2012-02-15"
EBMS_SERVICE = "urn:oasis:names:tc:ebxml-msg:service"
TO_PARTY_MSH = "urn:oasis:names:tc:ebxml-msg:actor:toPartyMSH"
NEXT = "http://schemas.xmlsoap.org/soap/actor/next"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
XPATH_TRANSFORM = "http://www.w3.org/TR/1999/REC-xpath-19991116"
C14N = "http://www.w3.org/TR/2001/REC-xml-c14n-20010315"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
# ebMS 2.0 §4.1.3: what the envelope signature leaves out (headers for the next MSH on the way)
ACTOR_FILTER = (
    'not(ancestor-or-self::node()[@SOAP-ENV:actor="urn:oasis:names:tc:ebxml-msg:actor:nextMSH"]'
    ' | ancestor-or-self::node()[@SOAP-ENV:actor="http://schemas.xmlsoap.org/soap/actor/next"])'
)
PROTECTED = ("transient", "persistent", "persistent-and-transient")
SYNC_MODES = ("mshSignalsOnly", "signalsOnly", "signalsAndResponse")
ERROR_OID = "2.16.578.1.12.4.1.1.8221"
UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
TEXTS = {
    "T01": "Ikke XML / ikke 'well formed' / uleselig",
    "T02": "XML validerer ikke",
    "T10": "Støtter ikke meldingsformatet",
    "E10": "Ugyldig meldingsidentifikator",
    "E21": "Mottaker finnes ikke",
    "E30": "Pasientens fødselsnummer mangler",
    "E31": "Pasientens fødselsnummer er feil",
    "E35": "Pasienten finnes ikke i mottakersystemet",
}
MAX_BODY = 20 * 1024 * 1024
BEHAVIOURS = (
    "correct",
    "mute",
    "deliver-duplicates",
    "accept-tampered",
    "refuse-but-deliver",
    "wrong-original-id",
)


def q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def now_text() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def safe_xml(data: bytes) -> etree._Element:
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_blank_text=False
    )
    return etree.fromstring(data, parser)


class Refused(Exception):
    """An ebMS error: answered with a MessageError (code, location, text)."""

    def __init__(self, code: str, location: str, text: str) -> None:
        super().__init__(text)
        self.code, self.location, self.text = code, location, text


# --- the agreement (CPPA 2.0, read with lxml) ---------------------------------------------------------


@dataclass
class Party:
    her: str
    sign_cert: x509.Certificate | None
    enc_cert: x509.Certificate | None
    endpoint: str
    sync_reply_mode: str
    roles: list[tuple[str, str, set[str], set[str]]]  # (role, service, can send, can receive)
    confidential: dict[tuple[str, str], str] = field(default_factory=dict)  # (service, action) -> value


def _cert(pi: etree._Element, cert_id: str | None) -> x509.Certificate | None:
    for c in pi.findall(q(CPPA, "Certificate")):
        if c.get(q(CPPA, "certId")) == cert_id:
            b64 = c.findtext(f".//{q(DS, 'X509Certificate')}") or ""
            return x509.load_der_x509_certificate(base64.b64decode("".join(b64.split())))
    return None


def read_party(pi: etree._Element) -> Party:
    c = f"{{{CPPA}}}"
    her = next((p.text or "").strip() for p in pi.findall(c + "PartyId") if p.get(c + "type") == "HER")
    sign_ref = pi.find(f".//{c}SenderNonRepudiation/{c}SigningCertificateRef")
    sign_id = sign_ref.get(c + "certId") if sign_ref is not None else None
    enc_ref = pi.find(f".//{c}ApplicationCertificateRef")
    enc_id = enc_ref.get(c + "certId") if enc_ref is not None else None
    roles, confidential = [], {}
    for cr in pi.findall(c + "CollaborationRole"):
        role = cr.find(c + "Role").get(c + "name")
        service = (cr.findtext(f"{c}ServiceBinding/{c}Service") or "").strip()
        send = {
            b.get(c + "action")
            for b in cr.iterfind(f"{c}ServiceBinding/{c}CanSend/{c}ThisPartyActionBinding")
        }
        receive = {
            b.get(c + "action")
            for b in cr.iterfind(f"{c}ServiceBinding/{c}CanReceive/{c}ThisPartyActionBinding")
        }
        for b in cr.iterfind(f".//{c}ThisPartyActionBinding"):
            btc = b.find(c + "BusinessTransactionCharacteristics")
            if btc is not None and btc.get(c + "isConfidential"):
                confidential[(service, b.get(c + "action"))] = btc.get(c + "isConfidential")
        roles.append((role, service, send, receive))
    endpoint = next(
        (e.get(c + "uri") for e in pi.iter(c + "Endpoint") if e.get(c + "type") in (None, "allPurpose")), ""
    )
    mc = pi.find(f".//{c}MessagingCharacteristics")
    return Party(
        her,
        _cert(pi, sign_id),
        _cert(pi, enc_id),
        endpoint,
        mc.get(c + "syncReplyMode", "none") if mc is not None else "none",
        roles,
        confidential,
    )


@dataclass
class Agreement:
    cpa_id: str
    parties: dict[str, Party]
    packages_encrypted: bool

    @classmethod
    def read(cls, data: bytes) -> Agreement:
        root = safe_xml(data)
        if root.tag != q(CPPA, "CollaborationProtocolAgreement"):
            raise ValueError("not a CollaborationProtocolAgreement")
        parties = {p.her: p for p in map(read_party, root.findall(q(CPPA, "PartyInfo")))}
        pkcs7_layer = any(
            "pkcs7" in (e.get(q(CPPA, "mimetype")) or "") for e in root.iter(q(CPPA, "SimplePart"))
        )
        return cls(root.get(q(CPPA, "cpaid")) or "", parties, pkcs7_layer)

    def encrypted(self, sender: Party, receiver: Party, service: str, action: str) -> bool:
        """Encrypt unless the CPA says isConfidential="none" for the action (HIS 1037: encryption is the
        framework's default)."""
        said = [
            p.confidential[(service, action)]
            for p in (sender, receiver)
            if (service, action) in p.confidential
        ]
        if any(v in PROTECTED for v in said) or self.packages_encrypted:
            return True
        return not said


# --- MIME (stdlib email) ----------------------------------------------------------------------------


@dataclass
class Package:
    soap: bytes
    parts: dict[str, tuple[str, bytes]]  # content id -> (content type, decoded bytes)


def parse_package(content_type: str, body: bytes) -> Package:
    msg = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.compat32
    )
    if not msg.is_multipart():
        if msg.get_content_type() != "text/xml":
            raise Refused(
                "MimeProblem", "", f"Content-Type {msg.get_content_type()} is not multipart/related"
            )
        return Package(msg.get_payload(decode=True), {})
    if msg.get_content_type() != "multipart/related":
        raise Refused("MimeProblem", "", f"{msg.get_content_type()} is not multipart/related")
    start = (msg.get_param("start") or "").strip("<>")
    parts = {}
    soap = None
    for i, part in enumerate(msg.get_payload()):
        cid = (part.get("Content-ID") or "").strip().strip("<>")
        data = part.get_payload(decode=True) or b""
        if soap is None and ((start and cid == start) or (not start and i == 0)):
            soap = data
        else:
            parts[cid] = (part.get_content_type(), data)
    if soap is None:
        raise Refused("MimeProblem", "", "no SOAP part (the start part is missing)")
    return Package(soap, parts)


def build_package(soap: bytes, payloads: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    """(Content-Type header, body) of a multipart/related ebXML package."""
    soap_id = f"soap-{uuid.uuid4()}@vendor"
    msg = MIMEMultipart("related", type="text/xml", start=f"<{soap_id}>")
    sp = MIMEApplication(soap, "xml", _encoder=email.encoders.encode_base64)
    sp.replace_header("Content-Type", 'text/xml; charset="UTF-8"')
    sp["Content-ID"] = f"<{soap_id}>"
    msg.attach(sp)
    for cid, (ctype, data) in payloads.items():
        p = MIMEApplication(
            data, "pkcs7-mime" if "pkcs7" in ctype else "xml", _encoder=email.encoders.encode_base64
        )
        p.replace_header("Content-Type", ctype)
        p["Content-ID"] = f"<{cid}>"
        msg.attach(p)
    raw = msg.as_bytes(policy=email.policy.HTTP)
    head, _, body = raw.partition(b"\r\n\r\n")
    return msg["Content-Type"], body


# --- XMLDSig of the envelope ------------------------------------------------------------------------


def _drop(el: etree._Element) -> None:
    """Remove an element but not the text after it (that belongs to its parent, XPath data model)."""
    parent = el.getparent()
    if el.tail:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + el.tail
        else:
            parent.text = (parent.text or "") + el.tail
    parent.remove(el)


def apply_xpath_filter(root: etree._Element, transform: etree._Element) -> None:
    """XPath filtering (XMLDSig §6.6.3) on elements: every element for which the expression is false is
    left out, with its subtree (the ebMS expression is about ancestor-or-self, so the subtree goes too)."""
    xp = transform.find(q(DS, "XPath"))
    if xp is None or not (xp.text or "").strip():
        raise Refused("SecurityFailure", "ds:Transform", "XPath transform without an expression")
    ns = {k: v for k, v in xp.nsmap.items() if k}
    doomed = [
        el
        for el in root.iter()
        if isinstance(el.tag, str) and not el.xpath(f"boolean({xp.text.strip()})", namespaces=ns)
    ]
    for el in doomed:
        if el.getparent() is not None and not any(a in doomed for a in el.iterancestors()):
            _drop(el)


def verify_envelope(
    soap: bytes, parts: dict[str, tuple[str, bytes]], signer: x509.Certificate
) -> list[etree._Element]:
    """Verify the envelope signature with signxml; the ds:References of SignedInfo on success."""
    root = safe_xml(soap)
    sig = root.find(f"{q(SOAP, 'Header')}/{q(DS, 'Signature')}")
    if sig is None:
        raise Refused("SecurityFailure", "ds:Signature", "the envelope is not signed")
    refs = sig.findall(f"{q(DS, 'SignedInfo')}/{q(DS, 'Reference')}")
    whole = [r for r in refs if r.get("URI") == ""]
    if len(whole) != 1:
        raise Refused("SecurityFailure", "ds:Reference", "no (or more than one) reference to the envelope")
    algs = [t.get("Algorithm") for t in whole[0].iterfind(f"{q(DS, 'Transforms')}/{q(DS, 'Transform')}")]
    if algs != [ENVELOPED, XPATH_TRANSFORM, C14N]:
        raise Refused(
            "SecurityFailure", "ds:Transforms", f"transforms {algs} are not those of ebMS 2.0 §4.1.3"
        )
    manifest = [
        r.get(q(XLINK, "href")) for r in root.iterfind(f".//{q(EB, 'Manifest')}/{q(EB, 'Reference')}")
    ]
    cids = sorted(r.get("URI") for r in refs if r.get("URI") != "")
    if cids != sorted(manifest):
        raise Refused(
            "SecurityFailure", "ds:Reference", f"the signature covers {cids}, the Manifest {manifest}"
        )
    # signxml knows no XPath transform: the filter is applied here, on the tree handed to it
    apply_xpath_filter(root, whole[0].find(f"{q(DS, 'Transforms')}/{q(DS, 'Transform')}[2]"))

    def resolve(uri: str) -> bytes | None:
        part = parts.get(uri[4:]) if uri.startswith("cid:") else None
        return part[1] if part else None

    pem = signer.public_bytes(serialization.Encoding.PEM)
    config = SignatureConfiguration(
        location=".//",
        expect_references=len(refs),
        signature_methods=frozenset({SignatureMethod.RSA_SHA256}),
        digest_algorithms=frozenset({DigestAlgorithm.SHA256}),
    )
    try:
        XMLVerifier().verify(
            root, x509_cert=pem, uri_resolver=resolve, expect_config=config, ignore_ambiguous_key_info=False
        )
    except Exception as exc:  # noqa: BLE001 - signxml's exceptions all mean: not verified
        raise Refused("SecurityFailure", "ds:Signature", f"signature does not verify: {exc}") from exc
    key_info = sig.findtext(f".//{q(DS, 'X509Certificate')}")
    if key_info and base64.b64decode("".join(key_info.split())) != signer.public_bytes(
        serialization.Encoding.DER
    ):
        raise Refused("SecurityFailure", "ds:KeyInfo", "signed with another certificate than the CPA's")
    return refs


def sign_envelope(
    root: etree._Element, payloads: dict[str, bytes], key: object, cert: x509.Certificate
) -> None:
    """Append the ebMS envelope signature to SOAP:Header (lxml C14N, RSA-SHA256 with `cryptography`)."""
    header = root.find(q(SOAP, "Header"))
    sig = etree.SubElement(header, q(DS, "Signature"), nsmap={"ds": DS})
    si = etree.SubElement(sig, q(DS, "SignedInfo"))
    etree.SubElement(si, q(DS, "CanonicalizationMethod"), Algorithm=C14N)
    etree.SubElement(si, q(DS, "SignatureMethod"), Algorithm=RSA_SHA256)
    ref = etree.SubElement(si, q(DS, "Reference"), URI="")
    ts = etree.SubElement(ref, q(DS, "Transforms"))
    etree.SubElement(ts, q(DS, "Transform"), Algorithm=ENVELOPED)
    xt = etree.SubElement(ts, q(DS, "Transform"), Algorithm=XPATH_TRANSFORM)
    etree.SubElement(xt, q(DS, "XPath"), nsmap={"SOAP-ENV": SOAP}).text = ACTOR_FILTER
    etree.SubElement(ts, q(DS, "Transform"), Algorithm=C14N)
    etree.SubElement(ref, q(DS, "DigestMethod"), Algorithm=SHA256)
    whole = etree.SubElement(ref, q(DS, "DigestValue"))
    for cid, data in payloads.items():
        r = etree.SubElement(si, q(DS, "Reference"), URI=f"cid:{cid}")
        etree.SubElement(r, q(DS, "DigestMethod"), Algorithm=SHA256)
        etree.SubElement(r, q(DS, "DigestValue")).text = base64.b64encode(
            hashlib.sha256(data).digest()
        ).decode()
    sv = etree.SubElement(sig, q(DS, "SignatureValue"))
    ki = etree.SubElement(etree.SubElement(sig, q(DS, "KeyInfo")), q(DS, "X509Data"))
    etree.SubElement(ki, q(DS, "X509Certificate")).text = base64.b64encode(
        cert.public_bytes(serialization.Encoding.DER)
    ).decode()
    # the envelope's digest: without the signature (enveloped) and the headers for the next MSH
    copy = safe_xml(etree.tostring(root))
    _drop(copy.find(f"{q(SOAP, 'Header')}/{q(DS, 'Signature')}"))
    apply_xpath_filter(copy, xt)
    whole.text = base64.b64encode(hashlib.sha256(etree.tostring(copy, method="c14n")).digest()).decode()
    value = key.sign(etree.tostring(si, method="c14n"), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[attr-defined]
    sv.text = base64.b64encode(value).decode()


# --- the ebXML envelope ---------------------------------------------------------------------------------


@dataclass
class Header:
    from_her: str
    to_her: str
    from_role: str
    to_role: str
    cpa_id: str
    conversation_id: str
    service: str
    action: str
    message_id: str
    ref_to: str
    sync_reply: bool
    signal: str | None  # Acknowledgment | MessageError | None
    manifest: list[str]


def read_header(root: etree._Element) -> Header:
    if root.tag != q(SOAP, "Envelope"):
        raise Refused("OtherXml", "/SOAP:Envelope", "not a SOAP 1.1 Envelope")
    mh = root.find(f"{q(SOAP, 'Header')}/{q(EB, 'MessageHeader')}")
    if mh is None:
        raise Refused("OtherXml", "/SOAP:Envelope/SOAP:Header", "no eb:MessageHeader")

    def party(side: str) -> tuple[str, str]:
        el = mh.find(q(EB, side))
        ids = (
            [p.text.strip() for p in el.findall(q(EB, "PartyId")) if p.get(q(EB, "type")) == "HER" and p.text]
            if el is not None
            else []
        )
        if len(ids) != 1:
            raise Refused("Inconsistent", f"eb:{side}", f"eb:{side} must carry exactly one HER PartyId")
        return ids[0], (el.findtext(q(EB, "Role")) or "").strip()

    (fh, fr), (th, tr) = party("From"), party("To")
    header = root.find(q(SOAP, "Header"))
    signal = (
        "Acknowledgment"
        if header.find(q(EB, "Acknowledgment")) is not None
        else "MessageError"
        if header.find(q(EB, "ErrorList")) is not None
        else None
    )
    manifest = [
        (r.get(q(XLINK, "href")) or "")
        for r in root.iterfind(f"{q(SOAP, 'Body')}/{q(EB, 'Manifest')}/{q(EB, 'Reference')}")
    ]
    return Header(
        fh,
        th,
        fr,
        tr,
        (mh.findtext(q(EB, "CPAId")) or "").strip(),
        (mh.findtext(q(EB, "ConversationId")) or "").strip(),
        (mh.findtext(q(EB, "Service")) or "").strip(),
        (mh.findtext(q(EB, "Action")) or "").strip(),
        (mh.findtext(f"{q(EB, 'MessageData')}/{q(EB, 'MessageId')}") or "").strip(),
        (mh.findtext(f"{q(EB, 'MessageData')}/{q(EB, 'RefToMessageId')}") or "").strip(),
        header.find(q(EB, "SyncReply")) is not None,
        signal,
        manifest,
    )


def envelope(
    from_her: str,
    from_role: str | None,
    to_her: str,
    to_role: str | None,
    cpa_id: str,
    conversation: str,
    service: str,
    action: str,
    ref_to: str | None = None,
) -> tuple[etree._Element, str]:
    """A SOAP envelope with its MessageHeader; returns (root, MessageId)."""
    root = etree.Element(q(SOAP, "Envelope"), nsmap={"SOAP": SOAP, "eb": EB, "xlink": XLINK})
    header = etree.SubElement(root, q(SOAP, "Header"))
    etree.SubElement(root, q(SOAP, "Body"))
    mh = etree.SubElement(
        header, q(EB, "MessageHeader"), {q(SOAP, "mustUnderstand"): "1", q(EB, "version"): "2.0"}
    )
    for side, her, role in (("From", from_her, from_role), ("To", to_her, to_role)):
        el = etree.SubElement(mh, q(EB, side))
        etree.SubElement(el, q(EB, "PartyId"), {q(EB, "type"): "HER"}).text = her
        if role:
            etree.SubElement(el, q(EB, "Role")).text = role
    etree.SubElement(mh, q(EB, "CPAId")).text = cpa_id
    etree.SubElement(mh, q(EB, "ConversationId")).text = conversation
    etree.SubElement(mh, q(EB, "Service")).text = service
    etree.SubElement(mh, q(EB, "Action")).text = action
    md = etree.SubElement(mh, q(EB, "MessageData"))
    message_id = str(uuid.uuid4())
    etree.SubElement(md, q(EB, "MessageId")).text = message_id
    etree.SubElement(md, q(EB, "Timestamp")).text = now_text()
    if ref_to:
        etree.SubElement(md, q(EB, "RefToMessageId")).text = ref_to
    return root, message_id


# --- the KITH application (an EPJ receiving Dialogmelding 1.0) -------------------------------------------


def fnr_ok(fnr: str) -> bool:
    """Fødselsnummer: 11 digits, both mod-11 check digits right."""
    if not re.fullmatch(r"\d{11}", fnr):
        return False
    d = [int(c) for c in fnr]
    for weights, pos in (((3, 7, 6, 1, 8, 9, 4, 5, 2), 9), ((5, 4, 3, 2, 7, 6, 5, 4, 3, 2), 10)):
        k = 11 - sum(w * x for w, x in zip(weights, d, strict=False)) % 11
        if (0 if k == 11 else k) != d[pos] or k == 10:
            return False
    return True


N = {"m": MH}


class Epj:
    """The system behind the message service: judges each message, answers with an AppRec v1.1."""

    def __init__(
        self,
        root: Path,
        her: str,
        services: list[str],
        name: str,
        xsd: Path,
        behaviour: str,
        network: Path | None = None,
    ) -> None:
        self.root, self.her, self.services, self.name, self.behaviour = root, her, services, name, behaviour
        # The test network's public CA certificates and CRLs (ca/root.pem, ca/issuing.pem, crl/*.crl):
        # with them the KITH document's own signature is checked (S01/S02/S03); without, it is not.
        self.network = network
        if network is not None:
            self.ca_file = root / "network-ca.pem"
            self.ca_file.write_bytes(
                b"".join((network / "ca" / n).read_bytes() for n in ("root.pem", "issuing.pem"))
            )
        remote = {
            "http://www.w3.org/TR/xmldsig-core/xmldsig-core-schema.xsd": str(xsd / "xmldsig-core-schema.xsd"),
            "http://www.kith.no/xmlstds/kith.xsd": str(xsd / "kith.xsd"),
        }
        self.schema = xmlschema.XMLSchema(
            [str(xsd / "MsgHead-v1_2.xsd"), str(xsd / "dialogmelding.xsd")], uri_mapper=remote, allow="local"
        )
        self.apprec_schema = xmlschema.XMLSchema(
            str(xsd / "AppRec-v1.1.xsd"), uri_mapper=remote, allow="local"
        )
        self.seen: dict[str, str] = {}  # KITH MsgId answered -> the ebXML MessageId it came in

    def patients(self) -> set[str]:
        path = self.root / "patients.json"
        return (
            {p.get("ident") for p in json.loads(path.read_text(encoding="utf-8"))} if path.exists() else set()
        )

    def receive(self, data: bytes, envelope_from: str, envelope_action: str, message_id: str) -> bytes | None:
        """The AppRec for a message, or None (not answered: not ours, a duplicate, an AppRec). An unreadable
        message is answered from what the ebXML envelope says (its sender, its action)."""
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        try:
            doc = safe_xml(data)
        except etree.XMLSyntaxError:
            doc = None
        if doc is None or doc.getroottree().docinfo.doctype:  # no DTDs in KITH messages: not read further
            return self.unreadable(envelope_from, envelope_action, message_id)
        if etree.QName(doc).namespace == AR or doc.tag != q(MH, "MsgHead"):
            return None  # AppRecs are filed, never answered
        info = doc.find("m:MsgInfo", N)
        if info is None:
            return self.unreadable(envelope_from, envelope_action, message_id)
        msg_id = info.findtext("m:MsgId", namespaces=N) or ""
        receiver = info.find("m:Receiver/m:Organisation", N)
        sub = receiver.find("m:Organisation", N) if receiver is not None else None
        if self._her(receiver) != self.her and self._her(sub) not in self.services:
            return None  # not ours at all (sheet #21)
        if msg_id in self.seen and not (
            self.behaviour == "deliver-duplicates" and self.seen[msg_id] == message_id
        ):
            return None  # the same message again: the AppRec already sent is final (sheet #12, #41)
        # (deliver-duplicates: the same ebXML message handed over again is taken for a lost AppRec and
        # answered again; harmless behind an MSH that eliminates duplicates, as ebMS promises)
        self.seen[msg_id] = message_id
        signature = self.signature_code(data) if self.network is not None else None
        return self.apprec(info, [signature] if signature else self.judge(doc, info, sub), msg_id)

    def signature_code(self, data: bytes) -> str | None:
        """The document's enveloped signature (signxml, the chain to the network's CAs at this moment),
        then revocation (the issuing CA's CRL, its own signature checked): S01 the signature, S02 the
        certificate (expired, unknown CA), S03 revoked. None: unsigned, or all well."""
        if DS.encode() not in data:
            return None
        try:
            result = XMLVerifier().verify(
                data, ca_pem_file=str(self.ca_file), expect_config=SignatureConfiguration(location="./")
            )
        except InvalidCertificate as exc:
            self.note(f"S02 {exc}")
            return "S02"
        except Exception as exc:  # noqa: BLE001 - every other failure: the signature does not hold
            self.note(f"S01 {exc}")
            return "S01"
        # the certificate whose key verified it (signxml checked its chain)
        pem = [
            x509.load_der_x509_certificate(base64.b64decode("".join((c.text or "").split())))
            for c in result.signature_xml.iter(q(DS, "X509Certificate"))
        ]
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        cert = next(
            (
                c
                for c in pem
                if c.public_key().public_bytes(serialization.Encoding.PEM, spki) == result.signature_key
            ),
            None,
        )
        assert self.network is not None
        issuer = x509.load_pem_x509_certificate((self.network / "ca" / "issuing.pem").read_bytes())
        crl = (
            x509.load_der_x509_crl((self.network / "crl" / "issuing.crl").read_bytes())
            if (self.network / "crl" / "issuing.crl").read_bytes()[:1] == b"\x30"
            else x509.load_pem_x509_crl((self.network / "crl" / "issuing.crl").read_bytes())
        )
        if not crl.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            self.note("S02 the CRL is not the issuing CA's")
            return "S02"
        if cert is not None and crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None:
            self.note(f"S03 {cert.subject.rfc4514_string()} is revoked")
            return "S03"
        return None

    def note(self, line: str) -> None:
        with (self.root / "epj.log").open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    def unreadable(self, sender_her: str, action: str, message_id: str) -> bytes:
        info = etree.Element(q(MH, "MsgInfo"))
        etree.SubElement(info, q(MH, "Type"), V=action)
        etree.SubElement(info, q(MH, "GenDate")).text = datetime.now().replace(microsecond=0).isoformat()
        for role, her, name in (("Sender", sender_her, "-"), ("Receiver", self.her, self.name)):
            org = etree.SubElement(etree.SubElement(info, q(MH, role)), q(MH, "Organisation"))
            etree.SubElement(org, q(MH, "OrganisationName")).text = name
            ident = etree.SubElement(org, q(MH, "Ident"))
            etree.SubElement(ident, q(MH, "Id")).text = her
            etree.SubElement(ident, q(MH, "TypeId"), V="HER", DN="HER-id")
        return self.apprec(info, ["T01"], message_id)

    @staticmethod
    def _her(org: etree._Element | None) -> str:
        if org is None:
            return ""
        ids = org.xpath("m:Ident[m:TypeId/@V='HER']/m:Id/text()", namespaces=N)
        return ids[0].strip() if ids else ""

    def judge(self, doc: etree._Element, info: etree._Element, sub: etree._Element | None) -> list[str]:
        content = doc.find("m:Document/m:RefDoc/m:Content", N)
        payload = content[0] if content is not None and len(content) else None
        if payload is None or etree.QName(payload).namespace != DIALOG:
            return ["T10"]
        # a readable message that breaks its schema is read for the rest too: one code per error found
        codes = [] if self.schema.is_valid(doc) else ["T02"]
        if not UUID.match(info.findtext("m:MsgId", namespaces=N) or ""):
            codes.append("E10")
        if sub is not None and self._her(sub) not in self.services:
            codes.append("E21")
        fnr = info.xpath(
            "m:Patient/m:Ident[m:TypeId/@V='FNR' or m:TypeId/@V='DNR']/m:Id/text()", namespaces=N
        )
        if not fnr:
            codes.append("E30")
        elif not fnr_ok(fnr[0].strip()):
            codes.append("E31")
        elif not codes and fnr[0].strip() not in self.patients():  # known? only asked of a good message
            codes.append("E35")
        return codes

    def apprec(self, info: etree._Element, codes: list[str], msg_id: str) -> bytes:
        a = f"{{{AR}}}"
        root = etree.Element(a + "AppRec", nsmap={None: AR})

        def sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
            el = etree.SubElement(parent, a + tag, {k: v for k, v in attrs.items() if v})
            if text is not None:
                el.text = text
            return el

        sub(root, "MsgType", V="APPREC", DN="Applikasjonskvittering")
        sub(root, "MIGversion", "v1.1 2012-02-15")
        sub(root, "SoftwareName", "Uavhengig EPJ")
        sub(root, "SoftwareVersion", "1.0")
        sub(root, "GenDate", datetime.now().replace(microsecond=0).isoformat())
        sub(root, "Id", str(uuid.uuid4()))
        # mirrored: the message's receiver is the AppRec's sender and the other way round
        for role, path in (("Sender", "m:Receiver/m:Organisation"), ("Receiver", "m:Sender/m:Organisation")):
            org = info.find(path, N)
            inst = sub(sub(sub(root, role), "HCP"), "Inst")
            self._mirror(inst, org, sub)
        sub(root, "Status", V="2" if codes else "1", DN="Avvist" if codes else "OK")
        for code in codes:
            sub(root, "Error", V=code, S=ERROR_OID, DN=TEXTS.get(code, code))
        orig = sub(root, "OriginalMsgId")
        type_ = info.find("m:Type", N)
        sub(
            orig,
            "MsgType",
            V=type_.get("V", "") if type_ is not None else "",
            DN=type_.get("DN", "") if type_ is not None else "",
        )
        sub(orig, "IssueDate", info.findtext("m:GenDate", namespaces=N) or "")
        sub(orig, "Id", f"EPJ-{uuid.uuid4().hex[:8]}" if self.behaviour == "wrong-original-id" else msg_id)
        self.apprec_schema.validate(root)  # the vendor's own check before anything leaves
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")

    @staticmethod
    def _mirror(inst: etree._Element, org: etree._Element | None, sub) -> None:  # noqa: ANN001
        """Every name and identifier of the MsgHead Organisation (and its department and person)."""
        if org is None:
            return

        def idents(el: etree._Element) -> list[tuple[str, str, str]]:
            return [
                (
                    (i.findtext("m:Id", namespaces=N) or "").strip(),
                    i.find("m:TypeId", N).get("V", ""),
                    i.find("m:TypeId", N).get("DN", ""),
                )
                for i in el.findall("m:Ident", N)
                if i.find("m:TypeId", N) is not None
            ]

        def level(target: etree._Element, el: etree._Element, name_tag: str) -> None:
            sub(target, "Name", (el.findtext(name_tag, namespaces=N) or "").strip() or "-")
            ids = idents(el)
            if ids:
                sub(target, "Id", ids[0][0])
                sub(target, "TypeId", V=ids[0][1], DN=ids[0][2])

        def additional(target: etree._Element, el: etree._Element) -> None:
            for i, v, dn in idents(el)[1:]:
                extra = sub(target, "AdditionalId")
                sub(extra, "Id", i)
                sub(extra, "Type", V=v, DN=dn)

        level(inst, org, "m:OrganisationName")
        dept = org.find("m:Organisation", N)
        if dept is not None:
            d = sub(inst, "Dept")
            level(d, dept, "m:OrganisationName")
            additional(d, dept)
        additional(inst, org)
        person = org.find("m:HealthcareProfessional", N)
        if person is None and dept is not None:
            person = dept.find("m:HealthcareProfessional", N)
        if person is not None:
            p = sub(inst, "HCPerson")
            names = [
                person.findtext(f"m:{t}", namespaces=N) for t in ("GivenName", "MiddleName", "FamilyName")
            ]
            sub(p, "Name", " ".join(n.strip() for n in names if n) or "-")
            ids = idents(person)
            if ids:
                sub(p, "Id", ids[0][0])
                sub(p, "TypeId", V=ids[0][1], DN=ids[0][2])
            additional(p, person)


# --- the message service ---------------------------------------------------------------------------------


class Msh:
    def __init__(
        self, root: Path, her: str, services: list[str], name: str, keys: Path, epj: Epj, behaviour: str
    ) -> None:
        self.root, self.her, self.services, self.name, self.behaviour = root, her, services, name, behaviour
        self.epj = epj
        self.sign_cert = x509.load_pem_x509_certificate((keys / "sign.pem").read_bytes())
        self.sign_key = serialization.load_pem_private_key((keys / "sign.key.pem").read_bytes(), None)
        self.enc_cert = x509.load_pem_x509_certificate((keys / "enc.pem").read_bytes())
        self.enc_key = serialization.load_pem_private_key((keys / "enc.key.pem").read_bytes(), None)
        self.seen: dict[str, tuple[bytes, str] | None] = {}  # MessageId -> the signal sent (duplicates)
        self.cpa: Agreement | None = None
        self._cpa_mtime = 0
        self.url = ""
        self.tasks: set[asyncio.Task] = set()

    def note(self, line: str) -> None:
        """The message service's log (ROOT/msh.log): what it refused, what the test centre answered."""
        with (self.root / "msh.log").open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    # the CPA the test centre writes, installed whenever it changes
    def agreement(self) -> Agreement | None:
        path = self.root / "cpa.xml"
        if path.exists() and path.stat().st_mtime_ns != self._cpa_mtime:
            self._cpa_mtime = path.stat().st_mtime_ns
            self.cpa = Agreement.read(path.read_bytes())
        return self.cpa

    def cpp(self) -> bytes:
        """Our CollaborationProtocolProfile: the roles of a GP system receiving Dialogmelding 1.0."""
        c = f"{{{CPPA}}}"
        root = etree.Element(
            c + "CollaborationProtocolProfile",
            {c + "cppid": f"cpp_{self.her}", c + "version": "2_0b"},
            nsmap={"cppa": CPPA, "ds": DS, "xlink": XLINK},
        )
        pi = etree.SubElement(
            root,
            c + "PartyInfo",
            {
                c + "partyName": self.name,
                c + "defaultMshChannelId": "ch1",
                c + "defaultMshPackageId": "package_mshsignal",
            },
        )
        etree.SubElement(pi, c + "PartyId", {c + "type": "HER"}).text = self.her
        x = f"{{{XLINK}}}"
        etree.SubElement(pi, c + "PartyRef", {x + "type": "simple", x + "href": f"urn:her:{self.her}"})
        cr = etree.SubElement(pi, c + "CollaborationRole")
        process = "http://www.helsedirektoratet.no/processes/Dialog_Foresporsel"
        etree.SubElement(
            cr,
            c + "ProcessSpecification",
            {
                c + "name": "S-DIALOG_FORESPORSEL",
                c + "version": "1.0",
                x + "type": "simple",
                x + "href": process,
            },
        )
        etree.SubElement(
            cr,
            c + "Role",
            {
                c + "name": "DIALOG_FORESPORSELreceiver",
                x + "type": "simple",
                x + "href": f"{process}#DIALOG_FORESPORSELreceiver",
            },
        )
        etree.SubElement(cr, c + "ApplicationCertificateRef", {c + "certId": "enc"})
        sb = etree.SubElement(cr, c + "ServiceBinding")
        etree.SubElement(sb, c + "Service", {c + "type": "string"}).text = "S-DIALOG_FORESPORSEL"
        for kind, action in (("CanSend", "APPREC"), ("CanReceive", "DIALOG_FORESPORSEL")):
            b = etree.SubElement(
                etree.SubElement(sb, c + kind),
                c + "ThisPartyActionBinding",
                {c + "id": f"{kind}_{action}", c + "action": action, c + "packageId": "package_payload"},
            )
            etree.SubElement(
                b,
                c + "BusinessTransactionCharacteristics",
                {
                    c + "isConfidential": "transient",
                    c + "isAuthenticated": "transient",
                    c + "isNonRepudiationRequired": "true",
                    c + "isTamperProof": "transient",
                },
            )
            etree.SubElement(b, c + "ChannelId").text = "ch1"
        for cid, cert in (("sign", self.sign_cert), ("enc", self.enc_cert)):
            ce = etree.SubElement(pi, c + "Certificate", {c + "certId": cid})
            x = etree.SubElement(
                etree.SubElement(etree.SubElement(ce, f"{{{DS}}}KeyInfo"), f"{{{DS}}}X509Data"),
                f"{{{DS}}}X509Certificate",
            )
            x.text = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        dc = etree.SubElement(
            pi,
            c + "DeliveryChannel",
            {c + "channelId": "ch1", c + "transportId": "tr1", c + "docExchangeId": "de1"},
        )
        etree.SubElement(
            dc,
            c + "MessagingCharacteristics",
            {
                c + "syncReplyMode": "mshSignalsOnly",
                c + "ackRequested": "always",
                c + "ackSignatureRequested": "always",
                c + "duplicateElimination": "always",
            },
        )
        tr = etree.SubElement(pi, c + "Transport", {c + "transportId": "tr1"})
        ts = etree.SubElement(tr, c + "TransportSender")
        etree.SubElement(ts, c + "TransportProtocol", {c + "version": "1.1"}).text = "HTTP"
        trr = etree.SubElement(tr, c + "TransportReceiver")
        etree.SubElement(trr, c + "TransportProtocol", {c + "version": "1.1"}).text = "HTTP"
        etree.SubElement(trr, c + "Endpoint", {c + "uri": self.url, c + "type": "allPurpose"})
        de = etree.SubElement(pi, c + "DocExchange", {c + "docExchangeId": "de1"})
        sbind = etree.SubElement(de, c + "ebXMLSenderBinding", {c + "version": "2.0"})
        nr = etree.SubElement(sbind, c + "SenderNonRepudiation")
        etree.SubElement(nr, c + "NonRepudiationProtocol").text = DS
        etree.SubElement(nr, c + "HashFunction").text = SHA256
        etree.SubElement(nr, c + "SignatureAlgorithm").text = RSA_SHA256
        etree.SubElement(nr, c + "SigningCertificateRef", {c + "certId": "sign"})
        # what the packages hold: an encrypted KITH document beside the header; signals: the header alone
        for part_id, namespaces in (
            ("msg_header", [(EB, "2.0", "msg-header-2_0.xsd")]),
            (
                "message",
                [
                    (MH, "1.2", "MsgHead-v1_2.xsd"),
                    (DIALOG, "1.0", "dialogmelding.xsd"),
                    (AR, "1.1", "AppRec-v1.1.xsd"),
                ],
            ),
        ):
            sp = etree.SubElement(
                root, c + "SimplePart", {c + "id": part_id, c + "mimetype": "application/xml"}
            )
            for ns, version, location in namespaces:
                etree.SubElement(
                    sp, c + "NamespaceSupported", {c + "location": location, c + "version": version}
                ).text = ns
        for package, constituents in (
            ("package_payload", ["msg_header", "enc_message"]),
            ("package_mshsignal", ["msg_header"]),
        ):
            pk = etree.SubElement(root, c + "Packaging", {c + "id": package})
            etree.SubElement(pk, c + "ProcessingCapabilities", {c + "parse": "true", c + "generate": "true"})
            cl = etree.SubElement(pk, c + "CompositeList")
            if "enc_message" in constituents:
                enc = etree.SubElement(
                    cl,
                    c + "Encapsulation",
                    {
                        c + "id": "enc_message",
                        c + "mimetype": "application/pkcs7-mime",
                        c + "mimeparameters": 'smime-type="enveloped-data"',
                    },
                )
                etree.SubElement(enc, c + "Constituent", {c + "idref": "message"})
            comp = etree.SubElement(
                cl,
                c + "Composite",
                {
                    c + "id": f"{package}_mime",
                    c + "mimetype": "multipart/related",
                    c + "mimeparameters": "type=text/xml",
                },
            )
            for idref in constituents:
                etree.SubElement(comp, c + "Constituent", {c + "idref": idref})
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)

    # --- receiving ----------------------------------------------------------------------------------------

    async def on_post(self, request: web.Request) -> web.Response:
        body = await request.read()  # bounded by client_max_size
        reply, deliver = self.receive(request.headers.get("Content-Type", ""), body)
        if deliver is not None:
            self._spawn(self.deliver(*deliver))
        if reply is None:
            return web.Response(status=202)
        signal_bytes, sync = reply
        if sync:
            ctype, out = signal_bytes
            return web.Response(
                status=200, body=out, headers={"Content-Type": ctype, "SOAPAction": '"ebXML"'}
            )
        self._spawn(self.post(self._sender_endpoint(), signal_bytes))
        return web.Response(status=202)

    def _spawn(self, coro) -> None:  # noqa: ANN001
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _sender_endpoint(self) -> str:
        cpa = self.cpa
        others = [p for h, p in (cpa.parties.items() if cpa else []) if h != self.her]
        return others[0].endpoint if others else ""

    def receive(self, content_type: str, body: bytes):  # noqa: ANN201 - ((signal, sync) | None, delivery | None)
        try:
            pkg = parse_package(content_type, body)
            root = safe_xml(pkg.soap)
            h = read_header(root)
        except (Refused, etree.XMLSyntaxError, ValueError) as exc:
            self.note(f"unreadable: {exc}")
            return None, None  # nobody to answer: no MessageHeader to answer to
        if h.signal is not None:
            self.note(f"signal {h.signal} for {h.ref_to}")
            return None, None
        cpa = self.agreement()
        sync = (
            h.sync_reply
            and cpa is not None
            and cpa.parties.get(self.her) is not None
            and cpa.parties[self.her].sync_reply_mode in SYNC_MODES
        )
        if h.message_id in self.seen and self.behaviour != "deliver-duplicates":
            # §6.4.1: a duplicate gets the answer the first one got, and is not delivered again
            answer = self.seen[h.message_id]
            return ((answer, sync) if answer is not None else None), None
        try:
            payloads, refs = self.check(h, root, pkg, cpa)
        except Refused as exc:
            signal_bytes = self.message_error(h, exc)
            self.seen[h.message_id] = signal_bytes
            if self.behaviour == "refuse-but-deliver" and exc.code == "SecurityFailure":
                # the right signal, yet the message goes to the EPJ all the same
                return (signal_bytes, sync), (h, self.check(h, root, pkg, cpa, verify=False)[0])
            return (None if self.behaviour == "mute" else (signal_bytes, sync)), None
        ack = None if self.behaviour == "mute" else self.acknowledgment(h, refs)
        self.seen[h.message_id] = ack
        return ((ack, sync) if ack is not None else None), (h, payloads)

    def check(
        self, h: Header, root: etree._Element, pkg: Package, cpa: Agreement | None, verify: bool = True
    ) -> tuple[list[bytes], list[etree._Element]]:
        if cpa is None or h.cpa_id != cpa.cpa_id:
            raise Refused("ValueNotRecognized", "eb:CPAId", f"CPAId {h.cpa_id!r} is not an agreement we have")
        if h.to_her != self.her:
            raise Refused("DeliveryFailure", "eb:To", f"HER {h.to_her} is not served here")
        sender, us = cpa.parties.get(h.from_her), cpa.parties[self.her]
        if sender is None or sender.sign_cert is None:
            raise Refused("ValueNotRecognized", "eb:From", f"HER {h.from_her} is not a party of {cpa.cpa_id}")
        if not any(s == h.service and h.action in receive for _r, s, _snd, receive in us.roles):
            raise Refused("ValueNotRecognized", "eb:Action", f"{h.service}/{h.action}: not in the CPA for us")
        if not h.manifest or any(
            not href.startswith("cid:") or href[4:] not in pkg.parts for href in h.manifest
        ):
            raise Refused("MimeProblem", "eb:Manifest", "the Manifest names no (or a missing) MIME part")
        refs: list[etree._Element] = []
        if verify and self.behaviour != "accept-tampered":
            refs = verify_envelope(pkg.soap, pkg.parts, sender.sign_cert)
        must_encrypt = cpa.encrypted(sender, us, h.service, h.action)
        payloads = []
        for href in h.manifest:
            ctype, data = pkg.parts[href[4:]]
            if ctype == "application/pkcs7-mime":
                try:
                    data = pkcs7.pkcs7_decrypt_der(data, self.enc_cert, self.enc_key, [])
                except Exception as exc:  # noqa: BLE001 - any failure to open it is the same answer
                    raise Refused(
                        "SecurityFailure", "eb:Manifest", f"{href}: cannot be decrypted: {exc}"
                    ) from exc
            elif must_encrypt:
                raise Refused("SecurityFailure", "eb:Manifest", f"{href}: not encrypted, the CPA requires it")
            payloads.append(data)
        return payloads, refs

    # --- signals -------------------------------------------------------------------------------------------

    def _signal(self, h: Header, action: str) -> etree._Element:
        root, _mid = envelope(
            self.her,
            h.to_role or None,
            h.from_her,
            h.from_role or None,
            h.cpa_id,
            h.conversation_id,
            EBMS_SERVICE,
            action,
            h.message_id,
        )
        return root

    def _finish(self, root: etree._Element) -> tuple[str, bytes]:
        sign_envelope(root, {}, self.sign_key, self.sign_cert)
        return build_package(etree.tostring(root, xml_declaration=True, encoding="UTF-8"), {})

    def acknowledgment(self, h: Header, refs: list[etree._Element]) -> tuple[str, bytes]:
        root = self._signal(h, "Acknowledgment")
        ack = etree.SubElement(
            root.find(q(SOAP, "Header")),
            q(EB, "Acknowledgment"),
            {q(SOAP, "mustUnderstand"): "1", q(EB, "version"): "2.0", q(SOAP, "actor"): TO_PARTY_MSH},
        )
        etree.SubElement(ack, q(EB, "Timestamp")).text = now_text()
        etree.SubElement(ack, q(EB, "RefToMessageId")).text = h.message_id
        for ref in refs:  # non-repudiation of receipt: the digests we verified (§6.3.2.5)
            r = etree.SubElement(ack, q(DS, "Reference"), URI=ref.get("URI"), nsmap={"ds": DS})
            etree.SubElement(
                r, q(DS, "DigestMethod"), Algorithm=ref.find(q(DS, "DigestMethod")).get("Algorithm")
            )
            etree.SubElement(r, q(DS, "DigestValue")).text = ref.findtext(q(DS, "DigestValue"))
        return self._finish(root)

    def message_error(self, h: Header, exc: Refused) -> tuple[str, bytes]:
        self.note(f"MessageError {exc.code} for {h.message_id}: {exc.text}")
        root = self._signal(h, "MessageError")
        el = etree.SubElement(
            root.find(q(SOAP, "Header")),
            q(EB, "ErrorList"),
            {q(SOAP, "mustUnderstand"): "1", q(EB, "version"): "2.0", q(EB, "highestSeverity"): "Error"},
        )
        e = etree.SubElement(
            el,
            q(EB, "Error"),
            {
                q(EB, "errorCode"): exc.code,
                q(EB, "severity"): "Error",
                q(EB, "location"): exc.location or "/SOAP:Envelope",
            },
        )
        etree.SubElement(
            e, q(EB, "Description"), {"{http://www.w3.org/XML/1998/namespace}lang": "en"}
        ).text = exc.text
        return self._finish(root)

    # --- delivering and answering -------------------------------------------------------------------------

    async def deliver(self, h: Header, payloads: list[bytes]) -> None:
        for data in payloads:
            try:
                answer = await asyncio.to_thread(self.epj.receive, data, h.from_her, h.action, h.message_id)
                if answer is not None:
                    await self.send_apprec(h, answer)
            except Exception as exc:  # noqa: BLE001 - logged; the runner sees the missing AppRec
                self.note(f"delivery of {h.message_id} failed: {exc!r}")

    async def send_apprec(self, h: Header, apprec: bytes) -> None:
        cpa = self.agreement()
        if cpa is None:
            return
        us, them = cpa.parties[self.her], cpa.parties[h.from_her]
        my_role = next((r for r, s, snd, _rc in us.roles if s == h.service and "APPREC" in snd), h.to_role)
        their_role = next(
            (r for r, s, _snd, rc in them.roles if s == h.service and "APPREC" in rc), h.from_role
        )
        root, _mid = envelope(
            self.her, my_role, h.from_her, their_role, cpa.cpa_id, h.conversation_id, h.service, "APPREC"
        )
        header = root.find(q(SOAP, "Header"))
        mh = header.find(q(EB, "MessageHeader"))
        etree.SubElement(mh, q(EB, "DuplicateElimination"))
        etree.SubElement(
            header,
            q(EB, "AckRequested"),
            {
                q(SOAP, "mustUnderstand"): "1",
                q(EB, "version"): "2.0",
                q(SOAP, "actor"): TO_PARTY_MSH,
                q(EB, "signed"): "true",
            },
        )
        if them.sync_reply_mode in SYNC_MODES:
            etree.SubElement(
                header,
                q(EB, "SyncReply"),
                {q(SOAP, "actor"): NEXT, q(SOAP, "mustUnderstand"): "1", q(EB, "version"): "2.0"},
            )
        cid = f"{uuid.uuid4()}@{self.her}.vendor"
        if cpa.encrypted(us, them, h.service, "APPREC"):
            data = (
                pkcs7.PKCS7EnvelopeBuilder()
                .set_data(apprec)
                .add_recipient(them.enc_cert)
                .set_content_encryption_algorithm(algorithms.AES256)
                .encrypt(serialization.Encoding.DER, [])
            )
            ctype = "application/pkcs7-mime; smime-type=enveloped-data"
        else:
            data, ctype = apprec, 'text/xml; charset="UTF-8"'
        manifest = etree.SubElement(root.find(q(SOAP, "Body")), q(EB, "Manifest"), {q(EB, "version"): "2.0"})
        etree.SubElement(
            manifest, q(EB, "Reference"), {q(XLINK, "href"): f"cid:{cid}", q(XLINK, "type"): "simple"}
        )
        sign_envelope(root, {cid: data}, self.sign_key, self.sign_cert)
        package = build_package(
            etree.tostring(root, xml_declaration=True, encoding="UTF-8"), {cid: (ctype, data)}
        )
        await self.post(them.endpoint, package)

    async def post(self, url: str, package: tuple[str, bytes]) -> None:
        ctype, body = package
        try:
            async with (
                ClientSession(timeout=ClientTimeout(total=30)) as s,
                s.post(url, data=body, headers={"Content-Type": ctype, "SOAPAction": '"ebXML"'}) as r,
            ):
                answer = await r.read()
                self.note(
                    f"POST {url}: {r.status}, {self.judge_signal(r.headers.get('Content-Type', ''), answer)}"
                )
        except Exception as exc:  # noqa: BLE001 - the runner sees the missing AppRec
            self.note(f"POST {url} failed: {exc!r}")

    def judge_signal(self, content_type: str, body: bytes) -> str:
        """What the test centre answered on the same exchange: its signal, with its signature checked
        against the CPA's certificate for it ("Acknowledgment verified" is the good answer)."""
        if not body:
            return "no signal"
        try:
            pkg = parse_package(content_type, body)
            h = read_header(safe_xml(pkg.soap))
            cpa = self.agreement()
            sender = cpa.parties.get(h.from_her) if cpa else None
            if h.signal is None or sender is None or sender.sign_cert is None:
                return f"not a signal from a party of the CPA ({h.signal}, HER {h.from_her})"
            verify_envelope(pkg.soap, pkg.parts, sender.sign_cert)
        except (Refused, etree.XMLSyntaxError, ValueError) as exc:
            return f"unusable signal: {exc}"
        if h.signal == "MessageError":
            codes = [e.get(q(EB, "errorCode")) for e in safe_xml(pkg.soap).iter(q(EB, "Error"))]
            return f"MessageError {'/'.join(c or '' for c in codes)} verified"
        return f"{h.signal} verified"


async def serve(msh: Msh) -> None:
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_post("/ebxml", msh.on_post)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    msh.url = f"http://127.0.0.1:{port}/ebxml"
    (msh.root / "cpp.xml").write_bytes(msh.cpp())
    print(msh.url, flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--her", required=True)
    ap.add_argument("--service", action="append", default=[])
    ap.add_argument("--name", required=True)
    ap.add_argument("--keys", type=Path, required=True)
    ap.add_argument("--xsd", type=Path, required=True)
    ap.add_argument("--network", type=Path, help="the test network's CA certificates and CRLs (ca/, crl/)")
    ap.add_argument("--behaviour", default="correct", choices=BEHAVIOURS)
    a = ap.parse_args()
    a.root.mkdir(parents=True, exist_ok=True)
    epj = Epj(a.root, a.her, a.service, a.name, a.xsd, a.behaviour, a.network)
    asyncio.run(serve(Msh(a.root, a.her, a.service, a.name, a.keys, epj, a.behaviour)))


if __name__ == "__main__":
    main()
