"""Service, Action and Role names of the national framework (HISD 1209:2018, HIS 1037 §5.3).

Action = the message type (code list 8279), Service = "S-" + Action, roles = type + "sender"/"receiver".
Each service has two actions: the business message and APPREC, which travels with the roles reversed.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.ascii import is_ascii_digits

APPREC = "APPREC"
EBMS_SERVICE = "urn:oasis:names:tc:ebxml-msg:service"
SIGNAL_ACTIONS = ("Acknowledgment", "MessageError", "Ping", "Pong", "StatusRequest", "StatusResponse")

# HISD 1209 §4: message types with an "S-" service of their own.
MESSAGE_TYPES = (
    "EPIKRISE", "HENVISNING", "HENVISNING_NYTILSTAND", "HENVISNING_VIDERE",
    "REQ_CYT", "REQ_HIST", "REQ_KKL", "REQ_MBIO", "REQ_LAB", "REQ_RTG",
    "SVAR_CYT", "SVAR_HIST", "SVAR_KKL", "SVAR_MBIO", "SVAR_LAB", "SVAR_RTG",
    "TILBAKEMELD", "INNLEGGELSESRAPPORT", "LOG_INNLAGT", "LOG_AVMELDING", "LOG_DOD", "LOG_UTSKREVET",
    "LOG_UTSKRIVNINGSKLAR", "HELSEOPPL_SOKNAD", "HELSEOPPLYSNINGER_LEGE", "MEDISINSKE_OPPLYSNINGER",
    "ORIENTERING_TJENESTETILBUD", "UTSKRIVNINGSRAPPORT", "EPJ-EKSTRAKT", "DIALOG_FORESPORSEL",
    "DIALOG_AVVIK", "DIALOG_NOTAT", "DIALOG_SVAR", "DIALOG_STATUS_HENVISNING", "DIALOG_HELSEFAGLIG",
)  # fmt: skip


@dataclass(frozen=True)
class Naming:
    """What goes into eb:Service, eb:Action and the two eb:Role elements of one message."""

    service: str
    action: str
    from_role: str
    to_role: str


def service_for(message_type: str) -> str:
    return "S-" + message_type


def naming(message_type: str, *, apprec: bool = False) -> Naming:
    """Names for sending `message_type` (e.g. EPIKRISE), or for its AppRec back when `apprec`."""
    sender, receiver = message_type + "sender", message_type + "receiver"
    if apprec:
        return Naming(service_for(message_type), APPREC, receiver, sender)
    return Naming(service_for(message_type), message_type, sender, receiver)


def message_type_of(service: str) -> str | None:
    """The message type a national service name carries ("S-EPIKRISE" -> "EPIKRISE"), else None."""
    return service[2:] if service.startswith("S-") and len(service) > 2 else None


def expected_roles(service: str, action: str) -> tuple[str, str] | None:
    """(From role, To role) the naming rules require for this service and action; None if not national."""
    mtype = message_type_of(service)
    if mtype is None or action not in (mtype, APPREC):
        return None
    n = naming(mtype, apprec=action == APPREC)
    return n.from_role, n.to_role


def default_cpa_id(her_a: str | int, her_b: str | int) -> str:
    """CPAId without a CPA: `<lowest HER>_<highest HER>` (HIS 1037, HITS 1172 rule 12)."""
    lo, hi = sorted((int(her_a), int(her_b)))
    return f"{lo}_{hi}"


def is_default_cpa_id(cpa_id: str) -> bool:
    parts = cpa_id.split("_")
    # `<HER>_<HER>` or `<HER>_<HER>_<serial>` (the serial is tolerated in practice)
    return len(parts) in (2, 3) and all(is_ascii_digits(p) for p in parts)
