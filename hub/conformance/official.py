"""Official test packs as catalogue cases (when ../shared/reference is present).

1. The acceptance tests (samples/akseptansetest/<family>/<folder>/<file>): each file is a Mottak case.
   Its name encodes the self-declaration criterion it tests (dialogmelding `Case1-2` syntax error,
   `Case1-14a..c` missing patient data, `Case1-15` unknown patient, `Case1-16a..c` missing sender,
   `Case1-17a..b` missing FNR; the PLO and Henvisning packs number the same criteria differently).
   CRITERIA below maps (pack, criterion) to the AppRec the criterion demands; the base cases (`Case1`,
   `Case2`, ...) and the content variants are correct messages the receiver must accept.
2. The AppRec test sheet (testcases/TestcaseApplikasjonskvittering_*.csv): each row is a case with the
   status and error codes its "Forventet resultat" column names; the rows the runner can execute are
   the battery in hub.conformance.catalogue.M_BATTERY, the others are listed as manual.

Running them (Mottak): `official_cases(mt)` gives a cell the pack messages of its own family and
version (found from each file's namespace; an unreadable file from its folder). The runner sends each
one as `prepare()` makes it: re-addressed from the pack's test parties to the test centre (sender) and
the system under test (receiver), with a fresh MsgId, and nothing else changed, so the defect the case
is about stays. `registered_patients()` are the patients of the pack's correct messages: the test setup
registers them in the system, as a tester does before an acceptance test; the unknown-patient case's
patient is never among them.

Expected codes: the criteria name what is wrong, rarely the code. Where the code below is our reading
of HIS 80415 / HITS 1168 rather than the pack's, the case title says "judgement".

The catalogue works without any of this: official_cases() returns [] when the folder is absent.
"""

from __future__ import annotations

import csv
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from lxml import etree

from hub.conformance.catalogue import Case, Expect, MessageType
from hub.paths import reference_dir

OK = Expect("1")
# Patient data removed, name included: E36 (insufficient identification) is the criterion's code; a
# receiver that first notices the missing name answers E32, which is as right (judgement).
MISSING_PATIENT = Expect("2", ("E36", "E32"))
UNKNOWN_PATIENT = Expect("2", ("E35",))
MISSING_FNR = Expect("2", ("E30",))
# The FNR missing while the name is there: E30 (FNR missing) or E36 (not identified) (judgement).
NO_FNR = Expect("2", ("E30", "E36"))
# Something that is not an FNR where the FNR belongs: E31 (wrong FNR) or E30 (missing) (judgement).
NOT_AN_FNR = Expect("2", ("E30", "E31"))
WRONG_FNR = Expect("2", ("E31",))
# A message without a sender cannot be answered to anyone in particular; the rule catalogue maps
# `sender.missing` to X99, the receiver rejects it.
MISSING_SENDER = Expect("2", ("X99",))
SCHEMA = Expect("2", ("T02",))
SYNTAX = Expect("2", ("T01",))
# The whole Patient element removed: the schema requires it, so T02 is as right as E36 (judgement).
NO_PATIENT_ELEMENT = Expect("2", ("E36", "T02"))
J = " (judgement: see hub.conformance.official)"

# Topics: what a criterion is about (a planted defect must fail exactly the cases of its topic).
SYNTAX_T, SCHEMA_T, PATIENT_T, UNKNOWN_T, SENDER_T, FNR_T = (
    "syntax", "schema", "patient-data", "unknown-patient", "sender", "fnr")


@dataclass(frozen=True)
class Pack:
    """One folder of the acceptance tests: which family/version it tests and its criteria."""

    folder: str  # glob below samples/akseptansetest
    family: str
    version: str
    criteria: dict[str, tuple[str, Expect, str]]  # criterion id -> (title, expected AppRec, topic)
    # folder name part -> family, for files that cannot be read (their namespace is unknown)
    folder_family: tuple[tuple[str, str], ...] = ()


