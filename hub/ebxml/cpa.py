"""ebXML CPA/CPP 2.0 documents: load them, look them up, and check a received message against them.

Real registry CPAs reuse xs:ID values and mix prefixes (cppa:, tns:, p3:), so reading goes by
namespace and local name with the hub's safe parser and never relies on ID uniqueness.
Without a CPA (CPAId `<lowest HER>_<highest HER>`), the register defaults of HIS 1037 §5.2 apply.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from lxml import etree

from hub.codes import EbmsError
from hub.ebxml.envelope import Envelope, parse_time
from hub.ebxml.errors import EbxmlError, err
from hub.ebxml.naming import default_cpa_id, expected_roles, is_default_cpa_id
from hub.xmlsafe import parse_bytes

CPPA_NS = "http://www.oasis-open.org/committees/ebxml-cppa/schema/cpp-cpa-2_0.xsd"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
XLINK_NS = "http://www.w3.org/1999/xlink"
MAX_CPA_BYTES = 8 * 1024 * 1024  # the largest real template (CppTemplate.xml) is ~1.1 MB


def _c(name: str) -> str:
    return f"{{{CPPA_NS}}}{name}"


def _a(el: etree._Element, name: str, default: str | None = None) -> str | None:
    # Attributes are cppa-qualified in the schema; some tools write them unqualified.
    v = el.get(_c(name))
    return v if v is not None else el.get(name, default)


def _t(el: etree._Element | None) -> str | None:
    return " ".join(el.text.split()) if el is not None and el.text else None


_DUR = re.compile(
    r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """xs:duration as CPAs write it (PT240M, P2D, PT720M); a year is 365 days, a month 30."""
    m = _DUR.match(text.strip())
    if not m or text.strip() in ("P", "PT"):
        raise ValueError(f"not an xs:duration: {text!r}")
    y, mo, w, d, h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    return timedelta(days=y * 365 + mo * 30 + w * 7 + d, hours=h, minutes=mi, seconds=s)


# Register defaults without a CPA (HIS 1037 §5.2; HITS 1171: 12 h).
DEFAULT_RETRIES = 5
DEFAULT_RETRY_INTERVAL = timedelta(hours=12)


@dataclass
class Reliability:
    retries: int = DEFAULT_RETRIES
    retry_interval: timedelta = DEFAULT_RETRY_INTERVAL
    persist_duration: timedelta | None = None
    message_order: str | None = None


@dataclass
class DocExchange:
    doc_exchange_id: str
    sender: Reliability | None = None
    receiver: Reliability | None = None
    signing_cert_ref: str | None = None
    hash_function: str | None = None
    signature_algorithm: str | None = None
    encryption_cert_ref: str | None = None


@dataclass
class Transport:
    transport_id: str
    sender_protocol: str | None = None
    receiver_protocol: str | None = None
    endpoints: list[tuple[str, str]] = field(default_factory=list)  # (uri, type)


@dataclass
class DeliveryChannel:
    channel_id: str
    transport_id: str | None
    doc_exchange_id: str | None
    ack_requested: str | None = None  # always | never | perMessage
    ack_signature_requested: str | None = None
    duplicate_elimination: str | None = None
    # none | signalsOnly | responseOnly | signalsAndResponse | mshSignalsOnly
    sync_reply_mode: str | None = None


# isConfidential/isAuthenticated/isTamperProof values that ask for protection (CPPA 2.0 §8.4.11). The
# schema's persistenceLevel.type spells the last one "transient-and-persistent"; the reversed spelling
# is kept for CPAs written by hand.
PROTECTED = ("transient", "persistent", "transient-and-persistent", "persistent-and-transient")


@dataclass
class ActionBinding:
    action: str
    direction: str  # send | receive
    channel_ids: list[str]
    package_id: str | None = None
    # BusinessTransactionCharacteristics; None where the CPA does not say
    is_confidential: str | None = None  # none | transient | persistent | transient-and-persistent
    is_authenticated: str | None = None
    is_non_repudiation_required: bool | None = None


@dataclass(frozen=True)
class ProcessSpec:
    """A cppa:ProcessSpecification as written: the two parties of a CPA cite the same one."""

    name: str
    version: str
    href: str
    uuid: str | None = None


@dataclass
class CollaborationRole:
    role: str
    process: str | None
    service: str
    service_type: str | None
    bindings: list[ActionBinding]
    application_cert_ref: str | None = None
    process_spec: ProcessSpec | None = None  # None where the ProcessSpecification lacks name or href
    role_href: str | None = None  # the Role's xlink:href

    def actions(self, direction: str) -> list[str]:
        return [b.action for b in self.bindings if b.direction == direction]


@dataclass
class CertificateInfo:
    cert_id: str
    certificates: list[x509.Certificate]

    @property
    def certificate(self) -> x509.Certificate | None:
        return self.certificates[0] if self.certificates else None


@dataclass
class PartyInfo:
    name: str | None
    party_ids: list[tuple[str, str]]
    roles: list[CollaborationRole]
    certificates: dict[str, CertificateInfo]
    channels: dict[str, DeliveryChannel]
    transports: dict[str, Transport]
    doc_exchanges: dict[str, DocExchange]
    default_channel_id: str | None = None

    @property
    def her_id(self) -> str | None:
        return next((v for t, v in self.party_ids if t.upper() == "HER"), None)

    def roles_for(self, service: str) -> list[CollaborationRole]:
        return [r for r in self.roles if r.service == service]

    def binding(self, service: str, action: str, direction: str, role: str | None = None
                ) -> tuple[CollaborationRole, ActionBinding] | None:
        for r in self.roles_for(service):
            if role is not None and r.role != role:
                continue
            for b in r.bindings:
                if b.action == action and b.direction == direction:
                    return r, b
        return None

    def channel(self, channel_id: str | None) -> DeliveryChannel | None:
        return self.channels.get(channel_id or self.default_channel_id or "")

    def transport_of(self, channel: DeliveryChannel | None) -> Transport | None:
        return self.transports.get(channel.transport_id or "") if channel else None

    def doc_exchange_of(self, channel: DeliveryChannel | None) -> DocExchange | None:
        return self.doc_exchanges.get(channel.doc_exchange_id or "") if channel else None

    def signing_certificate(self) -> x509.Certificate | None:
        """The sender's nonRepudiation certificate: the SigningCertificateRef of its DocExchange."""
        for de in self.doc_exchanges.values():
            if de.signing_cert_ref and de.signing_cert_ref in self.certificates:
                return self.certificates[de.signing_cert_ref].certificate
        return _by_name(self.certificates, ("sign",))

    def encryption_certificate(self) -> x509.Certificate | None:
        """Where payloads for this party are encrypted to: ApplicationCertificateRef (or enc/crypt)."""
        for r in self.roles:
            if r.application_cert_ref and r.application_cert_ref in self.certificates:
                return self.certificates[r.application_cert_ref].certificate
        return _by_name(self.certificates, ("enc", "crypt"))


