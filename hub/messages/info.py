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

from hub.ascii import is_ascii_digits
from hub.messages.families import APPREC_10_NS, APPREC_11_NS, FAMILIES, MSGHEAD_NS, Family, by_namespace

_MH = f"{{{MSGHEAD_NS}}}"
_APPREC = (APPREC_10_NS, APPREC_11_NS)


Ids = tuple[tuple[str, str], ...]  # (type, id) as the message writes them: ("ENH", "974703300"), ...

# Identifier types that name a department/service below an organisation (KITH 9051): RSH (the
# health-enterprise register), LAV (a local id), LIN/LOK (lab/location codes).
DEPT_ID_TYPES = ("RSH", "LAV", "LIN", "LOK")


@dataclass(frozen=True)
class Party:
    """A communication party: organisation (level 1), optional service (level 2) and person.

    Each level keeps every identifier it carries as (type, id): MsgHead's Ident (TypeId, Id), an
    own-root Inst/Dept/HCPerson/HCProf's Id/TypeId and AdditionalId (Type, Id). HER-ids written with
    dots as digit groups (`369.767`, KITH examples do) are kept as digits (`369767`); anything else is
    kept as text: a message may carry a malformed one and we must be able to say so.
    her_id/dept_her_id/person_her_id: the first HER-id of each level; org_no: the first ENH.
    """

    name: str | None = None
    her_id: str | None = None
    org_no: str | None = None  # ENH (Enhetsregisteret)
    dept_name: str | None = None
    dept_her_id: str | None = None
    person_name: str | None = None
    person_her_id: str | None = None
    ids: Ids = ()  # the organisation's identifiers
    dept_ids: Ids = ()  # the department's/service's (level 2)
    person_ids: Ids = ()  # the person's (HPR, HER, FNR, ...)
    # (level, type) of each identifier written with a type (or an Id element) but no value: an empty
    # `<Id></Id>` claims an identifier and gives none (level: organisation, department or person).
    empty_ids: tuple[tuple[str, str], ...] = ()

    @property
    def communication_her_id(self) -> str | None:
        """The deepest level with a HER-id: the party that receives (AD2.6-AD2.8)."""
        return self.person_her_id or self.dept_her_id or self.her_id

    @property
    def identified(self) -> bool:
        """Some level carries an identifier with a value (HER, ENH, RSH, LAV, HPR, ...)."""
        return bool(self.ids or self.dept_ids or self.person_ids)

    @property
    def dept_ident(self) -> tuple[str, str] | None:
        """The department's own id other than a HER-id, as (type, id): RSH, LAV, LIN or LOK."""
        for t, v in self.dept_ids:
            if t in DEPT_ID_TYPES:
                return t, v
        return None

    @property
    def dept_id(self) -> str | None:
        """The department id of dept_ident (for routing by organisation number + department)."""
        d = self.dept_ident
        return d[1] if d else None

    @property
    def hpr(self) -> str | None:
        """The person's HPR number (Helsepersonellregisteret)."""
        return next((v for t, v in self.person_ids if t == "HPR"), None)

    @property
    def display_name(self) -> str | None:
        parts = [p for p in (self.name, self.dept_name, self.person_name) if p]
        return " / ".join(parts) if parts else None

    def levels(self) -> list[tuple[str, str | None, Ids]]:
        """(level, name, identifiers) of each level present: organisation, department, person."""
        out = []
        for level, name, ids in (("organisation", self.name, self.ids), ("department", self.dept_name,
                                  self.dept_ids), ("person", self.person_name, self.person_ids)):
            if name or ids or any(lv == level for lv, _t in self.empty_ids):
                out.append((level, name, ids))
        return out

    def to_dict(self) -> dict[str, object]:
        """For --json: the communication party's HER-id, org_no, dept id and every level's identifiers
        (an identifier written without a value has id null)."""
        return {
            "her_id": self.communication_her_id, "org_no": self.org_no, "dept_id": self.dept_id,
            "hpr": self.hpr,
            "levels": [{"level": level, "name": name,
                        "ids": [{"type": t, "id": v} for t, v in ids]
                        + [{"type": t, "id": None} for lv, t in self.empty_ids if lv == level]}
                       for level, name, ids in self.levels()],
        }


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
_GIVEN, _MIDDLE, _FAMILY = f"{_MH}GivenName", f"{_MH}MiddleName", f"{_MH}FamilyName"
_MSGINFO, _TYPE, _MIG, _MSGID, _GENDATE = (f"{_MH}{t}" for t in ("MsgInfo", "Type", "MIGversion", "MsgId",
                                                                    "GenDate"))
