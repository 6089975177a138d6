"""Business rules beyond the schema: MsgId, GenDate, identifiers, KITH code values, type, parties, patient.

Pure functions over a parsed tree and its MessageInfo; every finding is a Problem carrying the rule id
and AppRec code of hub.validation.catalog. The run-wide rule (MsgId unique) lives in the Validator.

A valid message must not pay for rules that walk the whole tree: each rule has a cheap "clean" test
that may only err towards running the rule. For ident_rules and code_rules that test is compiled
(hub/validation/_clean.pyx, one pass over libxml2's nodes) and required: an install that cannot build
it fails. The Python clean tests here do the same work; the tests run check_list on them (with _clean
set to None) and hold both to the same findings.

Code lists are embedded (small, stable): only values evidenced in the official schemas' examples,
STANDARDS.md or the KITH lists themselves. A value outside a list we know is a problem; an element
whose list we do not know is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, tzinfo

from lxml import etree

from hub.ascii import is_ascii_digits
from hub.codes import APPREC_ERRORS
from hub.messages.families import APPREC_10_NS, APPREC_11_NS, FAMILIES, MSGHEAD_NS
from hub.messages.info import MessageInfo, Party, PatientInfo, TypeIdSeen, find, her_digits, xpath
from hub.validation import _clean  # type: ignore[attr-defined]  # compiled by setup.py: required
from hub.validation.catalog import rule
from hub.validation.result import Problem

OID = "2.16.578.1.12.4.1.1."
_MH = f"{{{MSGHEAD_NS}}}"
CLOCK_SKEW = timedelta(minutes=10)

# --- embedded KITH code lists ---------------------------------------------------------------------------

# 9051 Identifikatortype for organisasjoner; 8116 Id-type for personer.
CODES_9051 = frozenset({"HER", "ENH", "LAV", "LIN", "LOK", "RSH"})
CODES_8116 = frozenset({"FNR", "DNR", "HNR", "HPR", "HER", "PNR", "FHN", "DUF", "XXX"})
# 8279 Meldingens funksjon: every type the family table carries plus the other evidenced ones.
CODES_8279 = frozenset(
    {t for f in FAMILIES for t in f.msg_types if len(t) > 1}
    | {"EPIKRISE", "HENVISNING", "TILBAKEMELD", "EPJ-EKSTRAKT", "KJERNEJOURNAL_ADM", "ADM_KOMM_KJERNEJOURNAL",
       "POM", "LOM", "EgenandelForesporsel", "ERM1", "APPREC", "HELSEOPPLYSNINGER_SAKSBEHANDLING"}
)
CODE_LISTS: dict[str, frozenset[str]] = {
    "9051": CODES_9051,
    "8116": CODES_8116,
    "8279": CODES_8279,
    "8258": frozenset({"1", "2", "3"}),  # AppRec status
    "8221": frozenset({*APPREC_ERRORS, "E53", "E54"}),  # AppRec errors, general part
    "7304": frozenset({"J", "N"}),  # Ack
    "8114": frozenset({"XML", "A"}),  # RefDoc/MsgType: XML-instans, vedlegg
    "1204": frozenset({"DF", "GZ", "Z"}),  # RefDoc/Compression
    "3101": frozenset({"0", "1", "2", "9"}),  # Kjønn
    "8213": frozenset({"P", "D", "T"}),  # ProcessingStatus: produksjon, debugging, test
}
# MsgHead/AppRec elements written without S: their code list by (namespace, parent, element).
_BY_PLACE: dict[tuple[str, str, str], str] = {
    (MSGHEAD_NS, "MsgInfo", "Ack"): "7304",
    (MSGHEAD_NS, "MsgInfo", "ProcessingStatus"): "8213",
    (MSGHEAD_NS, "RefDoc", "MsgType"): "8114",
    (MSGHEAD_NS, "RefDoc", "Compression"): "1204",
    (MSGHEAD_NS, "Patient", "Sex"): "3101",
    (APPREC_10_NS, "AppRec", "Status"): "8258",
    (APPREC_11_NS, "AppRec", "Status"): "8258",
}
# Families whose standard requires the patient in MsgInfo/Patient (the payload refers to it).
PATIENT_FAMILIES = frozenset({"Dialogmelding"})

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_FRACTION = re.compile(r"(\.\d{6})\d+")


def problem(rule_id: str, text: str, el: etree._Element | None = None) -> Problem:
    r = rule(rule_id)
    return Problem(r.code, r.id, text, line=el.sourceline if el is not None else None,
                   xpath=xpath_of(el) if el is not None else None, severity=r.severity)


def xpath_of(el: etree._Element) -> str:
    """/MsgHead/MsgInfo/Receiver/Organisation/Ident[2]/Id: local names, position among same-named siblings."""
    steps = []
    node: etree._Element | None = el
    while node is not None and isinstance(node.tag, str):
        q = etree.QName(node)
        parent = node.getparent()
        step = q.localname
        if parent is not None:
            same = [c for c in parent if c.tag == node.tag]
            if len(same) > 1:
                step += f"[{same.index(node) + 1}]"
        steps.append(step)
        node = parent
    return "/" + "/".join(reversed(steps))


def _code(el: etree._Element) -> str:
    v = el.get("V")
    return (v if v is not None else (el.text or "")).strip()


# --- single rules ---------------------------------------------------------------------------------------


def _msg_id_element(info: MessageInfo, root: etree._Element) -> etree._Element | None:
    return find(root, f"{_MH}MsgInfo/{_MH}MsgId") if info.root_namespace == MSGHEAD_NS else (
        find(root, "{*}Id") if info.family and info.family.name == "AppRec" else find(root, "{*}MsgId"))


def msg_id_rules(info: MessageInfo, root: etree._Element) -> list[Problem]:
    if info.msg_id and is_uuid(info.msg_id):
        return []  # the common case: no element lookup, it is only needed to say where
    el = _msg_id_element(info, root)
    if not info.msg_id:
        return [problem("msgid.missing", "MsgId is missing or empty", el if el is not None else root)]
    return [problem("msgid.uuid", f"MsgId {info.msg_id!r} is not a UUID (AppRec rule E10)", el)]


def is_uuid(text: str) -> bool:
    # The pattern admits exactly 32 ASCII hex digits with the four optional hyphens, which is what
    # uuid.UUID accepts after stripping: constructing one as well would only repeat the check.
    return _UUID.match(text.strip()) is not None


_ZONE: tzinfo | None = None


def _local_zone() -> tzinfo:
    global _ZONE
    if _ZONE is None:
        _ZONE = _load_zone()
    return _ZONE


def _load_zone() -> tzinfo:
    try:
        from zoneinfo import ZoneInfo

        return ZoneInfo("Europe/Oslo")
    except Exception:  # noqa: BLE001 - no tz database: assume summer time, the later of the two
        from datetime import timezone

        return timezone(timedelta(hours=2))


def parse_gen_date(text: str) -> datetime | None:
    """GenDate as written: naive times are Norwegian local time (KITH practice)."""
    t = text.strip()
    if "." in t:  # only a fraction can be cut: skip the regex pass for the usual whole seconds
        t = _FRACTION.sub(r"\1", t)
    t = t.replace("Z", "+00:00")
    try:
        dt = datetime.fromisoformat(t)
    except ValueError:
        return None  # not an xs:dateTime: the schema says so
    return dt if dt.tzinfo else dt.replace(tzinfo=_local_zone())


_DATE_HEAD = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_PAST: list[tuple[date, str]] = []  # [(now's date, that date minus 3 days as YYYY-MM-DD)]


def _surely_past(text: str, now: datetime) -> bool:
    """True only if GenDate `text` cannot lie after `now`: its calendar date is 3 days or more before.

    Whatever follows the date, the instant it names (offsets < 24 h, naive = Oslo time) is under 48 h
    after the date's UTC midnight, and that midnight is over 24 h before now: no parse needed.
    """
    if _DATE_HEAD.match(text) is None or now.tzinfo is None:  # (a naive now: let the comparison raise)
        return False
    today = now.date()
    if not _PAST or _PAST[0][0] != today:
        _PAST[:] = [(today, (today - timedelta(days=3)).isoformat())]
    return text[:10] <= _PAST[0][1]


def gen_date_rules(info: MessageInfo, root: etree._Element, now: datetime | None = None) -> list[Problem]:
    if not info.gen_date:
        return []
    now = now or datetime.now(UTC)
    if _surely_past(info.gen_date, now):
        return []
    dt = parse_gen_date(info.gen_date)
    if dt is not None and dt > now + CLOCK_SKEW:
        el = next(root.iter(f"{_MH}GenDate", "{*}GenDate"), None)
        return [problem("gendate.future", f"GenDate {info.gen_date} lies in the future", el)]
    return []


def _local(tag: str) -> str:
    return tag[tag.index("}") + 1:] if tag.startswith("{") else tag


def _ident_list(type_el: etree._Element, holder: etree._Element) -> str:
    """Which list a TypeId/TypeOffId belongs to: its S if given, else where it stands."""
    s = type_el.get("S")
    if s:
        return s.removeprefix(OID)
    owner = holder.getparent() if _local(holder.tag) == "Ident" else holder
    if owner is not None and _local(owner.tag) in ("Organisation", "Inst", "Dept"):
        return "9051"
    return "8116"


def ident_rules(root: etree._Element) -> list[Problem]:
    """TypeId in its code system (9051 organisations, 8116 persons); HER-ids are positive integers."""
    out: list[Problem] = []
    for t in root.iter("{*}TypeId", "{*}TypeOffId"):
        holder = t.getparent()
        if holder is None or _local(holder.tag) == "AdditionalId":
            continue
        value = _code(t)
        listed = _ident_list(t, holder)
        codes = CODE_LISTS.get(listed)
        if listed not in ("9051", "8116"):
            out.append(problem("ident.system", f"TypeId {value!r} names code system {t.get('S')!r}, "
                                               "expected 9051 (organisations) or 8116 (persons)", t))
            codes = CODES_9051 | CODES_8116
        if codes is not None and value not in codes:
            text = (f"the {_local(t.tag)} is empty (code list {listed})" if not value
                    else f"{_local(t.tag)} {value!r} is not in code list {listed}")
            out.append(problem("ident.type", text, t))
            continue
        if value == "HER":
            id_el = find(holder, "{*}Id")
            her = (id_el.text or "").strip() if id_el is not None else ""
            digits = her_digits(her)  # `369.767`: digit groups separated by dots, as KITH examples write them
            if not her:
                out.append(problem("ident.her", "the HER-id is empty", id_el if id_el is not None else t))
            elif not is_ascii_digits(digits) or int(digits) <= 0:
                out.append(problem("ident.her", f"HER-id {her!r} is not a positive whole number",
                                   id_el if id_el is not None else t))
    return out


def _vet_typeids(seen: list[TypeIdSeen]) -> dict[etree._Element, bool]:
    """The TypeIds extraction read that pass _ident_scan's test, each mapped to whether its S is listed.

    Extraction knows where each stands (its holder's kind, the holder's first Id), so only S is read
    here; _ident_scan then skips them instead of looking up their parent and Id again.
    """
    vetted: dict[etree._Element, bool] = {}
    for t, value, id_el, org, id_known in seen:
        s = t.get("S")
        if s:
            codes = _S_IDENT.get(s)
            if codes is None or value not in codes:
                continue
        elif value != "HER" and not (org if value in CODES_9051 else value in CODES_8116 and not org):
            continue
        if value == "HER":
            her = her_digits((id_el.text or "").strip()) if id_el is not None else ""
            if not id_known or not is_ascii_digits(her) or int(her) <= 0:
                continue
        vetted[t] = bool(s) and s in _S_LISTED
    return vetted


def _ident_scan(root: etree._Element, vetted: dict[etree._Element, bool] | None = None) -> int | None:
    """None if ident_rules may find something; cheaper (no tags, no paths) and may say so wrongly.

    Else how many TypeId/TypeOffId carry an S that names a list we embed (see _codes_clean).
    Skipping AdditionalId holders only removes findings, so checking them too errs on the safe side.
    vetted: TypeIds already found to pass (_vet_typeids), with their S-listed flag.
    """
    listed_s = 0
    for t in root.iter("{*}TypeId", "{*}TypeOffId"):
        if vetted:
            hit = vetted.get(t)
            if hit is not None:
                listed_s += hit
                continue
        s = t.get("S")
        v = t.get("V")
        value = (v if v is not None else (t.text or "")).strip()
        holder = t.getparent()
        if holder is None:
            return None
        if s:
            if s in _S_LISTED:
                listed_s += 1
            codes = _S_IDENT.get(s)  # = _IDENT_LISTS.get(s.removeprefix(OID))
            if codes is None or value not in codes:
                return None
        elif value != "HER":  # (HER is the one value both lists hold: no need to ask where it stands)
            # The lists share no other value: only one in which it stands needs the place (_ident_list).
            if value in CODES_9051:
                if not _org_place(holder):
                    return None
            elif value not in CODES_8116 or _org_place(holder):
                return None
        if value == "HER":
            id_el = None
            for c in holder:  # = find(holder, "{*}Id"); Id comes first in MsgHead's Ident
                tag = c.tag  # inline test: this loop runs over every child of own-root Inst/HCProf
                if isinstance(tag, str) and (tag == "Id" or tag.endswith("}Id")):
                    id_el = c
                    break
            her = her_digits((id_el.text or "").strip()) if id_el is not None else ""
            if not is_ascii_digits(her) or int(her) <= 0:
                return None
    return listed_s


def _org_place(holder: etree._Element) -> bool:
    """_ident_list of a TypeId without S is 9051 (not 8116): it identifies an Organisation/Inst/Dept."""
    owner = holder.getparent() if _local(holder.tag) == "Ident" else holder
    return owner is not None and _local(owner.tag) in ("Organisation", "Inst", "Dept")


_IDENT_LISTS = {"9051": CODES_9051, "8116": CODES_8116}
_S_IDENT = {**_IDENT_LISTS, **{OID + listed: codes for listed, codes in _IDENT_LISTS.items()}}
# An S naming a list we embed, exactly as _code_violation reads it (OID + list number).
_S_LISTED = frozenset(OID + listed for listed in CODE_LISTS)

# Coded elements: any with an S we know, plus the fixed places of MsgHead/AppRec elements without S.
_CODED = etree.XPath(
    "//*[@S and @V and local-name() != 'TypeId' and local-name() != 'TypeOffId']"
    "|//m:MsgInfo/m:Ack|//m:MsgInfo/m:ProcessingStatus|//m:RefDoc/m:MsgType|//m:RefDoc/m:Compression"
    "|//m:Patient/m:Sex|/a:AppRec/a:Status|/b:AppRec/b:Status",
    namespaces={"m": MSGHEAD_NS, "a": APPREC_10_NS, "b": APPREC_11_NS},
)


def _code_violation(el: etree._Element) -> tuple[str, str] | None:
    """(V, list) when the coded element `el` holds a value outside the list it uses."""
    v = el.get("V")
    if v is None:
        return None
    s = el.get("S")
    if s:
        listed = s.removeprefix(OID) if s.startswith(OID) else None
    else:
        parent = el.getparent()
        q = etree.QName(el)
        listed = _BY_PLACE.get((q.namespace or "", _local(parent.tag) if parent is not None else "",
                                q.localname))
    codes = CODE_LISTS.get(listed or "")
    if codes is not None and v.strip() not in codes:
        return v, listed or ""
    return None


def code_rules(root: etree._Element) -> list[Problem]:
    """Coded values (V) in the KITH lists we embed: by S where given, else by the element's place."""
    out: list[Problem] = []
    for el in _CODED(root):
        bad = _code_violation(el)
        if bad is not None:
            v, listed = bad
            text = (f"{_local(el.tag)} V is empty (KITH code list {listed})" if not v.strip()
                    else f"{_local(el.tag)} V={v!r} is not in KITH code list {listed}")
            out.append(problem("code.value", text, el))
    return out