def _by_name(certs: dict[str, CertificateInfo], words: tuple[str, ...]) -> x509.Certificate | None:
    for cid, info in certs.items():
        if any(w in cid.lower() for w in words):
            return info.certificate
    return None


@dataclass
class Packaging:
    """A cppa:Packaging: the layers a payload goes through, outermost last (as the CPA lists them):
    e.g. application/x-gzip then application/pkcs7-mime = gzip, then encrypt (NAV's OppgjorsKontroll)."""

    package_id: str
    encapsulations: list[str]  # mimetypes of the cppa:Encapsulation elements, in document order

    @property
    def compressed(self) -> bool:
        return any("gzip" in m.lower() for m in self.encapsulations)

    @property
    def encrypted(self) -> bool:
        return any("pkcs7-mime" in m.lower() for m in self.encapsulations)


@dataclass
class Cpa:
    cpa_id: str
    kind: str  # CPA | CPP
    version: str | None
    status: str | None
    start: datetime | None
    end: datetime | None
    parties: list[PartyInfo]
    source: str | None = None
    packages: dict[str, Packaging] = field(default_factory=dict)

    @property
    def agreed(self) -> bool:
        return (self.status or "").lower() in ("agreed", "signed")

    def party(self, her_id: str | None) -> PartyInfo | None:
        return next((p for p in self.parties if her_id is not None and p.her_id == str(her_id)), None)

    def other_party(self, her_id: str) -> PartyInfo | None:
        return next((p for p in self.parties if p.her_id != str(her_id)), None)

    def valid_at(self, t: datetime) -> bool:
        return (self.start is None or self.start <= t) and (self.end is None or t <= self.end)

    @property
    def her_ids(self) -> list[str]:
        return [p.her_id for p in self.parties if p.her_id]