_SENDER, _RECEIVER, _PATIENT = f"{_MH}Sender", f"{_MH}Receiver", f"{_MH}Patient"
_DOB, _SEX = f"{_MH}DateOfBirth", f"{_MH}Sex"
_REFDOC, _CONTENT, _MSGTYPE = f"{_MH}RefDoc", f"{_MH}Content", f"{_MH}MsgType"

_new = object.__new__
_set = object.__setattr__


def _party(name: str | None, her_id: str | None, org_no: str | None, dept_name: str | None,
           dept_her_id: str | None, person_name: str | None, person_her_id: str | None,
           ids: Ids = (), dept_ids: Ids = (), person_ids: Ids = (),
           empty_ids: tuple[tuple[str, str], ...] = ()) -> Party:
    """Party(...) as the dataclass makes it, minus its frozen __init__'s object.__setattr__ per field."""
    p = _new(Party)
    _set(p, "__dict__", {"name": name, "her_id": her_id, "org_no": org_no, "dept_name": dept_name,
                         "dept_her_id": dept_her_id, "person_name": person_name,
                         "person_her_id": person_her_id, "ids": ids, "dept_ids": dept_ids,
                         "person_ids": person_ids, "empty_ids": empty_ids})
    return p


_Empty = tuple[str, ...]  # the types of a level's identifiers that have no value


def _empties(org: _Empty, dept: _Empty, person: _Empty) -> tuple[tuple[str, str], ...]:
    if not (org or dept or person):
        return ()
    return (*(("organisation", t) for t in org), *(("department", t) for t in dept),
            *(("person", t) for t in person))


def her_digits(text: str) -> str:
    """A HER-id as digits: `369.767` (digit groups separated by dots, as KITH examples write HER-ids)
    becomes `369767`; any other text is returned as it is (the ident rules judge it)."""
    if "." in text:
        digits = text.replace(".", "")
        if is_ascii_digits(digits) and text[0] != "." and text[-1] != "." and ".." not in text:
            return digits
    return text


def _first_of(ids: Ids, type_id: str) -> str | None:
    for t, v in ids:
        if t == type_id:
            return v
    return None


def _patient(name: str | None, ids: tuple[tuple[str, str], ...], date_of_birth: str | None,
             sex: str | None) -> PatientInfo:
    """PatientInfo(...) without the frozen __init__, as _party."""
    p = _new(PatientInfo)
    _set(p, "__dict__", {"name": name, "ids": ids, "date_of_birth": date_of_birth, "sex": sex})
    return p


# (TypeId or TypeOffId element, its code or "", first child of its holder with local name Id, whether
# that holder identifies an organisation (Organisation/Inst/Dept), whether the Id is known): every TypeId
# extraction reads, so the validator's ident rules need not look each up again (rules._vet_typeids).
TypeIdSeen = tuple[etree._Element, str, etree._Element | None, bool, bool]
_Rec = list[TypeIdSeen] | None


def _ident_pair(ident: etree._Element, rec: _Rec = None, org: bool = False) -> tuple[str, str]:
    """(code of the first TypeId or "", text of the first Id or "") of a MsgHead Ident.

    Children are read from a slice (el[:]) in the loops here: one C call makes every proxy, which costs
    less than lxml's child iterator stepping through them.
    """
    typ = id_el = any_id = None
    for c in ident[:]:
        t = c.tag
        if t == _TYPEID:
            if typ is None:
                typ = c
        elif t == _ID:
            if id_el is None:
                id_el = c
            if any_id is None:
                any_id = c
        elif any_id is None and isinstance(t, str) and (t == "Id" or t.endswith("}Id")):
            any_id = c  # the ident rules read the first Id of any namespace
    # = (_code(typ) or "", _text(id_el) or ""), inline: this runs for every Ident of every party
    if typ is None:
        code = ""
    else:
        v = typ.get("V")
        code = v.strip() if v is not None else (typ.text or "").strip()
        if rec is not None:
            rec.append((typ, code, any_id, org, True))
    return code, (id_el.text or "").strip() if id_el is not None else ""