_DIALOG = {
    "1-2": ("Syntax error: the message is not well-formed", SYNTAX, SYNTAX_T),
    "1-14a": ("Missing patient data: name and identity removed" + J, MISSING_PATIENT, PATIENT_T),
    "1-14b": ("Missing patient data: no FNR, only a local help number" + J, MISSING_PATIENT, PATIENT_T),
    "1-14c": ("Missing patient data: only date of birth" + J, MISSING_PATIENT, PATIENT_T),
    "1-15": ("Unknown patient", UNKNOWN_PATIENT, UNKNOWN_T),
    "1-16a": ("Missing sender: sender's name and identifiers emptied" + J, MISSING_SENDER, SENDER_T),
    "1-16b": ("Missing sender: Sender element removed" + J, MISSING_SENDER, SENDER_T),
    "1-16c": ("Missing sender: Sender element removed" + J, MISSING_SENDER, SENDER_T),
    "1-17a": ("Missing FNR: empty Id", MISSING_FNR, FNR_T),
    "1-17b": ("Missing FNR: Id removed", MISSING_FNR, FNR_T),
}
# PLO 1.5 packs (all eight folders share one numbering).
_PLO = {
    "1-2": ("Syntax error: an end tag commented out", SYNTAX, SYNTAX_T),
    "1-11a": ("Missing patient data: name and identity emptied" + J, MISSING_PATIENT, PATIENT_T),
    # Name, date of birth, sex and an H-number identify a patient (HITS 1168: name + hjelpenummer);
    # the test setup registers that patient, so a receiver must accept the message (judgement).
    "1-11b": ("Patient without FNR, identified by name, birth date, sex and H-number: accepted" + J, OK,
              PATIENT_T),
    "1-11c": ("Missing FNR: patient with name, birth date and sex, no identity number" + J, NO_FNR, FNR_T),
    "1-12": ("Unknown patient", UNKNOWN_PATIENT, UNKNOWN_T),
    "1-13a": ("Missing sender: sender information removed" + J, MISSING_SENDER, SENDER_T),
    "1-13b": ("Missing sender: all elements below the sender removed" + J, MISSING_SENDER, SENDER_T),
    "1-14a": ("Missing FNR: FNR emptied" + J, NO_FNR, FNR_T),
    "1-14b": ("Missing FNR: other text instead of the FNR, unknown code system" + J, NOT_AN_FNR, FNR_T),
    "1-15a": ("Mandatory element removed (Forsendelsesstatus)", SCHEMA, SCHEMA_T),
    "1-15b": ("Mandatory content removed (SvarPaaForesporsel)", SCHEMA, SCHEMA_T),
}
_PLO_FOLDERS = (
    ("Innleggelsesrapport", "Innleggelsesrapport"), ("Utskrivningsrapport", "Utskrivningsrapport"),
    ("Helseopplysninger_til_lege", "Helseopplysninger til lege"),
    ("Helseopplysninger_ved_soknad", "Helseopplysninger ved søknad"),
    ("Medisinske_opplysninger", "Medisinske opplysninger"),
    ("Orientering_om_tjenestetilbud", "Orientering om tjenestetilbud"),
    ("Melding_fravar", "Melding om fravær"), ("Pasientlogistikk", "Pasientlogistikk"),
)
# Epikrise 1.1 (receiving): patient, sender and receiver criteria; 13-21 are correct variants
# (change, related messages, cancellation) the receiver must accept.
_EPIKRISE = {
    # named a syntax error, but the file is well-formed and breaks the schema: T02
    "1-2": ("Syntax error (well-formed, breaks the schema)", SCHEMA, SCHEMA_T),
    "1-11a": ("Missing FNR: OffId emptied" + J, NO_FNR, FNR_T),
    "1-11b": ("Missing patient data: name, sex and identity removed" + J, MISSING_PATIENT, PATIENT_T),
    # Only the institution's identifier is emptied: the sender's department/person HER-id still names
    # the communication party (HIS 1153 AD2.6-AD2.8, the deepest level), so it is accepted (judgement).
    "1-12a": ("Institution identifier of the sender emptied, its HER-id below remains: accepted" + J, OK,
              SENDER_T),
    "1-12b": ("Missing sender: institution removed" + J, MISSING_SENDER, SENDER_T),
}
# Henvisning 1.0 (receiving): 20 patient, 21 sender, 22 invalid identity; 23-28 correct variants.
_HENVISNING = {
    "1-20a": ("Missing patient data: identifying information removed" + J, MISSING_PATIENT, PATIENT_T),
    "1-20b": ("Missing patient data: Patient element removed" + J, NO_PATIENT_ELEMENT, PATIENT_T),
    "1-21a": ("Missing sender: identifying information removed" + J, MISSING_SENDER, SENDER_T),
    "1-21b": ("Missing sender: Requester element removed" + J, MISSING_SENDER, SENDER_T),
    "1-22": ("Invalid identity number (xxx as DNR)", WRONG_FNR, FNR_T),
}