# ---------------------------------------------------------------- loading


def _reliability(binding: etree._Element | None) -> Reliability | None:
    if binding is None:
        return None
    rm = binding.find(_c("ReliableMessaging"))
    rel = Reliability()
    if rm is not None:
        if _t(rm.find(_c("Retries"))) is not None:
            rel.retries = int(_t(rm.find(_c("Retries"))))  # type: ignore[arg-type]
        if _t(rm.find(_c("RetryInterval"))):
            rel.retry_interval = parse_duration(_t(rm.find(_c("RetryInterval"))))  # type: ignore[arg-type]
        rel.message_order = _t(rm.find(_c("MessageOrderSemantics")))
    if _t(binding.find(_c("PersistDuration"))):
        rel.persist_duration = parse_duration(_t(binding.find(_c("PersistDuration"))))  # type: ignore[arg-type]
    return rel


def _certs(el: etree._Element) -> list[x509.Certificate]:
    out = []
    for c in el.iter(f"{{{DS_NS}}}X509Certificate"):
        text = "".join((c.text or "").split())
        try:
            out.append(x509.load_der_x509_certificate(base64.b64decode(text)))
        except ValueError:
            continue  # a template's placeholder ("certificate"), not a certificate
    return out


def _party_info(pi: etree._Element) -> PartyInfo:
    roles: list[CollaborationRole] = []
    for cr in pi.findall(_c("CollaborationRole")):
        role_el, ps, acr = cr.find(_c("Role")), cr.find(_c("ProcessSpecification")), \
            cr.find(_c("ApplicationCertificateRef"))
        sb = cr.find(_c("ServiceBinding"))
        if sb is None or role_el is None:
            continue
        svc = sb.find(_c("Service"))
        bindings = []
        for tag, direction in (("CanSend", "send"), ("CanReceive", "receive")):
            for can in sb.findall(_c(tag)):
                tb = can.find(_c("ThisPartyActionBinding"))
                if tb is None:
                    continue
                btc = tb.find(_c("BusinessTransactionCharacteristics"))
                nr = _a(btc, "isNonRepudiationRequired") if btc is not None else None
                bindings.append(ActionBinding(_a(tb, "action", "") or "", direction,
                                              [_t(c) or "" for c in tb.findall(_c("ChannelId"))],
                                              _a(tb, "packageId"),
                                              _a(btc, "isConfidential") if btc is not None else None,
                                              _a(btc, "isAuthenticated") if btc is not None else None,
                                              None if nr is None else nr.strip().lower() == "true"))
        href = ps.get(f"{{{XLINK_NS}}}href") if ps is not None else None
        spec = ProcessSpec(_a(ps, "name") or "", _a(ps, "version", "") or "", href, _a(ps, "uuid")) \
            if ps is not None and href and _a(ps, "name") else None
        roles.append(CollaborationRole(_a(role_el, "name", "") or "",
                                       _a(ps, "name") if ps is not None else None,
                                       _t(svc) or "", _a(svc, "type") if svc is not None else None, bindings,
                                       _a(acr, "certId") if acr is not None else None, spec,
                                       role_el.get(f"{{{XLINK_NS}}}href")))
    certs: dict[str, CertificateInfo] = {}
    for c in pi.findall(_c("Certificate")):
        cid = _a(c, "certId", "") or ""
        certs.setdefault(cid, CertificateInfo(cid, _certs(c)))  # reused ids: the first one wins
    channels: dict[str, DeliveryChannel] = {}
    for dc in pi.findall(_c("DeliveryChannel")):
        mc = dc.find(_c("MessagingCharacteristics"))
        ch = DeliveryChannel(_a(dc, "channelId", "") or "", _a(dc, "transportId"), _a(dc, "docExchangeId"))
        if mc is not None:
            ch.ack_requested = _a(mc, "ackRequested")
            ch.ack_signature_requested = _a(mc, "ackSignatureRequested")
            ch.duplicate_elimination = _a(mc, "duplicateElimination")
            ch.sync_reply_mode = _a(mc, "syncReplyMode")
        channels.setdefault(ch.channel_id, ch)
    transports: dict[str, Transport] = {}
    for tr in pi.findall(_c("Transport")):
        t = Transport(_a(tr, "transportId", "") or "")
        ts, rc = tr.find(_c("TransportSender")), tr.find(_c("TransportReceiver"))
        if ts is not None:
            t.sender_protocol = _t(ts.find(_c("TransportProtocol")))
        if rc is not None:
            t.receiver_protocol = _t(rc.find(_c("TransportProtocol")))
            t.endpoints = [(_a(e, "uri", "") or "", _a(e, "type", "allPurpose") or "allPurpose")
                           for e in rc.findall(_c("Endpoint"))]
        transports.setdefault(t.transport_id, t)
    exchanges: dict[str, DocExchange] = {}
    for de in pi.findall(_c("DocExchange")):
        d = DocExchange(_a(de, "docExchangeId", "") or "")
        sb, rb = de.find(_c("ebXMLSenderBinding")), de.find(_c("ebXMLReceiverBinding"))
        d.sender, d.receiver = _reliability(sb), _reliability(rb)
        nr = sb.find(_c("SenderNonRepudiation")) if sb is not None else None
        if nr is not None:
            ref = nr.find(_c("SigningCertificateRef"))
            d.signing_cert_ref = _a(ref, "certId") if ref is not None else None
            d.hash_function = _t(nr.find(_c("HashFunction")))
            d.signature_algorithm = _t(nr.find(_c("SignatureAlgorithm")))
        env = rb.find(_c("ReceiverDigitalEnvelope")) if rb is not None else None
        if env is not None and env.find(_c("EncryptionCertificateRef")) is not None:
            d.encryption_cert_ref = _a(env.find(_c("EncryptionCertificateRef")), "certId")
        exchanges.setdefault(d.doc_exchange_id, d)
    return PartyInfo(
        name=_a(pi, "partyName"),
        party_ids=[(_a(p, "type", "") or "", _t(p) or "") for p in pi.findall(_c("PartyId"))],
        roles=roles, certificates=certs, channels=channels, transports=transports, doc_exchanges=exchanges,
        default_channel_id=_a(pi, "defaultMshChannelId"),
    )