def _level_ids(idents: list[etree._Element], rec: _Rec = None, org: bool = False) -> tuple[Ids, _Empty]:
    """(TypeId code, Id) of every Ident with an Id, HER-ids as digits (her_digits); the TypeId codes of
    those without one."""
    out = []
    empty: _Empty = ()
    for ident in idents:
        t, v = _ident_pair(ident, rec, org)
        if v:
            out.append((t, her_digits(v) if t == "HER" else v))
        else:
            empty += (t,)
    return tuple(out), empty


def _mh_person(hp: etree._Element, rec: _Rec = None) -> tuple[str | None, tuple[Ids, _Empty]]:
    """(name, identifiers) of a HealthcareProfessional: one pass over its children."""
    given = middle = family = None
    idents = []
    for c in hp[:]:
        t = c.tag
        if t == _IDENT:
            idents.append(c)
        elif t == _FAMILY:
            if family is None:
                family = c
        elif t == _GIVEN:
            if given is None:
                given = c
        elif t == _MIDDLE and middle is None:
            middle = c
    name = " ".join([n for n in (_text(given), _text(middle), _text(family)) if n]) or None
    return name, _level_ids(idents, rec)


def msghead_party(party: etree._Element | None) -> Party | None:
    """Sender/Receiver/OtherReceiver of a MsgHead -> Party (levels per AD2.6-AD2.8)."""
    return _msghead_party(party)


def _msghead_party(party: etree._Element | None, rec: _Rec = None) -> Party | None:
    """msghead_party, noting the TypeIds it reads in `rec`.

    Each level is read in one pass over its children (first child per name, as `find`): a pass
    over a handful of children costs less than an iterchildren(tag) per name we read.
    """
    if party is None:
        return None
    org = hp = None
    for c in party:
        t = c.tag
        if t == _ORG:
            org = c
            break  # the party-level HealthcareProfessional only counts without an Organisation
        if t == _HP and hp is None:
            hp = c
    if org is None:
        if hp is None:
            return Party()
        name, (pids, pempty) = _mh_person(hp, rec)
        return _party(None, None, None, None, None, name, _first_of(pids, "HER"), person_ids=pids,
                      empty_ids=_empties((), (), pempty))
    org_name = sub = hp = None
    idents = []
    for c in org[:]:
        t = c.tag
        if t == _IDENT:
            idents.append(c)
        elif t == _ORGNAME:
            if org_name is None:
                org_name = c
        elif t == _ORG:
            if sub is None:
                sub = c
        elif t == _HP and hp is None:
            hp = c
    ids, empty = _level_ids(idents, rec, True)
    dept_name = None
    dept_ids: Ids = ()
    dept_empty: _Empty = ()
    if sub is not None:
        sub_name = sub_hp = None
        sub_idents = []
        for c in sub[:]:
            t = c.tag
            if t == _IDENT:
                sub_idents.append(c)
            elif t == _ORGNAME:
                if sub_name is None:
                    sub_name = c
            elif t == _HP and sub_hp is None:
                sub_hp = c
        dept_name = _text(sub_name)
        dept_ids, dept_empty = _level_ids(sub_idents, rec, True)
        if hp is None:
            hp = sub_hp
    person_name, (person_ids, person_empty) = _mh_person(hp, rec) if hp is not None else (None, ((), ()))
    return _party(_text(org_name), _first_of(ids, "HER"), _first_of(ids, "ENH"), dept_name,
                  _first_of(dept_ids, "HER"), person_name, _first_of(person_ids, "HER"), ids, dept_ids,
                  person_ids, _empties(empty, dept_empty, person_empty))


def _mh_patient(p: etree._Element | None, rec: _Rec = None) -> PatientInfo | None:
    if p is None:
        return None
    family = given_el = middle = dob = sex = None
    idents = []
    for c in p[:]:  # one pass: the first child of each name, every Ident
        t = c.tag
        if t == _IDENT:
            idents.append(c)
        elif t == _FAMILY:
            if family is None:
                family = c
        elif t == _GIVEN:
            if given_el is None:
                given_el = c
        elif t == _MIDDLE:
            if middle is None:
                middle = c
        elif t == _DOB:
            if dob is None:
                dob = c
        elif t == _SEX and sex is None:
            sex = c
    # "Family, Given Middle" without the empty parts (plain ifs: no generator per message)
    family_name, given, mid = _text(family), _text(given_el), _text(middle)
    if mid:
        given = f"{given} {mid}" if given else mid
    if family_name and given:
        name: str | None = f"{family_name}, {given}"
    else:
        name = family_name or given or None
    ids = []
    for ident in idents:
        t, v = _ident_pair(ident, rec)
        if v:
            ids.append((t, v))
    return _patient(name, tuple(ids), _code(dob), _code(sex))


