"""The validator's shortcuts say "clean" only when the full rules would find nothing, and the one-pass
extraction reads what a plain find()/XPath reading of the same tree reads.

rules.check skips ident_rules/code_rules when _ident_scan/_codes_clean say so (the scan skipping the
TypeIds extraction read and _vet_typeids passed); gen_date_rules skips
parsing a GenDate days in the past; extraction (hub.messages.info) reads children in one loop, walks
own-root parties instead of evaluating the family XPaths, and hands the validator's schema plan what it
read on the way. Mutated fixtures exercise the places where they could differ.
"""

from __future__ import annotations

import copy
import operator
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from lxml import etree

from hub.fixtures.builder import build_all
from hub.messages import info as mi
from hub.messages.families import APPREC_10_NS, APPREC_11_NS, MSGHEAD_NS, Family, by_namespace
from hub.messages.info import MessageInfo, Party, PatientInfo
from hub.validation import rules
from hub.validation.result import ValidationResult
from hub.validation.validate import Validator

OID = rules.OID
MESSAGES = build_all(1)
_VALUES = ["HER", " HER ", "ENH", "FNR", "XYZ", "", "J", "X", "1", "9", "P", "XML", "\u00a0HER", "0", "abc"]
_S = [OID + "9051", OID + "8116", OID + "3101", OID + "7304", OID + "8279", "9051", "", OID + "9999",
      "x" + OID + "9051"]
# Names the extraction and the rules look for, to rename elements into and out of their places.
_NAMES = ("Organisation HealthcareProfessional Ident Id TypeId TypeOffId OffId Inst Dept HCPerson HCProf "
          "HCP Patient Sex Ack MsgType Status Content RefDoc MIGversion MsgId GenDate Type Sender Receiver "
          "CopyDest OtherReceiver ServReq Requester ServProvider Name OrganisationName GivenName FamilyName "
          "DateOfBirth MsgInfo ServRprt ServReport AdditionalId").split()
_NSS = [MSGHEAD_NS, None, "urn:other", APPREC_10_NS, APPREC_11_NS]


def _mutants(data: bytes, seed: int, count: int) -> list[etree._Element]:
    rng = random.Random(seed)
    base = etree.fromstring(data)
    out = []
    for _ in range(count):
        root = copy.deepcopy(base)
        els = [e for e in root.iter() if isinstance(e.tag, str)]
        for _ in range(rng.randint(1, 3)):
            el = rng.choice(els)
            op = rng.randrange(5)
            if op == 0:
                el.set("V", rng.choice(_VALUES))
            elif op == 1:
                el.set("S", rng.choice(_S))
            elif op == 2 and len(el) == 0:
                el.text = rng.choice(_VALUES)
            elif op == 3:
                el.attrib.pop("V", None)
            else:
                el.insert(0, etree.Comment("c"))
        out.append(root)
    return out


def _structural_mutants(data: bytes, seed: int, count: int) -> list[etree._Element]:
    """Values as _mutants, plus elements duplicated, dropped, moved, renamed and moved to other namespaces."""
    rng = random.Random(seed)
    base = etree.fromstring(data)
    out = []
    for _ in range(count):
        root = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            els = [e for e in root.iter() if isinstance(e.tag, str)]
            el = rng.choice(els)
            parent = el.getparent()
            q = etree.QName(el)
            op = rng.randrange(9)
            if op == 0:
                el.set(rng.choice("VS"), rng.choice(_VALUES + _S))
            elif op == 1:
                el.text = rng.choice([*_VALUES, None, " 81001 "])
            elif op == 2:
                odd = rng.choice([etree.Comment("c"), etree.ProcessingInstruction("p")])
                el.insert(rng.randint(0, len(el)), odd)
            elif op == 3 and parent is not None:
                parent.insert(parent.index(el) + rng.randint(0, 1), copy.deepcopy(el))
            elif op == 4 and parent is not None:
                parent.remove(el)
            elif op == 5:
                el.tag = etree.QName(rng.choice(_NSS), q.localname).text
            elif op == 6:
                el.tag = etree.QName(q.namespace, rng.choice(_NAMES)).text
            elif op == 7 and parent is not None:
                target = rng.choice(els)
                if target is not el and el not in list(target.iterancestors()):
                    parent.remove(el)
                    target.insert(rng.randint(0, len(target)), el)
            else:
                el.attrib.pop(rng.choice("VS"), None)
        out.append(root)
    return out


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_clean_shortcuts_never_hide_a_finding(name: str) -> None:
    seed = sum(name.encode())
    for root in [etree.fromstring(MESSAGES[name]), *_mutants(MESSAGES[name], seed, 40),
                 *_structural_mutants(MESSAGES[name], seed, 20)]:
        typed = rules._ident_scan(root)
        if typed is not None:
            assert not rules.ident_rules(root)
        if rules._codes_clean(root, typed):
            assert not rules.code_rules(root)
        # Without the TypeId count the S query and the fixed places run in full: they must agree.
        assert rules._codes_clean(root) == rules._codes_clean(root, typed)


