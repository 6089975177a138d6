"""Grading as an approval does: what an AppRec, or a produced message, must be to pass a case.

Plain functions over bytes, no I/O: the runner hands in what it sent and what came back.

Mottak (the AppRec test sheet, ../shared/reference/testcases): every AppRec the system writes is
schema-valid (unit sheet #1); its Status and its Error codes are exactly the expected ones, one code
per error, from code list 8221 (#5-#8, system sheet rows of the case); OriginalMsgId Id, MsgType and
IssueDate are the original's MsgId, type and GenDate (#2-#4); the addresses are mirrored with all
their identifiers and names (#5/#6: the original's sender is the AppRec's receiver and the other way
round; signing personnel need not be mirrored when a service is addressed); a signed AppRec's
signature verifies.

Sending: the produced message is the one the order asked for (type, patient, receiver), and matches
the pack's answer key ("Fasit") where the reference material has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hub.codes import APPREC_ERROR_OID
from hub.conformance.catalogue import Expect
from hub.messages.info import MessageInfo, Party, extract_info
from hub.xmlsafe import XmlInputError, parse_bytes

SCHEMA_CHECKS = ("wellformed", "schema")


@dataclass(frozen=True)
class Finding:
    """One criterion a document does not meet."""

    criterion: str  # where the criterion comes from: apprec-sheet#N, apprec-unit-sheet#N, order, fasit
    rule: str  # apprec.status, apprec.codes, apprec.original-id, apprec.mirrored, order.patient, ...
    text: str
    code: str = "X99"

    def to_dict(self) -> dict:
        return {"code": self.code, "rule": self.rule, "criterion": self.criterion, "text": self.text}


@dataclass
class Document:
    """What the runner reads from a plain KITH XML file: no envelope, only the document itself."""

    data: bytes
    info: MessageInfo | None = None  # None: not readable XML
    apprec: object | None = None  # hub.messages.apprec.AppRecInfo when the document is an AppRec
    problem: str | None = None

    @property
    def is_apprec(self) -> bool:
        return self.apprec is not None

    @property
    def msg_id(self) -> str | None:
        if self.apprec is not None:
            return getattr(self.apprec, "msg_id", None)
        return self.info.msg_id if self.info else None

    @property
    def original_msg_id(self) -> str | None:
        return getattr(self.apprec, "original_msg_id", None) if self.apprec is not None else None

    @property
    def sender_her(self) -> int | None:
        return _her(self.info.sender if self.info else None)

    @property
    def receiver_her(self) -> int | None:
        return _her(self.info.receiver if self.info else None)

    @property
    def type(self) -> str | None:
        return self.info.type if self.info else None


def _her(p: Party | None) -> int | None:
    her = p.communication_her_id if p else None
    return int(her) if her and her.isascii() and her.isdigit() else None


def read_document(data: bytes) -> Document:
    """Type, MsgId, sender and receiver (and for an AppRec its OriginalMsgId) read from the document."""
    from hub.conformance.trust import strip_signature
    from hub.messages.apprec import NotAnAppRec, parse_apprec

    plain = strip_signature(data)
    try:
        info = extract_info(parse_bytes(plain))
    except (XmlInputError, ValueError) as exc:
        return Document(data, problem=str(exc))
    try:
        apprec = parse_apprec(plain) if info.family and info.family.name == "AppRec" else None
    except (NotAnAppRec, XmlInputError):
        apprec = None
    return Document(data, info, apprec)


# --- Mottak: the AppRec ---------------------------------------------------------------------------------


@dataclass
class AppRecGrade:
    observed: str
    findings: list[Finding] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.findings


def observed_of(doc: Document) -> str:
    ar = doc.apprec
    if ar is None:
        return "not an AppRec" + (f" ({doc.problem})" if doc.problem else "")
    codes = [e.code for e in getattr(ar, "errors", [])]
    return str(getattr(ar, "status", "")) + (" " + "/".join(codes) if codes else "")


def grade_apprec(data: bytes, original: bytes, expected: Expect, *, schema_problems: list[dict],
                 signature_problem: str | None = None, also: tuple[str, ...] = (),
                 criterion: str = "apprec-sheet", as_receiver: str | None = None) -> AppRecGrade:
    """Every criterion an AppRec answering `original` must meet. `schema_problems`: the AppRec's
    well-formedness and schema problems (the caller validates); `signature_problem`: why its signature
    does not verify, if it is signed and does not; `also`: codes of further errors the original really
    has (a patient without FNR breaks the schema of a standard that requires it: T02 is right too);
    `criterion`: the case's own source, which the status and codes are judged by; `as_receiver`
    ("primary" | "copy"): in a copy-receiver case, which receiver of the original the AppRec answers
    for: its Sender must mirror that receiver, and both parties carry their Role (unit sheet #9)."""
    doc = read_document(data)
    out = AppRecGrade(observed_of(doc))
    f = out.findings
    for p in schema_problems:
        f.append(Finding("apprec-unit-sheet#1", "apprec.valid", f"{p.get('code')} {p.get('text', '')}"[:300],
                         "T02" if p.get("code") != "T01" else "T01"))
    if signature_problem:
        f.append(Finding("apprec-sheet#29", "apprec.signature", signature_problem, "S01"))
    ar = doc.apprec
    if ar is None:
        if not schema_problems:
            f.append(Finding("apprec-unit-sheet#1", "apprec.valid", out.observed))
        return out
    wrong = _answer(ar, expected, also)
    if wrong:
        f.append(Finding(criterion, "apprec.answer",
                         f"expected {expected.describe()}, got {out.observed}: {wrong}"))
    f += _code_system(list(getattr(ar, "errors", [])))
    orig = read_document(original)
    if orig.info is not None and orig.info.msg_id is not None:
        f += _original_id(ar, orig.info)
        f += _mirrored(ar, orig.info, as_receiver)
        if as_receiver:
            f += _roles(ar, orig.info, as_receiver)
    return out


def _answer(ar: object, expected: Expect, also: tuple[str, ...]) -> str | None:
    """The status, and exactly the expected errors, each coded once: the case's code (or one of its
    alternatives; several where the message has several of those defects), none missing, none extra.
    An OK expects no error at all. None when right, else what is wrong."""
    status = str(getattr(ar, "status", ""))
    wrong = [] if status == expected.status else [f"Status {status!r}"]
    codes = [str(getattr(e, "code", "")) for e in getattr(ar, "errors", [])]
    extra = [c for c in codes if c not in expected.codes and c not in also]
    repeated = sorted({c for c in codes if codes.count(c) > 1})
    if extra:
        wrong.append(f"error code(s) not expected: {'/'.join(extra)}")
    if repeated:
        wrong.append(f"the same error coded more than once: {'/'.join(repeated)}")
    if expected.codes and not set(codes) & set(expected.codes):
        wrong.append(f"expected error code missing: {'/'.join(expected.codes)}")
    return "; ".join(wrong) or None


def _code_system(errors: list) -> list[Finding]:
    out = []
    bad_oid = sorted({str(getattr(e, "system", None)) for e in errors
                      if getattr(e, "system", None) != APPREC_ERROR_OID})
    if bad_oid:
        out.append(Finding("apprec-unit-sheet#8", "apprec.code-system",
                           f"error codes not from code list 8221 ({APPREC_ERROR_OID}):"
                           f" S={', '.join(bad_oid)}"))
    return out


def _original_id(ar: object, orig: MessageInfo) -> list[Finding]:
    out = []
    have = getattr(ar, "original_msg_id", None)
    if have != orig.msg_id:
        out.append(Finding("apprec-sheet#2", "apprec.original-id",
                           f"OriginalMsgId/Id {have!r}, the original's MsgId is {orig.msg_id!r}"))
    have = getattr(ar, "original_msg_type", None)
    if orig.type and have != orig.type:
        out.append(Finding("apprec-sheet#3", "apprec.msgtype",
                           f"OriginalMsgId/MsgType {have!r}, the original's type is {orig.type!r}"))
    have = str(getattr(ar, "original_issue_date", "") or "")
    want = str(orig.gen_date or "")
    if want and _instant(have) != _instant(want):
        out.append(Finding("apprec-sheet#4", "apprec.issue-date",
                           f"OriginalMsgId/IssueDate {have!r}, the original's GenDate is {want!r}"))
    return out


def _instant(text: str) -> str:
    """A dateTime to the second (fractions and a trailing Z do not make another instant here)."""
    return text.strip().rstrip("Z")[:19]


def _mirror(want: Party | None, have: Party | None, role: str) -> list[str]:
    """Every level of the original's party, its name and every identifier (type and id), in the
    AppRec's; the person only where no service is addressed (sheet #6)."""
    if want is None:
        return []
    if have is None:
        return [f"{role} missing"]
    got = {level: (name, ids) for level, name, ids in have.levels()}
    out = []
    for level, name, ids in want.levels():
        if level == "person" and want.dept_her_id:
            continue
        h_name, h_ids = got.get(level, (None, ()))
        if name and _norm(h_name) != _norm(name):
            out.append(f"{role} {level} name {h_name!r}, the original has {name!r}")
        missing = [f"{t} {v}" for t, v in ids if (t, v) not in set(h_ids)]
        if missing:
            has = ", ".join(f"{t} {v}" for t, v in h_ids) or "nothing"
            out.append(f"{role} {level} lacks {', '.join(missing)} (has {has})")
    return out


def _norm(v: str | None) -> str:
    return " ".join((v or "").split())


def _mirrored(ar: object, orig: MessageInfo, as_receiver: str | None = None) -> list[Finding]:
    """The original's sender is the AppRec's Receiver; the receiver it answers for (the primary one,
    or in a copy-receiver case the copy receiver) its Sender."""
    wrong = (_mirror(orig.sender, getattr(ar, "receiver", None), "Receiver")
             + _mirror(receiver_of(orig, as_receiver or "primary"), getattr(ar, "sender", None), "Sender"))
    return [Finding("apprec-sheet#5", "apprec.mirrored", "; ".join(wrong))] if wrong else []


# --- copy receivers (AppRec sheet #7-#11, #35-#40) ------------------------------------------------------

ROLE_TEXT = {"PRIM": "Primærmottaker", "COP": "Kopimottaker", "REQ": "Rekvirent", "SPR": "Tjenesteyter",
             "AVS": "Avsender", "RECEIVER": "Mottaker"}


def receiver_of(orig: MessageInfo, kind: str) -> Party | None:
    """The primary receiver, or the (first) copy receiver (MsgHead OtherReceiver, CopyDest)."""
    if kind == "copy":
        return orig.copy_receivers[0] if orig.copy_receivers else None
    return orig.receiver


def expected_roles(kind: str, apprec_version: str, orig: MessageInfo) -> tuple[tuple[str, ...], str]:
    """(Sender Role(s), Receiver Role) of an AppRec answering for the `kind` receiver (unit sheet #9):
    AppRec 1.1 PRIM or COP, the original's sender AVS; AppRec 1.0 COP for a copy receiver, for the
    primary REQ where it is the requester (rekvirent) of the original and SPR where it is the service
    provider (MsgHead messages name neither: either is right, sheet #11/#35/#40), the original's sender
    RECEIVER."""
    if apprec_version == "1.1":
        return ("PRIM",) if kind == "primary" else ("COP",), "AVS"
    if kind == "copy":
        return ("COP",), "RECEIVER"
    path = (orig.family.receiver_path or "") if orig.family else ""
    return ("REQ",) if "Requester" in path else ("SPR",) if "ServProvider" in path else ("REQ", "SPR"), \
        "RECEIVER"


def _roles(ar: object, orig: MessageInfo, kind: str) -> list[Finding]:
    senders, receiver = expected_roles(kind, str(getattr(ar, "version", "1.0")), orig)
    have_s, have_r = getattr(ar, "sender_role", None), getattr(ar, "receiver_role", None)
    wrong = []
    if have_s not in senders:
        wrong.append(f"Sender Role {have_s or 'missing'}, the {kind} receiver's is {' or '.join(senders)}")
    if have_r != receiver:
        wrong.append(f"Receiver Role {have_r or 'missing'}, the original's sender's is {receiver}")
    return [Finding("apprec-unit-sheet#9", "apprec.role", "; ".join(wrong))] if wrong else []


def answers_for(doc: Document, orig: MessageInfo) -> str | None:
    """Which receiver of the original an AppRec answers for, read from its Sender (the receiving party
    it names, by its deepest HER-id); where primary and copy receiver are one party, by its Role.
    None: the Sender is neither receiver."""
    ar = doc.apprec
    her = getattr(getattr(ar, "sender", None), "communication_her_id", None)
    kinds = [k for k in ("primary", "copy")
             if (p := receiver_of(orig, k)) is not None and her and p.communication_her_id == her]
    if len(kinds) > 1:
        return "copy" if getattr(ar, "sender_role", None) == "COP" else "primary"
    return kinds[0] if kinds else None


@dataclass(frozen=True)
class Answer:
    """One AppRec the system sent in a case, with what the caller found checking it."""

    data: bytes
    schema_problems: list[dict] = field(default_factory=list)
    signature_problem: str | None = None


def grade_receivers(answers: list[Answer], original: bytes, expected: Expect, hosted: tuple[str, ...], *,
                    also: tuple[str, ...] = (), criterion: str = "apprec-sheet") -> AppRecGrade:
    """A copy-receiver case: exactly one AppRec per receiver the system hosts (`hosted`: "primary",
    "copy"), none for a receiver it does not host, each one graded as an AppRec answering for its
    receiver (grade_apprec with `as_receiver`)."""
    orig = read_document(original).info
    if orig is None:
        raise ValueError("the original of a copy-receiver case must be readable")
    f: list[Finding] = []
    seen: dict[str | None, int] = {}
    observed = []
    for a in answers:
        doc = read_document(a.data)
        kind = answers_for(doc, orig) if doc.apprec is not None else None
        seen[kind] = seen.get(kind, 0) + 1
        role = getattr(doc.apprec, "sender_role", None)
        observed.append(f"{kind or 'unknown sender'} ({role or 'no Role'}): {observed_of(doc)}")
        if doc.apprec is not None and kind is None:
            her = getattr(getattr(doc.apprec, "sender", None), "communication_her_id", None)
            f.append(Finding(criterion, "apprec.receivers",
                             f"an AppRec from HER-id {her}, which is neither receiver of the message"))
            continue
        if kind is not None and kind not in hosted:
            her = getattr(receiver_of(orig, kind), "communication_her_id", None)
            f.append(Finding(criterion, "apprec.receivers",
                             f"an AppRec as the {kind} receiver ({her}), which the system does not host: only"
                             " receivers of its own organisation answer"))
            continue
        g = grade_apprec(a.data, original, expected, schema_problems=a.schema_problems,
                         signature_problem=a.signature_problem, also=also, criterion=criterion,
                         as_receiver=kind)
        f += [Finding(x.criterion, x.rule, f"{kind} receiver's AppRec: {x.text}", x.code) for x in g.findings]
    for kind in hosted:
        n = seen.get(kind, 0)
        her = getattr(receiver_of(orig, kind), "communication_her_id", None)
        if n == 0:
            f.append(Finding(criterion, "apprec.receivers", f"no AppRec from the {kind} receiver ({her}): one"
                             " AppRec per receiver the system hosts"))
        elif n > 1:
            f.append(Finding(criterion, "apprec.receivers", f"{n} AppRecs from the {kind} receiver ({her}):"
                             " one per receiver, the message received again is a duplicate"))
    return AppRecGrade("; ".join(observed) or "no AppRec", f)


# --- Sending: the produced message against the order ------------------------------------------------------


def grade_order(data: bytes, *, family: tuple[str, str], fnr: str | None, receiver_her: int) -> list[Finding]:
    """Is the produced message the one ordered: its standard and version, about the test patient, to
    the receiver? (`family`: hub.messages.families name and version of the ordered message.)"""
    doc = read_document(data)
    if doc.info is None:
        return [Finding("order", "order.readable", f"not readable: {doc.problem}", "T01")]
    out = []
    have = (doc.info.family_name, doc.info.version)
    if have != family:
        out.append(Finding("order", "order.type",
                           f"{have[0] or 'unknown'} {have[1] or ''}, the order asked for"
                           f" {family[0]} {family[1]}",
                           "T10"))
    ids = {i for _t, i in doc.info.patient_ids}
    if fnr and fnr not in ids:
        out.append(Finding("order", "order.patient",
                           f"patient {', '.join(sorted(ids)) or 'without id'}, the order's patient is {fnr}",
                           "E31"))
    party = doc.info.receiver
    hers = {h for h in ((party.her_id, party.dept_her_id, party.person_her_id) if party else ()) if h}
    if str(receiver_her) not in hers:
        out.append(Finding("order", "order.receiver",
                           f"receiver HER-id(s) {', '.join(sorted(hers)) or 'none'}, the order's receiver is "
                           f"{receiver_her}", "E21"))
    return out


# --- Sending: the produced message against the pack's answer key ("Fasit") --------------------------------

_LOCAL = "*[local-name()='{}']"


def _xp(*steps: str) -> str:
    return "//" + "/".join(_LOCAL.format(s) for s in steps)


def fasit_facts(data: bytes) -> dict[str, set[str]]:
    """What an answer key fixes, independent of namespace and of what may differ (dates, identifiers,
    test actors): the patient, the diagnoses, the kinds of clinical information, the drugs, the
    message description."""
    root = parse_bytes(data).getroot()

    def values(path: str, attr: str | None = None) -> set[str]:
        got = root.xpath(path)
        return {" ".join(((e.get(attr) if attr else e) or "").split()).lower() for e in got} - {""}

    return {
        "patient id": values(_xp("Patient", "OffId") + "/text()") | values(
            _xp("Patient", "Ident", "Id") + "/text()"),
        "patient name": values(_xp("Patient", "Name") + "/text()"),
        "diagnoses": values(_xp("Diagnosis", "Concept"), "V"),
        "clinical information": values(_xp("InfItem", "Type"), "V"),
        "drugs": {v for e in root.xpath(_xp("DrugId"))
                  if (v := " ".join((e.get("OT") or e.get("V") or "").split()).lower())},
        "message description": values(f"/*/{_LOCAL.format('ServReq')}/{_LOCAL.format('MsgDescr')}", "V"),
    }


def grade_fasit(data: bytes, fasit: bytes) -> list[Finding]:
    """Everything the answer key has must be in the produced message (the patient and the message
    description exactly; more diagnoses, information or drugs than the key are not wrong)."""
    try:
        have = fasit_facts(data)
    except XmlInputError as exc:
        return [Finding("fasit", "fasit.readable", f"not readable: {exc}", "T01")]
    want = fasit_facts(fasit)
    out = []
    for fact, values in want.items():
        exact = fact in ("patient id", "patient name", "message description")
        wrong = values != have[fact] if exact else not values <= have[fact]
        if values and wrong:
            out.append(Finding("fasit", f"fasit.{fact.replace(' ', '-')}",
                               f"{fact}: the answer key has {', '.join(sorted(values))}; the message has"
                               f" {', '.join(sorted(have[fact])) or 'none'}"))
    return out
