"""Generated ebXML material: CPAs and CPPs (valid CPPA 2.0), and a negative corpus (one defect per case).

The corpus depends on keys (signatures, encryption), so it is generated for a given pair of parties;
`python -m hub.ebxml.corpus OUTDIR` writes one with the shared test PKI, plus `manifest.json`
(file, defect, expected ebMS code, location, answer kind).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from hub.codes import EbmsError
from hub.ebxml import naming
from hub.ebxml.cpa import CPPA_NS, DS_NS, MAX_CPA_BYTES, XLINK_NS, CpaRepository, ProcessSpec, load_cpa
from hub.ebxml.envelope import (
    EB_NS,
    SOAP_NS,
    ManifestRef,
    MessageHeader,
    Party,
    build_envelope,
    format_time,
    new_id,
    serialize,
)
from hub.ebxml.errors import LOC
from hub.ebxml.mime import build_package, new_cid
from hub.ebxml.msh import CmsCrypto, LocalParty, Peer
from hub.ebxml.signature import sign_envelope
from hub.xmlsafe import parse_bytes

# ---------------------------------------------------------------- CPAs

# NHN's CPPs name the HISD 1209 roles under this base (Role xlink:href "…/processes#EPIKRISEsender"); the
# hrefs are names of processes and roles, not documents anyone fetches.
PROCESSES = "http://www.helsedirektoratet.no/processes"
EBMS_HEADER_NS = "http://www.oasis-open.org/committees/ebxml-msg/schema"
_NOT_NCNAME = re.compile(r"[^A-Za-z0-9._-]")
_NCNAME = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]*$")


def national_process(service: str) -> ProcessSpec:
    """The ProcessSpecification of a national service when no CPP names one: the service itself."""
    return ProcessSpec(service, "1.0", f"{PROCESSES}#{service}")


@dataclass
class Role:
    """One CollaborationRole: role, service, the actions it can send and receive, the ProcessSpecification
    it cites (None: `national_process`) and its Role's xlink:href (None: PROCESSES#role)."""

    name: str
    service: str
    sends: list[str]
    receives: list[str]
    process: ProcessSpec | None = None
    href: str | None = None

    @classmethod
    def of(cls, r: Role | tuple[str, str, list[str], list[str]]) -> Role:
        return r if isinstance(r, Role) else cls(*r)


@dataclass
class CpaParty:
    her_id: str
    name: str
    sign_cert: x509.Certificate
    enc_cert: x509.Certificate
    endpoint: str
    # (role, service, can send, can receive), or a Role that also names its process
    roles: list[Role | tuple[str, str, list[str], list[str]]]
    # isConfidential of every action it sends and receives; "none" also leaves the pkcs7-mime layer out
    # of its payload package (hub.ebxml.cpa.Protection: the package's layers are followed when sending)
    confidential: str = "persistent"
    party_ref: str | None = None  # PartyRef xlink:href; None: the party by its HER-id
    id_prefix: str | None = None  # prefix of the party's xs:ID values (an NCName); None: her<HER-id>

    def prefix(self) -> str:
        x = self.id_prefix or "her" + _NOT_NCNAME.sub("_", self.her_id)
        if not _NCNAME.match(x):
            raise ValueError(f"id prefix {x!r} is not an NCName (xs:ID values must start with a letter or _)")
        return x


def _c(name: str) -> str:
    return f"{{{CPPA_NS}}}{name}"


def _x(name: str) -> str:
    return f"{{{XLINK_NS}}}{name}"


def _cert_el(parent: etree._Element, cert_id: str, cert: x509.Certificate) -> None:
    c = etree.SubElement(parent, _c("Certificate"))
    c.set(_c("certId"), cert_id)
    ki = etree.SubElement(c, f"{{{DS_NS}}}KeyInfo")
    xd = etree.SubElement(ki, f"{{{DS_NS}}}X509Data")
    etree.SubElement(xd, f"{{{DS_NS}}}X509Certificate").text = base64.b64encode(
        cert.public_bytes(Encoding.DER)).decode()