# --- the compiled clean test (hub/validation/_clean.pyx) ------------------------------------------------


def test_the_compiled_clean_test_is_built() -> None:
    # Without it everything still works, on the slower Python clean test: an install that lost it (no C
    # compiler, a broken build) must show here rather than as a slower benchmark.
    assert rules._clean is not None, "hub.validation._clean is not built: `make install` (needs a C compiler)"


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_compiled_clean_never_hides_a_finding(name: str) -> None:
    if rules._clean is None:
        pytest.skip("hub.validation._clean is not built")
    plain = etree.fromstring(MESSAGES[name])
    assert rules.fast_clean(plain)  # a valid fixture passes: the shortcut is taken on real traffic
    seed = sum(name.encode()) + 1
    passed = 0
    for root in [*_mutants(MESSAGES[name], seed, 40), *_structural_mutants(MESSAGES[name], seed, 40)]:
        if rules.fast_clean(root):
            passed += 1
            assert not rules.ident_rules(root), etree.tostring(root)
            assert not rules.code_rules(root), etree.tostring(root)
    assert passed  # some mutants stay clean: the test does not pass by saying "maybe" to everything


def test_check_list_is_the_same_with_and_without_the_compiled_clean_test(monkeypatch: pytest.MonkeyPatch
                                                                         ) -> None:
    if rules._clean is None:
        pytest.skip("hub.validation._clean is not built")
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    roots = []
    for name in sorted(MESSAGES):
        seed = sum(name.encode()) + 2
        roots += [*_mutants(MESSAGES[name], seed, 8), *_structural_mutants(MESSAGES[name], seed, 8)]
    compiled = []
    for root in roots:
        info, scan = mi.scan_info(root, typeids=False)
        compiled.append([(p.rule, p.line, p.xpath, p.text) for p in rules.check_list(info, root, now=now)])
    monkeypatch.setattr(rules, "_clean", None)
    found = 0
    for root, expected in zip(roots, compiled, strict=True):
        info, scan = mi.scan_info(root)
        found_now = rules.check_list(info, root, now=now, seen=scan.typeids)
        got = [(p.rule, p.line, p.xpath, p.text) for p in found_now]
        assert got == expected, etree.tostring(root)
        found += bool(got)
    assert found  # mutants with findings were among them