def payload_elements(root: etree._Element) -> list[etree._Element]:
    """Every element directly inside a RefDoc/Content of a MsgHead, in document order."""
    return [c for content in root.iter(_CONTENT) for c in content if isinstance(c.tag, str)]


def _main_payload(refdocs: list[etree._Element], payloads: list[etree._Element]) -> etree._Element | None:
    """The first element in the first RefDoc (MsgType XML or none) that has one, else the first payload."""
    for doc in refdocs:
        msg_type = content = None
        for c in doc[:]:
            t = c.tag
            if t == _MSGTYPE:
                if msg_type is None:
                    msg_type = c
            elif t == _CONTENT and content is None:
                content = c
        if content is not None and _code(msg_type) in (None, "XML"):
            for c in content:
                if isinstance(c.tag, str):
                    return c
    return payloads[0] if payloads else None


class Scan:
    """What extraction read on the way that the validator's schema plan needs too (no second walk).

    root_mig: findtext(root, "{*}MIGversion"); payloads: payload_elements(root) (MsgHead only, else None);
    payload_mig: findtext(payload, "{*}MIGversion") of `payload`, the main payload (MsgHead only).
    """

    __slots__ = ("root_mig", "payloads", "payload", "payload_mig", "typeids")

    def __init__(self, typeids: bool = True) -> None:
        self.root_mig: str | None = None
        self.payloads: list[etree._Element] | None = None
        self.payload: etree._Element | None = None
        self.payload_mig: str | None = None
        # every TypeId read on the way, or None: not recorded (see scan_info)
        self.typeids: list[TypeIdSeen] | None = [] if typeids else None


def _from_msghead(root: etree._Element, info: MessageInfo, scan: Scan) -> None:
    mi = None
    for c in root:  # = find(root, MsgInfo), and the root's own {*}MIGversion for the schema plan
        t = c.tag
        if t == _MSGINFO:
            if mi is None:
                mi = c
        elif scan.root_mig is None and isinstance(t, str) and (
                t == "MIGversion" or t.endswith("}MIGversion")):
            scan.root_mig = c.text or ""
    if mi is None:
        return
    typ = mig = msg_id = gen_date = sender = receiver = patient = None
    others = []
    for c in mi[:]:  # one pass: the first child of each name (as `find`), every OtherReceiver
        t = c.tag
        if t == _TYPE:
            if typ is None:
                typ = c
        elif t == _MIG:
            if mig is None:
                mig = c
        elif t == _GENDATE:
            if gen_date is None:
                gen_date = c
        elif t == _MSGID:
            if msg_id is None:
                msg_id = c
        elif t == _SENDER:
            if sender is None:
                sender = c
        elif t == _RECEIVER:
            if receiver is None:
                receiver = c
        elif t == _OTHER:
            others.append(c)
        elif t == _PATIENT and patient is None:
            patient = c
    info.type = _code(typ)
    info.mig_version = _text(mig)
    info.msg_id = _text(msg_id)
    info.gen_date = _text(gen_date)
    rec = scan.typeids
    info.sender = _msghead_party(sender, rec)
    info.receiver = _msghead_party(receiver, rec)
    info.copy_receivers = [p for p in (_msghead_party(o, rec) for o in others) if p]
    info.patient = _mh_patient(patient, rec)
    refdocs = []
    payloads = []
    for el in root.iter(_REFDOC, _CONTENT):  # one walk for both (document order kept within each)
        if el.tag == _CONTENT:
            payloads.extend(c for c in el if isinstance(c.tag, str))
        else:
            refdocs.append(el)
    payload = _main_payload(refdocs, payloads)
    scan.payloads = payloads
    scan.payload = payload
    info.payload = payload
    if payload is not None:
        info.namespace = ns_of(payload)
        scan.payload_mig = findtext(payload, "{*}MIGversion")
        info.family = family_of(info.namespace, scan.payload_mig)
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




