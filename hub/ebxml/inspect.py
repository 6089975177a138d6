"""What a receiving MSH would do with a captured message: `hub ebxml inspect` as a library function.

The capture is a MIME mail (.eml, or a .msg saved as MIME text), an HTTP capture (request line, headers,
body) or a bare SOAP envelope. The verdict is the Msh's own (`Msh.receive`, with the CPA version in force
at the message's timestamp, or the register defaults); around it the details an operator needs to see
why: parties, CPA, envelope signature (algorithm, references, signer), each payload's packaging, and,
where a key for the receiver is given, the payload's own verdict (gzip, document signature).
Nothing is sent and nothing is remembered.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from lxml import etree

from hub.ebxml import compression
from hub.ebxml.cpa import Cpa, CpaRepository, ReceivePolicy, select, window
from hub.ebxml.envelope import DS_NS, Envelope, parse_envelope
from hub.ebxml.errors import EbxmlError
from hub.ebxml.mime import Package, parse_package
from hub.ebxml.msh import LocalParty, Msh, PeerDirectory, Peers
from hub.ebxml.receipt import part_kind
from hub.ebxml.signals import parse_soap_fault
from hub.ebxml.signature import verify_envelope
from hub.security import cms

Keys = Sequence[tuple[x509.Certificate, PrivateKeyTypes]]

_HTTP_START = re.compile(rb"^(?:POST|PUT) \S+ HTTP/1\.[01]\r?\n|^HTTP/1\.[01] \d{3}[^\r\n]*\r?\n")


class CaptureError(ValueError):
    """The file is not a capture `inspect` reads (an Outlook OLE .msg, an empty file...)."""


@dataclass
class Capture:
    """A capture brought to the MIME entity the Msh reads, and how it travelled."""

    entity: bytes
    shape: str  # mail | http | soap
    transport: str  # smtp | http (what the receiving MSH would be listening on)


def read_capture(data: bytes) -> Capture:
    """Recognise the capture's shape and return the MIME entity inside it."""
    if not data.strip():
        raise CaptureError("the file is empty")
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise CaptureError("an Outlook .msg in its binary (OLE) form: save the mail as .eml (MIME) and "
                           "inspect that")
    body = data.lstrip(b"\xef\xbb\xbf")
    m = _HTTP_START.match(body)
    if m:
        entity = body[m.end():]
        head = entity.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
        if b"transfer-encoding: chunked" in head:
            raise CaptureError("the HTTP capture is chunked: capture it with the body de-chunked")
        return Capture(entity, "http", "http")
    if body.lstrip()[:1] == b"<":
        # a bare SOAP envelope: the entity a text/xml signal would be; SyncReply means it came over HTTP
        env = body.lstrip()
        entity = b'Content-Type: text/xml; charset="UTF-8"\r\nSOAPAction: "ebXML"\r\n\r\n' + env
        return Capture(entity, "soap", "http" if b"SyncReply" in env else "smtp")
    return Capture(data, "mail", "smtp")


@dataclass
class Reference:
    uri: str
    digest_method: str


@dataclass
class SignatureReport:
    present: bool
    valid: bool = False
    algorithm: str | None = None
    references: list[Reference] = field(default_factory=list)
    signer: dict[str, str] | None = None
    error: str | None = None


@dataclass
class PayloadReport:
    href: str
    content_type: str | None
    kind: str  # encrypted | plain | missing
    size: int
    opened: bool = False  # decrypted here (a key for the receiver was given) or plain
    compressed: bool | None = None
    document: str | None = None  # root element (and MsgType for a MsgHead)
    document_signature: str | None = None  # verdict on the document's own ds:Signature
    error: str | None = None


@dataclass
class ErrorReport:
    code: str
    severity: str
    location: str | None
    description: str