# The few elements _CODED selects whose value can fail: an S naming a list we embed (attribute-first:
# libxml2 tests ~30 S attributes far faster than a predicate on every element), and the fixed places.
# substring-after also takes an OID further in: a superset, which the Python check then sorts out.
_CODED_BY_S = etree.XPath(
    f"//*/@S[contains('|{'|'.join(CODE_LISTS)}|', concat('|', substring-after(., '{OID}'), '|'))]"
    "/parent::*[not(local-name() = 'TypeId' or local-name() = 'TypeOffId')]",
    regexp=False, smart_strings=False,
)
# Element tag -> the parent tag _CODED requires; AppRec's Status must moreover stand in the root.
_ROOT_STATUS = {f"{{{ns}}}Status": f"{{{ns}}}AppRec" for ns in (APPREC_10_NS, APPREC_11_NS)}
_FIXED_PLACES = {
    f"{_MH}Ack": f"{_MH}MsgInfo", f"{_MH}ProcessingStatus": f"{_MH}MsgInfo",
    f"{_MH}MsgType": f"{_MH}RefDoc", f"{_MH}Compression": f"{_MH}RefDoc", f"{_MH}Sex": f"{_MH}Patient",
    **_ROOT_STATUS,
}
_FIXED_TAGS = tuple(_FIXED_PLACES)
_FIXED_LIST = {f"{{{ns}}}{local}": listed for (ns, _parent, local), listed in _BY_PLACE.items()}


