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


@dataclass
class ActionBinding:
    action: str
    direction: str  # send | receive
    channel_ids: list[str]
    package_id: str | None = None


@dataclass
class CollaborationRole:
    role: str
    process: str | None
    service: str
    service_type: str | None
    bindings: list[ActionBinding]
    application_cert_ref: str | None = None

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
class Cpa:
    cpa_id: str
    kind: str  # CPA | CPP
    version: str | None
    status: str | None
    start: datetime | None
    end: datetime | None
    parties: list[PartyInfo]
    source: str | None = None

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
                bindings.append(ActionBinding(_a(tb, "action", "") or "", direction,
                                              [_t(c) or "" for c in tb.findall(_c("ChannelId"))],
                                              _a(tb, "packageId")))
        roles.append(CollaborationRole(_a(role_el, "name", "") or "",
                                       _a(ps, "name") if ps is not None else None,
                                       _t(svc) or "", _a(svc, "type") if svc is not None else None, bindings,
                                       _a(acr, "certId") if acr is not None else None))
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


def load_cpa(data: bytes, source: str | None = None) -> Cpa:
    """A CPA (CollaborationProtocolAgreement) or CPP (CollaborationProtocolProfile) from bytes."""
    root = parse_bytes(data, max_bytes=MAX_CPA_BYTES).getroot()
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
    return Cpa(ident, kind, _a(root, "version"), _a(status, "value") if status is not None else None,
               _when(root.find(_c("Start"))), _when(root.find(_c("End"))), parties, source)


def load_cpa_file(path: Path) -> Cpa:
    return load_cpa(Path(path).read_bytes(), str(path))


class CpaRepository:
    """CPAs from a folder: by CPAId, or by (our HER, counterparty HER)."""

    def __init__(self, cpas: list[Cpa] | None = None) -> None:
        self._by_id: dict[str, Cpa] = {}
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
        self._by_id[cpa.cpa_id] = cpa

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):  # noqa: ANN204 - iterator of Cpa
        return iter(self._by_id.values())

    def get(self, cpa_id: str) -> Cpa | None:
        return self._by_id.get(cpa_id)

    def between(self, our_her: str, other_her: str, at: datetime | None = None) -> Cpa | None:
        """The CPA between two parties valid at `at` (the latest starting one), else None."""
        found = [c for c in self._by_id.values()
                 if c.party(str(our_her)) and c.party(str(other_her)) and str(our_her) != str(other_her)]
        if at is not None:
            found = [c for c in found if c.valid_at(at)]
        found.sort(key=lambda c: c.start or datetime.min.replace(tzinfo=UTC))
        return found[-1] if found else None


# ---------------------------------------------------------------- what to use for sending


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


def plan_send(repo: CpaRepository | None, our_her: str, receiver_her: str, at: datetime,
              service: str | None = None, action: str | None = None) -> SendPlan:
    cpa = repo.between(our_her, receiver_her, at) if repo else None
    if cpa is None:
        return SendPlan(default_cpa_id(our_her, receiver_her), None, [], None, None, Reliability())
    other = cpa.party(receiver_her)
    ours = cpa.party(our_her)
    assert other is not None and ours is not None
    channel = None
    if service and action:
        b = ours.binding(service, action, "send")
        if b and b[1].channel_ids:
            channel = ours.channel(b[1].channel_ids[0])
    # Where to send is the receiver's channel for that action, else its default channel.
    rb = other.binding(service, action, "receive") if service and action else None
    rchannel = other.channel(rb[1].channel_ids[0] if rb and rb[1].channel_ids else None)
    transport = other.transport_of(rchannel)
    de = ours.doc_exchange_of(channel or ours.channel(None))
    rel = (de.sender if de and de.sender else None) or Reliability()
    mc = rchannel or channel
    return SendPlan(
        cpa.cpa_id, cpa, [u for u, _ in transport.endpoints] if transport else [],
        other.encryption_certificate(), other.signing_certificate(), rel,
        ack_requested=(mc.ack_requested or "always") != "never" if mc else True,
        duplicate_elimination=(mc.duplicate_elimination or "always") != "never" if mc else True,
        sync_reply_mode=(mc.sync_reply_mode or "none") if mc else "none",
        signature_algorithm=de.signature_algorithm if de else None,
    )


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
    cpa = repo.get(h.cpa_id) if repo and h.cpa_id else None
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
        errors.append(err(EbmsError.INCONSISTENT, "cpa_id",
                          f"CPA {cpa.cpa_id} is valid {cpa.start:%Y-%m-%dT%H:%M:%SZ} to "
                          f"{cpa.end:%Y-%m-%dT%H:%M:%SZ}, not at the message's timestamp "
                          f"{at:%Y-%m-%dT%H:%M:%SZ}" if cpa.start and cpa.end else
                          f"CPA {cpa.cpa_id} is not valid at {at:%Y-%m-%dT%H:%M:%SZ}"))
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
    elif receiver.binding(svc, act, "receive", h.to_party.role) is None:
        errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "action",
                          f"role {h.to_party.role} may not receive action {act!r} in service {svc}"))
    expected = sender.signing_certificate()
    if signer is not None and expected is not None and signer != expected:
        errors.append(err(EbmsError.SECURITY_FAILURE, "key_info",
                          f"the envelope is signed with {signer.subject.rfc4514_string()}, "
                          f"not the signing certificate of CPA {cpa.cpa_id}"))
    return cpa, errors