def _when(el: etree._Element | None) -> datetime | None:
    return parse_time(_t(el)) if _t(el) else None  # type: ignore[arg-type]


class NoCpa(ValueError):
    """The address register answered that there is no CPA for the pair (an empty CpaXmlDetails)."""


XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"


def _unwrap_register(root: etree._Element, source: str | None) -> etree._Element:
    """NHN's register (CPA service) answers with the CPA as text in a CpaXmlDetails element (possibly in
    a SOAP envelope); `i:nil="true"` there means no CPA exists for the two parties."""
    if etree.QName(root).namespace == CPPA_NS:
        return root
    details = next((el for el in root.iter(etree.Element)
                    if etree.QName(el).localname in ("CpaXmlDetails", "CollaborationProtocolAgreementXml")),
                   None)
    if details is None:
        return root
    if details.get(f"{{{XSI_NS}}}nil", "").strip() == "true" or not (details.text or "").strip():
        raise NoCpa(f"{source or 'the register answer'}: no CPA for this pair (empty {details.tag})")
    inner = details.text.strip().encode("utf-8") if not len(details) else etree.tostring(details[0])
    return parse_bytes(inner, max_bytes=MAX_CPA_BYTES).getroot()


def load_cpa(data: bytes, source: str | None = None) -> Cpa:
    """A CPA (CollaborationProtocolAgreement) or CPP (CollaborationProtocolProfile) from bytes; also
    from the address register's CpaXmlDetails answer (NoCpa when that is empty)."""
    root = _unwrap_register(parse_bytes(data, max_bytes=MAX_CPA_BYTES).getroot(), source)
    local = etree.QName(root).localname
    if etree.QName(root).namespace != CPPA_NS or local not in (
        "CollaborationProtocolAgreement", "CollaborationProtocolProfile"):
        raise ValueError(f"{source or 'document'}: root {root.tag} is not an ebXML CPA/CPP 2.0")
    kind = "CPA" if local == "CollaborationProtocolAgreement" else "CPP"
    ident = _a(root, "cpaid") if kind == "CPA" else _a(root, "cppid")
    status = root.find(_c("Status"))
    parties = [_party_info(p) for p in root.findall(_c("PartyInfo"))]
    if not ident:
        ident = "cpp:" + "_".join(p.her_id or "?" for p in parties)
    packages: dict[str, Packaging] = {}
    for pk in root.iter(_c("Packaging")):
        pid = _a(pk, "id", "") or ""
        packages.setdefault(pid, Packaging(pid, [_a(e, "mimetype", "") or ""
                                                 for e in pk.iter(_c("Encapsulation"))]))
    return Cpa(ident, kind, _a(root, "version"), _a(status, "value") if status is not None else None,
               _when(root.find(_c("Start"))), _when(root.find(_c("End"))), parties, source, packages)