# Every S value in the document, as strings: no element proxies, and descendant::* spares libxml2 the
# text nodes `//` walks. Several times cheaper than _CODED_BY_S, whose predicate runs per attribute.
_ALL_S = etree.XPath("/descendant::*/@S", regexp=False, smart_strings=False)


def _codes_clean(root: etree._Element, typed_listed_s: int | None = None) -> bool:
    """True only if code_rules would find nothing: checks a superset of what can fail, in no set order.

    typed_listed_s: how many TypeId/TypeOffId hold an S in _S_LISTED (from _ident_scan). When every
    such S in the document is theirs, no element _CODED_BY_S selects can fail on its S: skip that query.
    """
    all_s = None if typed_listed_s is None else _ALL_S(root)
    if all_s is None or sum(map(_S_LISTED.__contains__, all_s)) != typed_listed_s:
        for el in _CODED_BY_S(root):
            if _code_violation(el) is not None:  # type: ignore[arg-type]
                return False
    if all_s is not None and "" not in all_s:
        return _fixed_places_clean(root)
    for el in root.iter(_FIXED_TAGS):
        v = el.get("V")
        if v is None:
            continue  # nothing to check, wherever it stands
        if el.get("S") is not None:
            if _code_violation(el) is not None:
                return False
            continue
        # Without S, _CODED selects it only at its fixed place, where the place names the list.
        tag = el.tag
        parent = el.getparent()
        if parent is None or parent.tag != _FIXED_PLACES[tag] or (
                tag in _ROOT_STATUS and parent.getparent() is not None):
            continue
        if v.strip() not in CODE_LISTS[_FIXED_LIST[tag]]:
            return False
    return True