# (Name element, identifiers, types of identifiers without a value) of an Inst, Dept, HCPerson or HCProf.
_Level = tuple[etree._Element | None, Ids, _Empty]


def _first_two(el: etree._Element, a: str, b: str) -> tuple[etree._Element | None, etree._Element | None]:
    """The first child named `a` and the first named `b`, by local name, in one pass over a slice."""
    first_a = first_b = None
    for c in el[:]:
        t = c.tag
        if not isinstance(t, str):
            continue
        local = t[t.find("}") + 1:]
        if local == a:
            if first_a is None:
                first_a = c
        elif local == b and first_b is None:
            first_b = c
    return first_a, first_b


def _additional_id(el: etree._Element) -> tuple[str, str]:
    """(Type code, Id) of an own-root AdditionalId ("" for what it lacks)."""
    id_el, type_el = _first_two(el, "Id", "Type")
    v = _text(id_el) or ""
    typ = _code(type_el) or ""
    return typ, her_digits(v) if typ == "HER" else v


def _level(el: etree._Element, depts: list[etree._Element] | None = None,
           persons: list[etree._Element] | None = None, rec: _Rec = None, org: bool = False) -> _Level:
    """First Name, the Id/TypeId pair and every AdditionalId (by local name), and every Dept/HCPerson
    when asked.

    One loop with no dict: this runs for every Inst, Dept, HCPerson and HCProf of a party.
    """
    name = id_el = type_el = None
    extra = None
    for c in el[:]:
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
        elif local == "AdditionalId":
            if extra is None:
                extra = [c]
            else:
                extra.append(c)
        elif depts is not None and persons is not None:
            if local == "Dept":
                depts.append(c)
            elif local == "HCPerson":
                persons.append(c)
    code = _code(type_el)
    if rec is not None and type_el is not None:
        rec.append((type_el, code or "", id_el, org, True))
    v = _text(id_el)
    empty: _Empty = ()
    if v:
        ids: list[tuple[str, str]] = [(code or "", her_digits(v) if code == "HER" else v)]
    else:
        ids = []
        if id_el is not None or type_el is not None:
            empty = (code or "",)
    if extra is not None:
        for a in extra:
            pair = _additional_id(a)
            if pair[1]:
                ids.append(pair)
            else:
                empty += (pair[0],)
    return name, tuple(ids), empty


def _pick(levels: list[etree._Element], rec: _Rec, org: bool) -> tuple[_Level | None, str | None]:
    """The first level with a HER-id, else the first level (as hcp_party always chose), and its HER-id."""
    first = None
    for el in levels:
        k = _level(el, rec=rec, org=org)
        her = _first_of(k[1], "HER")
        if her:
            return k, her
        if first is None:
            first = k
    return first, None


def hcp_party(hcp: etree._Element | None) -> Party | None:
    """HCP of an own-root message (or of an AppRec): Inst with Dept/HCPerson below, or a lone HCProf."""
    return _hcp_party(hcp)


def _hcp_party(hcp: etree._Element | None, rec: _Rec = None) -> Party | None:
    """hcp_party, noting the TypeIds it reads in `rec`."""
    if hcp is None:
        return None
    inst, prof = _first_two(hcp, "Inst", "HCProf")
    if inst is None:
        if prof is None:
            return Party()
        pname, pids, pempty = _level(prof, rec=rec)
        return _party(None, None, None, None, None, _text(pname), _first_of(pids, "HER"), person_ids=pids,
                      empty_ids=_empties((), (), pempty))
    depts: list[etree._Element] = []
    persons: list[etree._Element] = []
    iname, ids, empty = _level(inst, depts, persons, rec, True)
    dept, dept_her = _pick(depts, rec, True)
    person, person_her = _pick(persons, rec, False)
    return _party(
        _text(iname),
        _first_of(ids, "HER"),
        _first_of(ids, "ENH"),
        _text(dept[0]) if dept is not None else None,
        dept_her,
        _text(person[0]) if person is not None else None,
        person_her,
        ids,
        dept[1] if dept is not None else (),
        person[1] if person is not None else (),
        _empties(empty, dept[2] if dept is not None else (), person[2] if person is not None else ()),
    )