def _party(p: CpaParty, x: str, retries: int, retry_interval: str, persist: str
           ) -> tuple[etree._Element, list[etree._Element], list[etree._Element]]:
    """A party's PartyInfo in the order cpp-cpa-2_0.xsd requires, and the SimpleParts and Packagings its
    packageIds name. Every xs:ID is `<x>_…` (NCNames; a HER-id alone starts with a digit); NAV's CPAs
    prefix each party's ids the same way (Partner_…, NAV_…), so the two parties' ids never meet."""
    proto = "HTTP" if p.endpoint.lower().startswith(("http://", "https://")) else "SMTP"
    channel, transport = f"{x}_channel_{proto.lower()}", f"{x}_transport_{proto.lower()}"
    exchange = f"{x}_docexchange"
    sign_id, enc_id = f"{x}_cert_sign", f"{x}_cert_enc"
    payload, signal = f"{x}_package_payload", f"{x}_package_mshsignal"
    pi = etree.Element(_c("PartyInfo"), {_c("partyName"): p.name, _c("defaultMshChannelId"): channel,
                                         _c("defaultMshPackageId"): signal})
    etree.SubElement(pi, _c("PartyId"), {_c("type"): "HER"}).text = p.her_id
    etree.SubElement(pi, _c("PartyRef"), {_x("type"): "simple",
                                          _x("href"): p.party_ref or f"urn:her:{p.her_id}"})
    binding_ids: set[str] = set()
    for i, r in enumerate(map(Role.of, p.roles)):
        cr = etree.SubElement(pi, _c("CollaborationRole"))
        ps = r.process or national_process(r.service)
        ps_el = etree.SubElement(cr, _c("ProcessSpecification"), {
            _c("name"): ps.name, _c("version"): ps.version, _x("type"): "simple", _x("href"): ps.href})
        if ps.uuid:
            ps_el.set(_c("uuid"), ps.uuid)
        etree.SubElement(cr, _c("Role"), {_c("name"): r.name, _x("type"): "simple",
                                          _x("href"): r.href or f"{PROCESSES}#{r.name}"})
        etree.SubElement(cr, _c("ApplicationCertificateRef"), {_c("certId"): enc_id})
        sb = etree.SubElement(cr, _c("ServiceBinding"))
        etree.SubElement(sb, _c("Service"), {_c("type"): "string"}).text = r.service
        for tag, direction, actions in (("CanSend", "send", r.sends),
                                        ("CanReceive", "receive", r.receives)):
            for a in actions:
                bid = base = f"{x}_{i}_{direction}_{_NOT_NCNAME.sub('_', a)}"
                n = 1
                while bid in binding_ids:  # an action twice, or two that differ only in odd characters
                    n += 1
                    bid = f"{base}_{n}"
                binding_ids.add(bid)
                tb = etree.SubElement(etree.SubElement(sb, _c(tag)), _c("ThisPartyActionBinding"),
                                      {_c("id"): bid, _c("action"): a, _c("packageId"): payload})
                # The envelope is signed (non-repudiation, tamper-proof), the payload encrypted to the
                # receiver's certificate: both travel with the message, hence "persistent"
                etree.SubElement(tb, _c("BusinessTransactionCharacteristics"), {
                    _c("isNonRepudiationRequired"): "true", _c("isNonRepudiationReceiptRequired"): "true",
                    _c("isConfidential"): p.confidential, _c("isAuthenticated"): "persistent",
                    _c("isTamperProof"): "persistent"})
                etree.SubElement(tb, _c("ChannelId")).text = channel
    _cert_el(pi, sign_id, p.sign_cert)
    _cert_el(pi, enc_id, p.enc_cert)
    dc = etree.SubElement(pi, _c("DeliveryChannel"), {
        _c("channelId"): channel, _c("transportId"): transport, _c("docExchangeId"): exchange})
    etree.SubElement(dc, _c("MessagingCharacteristics"),
                     {_c("syncReplyMode"): "none", _c("ackRequested"): "always",
                      _c("ackSignatureRequested"): "always", _c("duplicateElimination"): "always"})
    tr = etree.SubElement(pi, _c("Transport"), {_c("transportId"): transport})
    ts = etree.SubElement(tr, _c("TransportSender"))
    etree.SubElement(ts, _c("TransportProtocol"), {_c("version"): "1.1"}).text = proto
    trc = etree.SubElement(tr, _c("TransportReceiver"))
    etree.SubElement(trc, _c("TransportProtocol"), {_c("version"): "1.1"}).text = proto
    etree.SubElement(trc, _c("Endpoint"), {_c("uri"): p.endpoint, _c("type"): "allPurpose"})
    de = etree.SubElement(pi, _c("DocExchange"), {_c("docExchangeId"): exchange})
    sbind = etree.SubElement(de, _c("ebXMLSenderBinding"), {_c("version"): "2.0"})
    rm = etree.SubElement(sbind, _c("ReliableMessaging"))
    etree.SubElement(rm, _c("Retries")).text = str(retries)
    etree.SubElement(rm, _c("RetryInterval")).text = retry_interval
    etree.SubElement(rm, _c("MessageOrderSemantics")).text = "NotGuaranteed"
    etree.SubElement(sbind, _c("PersistDuration")).text = persist
    nr = etree.SubElement(sbind, _c("SenderNonRepudiation"))
    etree.SubElement(nr, _c("NonRepudiationProtocol")).text = DS_NS
    etree.SubElement(nr, _c("HashFunction")).text = "http://www.w3.org/2001/04/xmlenc#sha256"
    etree.SubElement(nr, _c("SignatureAlgorithm")).text = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    etree.SubElement(nr, _c("SigningCertificateRef"), {_c("certId"): sign_id})

    # What the packages hold: the ebMS header, and the KITH document (encrypted unless the party says
    # isConfidential="none"); signals carry the header alone.
    header, message, enc = f"{x}_msg_header", f"{x}_message", f"{x}_enc_message"
    hp = etree.Element(_c("SimplePart"), {_c("id"): header, _c("mimetype"): "text/xml"})
    etree.SubElement(hp, _c("NamespaceSupported"), {_c("location"): "msg-header-2_0.xsd",
                                                    _c("version"): "2.0"}).text = EBMS_HEADER_NS
    mp = etree.Element(_c("SimplePart"), {_c("id"): message, _c("mimetype"): "application/xml"})
    encrypted = p.confidential != "none"
    packages = []
    for pid, inner in ((payload, [header, enc if encrypted else message]), (signal, [header])):
        pk = etree.Element(_c("Packaging"), {_c("id"): pid})
        etree.SubElement(pk, _c("ProcessingCapabilities"), {_c("parse"): "true", _c("generate"): "true"})
        cl = etree.SubElement(pk, _c("CompositeList"))
        if enc in inner:
            e = etree.SubElement(cl, _c("Encapsulation"), {
                _c("id"): enc, _c("mimetype"): "application/pkcs7-mime",
                _c("mimeparameters"): 'smime-type="enveloped-data"'})
            etree.SubElement(e, _c("Constituent"), {_c("idref"): message})
        comp = etree.SubElement(cl, _c("Composite"), {
            _c("id"): f"{pid}_mime", _c("mimetype"): "multipart/related",
            _c("mimeparameters"): "type=text/xml"})
        for idref in inner:
            etree.SubElement(comp, _c("Constituent"), {_c("idref"): idref})
        packages.append(pk)
    return pi, [hp, mp], packages