PACKS: tuple[Pack, ...] = (
    Pack("dialogmelding/Testcase-Dialogmeldingen", "Dialogmelding", "1.0", _DIALOG),
    Pack("epikrise/Case-mottak-epikrise1_1", "Epikrise", "1.1", _EPIKRISE),
    Pack("henvisning/TestcaseHenvisningMottak", "Henvisning", "1.0", _HENVISNING),
    Pack("plo/Testcase-mottak-*-v1_5", "PLO", "1.5", _PLO, _PLO_FOLDERS),
)

_CRITERION = re.compile(r"case_?(\d+)(?:([-_])(\d+)(?:-?([a-d])(?![a-z]))?)?", re.IGNORECASE)


def criterion_of(file_name: str) -> str | None:
    """'Case1-14a.xml' -> '1-14a'; 'Epikrise1-1-case1-2Feil.xml' -> '1-2'; 'Case1-20-a.xml' -> '1-20a';
    'Case2_2-Svar-....xml' -> '2_2'; 'Case1-Melding_fravar-v1_5.xml' -> '1'."""
    m = _CRITERION.search(Path(file_name).stem)
    if not m:
        return None
    main, sep, sub, letter = m.groups()
    return main + (f"{sep}{sub}{(letter or '').lower()}" if sub else "")


@dataclass(frozen=True)
class OfficialCase:
    pack: Pack
    path: Path
    criterion: str
    title: str
    expect: Expect
    known: bool  # the criterion is in the pack's table (False: a base/content case, expected OK)
    topic: str | None = None  # what the criterion is about (None: a correct message)

    @property
    def rel(self) -> str:
        parts = self.path.parts
        return "/".join(parts[parts.index("akseptansetest"):])

    @property
    def family(self) -> tuple[str, str]:
        """(family, version) of the message: from its namespace, else from its pack and folder."""
        return message_family(self.path) or self._folder_family()

    def _folder_family(self) -> tuple[str, str]:
        for part, fam in self.pack.folder_family:
            if part in self.path.parent.name:
                return fam, self.pack.version
        return self.pack.family, self.pack.version


@lru_cache(maxsize=1024)
def message_family(path: Path) -> tuple[str, str] | None:
    """(family, version) of a message file by its payload namespace; None when it cannot be read."""
    from hub.messages.families import MSGHEAD_NS, by_namespace
    from hub.xmlsafe import parse_bytes

    try:
        root = parse_bytes(path.read_bytes()).getroot()
    except Exception:  # noqa: BLE001 - not XML (a syntax-error case): its folder tells
        return None
    mig = next((e.text for e in root.iter("{*}MIGversion") if e.text), None)
    for el in root.iter():
        ns = etree.QName(el).namespace if isinstance(el.tag, str) else None
        if ns and ns != MSGHEAD_NS:
            fam = by_namespace(ns, mig if el is root else None)
            if fam is not None and fam.name not in ("MsgHead", "kith"):
                return fam.name, fam.version
    return None


