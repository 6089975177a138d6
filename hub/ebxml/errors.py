"""ebMS errors with the location of the fault: one shape for MessageError entries and SOAP Faults."""

from __future__ import annotations

from dataclasses import dataclass

from hub.codes import EbmsError

# XPaths of the envelope's parts, used as eb:location (ebMS 2.0 §4.2.3.4: an XPath to the fault).
HEADER = "/SOAP:Envelope/SOAP:Header"
MH = HEADER + "/eb:MessageHeader"
LOC = {
    "envelope": "/SOAP:Envelope",
    "header": HEADER,
    "message_header": MH,
    "from": MH + "/eb:From",
    "from_party": MH + "/eb:From/eb:PartyId",
    "from_role": MH + "/eb:From/eb:Role",
    "to": MH + "/eb:To",
    "to_party": MH + "/eb:To/eb:PartyId",
    "to_role": MH + "/eb:To/eb:Role",
    "cpa_id": MH + "/eb:CPAId",
    "conversation_id": MH + "/eb:ConversationId",
    "service": MH + "/eb:Service",
    "action": MH + "/eb:Action",
    "message_id": MH + "/eb:MessageData/eb:MessageId",
    "timestamp": MH + "/eb:MessageData/eb:Timestamp",
    "ref_to_message_id": MH + "/eb:MessageData/eb:RefToMessageId",
    "time_to_live": MH + "/eb:MessageData/eb:TimeToLive",
    "sync_reply": HEADER + "/eb:SyncReply",
    "ack_requested": HEADER + "/eb:AckRequested",
    "signature": HEADER + "/ds:Signature",
    "key_info": HEADER + "/ds:Signature/ds:KeyInfo",
    "manifest": "/SOAP:Envelope/SOAP:Body/eb:Manifest",
    "manifest_ref": "/SOAP:Envelope/SOAP:Body/eb:Manifest/eb:Reference",
}


@dataclass
class EbxmlError(Exception):
    """One ebMS error: `code` (EbmsError), where (`location`, an XPath or MIME header) and why.

    `fault` marks errors found before an ebXML header could be read (MIME, not XML): those are
    answered with a SOAP Fault rather than a MessageError (HITS 1172).
    """

    code: EbmsError
    description: str
    location: str | None = None
    severity: str = "Error"  # Error | Warning
    fault: bool = False

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"{self.code}{where}: {self.description}"


def err(code: EbmsError, where: str, description: str, **kw: object) -> EbxmlError:
    """An error at a named place of the envelope (a key of LOC) or at a literal location."""
    return EbxmlError(code, description, LOC.get(where, where), **kw)  # type: ignore[arg-type]