@dataclass
class Inspection:
    source: str
    shape: str
    transport: str
    verdict: str  # accepted | rejected | signal | unreadable
    answer: str  # Acknowledgment | MessageError | SOAP Fault | none
    errors: list[ErrorReport] = field(default_factory=list)
    message_kind: str | None = None  # message | Acknowledgment | MessageError
    from_party: dict[str, Any] | None = None
    to_party: dict[str, Any] | None = None
    cpa_id: str | None = None
    cpa: dict[str, Any] | None = None
    service: str | None = None
    action: str | None = None
    message_id: str | None = None
    ref_to_message_id: str | None = None
    timestamp: str | None = None
    received_at: str | None = None
    ack_requested: bool = False
    sync_reply: bool = False
    policy: dict[str, bool] | None = None
    signature: SignatureReport | None = None
    payloads: list[PayloadReport] = field(default_factory=list)
    key: str | None = None  # whose decryption key was used, if any

    @property
    def accepted(self) -> bool:
        return self.verdict in ("accepted", "signal")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cert(c: x509.Certificate) -> dict[str, str]:
    return {"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
            "serial": format(c.serial_number, "x"), "not_before": c.not_valid_before_utc.isoformat(),
            "not_after": c.not_valid_after_utc.isoformat()}


def _signature(env: Envelope, pkg: Package, allow_sha1: bool) -> SignatureReport:
    """What is in ds:Signature and whether it verifies (SHA-1 reported as such when not allowed)."""
    assert env.root is not None
    sig = env.root.find(f".//{{{DS_NS}}}Signature")
    if sig is None:
        return SignatureReport(False, error="the envelope is not signed")
    sm = sig.find(f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}SignatureMethod")
    rep = SignatureReport(True, algorithm=sm.get("Algorithm") if sm is not None else None)
    for r in sig.iterfind(f"{{{DS_NS}}}SignedInfo/{{{DS_NS}}}Reference"):
        dm = r.find(f"{{{DS_NS}}}DigestMethod")
        rep.references.append(Reference(r.get("URI", ""), dm.get("Algorithm", "") if dm is not None else ""))
    try:
        v = verify_envelope(env.root, pkg.parts, allow_sha1=allow_sha1)
        rep.valid, rep.signer = True, _cert(v.certificate)
    except EbxmlError as e:
        rep.error = f"{e.code}: {e.description}" + (f" ({e.location})" if e.location else "")
        from hub.security.xmldsig import cert_from_b64

        x = sig.find(f".//{{{DS_NS}}}X509Certificate")
        if x is not None and (x.text or "").strip():
            try:
                rep.signer = _cert(cert_from_b64(x.text))
            except ValueError:
                pass
    return rep


def _document(doc: bytes, allow_sha1: bool) -> tuple[str, str | None]:
    """(what the document is, its own signature's verdict or None when unsigned)."""
    from hub.security.errors import SecurityError
    from hub.security.xmldsig import verify_enveloped
    from hub.xmlsafe import XmlInputError, parse_bytes

    try:
        root = parse_bytes(doc).getroot()
    except XmlInputError as exc:
        return f"not XML ({exc})", None
    name = etree.QName(root).localname
    mt = root.find(".//{*}MsgInfo/{*}Type")
    what = f"{name} ({mt.get('V')})" if mt is not None and mt.get("V") else name
    if root.find(f"{{{DS_NS}}}Signature") is None:
        return what, None
    try:
        v = verify_enveloped(doc, expected_certs=None, allow_sha1=allow_sha1)
        return what, f"valid, signed by {v.certificate.subject.rfc4514_string()}"
    except SecurityError as e:
        return what, f"{e.apprec_code} {e.kind}: {e.message}"


class _Opener:
    """The Msh's PayloadCrypto for inspection: decrypts with the given key and records what it saw;
    without a key an encrypted part is left unopened (its verdict needs the key) rather than refused."""

    def __init__(self, keyed: bool) -> None:
        self.keyed = keyed
        self.opened: list[bytes] = []

    def encrypt(self, data: bytes, recipients: list[x509.Certificate]) -> bytes:
        return cms.encrypt(data, recipients)  # the protocol's other half; inspection only opens

    def decrypt(self, der: bytes, keys: Keys) -> bytes:
        if not self.keyed:
            return b""
        out = cms.decrypt(der, keys)
        self.opened.append(out)
        return out