def load_cpa_file(path: Path) -> Cpa:
    return load_cpa(Path(path).read_bytes(), str(path))


class CpaRepository:
    """CPAs from a folder: by CPAId (every version of an id is kept), or by (our HER, counterparty HER).

    A renewed CPA keeps its CPAId and gets a new validity window; which version applies is decided by
    the moment asked about (a received message's Timestamp): valid then, agreed preferred, latest start.
    """

    def __init__(self, cpas: list[Cpa] | None = None) -> None:
        self._by_id: dict[str, list[Cpa]] = {}
        self.problems: list[str] = []
        for c in cpas or []:
            self.add(c)

    @classmethod
    def load_dir(cls, folder: Path) -> CpaRepository:
        repo = cls()
        for p in sorted(Path(folder).glob("*.xml")):
            try:
                cpa = load_cpa_file(p)
            except Exception as exc:  # noqa: BLE001 - one bad file must not hide the others
                repo.problems.append(f"{p.name}: {exc}")
                continue
            if cpa.kind == "CPA":
                repo.add(cpa)
        return repo

    def add(self, cpa: Cpa) -> None:
        self._by_id.setdefault(cpa.cpa_id, []).append(cpa)
        self._by_id[cpa.cpa_id].sort(key=_start_key)

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):  # noqa: ANN204 - iterator of Cpa: each id's latest version
        return iter([v[-1] for v in self._by_id.values()])

    def all(self) -> list[Cpa]:
        """Every version of every CPA."""
        return [c for v in self._by_id.values() for c in v]

    def versions(self, cpa_id: str) -> list[Cpa]:
        """The versions of one CPAId, earliest start first."""
        return list(self._by_id.get(cpa_id, []))

    def get(self, cpa_id: str, at: datetime | None = None) -> Cpa | None:
        """The version of `cpa_id` that applies at `at` (see `select`); without `at`, the latest one.
        With `at` and no version valid then, the latest version (its window is the caller's finding)."""
        versions = self._by_id.get(cpa_id)
        if not versions:
            return None
        if at is None:
            return versions[-1]
        return select(versions, at) or versions[-1]

    def between(self, our_her: str, other_her: str, at: datetime | None = None) -> Cpa | None:
        """The CPA between two parties valid at `at` (agreed first, then the latest start), else None."""
        found = [c for c in self.all()
                 if c.party(str(our_her)) and c.party(str(other_her)) and str(our_her) != str(other_her)]
        if at is None:
            found.sort(key=_start_key)
            return found[-1] if found else None
        return select(found, at)


def _start_key(c: Cpa) -> datetime:
    return c.start or datetime.min.replace(tzinfo=UTC)


def window(c: Cpa) -> str:
    """A CPA version's validity as text: `2025-09-03T12:09:25Z..2026-08-28T21:59:00Z (proposed)`."""
    def t(d: datetime | None) -> str:
        return f"{d:%Y-%m-%dT%H:%M:%SZ}" if d else "?"
    return f"{t(c.start)}..{t(c.end)} ({c.status or 'no status'})"


def select(versions: list[Cpa], at: datetime) -> Cpa | None:
    """Of CPA versions, the one valid at `at`: an agreed one before a proposed one (registry test CPAs
    are often left "proposed"), then the latest start. None when none is valid at `at`."""
    valid = sorted((c for c in versions if c.valid_at(at)), key=lambda c: (c.agreed, _start_key(c)))
    return valid[-1] if valid else None


# ---------------------------------------------------------------- what to use for sending