def _root(tag: str, ident: tuple[str, str]) -> etree._Element:
    root = etree.Element(_c(tag), nsmap={"cppa": CPPA_NS, "ds": DS_NS, "xlink": XLINK_NS})
    root.set(_c(ident[0]), ident[1])
    root.set(_c("version"), "2_0b")
    return root


def _agreement_head(cpa_id: str, start: datetime, end: datetime) -> etree._Element:
    root = _root("CollaborationProtocolAgreement", ("cpaid", cpa_id))
    etree.SubElement(root, _c("Status")).set(_c("value"), "agreed")
    etree.SubElement(root, _c("Start")).text = format_time(start)
    etree.SubElement(root, _c("End")).text = format_time(end)
    return root


def _serialize(root: etree._Element) -> bytes:
    etree.indent(root)  # the parts copied from a CPP bring their own whitespace: one layout for all
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def build_cpa(cpa_id: str, parties: list[CpaParty], start: datetime, end: datetime, *,
              retries: int = 4, retry_interval: str = "PT240M", persist: str = "P2D") -> bytes:
    """A CPA 2.0 between two parties in the shape of NAV's (one channel each, xmldsig rsa-sha256,
    reliable messaging, an encrypted payload package), valid against the official cpp-cpa-2_0.xsd."""
    if len(parties) != 2:
        raise ValueError(f"a CPA binds two parties, not {len(parties)}")
    prefixes = [p.prefix() for p in parties]
    if prefixes[0] == prefixes[1]:
        raise ValueError(f"both parties' ids would start with {prefixes[0]!r}: give one an id_prefix")
    root = _agreement_head(cpa_id, start, end)
    built = [_party(p, x, retries, retry_interval, persist) for p, x in zip(parties, prefixes, strict=True)]
    root.extend([pi for pi, _, _ in built])
    root.extend([part for _, parts, _ in built for part in parts])
    root.extend([pk for _, _, pks in built for pk in pks])
    return _serialize(root)