# The fixed-place tags by local name: wildcard tags cost libxml2 matching less to set up than Clark names,
# and the few extra hits are sorted out by tag. AppRec's Status counts only as a child of the root.
_FIXED_ANY = tuple(sorted({"{*}" + _local(tag) for tag in _FIXED_TAGS if tag not in _ROOT_STATUS}))


def _fixed_places_clean(root: etree._Element) -> bool:
    """The fixed-place half of _codes_clean when no element holds an empty S.

    An element with a non-empty S then cannot fail here: an S outside our lists names no list, and one in
    them made _codes_clean run _CODED_BY_S (it is no TypeId, so the counts differed). Only elements
    without S at their fixed place remain.
    """
    for el in root.iter(*_FIXED_ANY):
        tag = el.tag
        want = _FIXED_PLACES.get(tag)
        if want is None or el.get("S") is not None:
            continue
        v = el.get("V")
        if v is None:
            continue
        parent = el.getparent()
        if parent is not None and parent.tag == want and v.strip() not in CODE_LISTS[_FIXED_LIST[tag]]:
            return False
    status = _ROOT_STATUS_OF.get(root.tag)
    if status is not None:
        for el in root:  # the root is the AppRec: its Status children are the ones _CODED selects
            if el.tag == status and el.get("S") is None:
                v = el.get("V")
                if v is not None and v.strip() not in CODE_LISTS[_FIXED_LIST[status]]:
                    return False
    return True