@pytest.mark.parametrize("xml, clean", [
    # One text node in a CDATA section: read as it is.
    ('<Ident><Id><![CDATA[81001]]></Id><TypeId V="HER"/></Ident>', True),
    # Text and CDATA: two nodes, which lxml's .text joins; the C test answers "maybe" instead of joining.
    ('<Ident><Id>81<![CDATA[001]]></Id><TypeId V="HER"/></Ident>', False),
    # Whitespace str.strip() removes but the C test does not: "maybe", and the rules accept it.
    ('<Ident><Id>\u00a081001</Id><TypeId V="HER"/></Ident>', False),
    ('<Ident><Id> 81001\n</Id><TypeId V="HER"/></Ident>', True),
    ('<Ident><Id>0</Id><TypeId V="HER"/></Ident>', False),
    ('<Ident><Id>81001</Id><TypeId V="HER" S="2.16.578.1.12.4.1.1.9051"/></Ident>', True),
    ('<Ident><Id>81001</Id><TypeId V="HER" S="2.16.578.1.12.4.1.1.9999"/></Ident>', False),
    ('<Organisation><Ident><Id>1</Id><TypeId V="FNR"/></Ident></Organisation>', False),
    ('<Person><Ident><Id>1</Id><TypeId V="FNR"/></Ident></Person>', True),
    ('<AdditionalId><Id>x</Id><TypeId V="whatever"/></AdditionalId>', True),
    ('<X><Sex V="7" S="2.16.578.1.12.4.1.1.3101"/></X>', False),
    ('<X><Sex V="7" S="2.16.578.1.12.4.1.1.9999"/></X>', True),
    # A fixed-place name without S is checked wherever it stands (a superset of code_rules' places).
    (f'<X xmlns="{MSGHEAD_NS}"><Y><Ack V="Q"/></Y></X>', False),
    (f'<X xmlns="{MSGHEAD_NS}"><MsgInfo><Ack V="J"/></MsgInfo></X>', True),
    # S and V in a namespace are other attributes: neither rule reads them.
    ('<X xmlns:x="urn:x"><Sex x:V="7" x:S="2.16.578.1.12.4.1.1.3101"/></X>', True),
    # A character reference in a value is resolved by the parser like any other text.
    ('<X><Sex V="&#49;" S="2.16.578.1.12.4.1.1.3101"/></X>', True),
])
def test_compiled_clean_cases(xml: str, clean: bool) -> None:
    if rules._clean is None:
        pytest.skip("hub.validation._clean is not built")
    root = etree.fromstring(xml.encode(), etree.XMLParser(strip_cdata=False))
    assert rules.fast_clean(root) is clean
    if clean:
        assert not rules.ident_rules(root) and not rules.code_rules(root)


def test_compiled_clean_reads_the_whole_document_from_any_element() -> None:
    if rules._clean is None:
        pytest.skip("hub.validation._clean is not built")
    root = etree.fromstring(b'<X><A><B/></A><Sex V="7" S="2.16.578.1.12.4.1.1.3101"/></X>')
    assert not rules.fast_clean(root[0][0])


def test_listed_s_outside_typeid_is_still_checked() -> None:
    root = etree.fromstring(
        f'<Message><Ident><Id>1</Id><TypeId V="HER" S="{OID}9051"/></Ident>'
        f'<Sex V="7" S="{OID}3101"/></Message>'.encode()
    )
    typed = rules._ident_scan(root)
    assert typed == 1
    assert not rules._codes_clean(root, typed)
    assert [p.rule for p in rules.code_rules(root)] == ["code.value"]


@pytest.mark.parametrize("xml", [
    # An empty S sends a fixed-place element to the list of its parent's local name, in any namespace.
    f'<m:MsgHead xmlns:m="{MSGHEAD_NS}"><x:MsgInfo xmlns:x="urn:x"><m:Ack V="Q" S=""/></x:MsgInfo>'
    '</m:MsgHead>',
    f'<a:AppRec xmlns:a="{APPREC_11_NS}"><a:Status V="9"/></a:AppRec>',
    f'<a:AppRec xmlns:a="{APPREC_10_NS}"><a:Status V="9" S=""/></a:AppRec>',
    f'<m:MsgHead xmlns:m="{MSGHEAD_NS}"><m:Document><m:RefDoc><m:MsgType V="PDF"/></m:RefDoc></m:Document>'
    '</m:MsgHead>',
])
def test_fixed_places_are_checked(xml: str) -> None:
    root = etree.fromstring(xml.encode())
    assert [p.rule for p in rules.code_rules(root)] == ["code.value"]
    assert not rules._codes_clean(root, rules._ident_scan(root))