# Endpoint types that take business messages; `error` takes MessageErrors only, `login` none of ours.
DELIVERY_TYPES = ("allPurpose", "request", "response")
SHA1_NAMES = ("sha1", "rsa-sha1", "dsa-sha1")


def _names_sha1(*algorithms: str | None) -> bool:
    return any(a and a.rstrip().lower().rsplit("#", 1)[-1] in SHA1_NAMES for a in algorithms)


@dataclass
class SendPlan:
    """What would be used now to send to a receiver: from a CPA, or register defaults."""

    cpa_id: str
    cpa: Cpa | None
    endpoints: list[str]
    encryption_certificate: x509.Certificate | None
    signing_certificate: x509.Certificate | None  # the receiver's, to check its signals
    reliability: Reliability
    ack_requested: bool = True
    duplicate_elimination: bool = True
    sync_reply_mode: str = "none"
    signature_algorithm: str | None = None
    digest_algorithm: str | None = None
    encrypt: bool = True  # register default: payloads are always encrypted (HITS 1171)
    sign: bool = True  # the envelope signature; off only where the CPA asks for none for the action
    compress: bool = False
    protocol: str | None = None  # SMTP | HTTP | AMQP of the receiver's channel
    channel_id: str | None = None  # the receiver's DeliveryChannel used
    bound: bool = False  # the receiver's CanReceive binds the action (else its default channel)
    error_endpoints: list[str] = field(default_factory=list)


def _pick_channel(party: PartyInfo, binding: ActionBinding | None, protocol: str | None,
                  ) -> DeliveryChannel | None:
    """Of the channels bound to an action, the one over `protocol` (NAV binds SMTP and HTTP channels
    side by side); else the first bound one; else the party's default channel."""
    ids = binding.channel_ids if binding else []
    chans = [c for c in (party.channel(i) for i in ids if i) if c is not None]
    if protocol:
        for c in chans:
            tr = party.transport_of(c)
            if tr and (tr.receiver_protocol or tr.sender_protocol or "").upper() == protocol.upper():
                return c
    return chans[0] if chans else party.channel(None)


def _protocol(party: PartyInfo, channel: DeliveryChannel | None) -> str | None:
    tr = party.transport_of(channel)
    return (tr.receiver_protocol or tr.sender_protocol) if tr else None


@dataclass
class Protection:
    """What a CPA says about one action's payload and envelope (BusinessTransactionCharacteristics and
    the bound package); None fields: the CPA does not say, so the register default applies."""

    confidential: str | None = None
    authenticated: str | None = None
    non_repudiation: bool | None = None
    package: Packaging | None = None

    @property
    def encryption_required(self) -> bool:
        """On receipt: encryption is required unless isConfidential says "none" (or, unsaid, the package
        shows no pkcs7-mime layer)."""
        if self.confidential is not None:
            return self.confidential.strip() in PROTECTED
        return self.package.encrypted if self.package is not None else True

    @property
    def encrypt(self) -> bool:
        """On sending: encrypt where isConfidential or the package asks for it; plain only where the CPA
        says "none" and its package has no pkcs7-mime layer."""
        if self.package is not None and self.package.encrypted:
            return True
        return self.encryption_required

    @property
    def signature_required(self) -> bool:
        if self.non_repudiation is None and self.authenticated is None:
            return True
        return bool(self.non_repudiation) or (self.authenticated or "").strip() in PROTECTED


def protection(cpa: Cpa, sender: PartyInfo, receiver: PartyInfo, service: str, action: str,
               from_role: str | None = None, to_role: str | None = None) -> Protection:
    """The sender's CanSend and the receiver's CanReceive binding of the action, taken together: the
    stricter of the two where both say something."""
    sb = sender.binding(service, action, "send", from_role)
    rb = receiver.binding(service, action, "receive", to_role)
    bs = [x[1] for x in (sb, rb) if x is not None]
    p = Protection()
    for b in bs:
        if b.is_confidential is not None and (p.confidential is None or b.is_confidential in PROTECTED):
            p.confidential = b.is_confidential
        if b.is_authenticated is not None and (p.authenticated is None or b.is_authenticated in PROTECTED):
            p.authenticated = b.is_authenticated
        if b.is_non_repudiation_required is not None:
            p.non_repudiation = bool(p.non_repudiation) or b.is_non_repudiation_required
        if p.package is None and b.package_id and b.package_id in cpa.packages:
            p.package = cpa.packages[b.package_id]
    return p