_ROOT_STATUS_OF = {root: status for status, root in _ROOT_STATUS.items()}


def _type_clean(info: MessageInfo) -> bool:
    family = info.family
    return info.type is None or (
        not (family is not None and family.msg_types and info.type not in family.msg_types)
        and not (info.root_namespace == MSGHEAD_NS and info.type not in CODES_8279))


def type_rules(info: MessageInfo, root: etree._Element) -> list[Problem]:
    """MsgInfo/Type (or Message/Type) must fit the standard of the payload, and be an 8279 value."""
    if _type_clean(info):
        return []  # the element is only looked up to say where a problem is
    if info.root_namespace == MSGHEAD_NS:
        el = find(root, f"{_MH}MsgInfo/{_MH}Type")
    elif info.family and info.family.name == "AppRec":
        el = find(root, "{*}MsgType")
    else:
        el = find(root, "{*}Type")
    if el is None or info.type is None:
        return []
    out = []
    family = info.family
    if family is not None and family.msg_types and info.type not in family.msg_types:
        out.append(problem("type.namespace", f"type {info.type!r} does not belong to {family.name} "
                           f"{family.version} (expected one of {', '.join(family.msg_types)})", el))
    if info.root_namespace == MSGHEAD_NS and info.type not in CODES_8279:
        out.append(problem("code.value", f"MsgInfo/Type V={info.type!r} is not in KITH code list 8279", el))
    return out


