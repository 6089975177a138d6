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
        # regexp=False: no EXSLT functions to register on every call (the paths use none).
        xp = _XPATHS[(path, ns)] = etree.XPath(path, namespaces={"k": ns}, regexp=False)
    return xp(el)  # type: ignore[return-value]


# --- MsgHead ----------------------------------------------------------------------------------------

_IDENT, _ORG, _HP = f"{_MH}Ident", f"{_MH}Organisation", f"{_MH}HealthcareProfessional"
_OTHER = f"{_MH}OtherReceiver"
_TYPEID, _ID, _ORGNAME = f"{_MH}TypeId", f"{_MH}Id", f"{_MH}OrganisationName"
_PERSON_NAMES = tuple(f"{_MH}{t}" for t in ("GivenName", "MiddleName", "FamilyName"))


def _kids(el: etree._Element, many: str = "") -> tuple[dict[object, etree._Element], list[etree._Element]]:
    """Children by tag (first one wins, as `find`), plus every child tagged `many`, in one pass.

    One pass over a handful of children is ~3x cheaper than an iterchildren(tag) per name we read.
    """
    first: dict[object, etree._Element] = {}
    multi: list[etree._Element] = []
    for c in el:
        t = c.tag
        if t == many:
            multi.append(c)
        if t not in first:
            first[t] = c
    return first, multi


def _mh_idents(el: etree._Element) -> list[tuple[str, str]]:
    return _idents_of(_kids(el, _IDENT)[1])


def _idents_of(idents: list[etree._Element]) -> list[tuple[str, str]]:
    out = []
    for ident in idents:
        # = _kids(ident): the first TypeId and Id, inline (called for every Ident the parties hold)
        typ = id_el = None
        for c in ident:
            t = c.tag
            if t == _TYPEID:
                if typ is None:
                    typ = c
            elif t == _ID and id_el is None:
                id_el = c
        out.append(((_code(typ) or ""), _text(id_el) or ""))
    return out


def _first(ids: list[tuple[str, str]], type_id: str) -> str | None:
    for t, v in ids:
        if t == type_id and v:
            return v
    return None


def _mh_person_name(hp: etree._Element, k: dict[object, etree._Element] | None = None) -> str | None:
    if k is None:
        k = _kids(hp)[0]
    names = [_text(k.get(t)) for t in _PERSON_NAMES]
    return " ".join(n for n in names if n) or None


def _mh_person(hp: etree._Element) -> tuple[str | None, str | None]:
    """(name, HER-id) of a HealthcareProfessional."""
    k, idents = _kids(hp, _IDENT)
    return _mh_person_name(hp, k), _first(_idents_of(idents), "HER")


def msghead_party(party: etree._Element | None) -> Party | None:
    """Sender/Receiver/OtherReceiver of a MsgHead -> Party (levels per AD2.6-AD2.8)."""
    if party is None:
        return None
    pk = _kids(party)[0]
    org = pk.get(_ORG)
    if org is None:
        hp = pk.get(_HP)
        if hp is None:
            return Party()
        name, her = _mh_person(hp)
        return Party(person_name=name, person_her_id=her)
    ok, org_idents = _kids(org, _IDENT)
    ids = _idents_of(org_idents)
    sub = ok.get(_ORG)
    hp = ok.get(_HP)
    dept_name = dept_her = None
    if sub is not None:
        sk, sub_idents = _kids(sub, _IDENT)
        dept_name = _text(sk.get(_ORGNAME))
        dept_her = _first(_idents_of(sub_idents), "HER")
        if hp is None:
            hp = sk.get(_HP)
    person_name, person_her = _mh_person(hp) if hp is not None else (None, None)
    return Party(_text(ok.get(_ORGNAME)), _first(ids, "HER"), _first(ids, "ENH"), dept_name, dept_her,
                 person_name, person_her)


def _mh_patient(p: etree._Element | None) -> PatientInfo | None:
    if p is None:
        return None
    k, idents = _kids(p, _IDENT)
    family = _text(k.get(f"{_MH}FamilyName"))
    given = " ".join(n for n in (_text(k.get(f"{_MH}GivenName")), _text(k.get(f"{_MH}MiddleName"))) if n)
    name = ", ".join(n for n in (family, given) if n) or None
    ids = tuple((t, v) for t, v in _idents_of(idents) if v)
    return PatientInfo(name, ids, _code(k.get(f"{_MH}DateOfBirth")), _code(k.get(f"{_MH}Sex")))


