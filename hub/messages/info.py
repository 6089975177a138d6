"""What a message is and who it is from and to, read straight from the tree (no schema validation).

Used by the validator and by the relay for routing. Two layouts (STANDARDS.md §1-3):
- MsgHead: parties are MsgInfo/Sender, MsgInfo/Receiver, OtherReceiver; the communication party is
  the deepest addressing level (HIS 1153-2 AD2.6-AD2.8: Organisation, Organisation/Organisation,
  Organisation/HealthcareProfessional); the payload is the first XML RefDoc/Content child.
- Own `Message` root (Epikrise <= 1.2, Henvisning <= 1.1, Rekvisisjon <= 1.6, Svarrapport <= 1.4):
  parties are HCP/Inst (with Dept and HCPerson below) at the family's sender/receiver paths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from lxml import etree

from hub.messages.families import APPREC_10_NS, APPREC_11_NS, MSGHEAD_NS, Family, by_namespace

_MH = f"{{{MSGHEAD_NS}}}"
_APPREC = (APPREC_10_NS, APPREC_11_NS)


@dataclass(frozen=True)
class Party:
    """A communication party: organisation (level 1), optional service (level 2) and person.

    HER-ids are kept as text: a message may carry a malformed one and we must be able to say so.
    """

    name: str | None = None
    her_id: str | None = None
    org_no: str | None = None  # ENH (Enhetsregisteret)
    dept_name: str | None = None
    dept_her_id: str | None = None
    person_name: str | None = None
    person_her_id: str | None = None

    @property
    def communication_her_id(self) -> str | None:
        """The deepest level with a HER-id: the party that receives (AD2.6-AD2.8)."""
        return self.person_her_id or self.dept_her_id or self.her_id

    @property
    def display_name(self) -> str | None:
        parts = [p for p in (self.name, self.dept_name, self.person_name) if p]
        return " / ".join(parts) if parts else None


@dataclass(frozen=True)
class PatientInfo:
    name: str | None = None  # "Family, Given" or as written
    ids: tuple[tuple[str, str], ...] = ()  # (TypeId V, Id): FNR, DNR, HNR, ...
    date_of_birth: str | None = None
    sex: str | None = None


@dataclass
class MessageInfo:
    """What a message is (family, version, type) and who it is from/to."""

    root_namespace: str
    root: str
    namespace: str | None = None  # the payload's namespace (= root's outside MsgHead)
    family: Family | None = None
    carrier: str | None = None  # msghead | own | self
    type: str | None = None  # MsgInfo/Type, Message/Type or AppRec MsgType (V, else text)
    mig_version: str | None = None
    msg_id: str | None = None
    gen_date: str | None = None
    sender: Party | None = None
    receiver: Party | None = None
    copy_receivers: list[Party] = field(default_factory=list)
    patient: PatientInfo | None = None
    payload: etree._Element | None = None  # the payload element (MsgHead) or the root

    @property
    def family_name(self) -> str | None:
        return self.family.name if self.family else None

    @property
    def version(self) -> str | None:
        return self.family.version if self.family else None

    @property
    def sender_her(self) -> str | None:
        return self.sender.communication_her_id if self.sender else None

    @property
    def receiver_her(self) -> str | None:
        return self.receiver.communication_her_id if self.receiver else None

    @property
    def patient_ids(self) -> tuple[tuple[str, str], ...]:
        return self.patient.ids if self.patient else ()


def _text(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    t = (el.text or "").strip()
    return t or None


def _code(el: etree._Element | None) -> str | None:
    """A KITH coded value: the V attribute, else the text (older messages write plain text)."""
    if el is None:
        return None
    v = el.get("V")
    return v.strip() if v is not None else _text(el)


def ns_of(el: etree._Element) -> str:
    tag = el.tag
    return tag[1:tag.index("}")] if isinstance(tag, str) and tag.startswith("{") else ""


_STEP = re.compile(r"(?:\{[^}]*\})?[^/{]+")
_STEPS: dict[str, list[str]] = {}


def find(el: etree._Element | None, path: str) -> etree._Element | None:
    """Child path `a/b` (Clark names or {*}): iterchildren is C-level, twice as fast as ElementPath."""
    steps = _STEPS.get(path)
    if steps is None:
        steps = _STEPS[path] = _STEP.findall(path)  # Clark names hold "/" themselves: split around them
    for step in steps:
        if el is None:
            return None
        el = next(el.iterchildren(step), None)
    return el


def findall(el: etree._Element, tag: str) -> list[etree._Element]:
    return list(el.iterchildren(tag))


def findtext(el: etree._Element, path: str) -> str | None:
    found = find(el, path)
    return None if found is None else (found.text or "")


_XPATHS: dict[tuple[str, str], etree.XPath] = {}


def xpath(el: etree._Element, path: str, ns: str) -> list[etree._Element]:
    """`path` with prefix k = `ns`, compiled once (compiling costs more than evaluating)."""
    xp = _XPATHS.get((path, ns))
    if xp is None:
        xp = _XPATHS[(path, ns)] = etree.XPath(path, namespaces={"k": ns})
    return xp(el)  # type: ignore[return-value]


# --- MsgHead ----------------------------------------------------------------------------------------


def _mh_idents(el: etree._Element) -> list[tuple[str, str]]:
    out = []
    for ident in findall(el, f"{_MH}Ident"):
        out.append(((_code(find(ident, f"{_MH}TypeId")) or ""), _text(find(ident, f"{_MH}Id")) or ""))
    return out


def _first(ids: list[tuple[str, str]], type_id: str) -> str | None:
    return next((v for t, v in ids if t == type_id and v), None)


def _mh_person_name(hp: etree._Element) -> str | None:
    names = [_text(find(hp, f"{_MH}{t}")) for t in ("GivenName", "MiddleName", "FamilyName")]
    return " ".join(n for n in names if n) or None


def msghead_party(party: etree._Element | None) -> Party | None:
    """Sender/Receiver/OtherReceiver of a MsgHead -> Party (levels per AD2.6-AD2.8)."""
    if party is None:
        return None
    org = find(party, f"{_MH}Organisation")
    if org is None:
        hp = find(party, f"{_MH}HealthcareProfessional")
        if hp is None:
            return Party()
        return Party(person_name=_mh_person_name(hp), person_her_id=_first(_mh_idents(hp), "HER"))
    ids = _mh_idents(org)
    sub = find(org, f"{_MH}Organisation")
    hp = find(org, f"{_MH}HealthcareProfessional")
    if hp is None and sub is not None:
        hp = find(sub, f"{_MH}HealthcareProfessional")
    sub_ids = _mh_idents(sub) if sub is not None else []
    hp_ids = _mh_idents(hp) if hp is not None else []
    return Party(
        name=_text(find(org, f"{_MH}OrganisationName")),
        her_id=_first(ids, "HER"),
        org_no=_first(ids, "ENH"),
        dept_name=_text(find(sub, f"{_MH}OrganisationName")) if sub is not None else None,
        dept_her_id=_first(sub_ids, "HER"),
        person_name=_mh_person_name(hp) if hp is not None else None,
        person_her_id=_first(hp_ids, "HER"),
    )


def _mh_patient(p: etree._Element | None) -> PatientInfo | None:
    if p is None:
        return None
    family = _text(find(p, f"{_MH}FamilyName"))
    given = " ".join(n for n in (_text(find(p, f"{_MH}GivenName")), _text(find(p, f"{_MH}MiddleName"))) if n)
    name = ", ".join(n for n in (family, given) if n) or None
    ids = tuple((t, v) for t, v in _mh_idents(p) if v)
    return PatientInfo(name, ids, _code(find(p, f"{_MH}DateOfBirth")), _code(find(p, f"{_MH}Sex")))


def payload_elements(root: etree._Element) -> list[etree._Element]:
    """Every element directly inside a RefDoc/Content of a MsgHead, in document order."""
    return [c for content in root.iter(f"{_MH}Content") for c in content if isinstance(c.tag, str)]


def _main_payload(root: etree._Element) -> etree._Element | None:
    for doc in root.iter(f"{_MH}RefDoc"):
        if _code(find(doc, f"{_MH}MsgType")) in (None, "XML"):
            content = find(doc, f"{_MH}Content")
            if content is not None:
                for c in content:
                    if isinstance(c.tag, str):
                        return c
    found = payload_elements(root)
    return found[0] if found else None


def _from_msghead(root: etree._Element, info: MessageInfo) -> None:
    mi = find(root, f"{_MH}MsgInfo")
    if mi is None:
        return
    info.type = _code(find(mi, f"{_MH}Type"))
    info.mig_version = _text(find(mi, f"{_MH}MIGversion"))
    info.msg_id = _text(find(mi, f"{_MH}MsgId"))
    info.gen_date = _text(find(mi, f"{_MH}GenDate"))
    info.sender = msghead_party(find(mi, f"{_MH}Sender"))
    info.receiver = msghead_party(find(mi, f"{_MH}Receiver"))
    info.copy_receivers = [p for p in map(msghead_party, findall(mi, f"{_MH}OtherReceiver")) if p]
    info.patient = _mh_patient(find(mi, f"{_MH}Patient"))
    payload = _main_payload(root)
    info.payload = payload
    if payload is not None:
        info.namespace = ns_of(payload)
        info.family = by_namespace(info.namespace, findtext(payload, "{*}MIGversion"))
    else:
        info.namespace = MSGHEAD_NS
        info.family = by_namespace(MSGHEAD_NS)
    info.carrier = "msghead"


# --- own Message root ---------------------------------------------------------------------------------


def hcp_party(hcp: etree._Element | None) -> Party | None:
    """HCP of an own-root message (or of an AppRec): Inst with Dept/HCPerson below, or a lone HCProf."""
    if hcp is None:
        return None
    inst = find(hcp, "{*}Inst")
    if inst is None:
        prof = find(hcp, "{*}HCProf")
        if prof is None:
            return Party()
        typ = _code(find(prof, "{*}TypeId"))
        return Party(person_name=_text(find(prof, "{*}Name")),
                     person_her_id=_text(find(prof, "{*}Id")) if typ == "HER" else None)

    def her(el: etree._Element) -> str | None:
        return _text(find(el, "{*}Id")) if _code(find(el, "{*}TypeId")) == "HER" else None

    inst_type = _code(find(inst, "{*}TypeId"))
    depts = [d for d in findall(inst, "{*}Dept") if her(d)] or findall(inst, "{*}Dept")
    persons = [p for p in findall(inst, "{*}HCPerson") if her(p)] or findall(inst, "{*}HCPerson")
    dept = depts[0] if depts else None
    person = persons[0] if persons else None
    return Party(
        name=_text(find(inst, "{*}Name")),
        her_id=her(inst),
        org_no=_text(find(inst, "{*}Id")) if inst_type == "ENH" else None,
        dept_name=_text(find(dept, "{*}Name")) if dept is not None else None,
        dept_her_id=her(dept) if dept is not None else None,
        person_name=_text(find(person, "{*}Name")) if person is not None else None,
        person_her_id=her(person) if person is not None else None,
    )


def _hcp_at(root: etree._Element, inst_path: str | None, ns: str) -> list[etree._Element]:
    if not inst_path:
        return []
    # The family paths name .../HCP/Inst; the party is its HCP (which may hold an HCProf instead).
    hcp_path = inst_path.removesuffix("/k:Inst")
    return xpath(root, hcp_path, ns)


def _own_patient(p: etree._Element | None) -> PatientInfo | None:
    if p is None:
        return None
    ids = []
    off, typ = _text(find(p, "{*}OffId")), _code(find(p, "{*}TypeOffId"))
    if off:
        ids.append((typ or "", off))
    return PatientInfo(_text(find(p, "{*}Name")), tuple(ids), _code(find(p, "{*}DateOfBirth")),
                       _code(find(p, "{*}Sex")))


def _from_own(root: etree._Element, info: MessageInfo, family: Family) -> None:
    info.type = _code(find(root, "{*}Type"))
    info.mig_version = _text(find(root, "{*}MIGversion"))
    info.msg_id = _text(find(root, "{*}MsgId"))
    info.gen_date = _code(find(root, "{*}GenDate"))  # older versions write it as a TS: V="..."
    ns = info.root_namespace
    s = _hcp_at(root, family.sender_path, ns)
    r = _hcp_at(root, family.receiver_path, ns)
    info.sender = hcp_party(s[0]) if s else None
    info.receiver = hcp_party(r[0]) if r else None
    info.copy_receivers = [p for p in map(hcp_party, _hcp_at(root, family.copy_path, ns)) if p]
    service = family.sender_path.split("/")[0] if family.sender_path else None
    pats = xpath(root, f"{service}/k:Patient", ns) if service else []
    info.patient = _own_patient(pats[0] if pats else None)


def _from_apprec(root: etree._Element, info: MessageInfo) -> None:
    info.type = _code(find(root, "{*}MsgType"))
    info.mig_version = _text(find(root, "{*}MIGversion"))
    info.msg_id = _text(find(root, "{*}Id"))
    info.gen_date = _text(find(root, "{*}GenDate"))
    info.sender = hcp_party(find(root, "{*}Sender/{*}HCP"))
    info.receiver = hcp_party(find(root, "{*}Receiver/{*}HCP"))


def extract_info(tree: etree._ElementTree | etree._Element) -> MessageInfo:
    """Family, version, type, ids, parties and patient of a parsed message. Never raises on odd input."""
    root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
    ns = ns_of(root)
    info = MessageInfo(root_namespace=ns, root=etree.QName(root).localname, namespace=ns, payload=root)
    if ns == MSGHEAD_NS:
        _from_msghead(root, info)
        return info
    family = by_namespace(ns, findtext(root, "{*}MIGversion"))
    info.family = family
    if family is None:
        # Not in the family table: still read the common header fields where a standard has them.
        info.type = _code(find(root, "{*}Type"))
        info.msg_id = _text(find(root, "{*}MsgId"))
        info.gen_date = _code(find(root, "{*}GenDate"))
        return info
    info.carrier = family.carrier
    if ns in _APPREC:
        _from_apprec(root, info)
    elif family.carrier == "own":
        _from_own(root, info, family)
    return info