def build_cpp(party: CpaParty, *, retries: int = 4, retry_interval: str = "PT240M", persist: str = "P2D"
              ) -> bytes:
    """The party's CPP (CollaborationProtocolProfile): its side of `build_cpa`, to hand to a counterparty."""
    root = _root("CollaborationProtocolProfile", ("cppid", f"cpp_{party.her_id}"))
    pi, parts, packages = _party(party, party.prefix(), retries, retry_interval, persist)
    root.extend([pi, *parts, *packages])
    return _serialize(root)


def cpa_from_cpp(cpa_id: str, ours: CpaParty, cpp: bytes, start: datetime, end: datetime, *,
                 retries: int = 4, retry_interval: str = "PT240M", persist: str = "P2D") -> bytes:
    """A CPA between `ours` and the party of a CPP, whose PartyInfo, SimpleParts and Packagings are taken
    as written (a CPA is composed of the two parties' profiles). Our ids get a prefix that
    starts none of the CPP's values, so the two sides' xs:IDs stay unique and the CPP's IDREFs (packageId,
    defaultMshPackageId, certId, channelId) keep naming its own elements."""
    root_in = parse_bytes(cpp, max_bytes=MAX_CPA_BYTES).getroot()
    infos = root_in.findall(_c("PartyInfo"))
    if len(infos) != 1:
        raise ValueError(f"a CPP with one PartyInfo is needed, this one has {len(infos)}")
    taken = {v for el in root_in.iter(etree.Element) for v in el.attrib.values()}
    base = x = ours.prefix()
    n = 1
    while any(v.startswith(f"{x}_") for v in taken):
        n += 1
        x = f"{base}_{n}"
    root = _agreement_head(cpa_id, start, end)
    pi, parts, packages = _party(ours, x, retries, retry_interval, persist)
    root.extend([pi, copy.deepcopy(infos[0])])
    root.extend([*parts, *(copy.deepcopy(el) for el in root_in.findall(_c("SimplePart")))])
    root.extend([*packages, *(copy.deepcopy(el) for el in root_in.findall(_c("Packaging")))])
    return _serialize(root)


# ---------------------------------------------------------------- messages with one defect


def build_message(
    sender: LocalParty,
    to_her: str,
    enc_cert: x509.Certificate,
    now: datetime,
    *,
    message_type: str = "DIALOG_NOTAT",
    service: str | None = None,
    action: str | None = None,
    roles: tuple[str, str] | None = None,
    cpa_id: str | None = None,
    payload: bytes = b"<MsgHead/>",
    header_edit: Callable[[MessageHeader], None] | None = None,
    before_sign: Callable[[etree._Element], None] | None = None,
    after_sign: Callable[[etree._Element], None] | None = None,
    sign_as: LocalParty | None = None,
    sync_reply: bool = False,
    attach: bool = True,
) -> bytes:
    """A signed, encrypted ebXML package, with hooks to put exactly one defect into it."""
    n = naming.naming(message_type)
    header = MessageHeader(
        from_party=Party.her(sender.her_id, roles[0] if roles else n.from_role),
        to_party=Party.her(to_her, roles[1] if roles else n.to_role),
        cpa_id=cpa_id or naming.default_cpa_id(sender.her_id, to_her),
        conversation_id=new_id(), service=service or n.service, action=action or n.action,
        message_id=new_id(), timestamp=now, duplicate_elimination=True,
    )
    if header_edit:
        header_edit(header)
    cms = CmsCrypto().encrypt(payload, [enc_cert])
    cid = new_cid("corpus")
    root = build_envelope(header, ack_requested=not sync_reply, sync_reply=sync_reply,
                          manifest=[ManifestRef("cid:" + cid)])
    if before_sign:
        before_sign(root)
    signer = sign_as or sender
    sign_envelope(root, signer.sign_key, signer.sign_cert, {cid: cms})  # type: ignore[arg-type]
    if after_sign:
        after_sign(root)
    return build_package(serialize(root), [(cid, cms)] if attach else [(new_cid("other"), cms)])