def _empties_text(p: Party) -> str:
    return ", ".join(f"the {level}'s {t or 'untyped'} identifier" for level, t in p.empty_ids)


def _party_clean(info: MessageInfo) -> bool:
    """party_rules has nothing to say: both parties identified, nothing empty, HER-ids where MsgHead
    asks them, and (Epikrise) the doctors named on both sides."""
    s, r = info.sender, info.receiver
    if s is None or r is None or not s.identified or not r.identified or s.empty_ids or r.empty_ids:
        return False
    for c in info.copy_receivers:
        if c.empty_ids:
            return False
    if info.carrier == "msghead" and not (s.communication_her_id and r.communication_her_id):
        return False
    return not (info.family is not None and info.family.name in PERSON_FAMILIES
                and not (s.person_ids and r.person_ids))


# Families whose acceptance tests require the doctors to be identified: Epikrise (mottak, criterion 13
# "utskrivende lege" = the sender's responsible doctor, criterion 14 "henvisende lege" = the doctor it
# is addressed to).
PERSON_FAMILIES = frozenset({"Epikrise"})
# Where an Epikrise names a doctor besides the parties' HCPerson: the responsible doctor as a related
# service provider, the referring doctor or GP as a patient-related health professional (HHE, FLE).
def _person_named(root: etree._Element, base: str, ns: str) -> bool:
    """Some HCP under `base` (an XPath with prefix k) is a person (HCProf, Inst/HCPerson) with an Id."""
    return bool(xpath(root, f"{base}/k:HCP/k:HCProf/k:Id[normalize-space()]"
                            f" | {base}/k:HCP/k:Inst/k:HCPerson/k:Id[normalize-space()]", ns))


def _party_elements(info: MessageInfo, root: etree._Element
                    ) -> tuple[etree._Element | None, etree._Element | None]:
    if info.carrier == "msghead":
        return find(root, f"{_MH}MsgInfo/{_MH}Sender"), find(root, f"{_MH}MsgInfo/{_MH}Receiver")
    ns = info.root_namespace
    assert info.family is not None
    s = xpath(root, (info.family.sender_path or "k:x").removesuffix("/k:HCP/k:Inst"), ns)
    r = xpath(root, (info.family.receiver_path or "k:x").removesuffix("/k:HCP/k:Inst"), ns)
    return (s[0] if s else None), (r[0] if r else None)


def party_rules(info: MessageInfo, root: etree._Element) -> list[Problem]:
    """Sender and receiver identified (any identifier on any level), no identifier left empty, HER-ids
    in MsgHead (a warning), and the doctors an Epikrise must name."""
    if info.carrier not in ("msghead", "own") or info.family is None:
        return []
    if _party_clean(info):
        return []  # the elements are only looked up to say where a problem is
    out: list[Problem] = []
    s_el, r_el = _party_elements(info, root)
    for role, party, el in (("receiver", info.receiver, r_el), ("sender", info.sender, s_el)):
        where = el if el is not None else root
        if party is None:
            out.append(problem(f"{role}.missing", f"the message names no {role}", where))
        elif not party.identified:
            empty = f" ({_empties_text(party)} is empty)" if party.empty_ids else ""
            out.append(problem(f"{role}.missing", f"the {role} has no identifier on any level (HER-id, "
                               f"organisation number, HPR-number, ...){empty}", where))
        elif party.empty_ids:
            out.append(problem(f"{role}.ident-empty", f"the {role}: {_empties_text(party)} is empty", where))
        if info.carrier == "msghead" and party is not None and party.identified \
                and not party.communication_her_id:
            out.append(problem(f"{role}.her-missing", f"the {role} has no HER-id on any level (HIS 1153-2 "
                               "addressing asks one); the relay routes by organisation number and "
                               "department instead", where))
    for i, copy in enumerate(info.copy_receivers):
        if copy.empty_ids:
            out.append(problem("receiver.ident-empty", f"copy receiver {i + 1}: {_empties_text(copy)} is "
                               "empty", root))
    if info.family.name in PERSON_FAMILIES and not out:  # (a party missing already says more)
        out += _person_rules(info, root, s_el, r_el)
    return out