def _hcp_at(root: etree._Element, inst_path: str | None, ns: str) -> list[etree._Element]:
    if not inst_path:
        return []
    # The family paths name .../HCP/Inst; the party is its HCP (which may hold an HCProf instead).
    hcp_path = inst_path.removesuffix("/k:Inst")
    return xpath(root, hcp_path, ns)


_PATIENT_NAMES = frozenset({"Name", "OffId", "TypeOffId", "DateOfBirth", "Sex"})


def _own_patient(p: etree._Element | None, rec: _Rec = None) -> PatientInfo | None:
    if p is None:
        return None
    k: dict[str, etree._Element] = {}
    for c in p:  # first child per local name read; a Patient may hold many results: stop once all seen
        t = c.tag
        if not isinstance(t, str):
            continue
        local = t[t.find("}") + 1:]
        if local in _PATIENT_NAMES and local not in k:
            k[local] = c
            if len(k) == len(_PATIENT_NAMES):
                break
    ids = []
    type_el = k.get("TypeOffId")
    off, typ = _text(k.get("OffId")), _code(type_el)
    if rec is not None and type_el is not None:  # (the Patient's Id was not looked for: unknown)
        rec.append((type_el, typ or "", None, False, False))
    if off:
        ids.append((typ or "", off))
    return _patient(_text(k.get("Name")), tuple(ids), _code(k.get("DateOfBirth")), _code(k.get("Sex")))


# Family paths "k:Service/k:Role/k:HCP/k:Inst" as the Clark tags of each step (namespace filled in per
# message), so the parties are found by walking children instead of four XPath evaluations.
_Steps = tuple[str, str, str, str]  # service, sender role, receiver role, copy role
_STEPS_MEMO: dict[Family, _Steps | None] = {}


def _own_steps(family: Family) -> _Steps | None:
    if family in _STEPS_MEMO:
        return _STEPS_MEMO[family]
    steps = None
    paths = [p.split("/") if p else [] for p in (family.sender_path, family.receiver_path, family.copy_path)]
    if all(len(p) == 4 and p[2:] == ["k:HCP", "k:Inst"] and p[0] == paths[0][0]
           and all(s.startswith("k:") and s[2:].isidentifier() for s in p) for p in paths):
        steps = (paths[0][0][2:], paths[0][1][2:], paths[1][1][2:], paths[2][1][2:])
        if len(set(steps)) != 4 or "Patient" in steps or "HCP" in steps:
            steps = None
    _STEPS_MEMO[family] = steps  # keys are the fixed family table: bounded
    return steps


_SERVICES = frozenset(s[0] for s in map(_own_steps, (f for f in FAMILIES if f.carrier == "own")) if s)


def _hcps(role: etree._Element, hcp_tag: str) -> list[etree._Element]:
    return [c for c in role if c.tag == hcp_tag]


def _from_own(root: etree._Element, info: MessageInfo, family: Family, k: dict[str, etree._Element],
              services: list[etree._Element], rec: _Rec) -> None:
    info.type = _code(k.get("Type"))
    info.mig_version = _text(k.get("MIGversion"))
    info.msg_id = _text(k.get("MsgId"))
    info.gen_date = _code(k.get("GenDate"))  # older versions write it as a TS: V="..."
    ns = info.root_namespace
    steps = _own_steps(family)
    if steps is None:  # a path of another shape: evaluate it as written
        s = _hcp_at(root, family.sender_path, ns)
        r = _hcp_at(root, family.receiver_path, ns)
        info.sender = _hcp_party(s[0], rec) if s else None
        info.receiver = _hcp_party(r[0], rec) if r else None
        copies = _hcp_at(root, family.copy_path, ns)
        info.copy_receivers = [p for p in (_hcp_party(h, rec) for h in copies) if p]
        service = family.sender_path.split("/")[0] if family.sender_path else None
        pats = xpath(root, f"{service}/k:Patient", ns) if service else []
        info.patient = _own_patient(pats[0] if pats else None, rec)
        return
    # The XPaths k:S/k:R/k:HCP in document order: services in order, their role children in order.
    n = f"{{{ns}}}"
    service, sender_tag, receiver_tag, copy_tag = (n + s for s in steps)
    hcp_tag, patient_tag = n + "HCP", n + "Patient"
    sender = receiver = patient = None
    copies: list[etree._Element] = []
    for svc in services:
        if svc.tag != service:
            continue
        for c in svc[:]:
            t = c.tag
            if t == sender_tag:
                if sender is None:
                    sender = next(iter(_hcps(c, hcp_tag)), None)
            elif t == receiver_tag:
                if receiver is None:
                    receiver = next(iter(_hcps(c, hcp_tag)), None)
            elif t == copy_tag:
                copies.extend(_hcps(c, hcp_tag))
            elif t == patient_tag and patient is None:
                patient = c
    info.sender = _hcp_party(sender, rec) if sender is not None else None
    info.receiver = _hcp_party(receiver, rec) if receiver is not None else None
    info.copy_receivers = [p for p in (_hcp_party(h, rec) for h in copies) if p]
    info.patient = _own_patient(patient, rec)


