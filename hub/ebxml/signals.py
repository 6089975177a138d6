"""Signals (HIS 1037 §7, HITS 1171 §8): Acknowledgment, MessageError, and the SOAP Fault for MIME faults.

A signal goes back to the sender: From/To swapped, same CPAId and ConversationId, Service
`urn:oasis:names:tc:ebxml-msg:service`, RefToMessageId = the message answered; no Manifest, never
AckRequested. Building returns an unsigned envelope; the Msh signs it with its signing certificate.
"""

from __future__ import annotations

from datetime import datetime

from lxml import etree

from hub.codes import EbmsError
from hub.ebxml.envelope import (
    EB_NS,
    NSMAP,
    SOAP_NS,
    XML_NS,
    Acknowledgment,
    Built,
    Envelope,
    ErrorEntry,
    ErrorList,
    MessageHeader,
    Party,
    RefDigest,
    build_envelope,
    build_envelope_bytes,
    new_id,
    serialize,
)
from hub.ebxml.errors import EbxmlError
from hub.ebxml.naming import EBMS_SERVICE


def _signal_header(received: MessageHeader, action: str, now: datetime) -> MessageHeader:
    # A signal's roles: the party's roles in the exchange, swapped with the parties.
    return MessageHeader(
        from_party=Party(list(received.to_party.party_ids), received.to_party.role),
        to_party=Party(list(received.from_party.party_ids), received.from_party.role),
        cpa_id=received.cpa_id or "unknown",
        conversation_id=received.conversation_id or new_id(),
        service=EBMS_SERVICE,
        action=action,
        message_id=new_id(),
        timestamp=now,
        ref_to_message_id=received.message_id,
    )


def build_acknowledgment(received: Envelope, now: datetime, references: list[RefDigest]) -> etree._Element:
    """Acknowledgment of `received`, copying the ds:Reference digests of its signature."""
    ack = Acknowledgment(timestamp=now, ref_to_message_id=received.header.message_id, references=references)
    return build_envelope(_signal_header(received.header, "Acknowledgment", now), acknowledgment=ack)


def acknowledgment_bytes(received: Envelope, now: datetime, references: list[RefDigest]) -> Built | None:
    """build_acknowledgment() serialized, and its C14N, from a template (hub.ebxml.envelope); None where
    the template does not apply (build the tree then)."""
    ack = Acknowledgment(timestamp=now, ref_to_message_id=received.header.message_id, references=references)
    return build_envelope_bytes(_signal_header(received.header, "Acknowledgment", now), acknowledgment=ack)


def build_message_error(received: MessageHeader, errors: list[EbxmlError], now: datetime) -> etree._Element:
    entries = [ErrorEntry(str(e.code), e.severity, e.location, e.description) for e in errors]
    highest = "Error" if any(e.severity == "Error" for e in errors) else "Warning"
    return build_envelope(_signal_header(received, "MessageError", now),
                          error_list=ErrorList(highest, entries))


def build_soap_fault(errors: list[EbxmlError]) -> bytes:
    """SOAP 1.1 Fault for a package that could not be read as ebXML (MIME problem, not XML).

    faultcode SOAP:Client (the sender's fault); detail carries eb:Error entries with code and location.
    """
    env = etree.Element(f"{{{SOAP_NS}}}Envelope", nsmap=NSMAP)
    body = etree.SubElement(env, f"{{{SOAP_NS}}}Body")
    fault = etree.SubElement(body, f"{{{SOAP_NS}}}Fault")
    etree.SubElement(fault, "faultcode").text = "SOAP:Client"
    etree.SubElement(fault, "faultstring").text = "; ".join(e.description for e in errors) or "error"
    detail = etree.SubElement(fault, "detail")
    for e in errors:
        x = etree.SubElement(detail, f"{{{EB_NS}}}Error")
        x.set(f"{{{EB_NS}}}errorCode", str(e.code))
        x.set(f"{{{EB_NS}}}severity", e.severity)
        if e.location:
            x.set(f"{{{EB_NS}}}location", e.location)
        d = etree.SubElement(x, f"{{{EB_NS}}}Description")
        d.set(f"{{{XML_NS}}}lang", "no")
        d.text = e.description
    return serialize(env)


def parse_soap_fault(data: bytes) -> list[ErrorEntry] | None:
    """The eb:Error entries of a SOAP Fault we (or a peer) sent; None when `data` is not a Fault."""
    from hub.xmlsafe import parse_bytes

    root = parse_bytes(data).getroot()
    fault = root.find(f"{{{SOAP_NS}}}Body/{{{SOAP_NS}}}Fault")
    if fault is None:
        return None
    out = []
    for x in fault.iter(f"{{{EB_NS}}}Error"):
        d = x.find(f"{{{EB_NS}}}Description")
        out.append(ErrorEntry(x.get(f"{{{EB_NS}}}errorCode", ""), x.get(f"{{{EB_NS}}}severity", "Error"),
                              x.get(f"{{{EB_NS}}}location"), d.text if d is not None else None))
    if not out:
        out.append(ErrorEntry(str(EbmsError.UNKNOWN), "Error", None, fault.findtext("faultstring")))
    return out