@functools.cache
def _throwaway_key() -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    """One key per process to sign the answers the Msh builds (nothing is sent; generating a key per
    file cost more than inspecting it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hub ebxml inspect (not sent)")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256()))
    return cert, key


def _throwaway_party(her_id: str, keys: Keys) -> LocalParty:
    """The receiver as the Msh needs it: answers are signed (with a throwaway key; nothing is sent)."""
    cert, key = _throwaway_key()
    return LocalParty(her_id, cert, key, list(keys))


def _party(p: Any) -> dict[str, Any]:  # noqa: ANN401 - envelope.Party
    return {"her": p.her_id, "role": p.role, "party_ids": [f"{t}:{v}" for t, v in p.party_ids]}


def _cpa_report(cpas: CpaRepository | None, cpa_id: str | None,
                at: datetime) -> tuple[Cpa | None, dict | None]:
    if not cpa_id:
        return None, None
    versions = cpas.versions(cpa_id) if cpas else []
    if not versions:
        return None, {"applies": None, "versions": [], "note": "no CPA with this id (register defaults apply "
                                                                 "only to <HER>_<HER> ids)"}
    chosen = select(versions, at)
    return chosen, {
        "applies": chosen.source if chosen else None,
        "versions": [{"source": c.source, "window": window(c), "status": c.status,
                      "valid_at_timestamp": c.valid_at(at), "applies": c is chosen} for c in versions],
    }


def inspect_message(data: bytes, *, source: str = "-", cpas: CpaRepository | None = None,
                    peers: PeerDirectory | None = None, keys: Keys = (), key_name: str | None = None,
                    at: datetime | None = None) -> Inspection:
    """The verdict of a receiving MSH on one capture, with the reasons. `at`: when it is received
    (default: the message's own Timestamp, so an old capture is judged as on its day); `keys`: the
    receiver's decryption keys, to open encrypted payloads; `peers`: the address register."""
    cap = read_capture(data)
    try:
        pkg = parse_package(cap.entity)
        env = parse_envelope(pkg.soap)
    except EbxmlError as e:
        return Inspection(source, cap.shape, cap.transport, "unreadable", "SOAP Fault",
                          [ErrorReport(str(e.code), e.severity, e.location, e.description)])
    h = env.header
    now = at or h.timestamp or datetime.now(UTC)
    insp = Inspection(
        source, cap.shape, cap.transport, "rejected", "none",
        message_kind="Acknowledgment" if env.acknowledgment is not None else
        "MessageError" if env.error_list is not None else "message",
        from_party=_party(h.from_party), to_party=_party(h.to_party), cpa_id=h.cpa_id,
        service=h.service, action=h.action, message_id=h.message_id, ref_to_message_id=h.ref_to_message_id,
        timestamp=h.timestamp.isoformat() if h.timestamp else h.raw_timestamp, received_at=now.isoformat(),
        ack_requested=env.ack_requested, sync_reply=env.sync_reply, key=key_name if keys else None,
    )
    cpa, insp.cpa = _cpa_report(cpas, h.cpa_id, h.timestamp or now)
    peer = (peers or Peers()).peer(h.from_party.her_id) if h.from_party.her_id else None
    policy = ReceivePolicy.of(cpa, env, allow_sha1=bool(peer and peer.allow_sha1))
    insp.policy = {"encryption_required": policy.encryption_required,
                   "signature_required": policy.signature_required, "sha1_allowed": policy.allow_sha1}
    insp.signature = _signature(env, pkg, policy.allow_sha1)
    for ref in env.manifest:
        cid = ref.cid or ""
        part = pkg.parts.get(cid)
        ctype = pkg.part_types.get(cid)
        if part is None:
            insp.payloads.append(PayloadReport(ref.href, None, "missing", 0, error="no MIME part"))
            continue
        kind = part_kind(part, ctype or "")
        insp.payloads.append(PayloadReport(ref.href, ctype, kind, len(part), opened=kind == "plain"))
    # the verdict: the Msh itself, as the receiver (To), with nothing seen before
    opener = _Opener(bool(keys))
    to_her = h.to_party.her_id or "0"
    msh = Msh([_throwaway_party(to_her, keys)], cpas=cpas, peers=peers, crypto=opener)
    out = msh.receive(cap.entity, now, transport=cap.transport, parsed=(pkg, env))
    insp.errors = [ErrorReport(str(e.code), e.severity, e.location, e.description) for e in out.errors]
    if out.status == "signal":
        insp.verdict = "signal" if not [e for e in out.errors if e.severity == "Error"] else "rejected"
    else:
        insp.verdict = "accepted" if out.status == "delivered" else "rejected"
        insp.answer = {"ack": "Acknowledgment", "error": "MessageError", "fault": "SOAP Fault"}.get(
            out.response_kind or "", "none")
        if out.response_kind == "fault" and out.response:
            fault = parse_soap_fault(parse_package(out.response).soap) or []
            insp.errors = insp.errors or [ErrorReport(e.code, "Error", e.location, e.description or "")
                                          for e in fault]
    # the payloads as the Msh opened them (decrypted in manifest order), or plain ones read here
    opened = iter(opener.opened)
    for p in insp.payloads:
        doc: bytes | None = None
        if p.kind == "encrypted" and keys:
            doc = next(opened, None)
            p.opened = doc is not None
        elif p.kind == "plain":
            cid = p.href[4:] if p.href.startswith("cid:") else ""
            doc = pkg.parts.get(cid)
        if doc is None:
            continue
        try:
            doc, p.compressed = compression.unwrap(doc)
        except compression.CompressionError as exc:
            p.error, p.compressed = str(exc), True
            continue
        p.document, p.document_signature = _document(doc, policy.allow_sha1)
    return insp


def render(insp: Inspection) -> list[str]:
    """Plain-text lines of an inspection, for the terminal (the CLI prints them)."""
    def party(p: dict | None) -> str:
        if not p:
            return "-"
        return f"{'HER ' + p['her'] if p['her'] else ' '.join(p['party_ids']) or 'no PartyId'} ({p['role']})"

    lines = [f"{insp.source}: {insp.shape} over {insp.transport}"]
    if insp.verdict == "unreadable":
        lines += [f"  not readable ebXML -> {insp.answer}"]
    else:
        lines += [
            f"  {insp.message_kind}: {party(insp.from_party)} -> {party(insp.to_party)}",
            f"  service/action  {insp.service} / {insp.action}",
            f"  MessageId       {insp.message_id}  Timestamp {insp.timestamp}"
            + (f"  RefToMessageId {insp.ref_to_message_id}" if insp.ref_to_message_id else ""),
        ]
        cpa = insp.cpa
        if cpa is None:
            lines.append(f"  CPA             {insp.cpa_id or 'none'}")
        elif not cpa["versions"]:
            lines.append(f"  CPA             {insp.cpa_id}: {cpa['note']}")
        else:
            lines.append(f"  CPA             {insp.cpa_id}: {len(cpa['versions'])} version(s)")
            for v in cpa["versions"]:
                mark = "applies" if v["applies"] else "valid then" if v["valid_at_timestamp"] \
                    else "not valid then"
                lines.append(f"                    {v['window']}  {v['source']}  [{mark}]")
        if insp.policy:
            lines.append("  requires        " + ", ".join(
                f"{k.replace('_', ' ')}: {'yes' if v else 'no'}" for k, v in insp.policy.items()))
        s = insp.signature
        if s is not None:
            alg = (s.algorithm or "?").rsplit("#", 1)[-1]
            refs = ", ".join(f"{r.uri or '#envelope'} ({r.digest_method.rsplit('#', 1)[-1]})"
                             for r in s.references)
            state = "valid" if s.valid else f"INVALID: {s.error}" if s.present else "absent"
            lines.append(f"  signature       {alg}, {state}")
            if refs:
                lines.append(f"                  references: {refs}")
            if s.signer:
                lines.append(f"                  signer: {s.signer['subject']} (serial {s.signer['serial']}, "
                             f"{s.signer['not_before'][:10]}..{s.signer['not_after'][:10]})")
        for p in insp.payloads:
            what = p.kind + (", gzip" if p.compressed else "") + (f", {p.size} bytes" if p.size else "")
            if p.kind == "encrypted" and not p.opened:
                what += ", not opened (give the receiver's key: --pki/--party)"
            lines.append(f"  payload         {p.href}: {what}")
            if p.document:
                lines.append(f"                  document: {p.document}"
                             + (f"; signature: {p.document_signature}" if p.document_signature else ""))
            if p.error:
                lines.append(f"                  error: {p.error}")
    verdict = {"accepted": "ACCEPTED", "rejected": "REJECTED", "signal": "a signal (applied, never answered)",
               "unreadable": "REJECTED"}[insp.verdict]
    lines.append(f"  verdict         {verdict}" + (f" -> {insp.answer}" if insp.answer != "none" else ""))
    for e in insp.errors:
        lines.append(f"    {e.severity} {e.code} at {e.location or '-'}: {e.description}")
    return lines