def payload_elements(root: etree._Element) -> list[etree._Element]:
    """Every element directly inside a RefDoc/Content of a MsgHead, in document order."""
    return [c for content in root.iter(f"{_MH}Content") for c in content if isinstance(c.tag, str)]


def _main_payload(root: etree._Element) -> etree._Element | None:
    for doc in root.iter(f"{_MH}RefDoc"):
        k = _kids(doc)[0]
        if _code(k.get(f"{_MH}MsgType")) in (None, "XML"):
            content = k.get(f"{_MH}Content")
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
    k, others = _kids(mi, _OTHER)
    info.type = _code(k.get(f"{_MH}Type"))
    info.mig_version = _text(k.get(f"{_MH}MIGversion"))
    info.msg_id = _text(k.get(f"{_MH}MsgId"))
    info.gen_date = _text(k.get(f"{_MH}GenDate"))
    info.sender = msghead_party(k.get(f"{_MH}Sender"))
    info.receiver = msghead_party(k.get(f"{_MH}Receiver"))
    info.copy_receivers = [p for p in map(msghead_party, others) if p]
    info.patient = _mh_patient(k.get(f"{_MH}Patient"))
    payload = _main_payload(root)
    info.payload = payload
    if payload is not None:
        info.namespace = ns_of(payload)
        info.family = family_of(info.namespace, findtext(payload, "{*}MIGversion"))
    else:
        info.namespace = MSGHEAD_NS
        info.family = family_of(MSGHEAD_NS)
    info.carrier = "msghead"


_FAMILY_MEMO: dict[tuple[str, str | None], Family | None] = {}


def family_of(namespace: str, mig_version: str | None = None) -> Family | None:
    """by_namespace, remembered: the family table is fixed, and scanning it costs more than the rest."""
    key = (namespace, mig_version)
    try:
        return _FAMILY_MEMO[key]
    except KeyError:
        fam = by_namespace(namespace, mig_version)
        if len(_FAMILY_MEMO) < 4096:  # keys come from untrusted messages: keep the memo bounded
            _FAMILY_MEMO[key] = fam
        return fam


# --- own Message root ---------------------------------------------------------------------------------


_ByName = dict[str, etree._Element]


def _lkids(el: etree._Element, *many: str) -> tuple[_ByName, dict[str, list[etree._Element]]]:
    """`_kids` by local name, i.e. `{*}name` lookups: first child per name, all children for `many`."""
    first: dict[str, etree._Element] = {}
    multi: dict[str, list[etree._Element]] = {m: [] for m in many}
    for c in el:
        t = c.tag
        if not isinstance(t, str):
            continue
        local = t[t.find("}") + 1:]
        if local not in first:
            first[local] = c
        if local in multi:
            multi[local].append(c)
    return first, multi


def _her(k: dict[str, etree._Element]) -> str | None:
    """The Id of an Inst/Dept/HCPerson (by its children) when its TypeId says HER."""
    return _text(k.get("Id")) if _code(k.get("TypeId")) == "HER" else None


_Ids = tuple[etree._Element | None, etree._Element | None, etree._Element | None]


def _name_id_type(el: etree._Element, depts: list[etree._Element] | None = None,
                  persons: list[etree._Element] | None = None) -> _Ids:
    """First Name, Id and TypeId child by local name (as `_lkids`), and every Dept/HCPerson when asked.

    One loop with no dict: this runs for every Inst, Dept, HCPerson and HCProf of a party.
    """
    name = id_el = type_el = None
    for c in el:
        t = c.tag
        if not isinstance(t, str):
            continue
        local = t[t.find("}") + 1:]
        if local == "Name":
            if name is None:
                name = c
        elif local == "Id":
            if id_el is None:
                id_el = c
        elif local == "TypeId":
            if type_el is None:
                type_el = c
        elif depts is not None and persons is not None:
            if local == "Dept":
                depts.append(c)
            elif local == "HCPerson":
                persons.append(c)
    return name, id_el, type_el


def _her_of(k: _Ids) -> str | None:
    """`_her` of a (Name, Id, TypeId) triple."""
    return _text(k[1]) if _code(k[2]) == "HER" else None