def acceptance_cases(ref: Path | None = None) -> list[OfficialCase]:
    """Every acceptance-test message with its criterion and expected AppRec ([] without the pack)."""
    ref = ref or reference_dir()
    if ref is None:
        return []
    root = ref / "samples" / "akseptansetest"
    out: list[OfficialCase] = []
    for pack in PACKS:
        for folder in sorted(root.glob(pack.folder)):
            for path in sorted(folder.glob("*.xml")):
                crit = criterion_of(path.name)
                if crit is None:
                    continue
                hit = pack.criteria.get(crit)
                if hit:
                    out.append(OfficialCase(pack, path, crit, hit[0], hit[1], True, hit[2]))
                else:
                    out.append(OfficialCase(pack, path, crit, f"Correct message (case {crit})", OK, False))
    return out


def official_cases(mt: MessageType, ref: Path | None = None) -> list[Case]:
    """The acceptance-test M cases for one message type: the pack messages of its family and version
    (a PLO folder also holds a Dialogmelding of the same conversation: that one is not this cell's)."""
    out = []
    for oc in acceptance_cases(ref):
        if oc.family == (mt.family, mt.family_version):
            both = copy_in_receivers_org(oc.path.read_bytes())  # answered by both receivers (sheet #11)
            out.append(Case(f"M.akseptansetest.{oc.path.stem}", "M", oc.title,
                            source=oc.rel, file=oc.path, expect=oc.expect, topic=oc.topic,
                            receivers=("primary", "copy") if both else ()))
    return out


def fasit_cases(mt: MessageType, ref: Path | None = None) -> list[Case]:
    """Sending cases with an answer key: the tester enters the pack's case N as its description says
    (Akseptansetest-sending-*), the system sends it, and the message is compared with Fasit_case_N."""
    ref = ref or reference_dir()
    if ref is None:
        return []
    out = []
    for path in sorted((ref / "samples" / "akseptansetest").glob("*/Fasit*Sending/Fasit_case_*.xml")):
        if message_family(path) != (mt.family, mt.family_version):
            continue
        n = criterion_of(path.name)
        rel = "/".join(path.parts[path.parts.index("akseptansetest"):])
        out.append(Case(f"S.fasit.case-{n}", "S", f"Acceptance test case {n} entered as its description says:"
                        " the message carries what the answer key (Fasit) has", source=rel, check="fasit",
                        file=path))
    return out


# --- sending a pack message to a system -------------------------------------------------------------


def _her_holders(party: etree._Element) -> list[tuple[etree._Element, bool]]:
    """(Id element, is level 1) of every HER-id in a party: MsgHead Organisation/Ident, HCP Inst, and
    below (Dept, HCPerson, sub-Organisation, AdditionalId)."""
    out = []
    for t in party.iter("{*}TypeId", "{*}Type"):
        if t.get("V") != "HER":
            continue
        holder = t.getparent()
        id_el = holder.find("{*}Id") if holder is not None else None
        if id_el is None:
            continue
        org = holder.getparent() if etree.QName(holder).localname == "Ident" else holder
        top = org is not None and org.getparent() is not None and \
            etree.QName(org.getparent()).localname in ("Sender", "Receiver", "HCP")
        out.append((id_el, top and etree.QName(holder).localname != "AdditionalId"))
    return out