def _child_local(el: etree._Element | None, local: str) -> etree._Element | None:
    """= find(el, "{*}local"): the first child element of that local name, in any or no namespace."""
    if el is None:
        return None
    end = "}" + local
    for c in el:
        t = c.tag
        if isinstance(t, str) and (t == local or t.endswith(end)):
            return c
    return None


def _from_apprec(root: etree._Element, info: MessageInfo, k: dict[str, etree._Element], rec: _Rec) -> None:
    info.type = _code(k.get("MsgType"))
    info.mig_version = _text(k.get("MIGversion"))
    info.msg_id = _text(k.get("Id"))
    info.gen_date = _text(k.get("GenDate"))
    info.sender = _hcp_party(_child_local(k.get("Sender"), "HCP"), rec)
    info.receiver = _hcp_party(_child_local(k.get("Receiver"), "HCP"), rec)


# Root children read by local name outside MsgHead (the first of each, as `{*}name`).
_ROOT_NAMES = frozenset({"Type", "MIGversion", "MsgId", "GenDate", "MsgType", "Id", "Sender", "Receiver"})


def extract_info(tree: etree._ElementTree | etree._Element) -> MessageInfo:
    """Family, version, type, ids, parties and patient of a parsed message. Never raises on odd input."""
    return scan_info(tree, typeids=False)[0]


def scan_info(tree: etree._ElementTree | etree._Element, *, typeids: bool = True) -> tuple[MessageInfo, Scan]:
    """extract_info, and what it read that the validator's schema plan needs as well.

    typeids: record the TypeIds read in scan.typeids, for the Python ident rules (rules._vet_typeids).
    """
    root = tree.getroot() if isinstance(tree, etree._ElementTree) else tree
    tag = root.tag
    ns = tag[1:tag.index("}")] if tag[0] == "{" else ""  # = ns_of(root); a root is an element: str tag
    info = _new(MessageInfo)  # MessageInfo(root_namespace=ns, root=..., namespace=ns, payload=root), cheaper
    info.__dict__ = {"root_namespace": ns, "root": tag[tag.find("}") + 1:], "namespace": ns, "family": None,
                     "carrier": None, "type": None, "mig_version": None, "msg_id": None, "gen_date": None,
                     "sender": None, "receiver": None, "copy_receivers": [], "patient": None, "payload": root}
    scan = Scan(typeids)
    if ns == MSGHEAD_NS:
        _from_msghead(root, info, scan)
        return info, scan
    k: dict[str, etree._Element] = {}
    services: list[etree._Element] = []
    for c in root[:]:
        t = c.tag
        if not isinstance(t, str):
            continue
        local = t[t.find("}") + 1:]
        if local in _ROOT_NAMES:
            if local not in k:
                k[local] = c
        elif local in _SERVICES:
            services.append(c)
    mig = k.get("MIGversion")
    scan.root_mig = None if mig is None else (mig.text or "")
    family = family_of(ns, scan.root_mig)
    info.family = family
    if family is None:
        # Not in the family table: still read the common header fields where a standard has them.
        info.type = _code(k.get("Type"))
        info.msg_id = _text(k.get("MsgId"))
        info.gen_date = _code(k.get("GenDate"))
        return info, scan
    info.carrier = family.carrier
    if ns in _APPREC:
        _from_apprec(root, info, k, scan.typeids)
    elif family.carrier == "own":
        _from_own(root, info, family, k, services, scan.typeids)
    return info, scan