def test_status_below_the_root_is_not_a_fixed_place() -> None:
    xml = f'<a:AppRec xmlns:a="{APPREC_11_NS}"><a:X><a:Status V="9"/></a:X></a:AppRec>'
    root = etree.fromstring(xml.encode())
    assert not rules.code_rules(root)
    assert rules._codes_clean(root, rules._ident_scan(root))


def test_gen_date_shortcut_only_skips_dates_in_the_past() -> None:
    now = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # the night Oslo moves to summer time
    texts = []
    for days in range(-6, 3):
        d = (now + timedelta(days=days)).date().isoformat()
        for tail in ("", "T00:00:00", "T23:59:59", "T23:59:59.9999999", "T23:59:59-23:59", "T00:00:00+23:59",
                     "T12:00:00Z", "T25:00:00", "x"):
            texts.append(d + tail)
    texts += ["  2026-03-20T10:00:00", "\u0662\u0660\u0662\u0666-03-20T10:00:00", "20260320T100000"]
    for now_ in (now, *(now.astimezone(timezone(timedelta(hours=h))) for h in (-12, 14))):
        for text in texts:
            if rules._surely_past(text, now_):
                dt = rules.parse_gen_date(text)
                assert dt is None or dt <= now_ + rules.CLOCK_SKEW, (text, now_)
    assert rules._surely_past("2026-03-26T23:59:59", now)
    assert not rules._surely_past("2026-03-27T00:00:00", now)


def test_fnr_check_digits_as_written_out() -> None:
    def reference(number: str) -> bool:
        if len(number) != 11 or not number.isdigit():
            return False
        d = list(map(int, number))
        for weights, pos in ((rules._W1, 9), (rules._W2, 10)):
            c = 11 - sum(map(operator.mul, weights, d)) % 11
            c = 0 if c == 11 else c
            if c == 10 or c != d[pos]:
                return False
        return True

    rng = random.Random(11)
    numbers = ["".join(rng.choice("0123456789") for _ in range(11)) for _ in range(20000)]
    numbers += ["07059943124", "0705994312", "070599431240", "0705994312a", "\u0663" * 11, ""]
    assert sum(map(rules.fnr_valid, numbers)) > 100  # the sample holds valid ones too
    for n in numbers:
        assert rules.fnr_valid(n) == reference(n), n


# --- extraction: a plain reading of the same tree --------------------------------------------------------

_MH = f"{{{MSGHEAD_NS}}}"


def _first(el: etree._Element | None, tag: str) -> etree._Element | None:
    return None if el is None else next(el.iterchildren(tag), None)


def _text(el: etree._Element | None) -> str | None:
    return None if el is None else ((el.text or "").strip() or None)


def _code(el: etree._Element | None) -> str | None:
    if el is None:
        return None
    v = el.get("V")
    return v.strip() if v is not None else _text(el)


def _idents(el: etree._Element | None) -> list[tuple[str, str]]:
    if el is None:
        return []
    return [(_code(_first(i, f"{_MH}TypeId")) or "", _text(_first(i, f"{_MH}Id")) or "")
            for i in el.iterchildren(f"{_MH}Ident")]


def _her(t: str, v: str) -> str:
    """HER-ids grouped with dots read as digits, written out again: '369.767' -> '369767'."""
    parts = v.split(".")
    if t == "HER" and len(parts) > 1 and all(p.isascii() and p.isdigit() for p in parts):
        return "".join(parts)
    return v