def plan_send(repo: CpaRepository | None, our_her: str, receiver_her: str, at: datetime,
              service: str | None = None, action: str | None = None,
              protocol: str | None = None) -> SendPlan:
    """The CPA valid at `at` decides, for this action: the receiver's channel bound to it (over
    `protocol` when given), its delivery endpoints, encryption, compression, algorithms, ack/sync."""
    cpa = repo.between(our_her, receiver_her, at) if repo else None
    if cpa is None:
        return SendPlan(default_cpa_id(our_her, receiver_her), None, [], None, None, Reliability())
    other = cpa.party(receiver_her)
    ours = cpa.party(our_her)
    assert other is not None and ours is not None
    b = ours.binding(service, action, "send") if service and action else None
    rb = other.binding(service, action, "receive") if service and action else None
    rchannel = _pick_channel(other, rb[1] if rb else None, protocol)
    proto = protocol or _protocol(other, rchannel)
    channel = _pick_channel(ours, b[1] if b else None, proto)
    transport = other.transport_of(rchannel)
    de = ours.doc_exchange_of(channel or ours.channel(None))
    rel = (de.sender if de and de.sender else None) or Reliability()
    mc = rchannel or channel
    prot = protection(cpa, ours, other, service, action) if service and action else Protection()
    eps = transport.endpoints if transport else []
    return SendPlan(
        cpa.cpa_id, cpa, [u for u, t in eps if t in DELIVERY_TYPES],
        other.encryption_certificate(), other.signing_certificate(), rel,
        ack_requested=(mc.ack_requested or "always") != "never" if mc else True,
        duplicate_elimination=(mc.duplicate_elimination or "always") != "never" if mc else True,
        sync_reply_mode=(mc.sync_reply_mode or "none") if mc else "none",
        signature_algorithm=de.signature_algorithm if de else None,
        digest_algorithm=de.hash_function if de else None,
        encrypt=prot.encrypt,
        sign=prot.signature_required,
        compress=bool(prot.package and prot.package.compressed),
        protocol=_protocol(other, rchannel),
        channel_id=rchannel.channel_id if rchannel else None,
        bound=rb is not None,
        error_endpoints=[u for u, t in eps if t == "error"],
    )


@dataclass
class ReceivePolicy:
    """What the CPA (or the register defaults) requires of a received business message."""

    encryption_required: bool = True
    signature_required: bool = True
    allow_sha1: bool = False
    compressed: bool = False  # the package says gzip (recognised by content anyway)
    sender_channel: DeliveryChannel | None = None

    @classmethod
    def of(cls, cpa: Cpa | None, env: Envelope, *, allow_sha1: bool = False) -> ReceivePolicy:
        """From the CPA bound to the message (`allow_sha1`: the register's per-peer setting)."""
        h = env.header
        sender = cpa.party(h.from_party.her_id) if cpa else None
        receiver = cpa.party(h.to_party.her_id) if cpa else None
        if cpa is None or sender is None or receiver is None:
            return cls(allow_sha1=allow_sha1)
        prot = protection(cpa, sender, receiver, h.service or "", h.action or "", h.from_party.role,
                          h.to_party.role)
        sb = sender.binding(h.service or "", h.action or "", "send", h.from_party.role)
        ch = _pick_channel(sender, sb[1] if sb else None, None)
        de = sender.doc_exchange_of(ch)
        # a CPA that names SHA-1 for the sender's signatures allows it for this sender
        sha1 = _names_sha1(de.signature_algorithm, de.hash_function) if de else False
        return cls(prot.encryption_required, prot.signature_required, allow_sha1 or sha1,
                   bool(prot.package and prot.package.compressed), ch)


# ---------------------------------------------------------------- checking a received message