def _person_rules(info: MessageInfo, root: etree._Element, s_el: etree._Element | None,
                  r_el: etree._Element | None) -> list[Problem]:
    ns = info.root_namespace
    service = (info.family.sender_path or "k:x").split("/")[0] if info.family else "k:x"
    out = []
    if not (info.sender and info.sender.person_ids) and not _person_named(
            root, f"{service}/k:RelServProvider", ns):
        out.append(problem("sender.person-missing", "the discharging doctor (utskrivende lege) is not "
                           "identified: no HCPerson with an identifier in the sender and no related "
                           "service provider (RelServProvider) with one", s_el if s_el is not None else root))
    addressed = [p for p in (info.receiver, *info.copy_receivers) if p is not None and p.person_ids]
    # The patient's referring doctor (HHE) or GP (FLE, fastlege) named with the patient will do: the
    # receiving GP system files the Epikrise to that doctor.
    if not addressed and not _person_named(
            root, f"{service}/k:Patient/k:PatRelHCP[k:Relation/@V='HHE' or k:Relation/@V='FLE']", ns):
        out.append(problem("receiver.person-missing", "no doctor the Epikrise goes to is identified: the "
                           "receiver and the copy receivers name no person with an identifier, and the "
                           "patient names neither referring doctor (PatRelHCP HHE) nor GP (FLE)",
                           r_el if r_el is not None else root))
    return out


_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_W1_48, _W2_48 = 48 * sum(_W1), 48 * sum(_W2)


def fnr_valid(number: str) -> bool:
    """Fødselsnummer/D-nummer: 11 digits with both mod-11 check digits right (weights _W1, _W2)."""
    if len(number) != 11 or not is_ascii_digits(number):
        return False
    # The ASCII codes, 48 + digit, written out (it runs per message): the 48s come off the sums at once,
    # 48 * sum(_W1) and 48 * sum(_W2), instead of an int() per digit.
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10 = number.encode()
    c = 11 - (3 * c0 + 7 * c1 + 6 * c2 + c3 + 8 * c4 + 9 * c5 + 4 * c6 + 5 * c7 + 2 * c8 - _W1_48) % 11
    if (0 if c == 11 else c) != c9 - 48:  # c == 10 never equals a digit
        return False
    c = 11 - (5 * c0 + 4 * c1 + 3 * c2 + 2 * c3 + 7 * c4 + 6 * c5 + 5 * c6 + 4 * c7 + 3 * c8 + 2 * c9
              - _W2_48) % 11
    return (0 if c == 11 else c) == c10 - 48


def _patient_element(info: MessageInfo, root: etree._Element) -> etree._Element | None:
    if info.root_namespace == MSGHEAD_NS:
        return find(root, f"{_MH}MsgInfo/{_MH}Patient")
    if info.carrier == "own" and info.family and info.family.sender_path:
        ns = info.root_namespace
        found = xpath(root, f"{info.family.sender_path.split('/')[0]}/k:Patient", ns)
        return found[0] if found else None
    return None


def _patient_clean(p: PatientInfo | None) -> bool:
    """A patient patient_rules has nothing to say about (None: let the rules look at the tree)."""
    if p is None or not p.name:
        return False
    identified = False  # an FNR/DNR/HNR (all must pass their check digits) or a felles hjelpenummer (FHN)
    for t, v in p.ids:
        if t == "FNR" or t == "DNR" or t == "HNR":
            if not fnr_valid(v):
                return False
            identified = True
        elif t == "FHN":
            identified = True
    return identified