def _level_ids(pairs: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((t, _her(t, v)) for t, v in pairs if v)


def _empty(level: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(level, t) for t, v in pairs if not v]


def _of(ids: tuple[tuple[str, str], ...], type_id: str) -> str | None:
    return next((v for t, v in ids if t == type_id and v), None)


def _person(hp: etree._Element | None) -> tuple[str | None, tuple[tuple[str, str], ...]]:
    if hp is None:
        return None, ()
    names = [_text(_first(hp, f"{_MH}{t}")) for t in ("GivenName", "MiddleName", "FamilyName")]
    return " ".join(n for n in names if n) or None, _level_ids(_idents(hp))


def ref_msghead_party(party: etree._Element | None) -> Party | None:
    if party is None:
        return None
    org = _first(party, f"{_MH}Organisation")
    if org is None:
        hp = _first(party, f"{_MH}HealthcareProfessional")
        if hp is None:
            return Party()
        name, pids = _person(hp)
        return Party(person_name=name, person_her_id=_of(pids, "HER"), person_ids=pids,
                     empty_ids=tuple(_empty("person", _idents(hp))))
    sub = _first(org, f"{_MH}Organisation")
    hp = _first(org, f"{_MH}HealthcareProfessional")
    if hp is None:
        hp = _first(sub, f"{_MH}HealthcareProfessional")
    name, pids = _person(hp)
    ids, dids = _level_ids(_idents(org)), _level_ids(_idents(sub))
    empty = _empty("organisation", _idents(org)) + _empty("department", _idents(sub)) + _empty(
        "person", _idents(hp))
    return Party(_text(_first(org, f"{_MH}OrganisationName")), _of(ids, "HER"), _of(ids, "ENH"),
                 _text(_first(sub, f"{_MH}OrganisationName")), _of(dids, "HER"), name, _of(pids, "HER"),
                 ids, dids, pids, tuple(empty))


def ref_hcp_party(hcp: etree._Element | None) -> Party | None:
    if hcp is None:
        return None

    def pairs(el: etree._Element | None) -> list[tuple[str, str]]:
        if el is None:
            return []
        out = []
        if _first(el, "{*}TypeId") is not None or _first(el, "{*}Id") is not None:
            out.append((_code(_first(el, "{*}TypeId")) or "", _text(_first(el, "{*}Id")) or ""))
        return out + [(_code(_first(a, "{*}Type")) or "", _text(_first(a, "{*}Id")) or "")
                      for a in el.iterchildren("{*}AdditionalId")]

    def ids(el: etree._Element | None) -> tuple[tuple[str, str], ...]:
        return _level_ids(pairs(el))

    def her(el: etree._Element) -> str | None:
        return _of(ids(el), "HER")

    inst = _first(hcp, "{*}Inst")
    if inst is None:
        prof = _first(hcp, "{*}HCProf")
        if prof is None:
            return Party()
        return Party(person_name=_text(_first(prof, "{*}Name")), person_her_id=her(prof),
                     person_ids=ids(prof), empty_ids=tuple(_empty("person", pairs(prof))))
    depts = [d for d in inst.iterchildren("{*}Dept") if her(d)] or list(inst.iterchildren("{*}Dept"))
    persons = [p for p in inst.iterchildren("{*}HCPerson") if her(p)] or list(
        inst.iterchildren("{*}HCPerson"))
    dept = depts[0] if depts else None
    person = persons[0] if persons else None
    return Party(
        _text(_first(inst, "{*}Name")), her(inst), _of(ids(inst), "ENH"),
        _text(_first(dept, "{*}Name")), her(dept) if dept is not None else None,
        _text(_first(person, "{*}Name")), her(person) if person is not None else None,
        ids(inst), ids(dept), ids(person),
        tuple(_empty("organisation", pairs(inst)) + _empty("department", pairs(dept))
               + _empty("person", pairs(person))),
    )


def _payloads(root: etree._Element) -> list[etree._Element]:
    return [c for content in root.iter(f"{_MH}Content") for c in content if isinstance(c.tag, str)]


def ref_extract(root: etree._Element) -> MessageInfo:
    """extract_info as the plain find()/XPath reading it replaced (hub.messages.info before one-pass)."""
    q = etree.QName(root)
    ns = q.namespace or ""
    info = MessageInfo(root_namespace=ns, root=q.localname, namespace=ns, payload=root)
    if ns == MSGHEAD_NS:
        m = _first(root, f"{_MH}MsgInfo")
        if m is None:
            return info
        info.type = _code(_first(m, f"{_MH}Type"))
        info.mig_version = _text(_first(m, f"{_MH}MIGversion"))
        info.msg_id = _text(_first(m, f"{_MH}MsgId"))
        info.gen_date = _text(_first(m, f"{_MH}GenDate"))
        info.sender = ref_msghead_party(_first(m, f"{_MH}Sender"))
        info.receiver = ref_msghead_party(_first(m, f"{_MH}Receiver"))
        info.copy_receivers = [p for p in map(ref_msghead_party, m.iterchildren(f"{_MH}OtherReceiver")) if p]
        p = _first(m, f"{_MH}Patient")
        if p is not None:
            family = _text(_first(p, f"{_MH}FamilyName"))
            names = (_text(_first(p, f"{_MH}GivenName")), _text(_first(p, f"{_MH}MiddleName")))
            given = " ".join(n for n in names if n)
            info.patient = PatientInfo(", ".join(n for n in (family, given) if n) or None,
                                       tuple((t, v) for t, v in _idents(p) if v),
                                       _code(_first(p, f"{_MH}DateOfBirth")), _code(_first(p, f"{_MH}Sex")))
        payload = None
        for doc in root.iter(f"{_MH}RefDoc"):
            content = _first(doc, f"{_MH}Content")
            if _code(_first(doc, f"{_MH}MsgType")) in (None, "XML") and content is not None:
                payload = next((c for c in content if isinstance(c.tag, str)), None)
                if payload is not None:
                    break
        if payload is None:
            payload = next(iter(_payloads(root)), None)
        info.payload = payload
        info.namespace = (etree.QName(payload).namespace or "") if payload is not None else MSGHEAD_NS
        mig = payload.findtext("{*}MIGversion") if payload is not None else None
        info.family = by_namespace(info.namespace, mig)
        info.carrier = "msghead"
        return info
    family = by_namespace(ns, root.findtext("{*}MIGversion"))
    info.family = family
    if family is None:
        info.type = _code(_first(root, "{*}Type"))
        info.msg_id = _text(_first(root, "{*}MsgId"))
        info.gen_date = _code(_first(root, "{*}GenDate"))
        return info
    info.carrier = family.carrier
    if ns in (APPREC_10_NS, APPREC_11_NS):
        info.type = _code(_first(root, "{*}MsgType"))
        info.mig_version = _text(_first(root, "{*}MIGversion"))
        info.msg_id = _text(_first(root, "{*}Id"))
        info.gen_date = _text(_first(root, "{*}GenDate"))
        info.sender = ref_hcp_party(_first(_first(root, "{*}Sender"), "{*}HCP"))
        info.receiver = ref_hcp_party(_first(_first(root, "{*}Receiver"), "{*}HCP"))
    elif family.carrier == "own":
        _ref_own(root, info, family)
    return info


def _ref_own(root: etree._Element, info: MessageInfo, family: Family) -> None:
    info.type = _code(_first(root, "{*}Type"))
    info.mig_version = _text(_first(root, "{*}MIGversion"))
    info.msg_id = _text(_first(root, "{*}MsgId"))
    info.gen_date = _code(_first(root, "{*}GenDate"))
    k = {"k": info.root_namespace}

    def hcps(path: str | None) -> list[etree._Element]:
        return root.xpath(path.removesuffix("/k:Inst"), namespaces=k) if path else []  # type: ignore[return-value]

    s, r = hcps(family.sender_path), hcps(family.receiver_path)
    info.sender = ref_hcp_party(s[0]) if s else None
    info.receiver = ref_hcp_party(r[0]) if r else None
    info.copy_receivers = [p for p in map(ref_hcp_party, hcps(family.copy_path)) if p]
    service = family.sender_path.split("/")[0] if family.sender_path else None
    pats = root.xpath(f"{service}/k:Patient", namespaces=k) if service else []
    if pats:
        p = pats[0]
        off, typ = _text(_first(p, "{*}OffId")), _code(_first(p, "{*}TypeOffId"))
        info.patient = PatientInfo(_text(_first(p, "{*}Name")), ((typ or "", off),) if off else (),
                                   _code(_first(p, "{*}DateOfBirth")), _code(_first(p, "{*}Sex")))


def ref_plan_key(info: MessageInfo, root: etree._Element) -> tuple[object, ...]:
    payloads: list[tuple[str, str | None]] = []
    if info.root_namespace == MSGHEAD_NS:
        seen = {MSGHEAD_NS}
        for el in _payloads(root):
            pns = etree.QName(el).namespace or ""
            if pns not in seen:
                seen.add(pns)
                payloads.append((pns, el.findtext("{*}MIGversion")))
    return info.root_namespace, root.findtext("{*}MIGversion") or info.mig_version, tuple(payloads)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_extraction_reads_what_a_plain_reading_reads(name: str) -> None:
    seed = sum(name.encode()) + 1
    for root in [etree.fromstring(MESSAGES[name]), *_mutants(MESSAGES[name], seed, 20),
                 *_structural_mutants(MESSAGES[name], seed, 60)]:
        info, scan = mi.scan_info(root)
        assert info == ref_extract(root)
        assert Validator._plan_key(info, root, scan) == ref_plan_key(info, root)
        # The TypeIds extraction vouches for change nothing the ident scan says.
        assert rules._ident_scan(root, rules._vet_typeids(scan.typeids)) == rules._ident_scan(root)
        for party in root.iter(f"{_MH}Sender", f"{_MH}Receiver", f"{_MH}OtherReceiver"):
            assert mi.msghead_party(party) == ref_msghead_party(party)
        for hcp in root.iter("{*}HCP"):
            assert mi.hcp_party(hcp) == ref_hcp_party(hcp)


def test_own_root_parties_in_document_order() -> None:
    ns = "http://www.kith.no/xmlstds/henvisning/2012-02-15"

    def hcp(her: str) -> str:
        return f'<HCP><Inst><Name>{her}</Name><Id>{her}</Id><TypeId V="HER"/></Inst></HCP>'

    root = etree.fromstring(
        f'<Message xmlns="{ns}"><MIGversion>v1.1 2012-02-15</MIGversion>'
        f'<ServReq><Requester/><CopyDest>{hcp("3")}</CopyDest><Patient><Name>A</Name></Patient></ServReq>'
        f'<x:ServReq xmlns:x="urn:x"><x:Requester>{hcp("9")}</x:Requester></x:ServReq>'
        f'<ServReq><Requester>{hcp("1")}{hcp("2")}</Requester><CopyDest>{hcp("4")}</CopyDest>'
        f'<ServProvider>{hcp("5")}</ServProvider></ServReq></Message>'.encode()
    )
    info = mi.extract_info(root)
    assert info == ref_extract(root)
    assert (info.sender_her, info.receiver_her) == ("1", "5")
    assert [p.her_id for p in info.copy_receivers] == ["3", "4"]
    assert info.patient is not None and info.patient.name == "A"


def test_fast_built_info_and_result_are_ordinary_dataclasses() -> None:
    root = etree.fromstring(MESSAGES["dialogmelding-1.1-dialog-helsefaglig.xml"])
    info = mi.extract_info(root)
    plain = MessageInfo(**{f: getattr(info, f) for f in vars(info)})
    assert info == plain and list(vars(info)) == list(vars(plain)) and repr(info) == repr(plain)
    result = Validator._result("x.xml", info)
    expected = ValidationResult("x.xml", "Dialogmelding", "1.1", info.type, info.namespace, info.sender_her,
                                info.receiver_her, info.msg_id, info.gen_date, info=info)
    assert result == expected and vars(result) == vars(expected)
    assert list(vars(result)) == list(vars(expected))


def test_fast_party_objects_are_ordinary_dataclasses() -> None:
    made = mi._party("n", "1", None, None, None, None, None)
    plain = Party("n", "1")
    assert made == plain and hash(made) == hash(plain) and repr(made) == repr(plain)
    with pytest.raises(AttributeError):
        made.name = "x"  # type: ignore[misc]
    assert mi._patient("a", (), None, None) == PatientInfo("a")
