"""Generated ebXML test material: CPAs for our own parties, and a negative corpus (one defect per case).

The corpus depends on keys (signatures, encryption), so it is generated for a given pair of parties;
`python -m hub.ebxml.corpus OUTDIR` writes one with the shared test PKI, plus `manifest.json`
(file, defect, expected ebMS code, location, answer kind).
"""

from __future__ import annotations

import base64
import json
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
from hub.ebxml.cpa import CPPA_NS, CpaRepository, load_cpa
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

# ---------------------------------------------------------------- CPAs


@dataclass
class CpaParty:
    her_id: str
    name: str
    sign_cert: x509.Certificate
    enc_cert: x509.Certificate
    endpoint: str
    roles: list[tuple[str, str, list[str], list[str]]]  # (role, service, can send, can receive)


def _cert_el(parent: etree._Element, cert_id: str, cert: x509.Certificate) -> None:
    c = etree.SubElement(parent, f"{{{CPPA_NS}}}Certificate")
    c.set(f"{{{CPPA_NS}}}certId", cert_id)
    ki = etree.SubElement(c, "{http://www.w3.org/2000/09/xmldsig#}KeyInfo")
    xd = etree.SubElement(ki, "{http://www.w3.org/2000/09/xmldsig#}X509Data")
    etree.SubElement(xd, "{http://www.w3.org/2000/09/xmldsig#}X509Certificate").text = base64.b64encode(
        cert.public_bytes(Encoding.DER)).decode()


def build_cpa(cpa_id: str, parties: list[CpaParty], start: datetime, end: datetime, *,
              retries: int = 4, retry_interval: str = "PT240M", persist: str = "P2D") -> bytes:
    """A CPA 2.0 in the shape of NAV's (SMTP channel, xmldsig rsa-sha256, reliable messaging)."""
    def c(name: str) -> str:
        return f"{{{CPPA_NS}}}{name}"

    root = etree.Element(c("CollaborationProtocolAgreement"),
                         nsmap={"cppa": CPPA_NS, "ds": "http://www.w3.org/2000/09/xmldsig#"})
    root.set(c("cpaid"), cpa_id)
    root.set(c("version"), "2_0b")
    etree.SubElement(root, c("Status")).set(c("value"), "agreed")
    etree.SubElement(root, c("Start")).text = format_time(start)
    etree.SubElement(root, c("End")).text = format_time(end)
    for p in parties:
        pi = etree.SubElement(root, c("PartyInfo"))
        pi.set(c("partyName"), p.name)
        pi.set(c("defaultMshChannelId"), f"ch_{p.her_id}")
        pi.set(c("defaultMshPackageId"), "package_mshsignal")
        etree.SubElement(pi, c("PartyId"), {c("type"): "HER"}).text = p.her_id
        for i, (role, service, sends, receives) in enumerate(p.roles):
            cr = etree.SubElement(pi, c("CollaborationRole"))
            etree.SubElement(cr, c("ProcessSpecification"), {c("name"): service, c("version"): "1.0"})
            etree.SubElement(cr, c("Role"), {c("name"): role})
            etree.SubElement(cr, c("ApplicationCertificateRef"), {c("certId"): f"enc_{p.her_id}"})
            sb = etree.SubElement(cr, c("ServiceBinding"))
            etree.SubElement(sb, c("Service"), {c("type"): "string"}).text = service
            for tag, actions in (("CanSend", sends), ("CanReceive", receives)):
                for a in actions:
                    can = etree.SubElement(sb, c(tag))
                    tb = etree.SubElement(can, c("ThisPartyActionBinding"),
                                          {c("id"): f"{p.her_id}_{i}_{a}", c("action"): a,
                                           c("packageId"): "package_payload"})
                    etree.SubElement(tb, c("ChannelId")).text = f"ch_{p.her_id}"
        _cert_el(pi, f"sign_{p.her_id}", p.sign_cert)
        _cert_el(pi, f"enc_{p.her_id}", p.enc_cert)
        dc = etree.SubElement(pi, c("DeliveryChannel"), {c("channelId"): f"ch_{p.her_id}",
                                                          c("transportId"): f"tr_{p.her_id}",
                                                          c("docExchangeId"): f"de_{p.her_id}"})
        etree.SubElement(dc, c("MessagingCharacteristics"),
                         {c("syncReplyMode"): "none", c("ackRequested"): "always",
                          c("ackSignatureRequested"): "always", c("duplicateElimination"): "always"})
        proto = "HTTP" if p.endpoint.startswith("http") else "SMTP"
        tr = etree.SubElement(pi, c("Transport"), {c("transportId"): f"tr_{p.her_id}"})
        ts = etree.SubElement(tr, c("TransportSender"))
        etree.SubElement(ts, c("TransportProtocol"), {c("version"): "1.1"}).text = proto
        trc = etree.SubElement(tr, c("TransportReceiver"))
        etree.SubElement(trc, c("TransportProtocol"), {c("version"): "1.1"}).text = proto
        etree.SubElement(trc, c("Endpoint"), {c("uri"): p.endpoint, c("type"): "allPurpose"})
        de = etree.SubElement(pi, c("DocExchange"), {c("docExchangeId"): f"de_{p.her_id}"})
        sbind = etree.SubElement(de, c("ebXMLSenderBinding"), {c("version"): "2.0"})
        rm = etree.SubElement(sbind, c("ReliableMessaging"))
        etree.SubElement(rm, c("Retries")).text = str(retries)
        etree.SubElement(rm, c("RetryInterval")).text = retry_interval
        etree.SubElement(rm, c("MessageOrderSemantics")).text = "NotGuaranteed"
        etree.SubElement(sbind, c("PersistDuration")).text = persist
        nr = etree.SubElement(sbind, c("SenderNonRepudiation"))
        etree.SubElement(nr, c("NonRepudiationProtocol")).text = "http://www.w3.org/2000/09/xmldsig#"
        etree.SubElement(nr, c("HashFunction")).text = "http://www.w3.org/2001/04/xmlenc#sha256"
        etree.SubElement(nr, c("SignatureAlgorithm")).text = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
        etree.SubElement(nr, c("SigningCertificateRef"), {c("certId"): f"sign_{p.her_id}"})
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


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