@dataclass
class Case:
    name: str
    defect: str
    data: bytes
    code: EbmsError
    location: str
    answer: str  # error (MessageError) | fault (SOAP Fault)
    transport: str = "smtp"


def _eb(name: str) -> str:
    return f"{{{EB_NS}}}{name}"


def negative_corpus(sender: LocalParty, receiver_her: str, enc_cert: x509.Certificate, now: datetime, *,
                    cpa_id: str, expired_cpa_id: str, stranger: LocalParty) -> list[Case]:
    """One defect per case. `cpa_id`: a valid CPA between the two with DIALOG_NOTAT only;
    `expired_cpa_id`: one whose End has passed; `stranger`: a party whose certificate is not the sender's."""

    def msg(**kw: object) -> bytes:
        return build_message(sender, receiver_her, enc_cert, now, **kw)  # type: ignore[arg-type]

    def drop_message_id(h: MessageHeader) -> None:
        h.message_id = None

    def conv_not_uuid(h: MessageHeader) -> None:
        h.conversation_id = "20250124-114229-355"

    def two_hers(h: MessageHeader) -> None:
        h.from_party.party_ids.append(("HER", "99999"))

    def unknown_cpa(h: MessageHeader) -> None:
        h.cpa_id = "nav:qass:00000"

    def ttl_passed(h: MessageHeader) -> None:
        h.time_to_live = now - timedelta(minutes=5)

    def tamper(root: etree._Element) -> None:
        root.find(f"{{{SOAP_NS}}}Header/{_eb('MessageHeader')}/{_eb('Action')}").text = "DIALOG_SVAR"

    def not_ours(h: MessageHeader) -> None:
        h.to_party = Party.her("12345", h.to_party.role)
        h.cpa_id = naming.default_cpa_id(sender.her_id, "12345")

    good = msg()
    xxe_soap = (b'<?xml version="1.0"?>\n<!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
                b'<SOAP:Envelope xmlns:SOAP="' + SOAP_NS.encode() + b'"><SOAP:Header/>'
                b"<SOAP:Body>&x;</SOAP:Body></SOAP:Envelope>")
    xxe = build_package(xxe_soap, [("p@corpus", b"\x30\x00")])
    # A multipart whose closing and part boundaries never appear: the body cannot be split into parts.
    head, _, body = good.partition(b"\r\n\r\n")
    broken_mime = head.replace(b'boundary="', b'boundary="x') + b"\r\n\r\n" + body
    ttl = msg(header_edit=ttl_passed)
    return [
        Case("xxe-envelope", "DOCTYPE with an external entity in the SOAP envelope", xxe,
             EbmsError.OTHER_XML, "line 1, column 1", "fault"),
        Case("missing-messageid", "eb:MessageId left out", msg(header_edit=drop_message_id),
             EbmsError.OTHER_XML, LOC["message_id"], "error"),
        Case("conversationid-not-uuid", "ConversationId is not a UUID", msg(header_edit=conv_not_uuid),
             EbmsError.OTHER_XML, LOC["conversation_id"], "error"),
        Case("two-her-partyids", "two HER PartyIds in eb:From", msg(header_edit=two_hers),
             EbmsError.INCONSISTENT, LOC["from_party"], "error"),
        Case("unknown-cpaid", "CPAId names no known CPA", msg(header_edit=unknown_cpa),
             EbmsError.VALUE_NOT_RECOGNIZED, LOC["cpa_id"], "error"),
        Case("expired-cpa", "the CPA ended before the message's timestamp",
             msg(cpa_id=expired_cpa_id, roles=("DIALOG_NOTATsender", "DIALOG_NOTATreceiver")),
             EbmsError.INCONSISTENT, LOC["cpa_id"], "error"),
        Case("action-not-allowed", "the CPA does not let the sender's role send DIALOG_SVAR",
             msg(cpa_id=cpa_id, message_type="DIALOG_NOTAT", action="DIALOG_SVAR"),
             EbmsError.VALUE_NOT_RECOGNIZED, LOC["action"], "error"),
        Case("bad-signature", "eb:Action changed after signing", msg(after_sign=tamper),
             EbmsError.SECURITY_FAILURE, LOC["signature"] + "/ds:SignedInfo/ds:Reference[1]",
             "error"),
        Case("wrong-certificate", "signed with a valid key that is not the sender's", msg(sign_as=stranger),
             EbmsError.SECURITY_FAILURE, LOC["key_info"], "error"),
        Case("ttl-passed", "TimeToLive passed before it arrived", ttl,
             EbmsError.TIME_TO_LIVE_EXPIRED, LOC["time_to_live"], "error"),
        Case("broken-mime", "the multipart boundary never occurs in the body", broken_mime,
             EbmsError.MIME_PROBLEM, "Content-Type", "fault"),
        Case("missing-payload-part", "the Manifest href names no MIME part", msg(attach=False),
             EbmsError.MIME_PROBLEM, LOC["manifest_ref"] + "[1]", "error"),
        Case("syncreply-over-smtp", "SyncReply in a message sent by SMTP", msg(sync_reply=True),
             EbmsError.NOT_SUPPORTED, LOC["sync_reply"], "error"),
        Case("receiver-not-ours", "eb:To names a HER-id this MSH does not serve", msg(header_edit=not_ours),
             EbmsError.DELIVERY_FAILURE, LOC["to_party"], "error"),
    ]