def patient_rules(info: MessageInfo, root: etree._Element) -> list[Problem]:
    """Patient identified as HITS 1168 asks: name + FNR/DNR/hjelpenummer, or name + birth date + sex."""
    if _patient_clean(info.patient):
        return []  # a patient in the info stands in the tree: it is only looked up to say where
    el = _patient_element(info, root)
    fam = info.family.name if info.family else None
    if el is None:
        if info.carrier == "msghead" and fam in PATIENT_FAMILIES:
            mi = find(root, f"{_MH}MsgInfo")
            return [problem("patient.absent", f"{fam} names no patient (MsgInfo/Patient): fine for a message "
                            "about no patient (e.g. DIALOG_AVVIK), else the receiver cannot file it",
                            mi if mi is not None else root)]
        return []
    p = info.patient
    if p is None:
        return []
    out: list[Problem] = []
    national = [(t, v) for t, v in p.ids if t in ("FNR", "DNR")]
    # An H-nummer is built like a fødselsnummer (month + 40) with the same mod-11 check digits.
    for t, v in p.ids:
        if t in ("FNR", "DNR", "HNR") and not fnr_valid(v):
            label = {"FNR": "fødselsnummer", "DNR": "D-nummer", "HNR": "H-nummer"}[t]
            why = "fails its check digits" if len(v) == 11 and is_ascii_digits(v) else "is not 11 digits"
            out.append(problem("patient.fnr-invalid", f"the patient's {label} {v} {why}", el))
    helper = any(t == "FHN" or (t == "HNR" and fnr_valid(v)) for t, v in p.ids)
    if not national and not helper:
        if p.date_of_birth and p.sex:
            out.append(problem("patient.fnr-missing", "the patient has no fødselsnummer or D-nummer", el))
        else:
            out.append(problem("patient.insufficient", "the patient has no identity number and no birth date "
                                                        "and sex", el))
    if not p.name:
        out.append(problem("patient.name-missing", "the patient's name is missing", el))
    return out


def check(info: MessageInfo, root: etree._Element, *, now: datetime | None = None,
          seen: list[TypeIdSeen] | None = None) -> Iterator[Problem]:
    """Every business rule but the run-wide ones, in a stable order.

    seen: the TypeIds extraction read (hub.messages.info.Scan.typeids), to spare looking them up again.
    """
    yield from check_list(info, root, now=now, seen=seen)


# _clean.clean's view of the lists: S -> codes of coded elements and of TypeIds, TypeId lists by place,
# and the fixed-place elements by (namespace, local name) whatever their parent (a superset: one-sided).
_FIXED_BY_NAME = {(ns, local): CODE_LISTS[listed] for (ns, _parent, local), listed in _BY_PLACE.items()}
_CLEAN_ARGS = ({OID + listed: codes for listed, codes in CODE_LISTS.items()}, _S_IDENT, CODES_9051,
               CODES_8116, _FIXED_BY_NAME, tuple(sorted({local.encode() for _ns, local in _FIXED_BY_NAME})))


def fast_clean_missing() -> bool:
    """The compiled clean test is switched off (tests): the Python one wants the TypeIds extraction read."""
    return _clean is None


def fast_clean(root: etree._Element) -> bool | None:
    """True only if ident_rules and code_rules both find nothing; None with the compiled test switched off."""
    return None if _clean is None else _clean.clean(root, *_CLEAN_ARGS)


def check_list(info: MessageInfo, root: etree._Element, *, now: datetime | None = None,
               seen: list[TypeIdSeen] | None = None, msg_id_ok: bool | None = None) -> list[Problem]:
    """check() as a list; each rule is only called when its clean test fails (the valid message's path).

    msg_id_ok: is_uuid(info.msg_id) when the caller has it already (the Validator's MsgId uniqueness).
    """
    out: list[Problem] = []
    if not (msg_id_ok if msg_id_ok is not None else info.msg_id and is_uuid(info.msg_id)):
        out += msg_id_rules(info, root)
    if info.gen_date:
        out += gen_date_rules(info, root, now)
    if not _type_clean(info):
        out += type_rules(info, root)
    out += party_rules(info, root)
    clean = fast_clean(root)
    if clean is None:  # the compiled test switched off: the Python clean tests, one per rule
        typed_listed_s = _ident_scan(root, _vet_typeids(seen) if seen else None)
        if typed_listed_s is None:
            out += ident_rules(root)
        if not _codes_clean(root, typed_listed_s):
            out += code_rules(root)
    elif not clean:
        out += ident_rules(root)
        out += code_rules(root)
    if not _patient_clean(info.patient):
        out += patient_rules(info, root)
    return out