def _readdress(party: etree._Element, org: int, service: int, renamed: dict[str, str]) -> None:
    """Put our HER-ids where the pack's test party had its own; emptied identifiers stay empty (a
    missing-sender case keeps its defect). A level-1 institution named only by another identifier
    (Epikrise 1.1 writes the ENH number) gets the HER-id in its place: a receiver finds it by that."""
    holders = _her_holders(party)
    for id_el, top in holders:
        old = (id_el.text or "").strip()
        if old:
            id_el.text = renamed.setdefault(old, str(org if top else service))
    if any(top for _, top in holders):
        return
    inst = party.find(".//{*}Inst")
    if inst is None:
        return
    id_el, type_el = inst.find("{*}Id"), inst.find("{*}TypeId")
    if id_el is not None and type_el is not None and (id_el.text or "").strip():
        id_el.text = str(org)
        type_el.set("V", "HER")
        type_el.set("DN", "HER-id")


# Copy receivers of the pack's messages become this demo GP office (hub.fixtures.people): a party of
# the test network that is not the system under test, with a HER-id that is valid today (the packs'
# dotted test HER-ids like 369.767 are not).
COPY_RECEIVER = (82001, 82002)


def _parties(root: etree._Element) -> tuple[dict[str, list], etree._Element | None]:
    """The party elements of a pack message by side (sender, receiver, copy), and its MsgId element."""
    from hub.messages.families import by_key

    mi = root.find("{*}MsgInfo")
    if mi is not None:  # MsgHead
        return {"sender": [mi.find("{*}Sender")], "receiver": [mi.find("{*}Receiver")],
                "copy": mi.findall("{*}OtherReceiver")}, mi.find("{*}MsgId")
    # own Message root: the family says where its parties are
    fam_ver = message_family_of_root(root)
    fam = by_key(*fam_ver) if fam_ver else None
    parties = {}
    for side, path in (("sender", fam and fam.sender_path), ("receiver", fam and fam.receiver_path),
                       ("copy", fam and fam.copy_path)):
        steps = path.removesuffix("/k:Inst").split("/") if path else []
        els = [root]
        for step in steps:
            els = [c for e in els for c in e.findall("{*}" + step.removeprefix("k:"))]
        parties[side] = els if steps else []
    return parties, root.find("{*}MsgId")


def _org_her(party: etree._Element | None) -> str | None:
    holders = _her_holders(party) if party is not None else []
    return (holders[0][0].text or "").strip() or None if holders else None


def copy_in_receivers_org(data: bytes) -> bool:
    """Whether the pack message names a copy receiver in its receiver's own organisation (the
    acceptance tests' duplicate criterion, e.g. Case1-20a/20b: the message arrives once for each)."""
    from hub.xmlsafe import parse_bytes

    try:
        parties, _ = _parties(parse_bytes(data).getroot())
    except Exception:  # noqa: BLE001 - unreadable: no receivers at all
        return False
    org = _org_her(next(iter(parties.get("receiver") or []), None))
    return bool(org) and any(_org_her(c) == org for c in parties.get("copy", []))


def prepare(data: bytes, *, sender: tuple[int, int], receiver: tuple[int, int],
            copy: tuple[int, int] = COPY_RECEIVER, copy_in_org: int | None = None) -> bytes:
    """A pack message as the runner sends it: from `sender`, to `receiver` ((organisation, service)
    HER-ids), copy receivers to `copy`, with a fresh MsgId (the pack reuses MsgIds across cases, and
    a receiver ignores a MsgId it has seen: sheet #12). A copy receiver the pack places in the
    receiver's own organisation stays there, as the receiver's service `copy_in_org` (a second one
    the system hosts). Everything else is left as the pack has it; a file that cannot be read goes
    as it is (its envelope says whom it is for)."""
    from hub.xmlsafe import parse_bytes

    try:
        tree = parse_bytes(data)
    except Exception:  # noqa: BLE001 - the syntax-error case: sent unchanged
        return data
    root = tree.getroot()
    parties, msg_id = _parties(root)
    receiver_org = _org_her(next(iter(parties.get("receiver") or []), None))
    renamed: dict[str, str] = {}  # the pack's HER-id -> ours: the same party wherever it is named
    for side, (org, service) in (("sender", sender), ("receiver", receiver), ("copy", copy)):
        for party in parties.get(side, []):
            if party is None:
                continue
            if side == "copy" and copy_in_org is not None and receiver_org \
                    and _org_her(party) == receiver_org:
                org, service = receiver[0], copy_in_org
            _readdress(party, org, service, renamed)
    for id_el, _top in _her_holders(root):  # e.g. PLO content naming the sender's person again
        if (id_el.text or "").strip() in renamed:
            id_el.text = renamed[(id_el.text or "").strip()]
    if msg_id is not None and (msg_id.text or "").strip():
        msg_id.text = str(uuid.uuid4())
    return etree.tostring(tree, xml_declaration=True, encoding=tree.docinfo.encoding or "UTF-8")


