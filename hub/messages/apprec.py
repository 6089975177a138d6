"""AppRec (Applikasjonskvittering) 1.0 and 1.1: build one for any validation result, parse one received.

Rules (HIS 80415 errata 4, HITS 1168; STANDARDS.md §2): status 8258 (1 OK, 2 Avvist, 3 OK feil i
delmelding); errors from list 8221 with S = its OID, DN = the code's text, OT = what exactly is wrong;
OriginalMsgId/Id = the original's MsgId, MsgType = its Type, IssueDate = its GenDate. The AppRec goes
from the original's receiver (our `sender`) back to the original's sender (our `receiver`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from lxml import etree
from lxml.builder import ElementMaker

from hub.codes import APPREC_ERROR_OID, APPREC_ERRORS, APPREC_STATUS_TEXT, AppRecStatus
from hub.messages.families import APPREC_10_NS, APPREC_11_NS
from hub.messages.info import Party, hcp_party
from hub.validation.result import ValidationResult
from hub.validation.rules import parse_gen_date
from hub.xmlsafe import parse_bytes

__all__ = ["AppRecError", "AppRecInfo", "NotAnAppRec", "Party", "build_apprec", "parse_apprec"]

NAMESPACES = {"1.0": APPREC_10_NS, "1.1": APPREC_11_NS}
MIG_VERSIONS = {"1.0": "1.0 2004-11-21", "1.1": "v1.1 2012-02-15"}
_VERSION_OF = {ns: v for v, ns in NAMESPACES.items()}
_OT_MAX = 250  # free text stays short: receivers show it in a list


class NotAnAppRec(ValueError):
    """The bytes are not an AppRec 1.0/1.1 document."""


@dataclass(frozen=True)
class AppRecError:
    code: str  # V, e.g. E21
    text: str | None = None  # DN
    system: str | None = None  # S, the code system's OID (8221 for the general list)
    detail: str | None = None  # OT, free text


@dataclass
class AppRecInfo:
    version: str
    status: AppRecStatus | str
    status_text: str | None
    errors: list[AppRecError] = field(default_factory=list)
    original_msg_id: str | None = None
    original_msg_type: str | None = None
    original_issue_date: str | None = None
    sender: Party | None = None
    receiver: Party | None = None
    sender_role: str | None = None
    receiver_role: str | None = None
    msg_id: str | None = None
    gen_date: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in (AppRecStatus.OK, AppRecStatus.OK_PART_ERROR)


def _errors_of(result: ValidationResult) -> list[AppRecError]:
    out: list[AppRecError] = []
    seen: set[tuple[str, str]] = set()
    for p in result.errors:
        where = f" ({p.xpath}" + (f", line {p.line}" if p.line else "") + ")" if p.xpath else (
            f" (line {p.line})" if p.line else "")
        detail = (p.text + where)[:_OT_MAX]
        if (p.code, detail) in seen:
            continue
        seen.add((p.code, detail))
        out.append(AppRecError(p.code, APPREC_ERRORS.get(p.code, p.code), APPREC_ERROR_OID, detail))
    return out


def _hcp(a: ElementMaker, p: Party) -> etree._Element:
    def unit(tag: str, name: str | None, her: str | None) -> etree._Element:
        return a(tag, a("Name", name or ""), a("Id", her or ""), a("TypeId", V="HER", DN="HER-id"))

    inst = [a("Name", p.name or ""), a("Id", p.her_id or ""), a("TypeId", V="HER", DN="HER-id")]
    if p.dept_her_id or p.dept_name:
        inst.append(unit("Dept", p.dept_name, p.dept_her_id))
    if p.person_her_id or p.person_name:
        inst.append(unit("HCPerson", p.person_name, p.person_her_id))
    return a("HCP", a("Inst", *inst))


def build_apprec(result: ValidationResult, *, sender: Party, receiver: Party, version: str = "1.0",
                 status: AppRecStatus | None = None, gen_date: datetime | str | None = None,
                 msg_id: str | None = None) -> bytes:
    """The AppRec answering the message `result` describes: `sender` writes it (the original's
    receiver), `receiver` gets it (the original's sender). Status: errors -> Avvist, else OK."""
    if version not in NAMESPACES:
        raise ValueError(f"AppRec version {version!r} is not 1.0 or 1.1")
    errors = _errors_of(result)
    if status is None:
        status = AppRecStatus.REJECTED if errors else AppRecStatus.OK
    if status == AppRecStatus.OK:
        errors = []  # an OK AppRec carries no error codes; warnings stay with the validation report
    now = datetime.now().replace(microsecond=0)
    gen = gen_date if isinstance(gen_date, str) else (gen_date or now).isoformat()
    a = ElementMaker(namespace=NAMESPACES[version], nsmap={None: NAMESPACES[version]})
    v11 = version == "1.1"
    original_type = result.type or "UKJENT"
    # IssueDate is an xs:dateTime: an unreadable original has none, so the time of receipt stands in.
    issue = result.gen_date if result.gen_date and parse_gen_date(result.gen_date) else gen
    root = a(
        "AppRec",
        a("MsgType", V="APPREC", DN="Applikasjonskvittering"),
        a("MIGversion", MIG_VERSIONS[version]),
        a("GenDate", gen),
        a("Id", msg_id or str(uuid.uuid4())),
        a("Sender", *([a("Role", V="PRIM", DN="Primærmottaker")] if v11 else []), _hcp(a, sender)),
        a("Receiver", *([a("Role", V="AVS", DN="Avsender")] if v11 else []), _hcp(a, receiver)),
        a("Status", V=str(status.value), DN=APPREC_STATUS_TEXT[status]),
        *[a("Error", V=e.code, S=e.system or APPREC_ERROR_OID, DN=e.text or e.code,
            **({"OT": e.detail} if e.detail else {})) for e in errors],
        a("OriginalMsgId", a("MsgType", V=original_type, DN=original_type), a("IssueDate", issue),
          a("Id", result.msg_id or "")),
    )
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def _text(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    return (el.text or "").strip() or None


def _v(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    v = el.get("V")
    return v.strip() if v is not None else _text(el)


def parse_apprec(data: bytes) -> AppRecInfo:
    """Status, errors, the original's id/type/issue date and the parties of an AppRec 1.0 or 1.1.

    Raises hub.xmlsafe.XmlInputError for unreadable XML and NotAnAppRec for other documents.
    """
    root = parse_bytes(data).getroot()
    ns = etree.QName(root).namespace or ""
    version = _VERSION_OF.get(ns)
    if version is None or etree.QName(root).localname != "AppRec":
        raise NotAnAppRec(f"root {{{ns}}}{etree.QName(root).localname} is not an AppRec 1.0/1.1")
    n = f"{{{ns}}}"
    raw_status = _v(root.find(f"{n}Status")) or ""
    try:
        status: AppRecStatus | str = AppRecStatus(raw_status)
    except ValueError:
        status = raw_status
    errors = [AppRecError(_v(e) or "", e.get("DN"), e.get("S"), e.get("OT"))
              for e in root.findall(f"{n}Error")]
    orig = root.find(f"{n}OriginalMsgId")
    status_el = root.find(f"{n}Status")
    return AppRecInfo(
        version=version,
        status=status,
        status_text=status_el.get("DN") if status_el is not None else None,
        errors=errors,
        original_msg_id=_text(orig.find(f"{n}Id")) if orig is not None else None,
        original_msg_type=_v(orig.find(f"{n}MsgType")) if orig is not None else None,
        original_issue_date=_text(orig.find(f"{n}IssueDate")) if orig is not None else None,
        sender=hcp_party(root.find(f"{n}Sender/{n}HCP")),
        receiver=hcp_party(root.find(f"{n}Receiver/{n}HCP")),
        sender_role=_v(root.find(f"{n}Sender/{n}Role")),
        receiver_role=_v(root.find(f"{n}Receiver/{n}Role")),
        msg_id=_text(root.find(f"{n}Id")),
        gen_date=_text(root.find(f"{n}GenDate")),
    )