@dataclass
class World:
    """Two parties of the shared test PKI (gp sends, lab receives), a third (hub) as a stranger, and
    the CPAs between gp and lab: one valid (DIALOG_NOTAT and its APPREC), one expired."""

    gp: LocalParty
    lab: LocalParty
    stranger: LocalParty
    gp_enc: x509.Certificate
    lab_enc: x509.Certificate
    cpas: dict[str, bytes]
    now: datetime

    def peer_of(self, who: str, endpoint: str | None = None) -> Peer:
        p, enc = (self.gp, self.gp_enc) if who == "gp" else (self.lab, self.lab_enc)
        return Peer(p.her_id, p.sign_cert, enc, endpoint)

    def repository(self) -> CpaRepository:
        return CpaRepository([load_cpa(data, name) for name, data in self.cpas.items()])

    def corpus(self) -> list[Case]:
        return negative_corpus(self.gp, self.lab.her_id, self.lab_enc, self.now, cpa_id="corpus:valid",
                               expired_cpa_id="corpus:expired", stranger=self.stranger)


def world(now: datetime | None = None, *, gp_endpoint: str = "mailto:gp@edi.test",
          lab_endpoint: str = "mailto:lab@edi.test") -> World:
    """Build a World from hub.security.testing's shared test PKI (created once per process)."""
    from datetime import UTC

    from hub.security.pki import load_identity
    from hub.security.testing import shared_test_pki

    pki = shared_test_pki()
    gp, lab, hub_ = (load_identity(pki.dir, n) for n in ("gp", "lab", "hub"))
    now = now or datetime.now(UTC)
    roles_gp = [("DIALOG_NOTATsender", "S-DIALOG_NOTAT", ["DIALOG_NOTAT"], ["APPREC"])]
    roles_lab = [("DIALOG_NOTATreceiver", "S-DIALOG_NOTAT", ["APPREC"], ["DIALOG_NOTAT"])]
    parties = [CpaParty(gp.her_id, gp.name, gp.sign_cert, gp.enc_cert, gp_endpoint, roles_gp),
               CpaParty(lab.her_id, lab.name, lab.sign_cert, lab.enc_cert, lab_endpoint, roles_lab)]
    cpas = {
        "corpus:valid": build_cpa("corpus:valid", parties, now - timedelta(days=30),
                                  now + timedelta(days=300)),
        "corpus:expired": build_cpa("corpus:expired", parties, now - timedelta(days=400),
                                    now - timedelta(days=35), retries=2),
    }
    return World(LocalParty.of(gp, gp_endpoint), LocalParty.of(lab, lab_endpoint), LocalParty.of(hub_),
                 gp.enc_cert, lab.enc_cert, cpas, now)


def write_corpus(out: Path) -> list[Case]:
    w = world()
    cases = w.corpus()
    out.mkdir(parents=True, exist_ok=True)
    for c in cases:
        (out / f"{c.name}.eml").write_bytes(c.data)
    (out / "manifest.json").write_text(json.dumps(
        [{"file": f"{c.name}.eml", "defect": c.defect, "code": str(c.code), "location": c.location,
          "answer": c.answer} for c in cases], indent=2) + "\n", encoding="utf-8")
    return cases


if __name__ == "__main__":  # pragma: no cover
    write_corpus(Path(sys.argv[1] if len(sys.argv) > 1 else "fixtures/ebxml"))