def _pick(levels: list[_Ids]) -> tuple[_Ids | None, str | None]:
    """The first level with a HER-id, else the first level (as hcp_party always chose), and its HER-id."""
    for k in levels:
        her = _her_of(k)
        if her:
            return k, her
    return (levels[0], None) if levels else (None, None)


def hcp_party(hcp: etree._Element | None) -> Party | None:
    """HCP of an own-root message (or of an AppRec): Inst with Dept/HCPerson below, or a lone HCProf."""
    if hcp is None:
        return None
    inst = prof = None
    for c in hcp:  # = _lkids(hcp): the first Inst and HCProf
        t = c.tag
        if not isinstance(t, str):
            continue
        local = t[t.find("}") + 1:]
        if local == "Inst":
            if inst is None:
                inst = c
        elif local == "HCProf" and prof is None:
            prof = c
    if inst is None:
        if prof is None:
            return Party()
        pk = _name_id_type(prof)
        return Party(person_name=_text(pk[0]), person_her_id=_her_of(pk))
    depts: list[etree._Element] = []
    persons: list[etree._Element] = []
    ik = _name_id_type(inst, depts, persons)
    dept, dept_her = _pick([_name_id_type(d) for d in depts])
    person, person_her = _pick([_name_id_type(p) for p in persons])
    return Party(
        name=_text(ik[0]),
        her_id=_her_of(ik),
        org_no=_text(ik[1]) if _code(ik[2]) == "ENH" else None,
        dept_name=_text(dept[0]) if dept is not None else None,
        dept_her_id=dept_her,
        person_name=_text(person[0]) if person is not None else None,
        person_her_id=person_her,
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
    k = _lkids(p)[0]
    ids = []
    off, typ = _text(k.get("OffId")), _code(k.get("TypeOffId"))
    if off:
        ids.append((typ or "", off))
    return PatientInfo(_text(k.get("Name")), tuple(ids), _code(k.get("DateOfBirth")), _code(k.get("Sex")))


def _from_own(root: etree._Element, info: MessageInfo, family: Family, k: dict[str, etree._Element]) -> None:
    info.type = _code(k.get("Type"))
    info.mig_version = _text(k.get("MIGversion"))
    info.msg_id = _text(k.get("MsgId"))
    info.gen_date = _code(k.get("GenDate"))  # older versions write it as a TS: V="..."
    ns = info.root_namespace
    s = _hcp_at(root, family.sender_path, ns)
    r = _hcp_at(root, family.receiver_path, ns)
    info.sender = hcp_party(s[0]) if s else None
    info.receiver = hcp_party(r[0]) if r else None
    info.copy_receivers = [p for p in map(hcp_party, _hcp_at(root, family.copy_path, ns)) if p]
    service = family.sender_path.split("/")[0] if family.sender_path else None
    pats = xpath(root, f"{service}/k:Patient", ns) if service else []
    info.patient = _own_patient(pats[0] if pats else None)


def _from_apprec(root: etree._Element, info: MessageInfo, k: dict[str, etree._Element]) -> None:
    info.type = _code(k.get("MsgType"))
    info.mig_version = _text(k.get("MIGversion"))
    info.msg_id = _text(k.get("Id"))
    info.gen_date = _text(k.get("GenDate"))
    info.sender = hcp_party(find(k.get("Sender"), "{*}HCP"))
    info.receiver = hcp_party(find(k.get("Receiver"), "{*}HCP"))


def extract_info(tree: etree._ElementTree | etree._Element) -> MessageInfo:
    """Family, version, type, ids, parties and patient of a parsed message. Never raises on odd input."""
    root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
    ns = ns_of(root)
    info = MessageInfo(root_namespace=ns, root=etree.QName(root).localname, namespace=ns, payload=root)
    if ns == MSGHEAD_NS:
        _from_msghead(root, info)
        return info
    k = _lkids(root)[0]
    mig = k.get("MIGversion")
    family = family_of(ns, None if mig is None else (mig.text or ""))
    info.family = family
    if family is None:
        # Not in the family table: still read the common header fields where a standard has them.
        info.type = _code(k.get("Type"))
        info.msg_id = _text(k.get("MsgId"))
        info.gen_date = _code(k.get("GenDate"))
        return info
    info.carrier = family.carrier
    if ns in _APPREC:
        _from_apprec(root, info, k)
    elif family.carrier == "own":
        _from_own(root, info, family, k)
    return info