def message_family_of_root(root: etree._Element) -> tuple[str, str] | None:
    from hub.messages.families import by_namespace

    ns = etree.QName(root).namespace
    mig = root.find("{*}MIGversion")
    fam = by_namespace(ns or "", mig.text if mig is not None else None)
    return (fam.name, fam.version) if fam else None


def registered_patients(cases: list[Case]) -> list[dict]:
    """The test setup's patients: those of the correct pack messages among `cases` (patients.json
    shape; a system matches on `ident`). The unknown-patient case's patient is not among them."""
    from hub.conformance.simulated import patient_ids

    idents: dict[str, None] = {}
    for c in cases:
        if c.file is not None and c.expect is not None and c.expect.status == "1":
            idents.update(dict.fromkeys(sorted(patient_ids(c.file.read_bytes()))))
    return [{"given_name": "", "family_name": "", "birth_date": "", "sex": "", "ident": i, "ident_type": ""}
            for i in idents]


# --- the AppRec test sheet ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SheetCase:
    sheet: str  # "system" | "unit"
    number: int
    title: str
    kind: str  # Positiv | Negativ | Timeout | ""
    expect: Expect | None  # None: the row names no status (unit rows on structure)
    expected_text: str


_STATUS = re.compile(r"statuskode\s+(\d)")
_CODE = re.compile(r"\b([TSEX]\d{2})\b")


def _expect_of(text: str) -> Expect | None:
    if re.search(r"skal ikke besvares med applikasjonskvittering", text, re.IGNORECASE):
        return Expect(None)
    status = _STATUS.search(text)
    if not status:
        return None
    return Expect(status.group(1), tuple(dict.fromkeys(_CODE.findall(text))))


def apprec_sheet(ref: Path | None = None) -> list[SheetCase]:
    """The 42 system and 9 unit cases of the official AppRec test sheet ([] without it)."""
    ref = ref or reference_dir()
    if ref is None:
        return []
    out = []
    for sheet, name in (("system", "Systemtest_inkl_apprec"), ("unit", "Enhetstest_apprec")):
        path = ref / "testcases" / f"TestcaseApplikasjonskvittering_{name}.csv"
        if not path.exists():
            continue
        with path.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                text = row["Forventet resultat:"]
                out.append(SheetCase(sheet, int(row["Test #"]), row["Testcase:"].strip(),
                                     row.get("Type:", "").strip(), _expect_of(text), text))
    return out


def sheet_cases(ref: Path | None = None) -> list[Case]:
    """The system-test rows as M cases: executable where the battery has the variant, else manual."""
    from hub.conformance.catalogue import M_BATTERY

    by_row: dict[str, str] = {}
    for variant, _title, _expect, sheet, _req in M_BATTERY:
        by_row.setdefault(sheet, variant)
    out = []
    for sc in apprec_sheet(ref):
        if sc.sheet != "system":
            continue
        variant = by_row.get(str(sc.number))
        out.append(Case(f"M.apprec-sheet.{sc.number}", "M", sc.title, source=f"apprec-sheet#{sc.number}",
                        variant=variant, expect=sc.expect, manual=variant is None))
    return out