def check_against_cpa(env: Envelope, repo: CpaRepository | None, signer: x509.Certificate | None,
                      *, sender_cert: x509.Certificate | None = None) -> tuple[Cpa | None, list[EbxmlError]]:
    """HITS 1172 §5.9 / rules 110–114 at the message's own timestamp: CPA, parties, roles, service,
    action and the signing certificate. `sender_cert` is the register's certificate when no CPA names one.
    """
    h = env.header
    fh, th = h.from_party.her_id, h.to_party.her_id
    at = h.timestamp or datetime.now(UTC)
    errors: list[EbxmlError] = []
    cpa = repo.get(h.cpa_id, at) if repo and h.cpa_id else None
    if cpa is None:
        if not h.cpa_id or not is_default_cpa_id(h.cpa_id):
            return None, [err(EbmsError.VALUE_NOT_RECOGNIZED, "cpa_id",
                              f"CPAId {h.cpa_id!r} is not a known CPA")]
        if fh and th and h.cpa_id.split("_")[:2] != default_cpa_id(fh, th).split("_"):
            errors.append(err(EbmsError.INCONSISTENT, "cpa_id",
                              f"CPAId {h.cpa_id} does not name the parties {fh} and {th} "
                              f"(expected {default_cpa_id(fh, th)})"))
        roles = expected_roles(h.service or "", h.action or "")
        if roles is None:
            errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "action",
                              f"Service {h.service!r} / Action {h.action!r} do not follow HISD 1209 "
                              "and no CPA names them"))
        else:
            if h.from_party.role != roles[0]:
                errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "from_role",
                                  f"From Role {h.from_party.role!r}: {h.action} is sent by {roles[0]}"))
            if h.to_party.role != roles[1]:
                errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "to_role",
                                  f"To Role {h.to_party.role!r}: {h.action} is received by {roles[1]}"))
        if sender_cert is not None and signer is not None and signer != sender_cert:
            errors.append(err(EbmsError.SECURITY_FAILURE, "key_info",
                              "the envelope is not signed with the sender's registered certificate"))
        return None, errors
    if not cpa.valid_at(at):
        windows = ", ".join(window(c) for c in repo.versions(cpa.cpa_id)) if repo else window(cpa)
        errors.append(err(EbmsError.INCONSISTENT, "cpa_id",
                          f"CPA {cpa.cpa_id} is valid {windows}, not at the message's timestamp "
                          f"{at:%Y-%m-%dT%H:%M:%SZ}"))
        return cpa, errors
    sender, receiver = cpa.party(fh), cpa.party(th)
    if sender is None:
        errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "from_party",
                          f"HER {fh} is not a party of CPA {cpa.cpa_id}"))
    if receiver is None:
        errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "to_party",
                          f"HER {th} is not a party of CPA {cpa.cpa_id}"))
    if errors:
        return cpa, errors
    assert sender is not None and receiver is not None
    svc, act = h.service or "", h.action or ""
    if not sender.roles_for(svc):
        errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "service",
                          f"Service {svc!r} is not in CPA {cpa.cpa_id}"))
        return cpa, errors
    if not any(r.role == h.from_party.role for r in sender.roles_for(svc)):
        errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "from_role",
                          f"HER {fh} has no role {h.from_party.role!r} in service {svc}"))
    elif sender.binding(svc, act, "send", h.from_party.role) is None:
        errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "action",
                          f"role {h.from_party.role} may not send action {act!r} in service {svc}"))
    if not any(r.role == h.to_party.role for r in receiver.roles_for(svc)):
        errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "to_role",
                          f"HER {th} has no role {h.to_party.role!r} in service {svc}"))
    elif (rb := receiver.binding(svc, act, "receive", h.to_party.role)) is None:
        errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "action",
                          f"role {h.to_party.role} may not receive action {act!r} in service {svc}"))
    elif env.sync_reply:
        # SyncReply asks for the answer on the same connection: only where a channel bound to the action
        # has a syncReplyMode (NAV's HTTP channel: signalsAndResponse; its SMTP channel: none)
        chans = [c for c in (receiver.channel(i) for i in rb[1].channel_ids) if c is not None]
        if chans and all((c.sync_reply_mode or "none") == "none" for c in chans):
            errors.append(err(EbmsError.INCONSISTENT, "sync_reply",
                              f"SyncReply, but CPA {cpa.cpa_id} binds {act} to channel(s) "
                              f"{', '.join(c.channel_id for c in chans)} with syncReplyMode none"))
    expected = sender.signing_certificate()
    if signer is not None and expected is not None and signer != expected:
        errors.append(err(EbmsError.SECURITY_FAILURE, "key_info",
                          f"the envelope is signed with {signer.subject.rfc4514_string()}, "
                          f"not the signing certificate of CPA {cpa.cpa_id}"))
    return cpa, errors
