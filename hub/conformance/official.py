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

The catalogue works without any of this: official_cases() returns [] when the folder is absent.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from hub.conformance.catalogue import Case, Expect, MessageType
from hub.paths import reference_dir

OK = Expect("1")
MISSING_PATIENT = Expect("2", ("E36",))
UNKNOWN_PATIENT = Expect("2", ("E35",))
MISSING_FNR = Expect("2", ("E30",))
WRONG_FNR = Expect("2", ("E31",))
# A message without a sender cannot be answered to anyone in particular; the rule catalogue maps
# `sender.missing` to X99, the receiver rejects it.
MISSING_SENDER = Expect("2", ("X99",))
SCHEMA = Expect("2", ("T02",))
SYNTAX = Expect("2", ("T01",))


@dataclass(frozen=True)
class Pack:
    """One folder of the acceptance tests: which family/version it tests and its criteria."""

    folder: str  # glob below samples/akseptansetest
    family: str
    version: str
    criteria: dict[str, tuple[str, Expect]]  # criterion id -> (title, expected AppRec)


_DIALOG = {
    "1-2": ("Syntax error: the message is not well-formed", SYNTAX),
    "1-14a": ("Missing patient data: name and identity removed", MISSING_PATIENT),
    "1-14b": ("Missing patient data: no FNR, only a local help number", MISSING_PATIENT),
    "1-14c": ("Missing patient data: only date of birth", MISSING_PATIENT),
    "1-15": ("Unknown patient", UNKNOWN_PATIENT),
    "1-16a": ("Missing sender: sender's name and identifiers emptied", MISSING_SENDER),
    "1-16b": ("Missing sender: Sender element removed", MISSING_SENDER),
    "1-16c": ("Missing sender: Sender element removed", MISSING_SENDER),
    "1-17a": ("Missing FNR: empty Id", MISSING_FNR),
    "1-17b": ("Missing FNR: Id removed", MISSING_FNR),
}
# PLO 1.5 packs (all eight folders share one numbering).
_PLO = {
    "1-2": ("Syntax error: an end tag commented out", SYNTAX),
    "1-11a": ("Missing patient data: patient information removed", MISSING_PATIENT),
    "1-11b": ("Missing patient data: no FNR, only a local help number", MISSING_PATIENT),
    "1-11c": ("Missing patient data: no FNR, only a local help number", MISSING_PATIENT),
    "1-12": ("Unknown patient", UNKNOWN_PATIENT),
    "1-13a": ("Missing sender: sender information removed", MISSING_SENDER),
    "1-13b": ("Missing sender: all elements below the sender removed", MISSING_SENDER),
    "1-14a": ("Missing FNR: FNR removed", MISSING_FNR),
    "1-14b": ("Missing FNR: other information instead of the FNR", MISSING_FNR),
    "1-15a": ("Mandatory element removed (Forsendelsesstatus)", SCHEMA),
    "1-15b": ("Mandatory content removed (SvarPaaForesporsel)", SCHEMA),
}
# Epikrise 1.1 (receiving): patient, sender and receiver criteria; 15-21 are correct variants
# (change, related messages, cancellation) the receiver must accept.
_EPIKRISE = {
    "1-2": ("Syntax error", SCHEMA),
    "1-11a": ("Missing FNR: OffId emptied", MISSING_FNR),
    "1-11b": ("Missing patient data: name, sex and identity removed", MISSING_PATIENT),
    "1-12a": ("Missing sender: institution identifier emptied", MISSING_SENDER),
    "1-12b": ("Missing sender: institution removed", MISSING_SENDER),
}
# Henvisning 1.0 (receiving): 20 patient, 21 sender, 22 invalid identity; 23-28 correct variants.
_HENVISNING = {
    "1-20a": ("Missing patient data: identifying information removed", MISSING_PATIENT),
    "1-20b": ("Missing patient data: Patient element removed", MISSING_PATIENT),
    "1-21a": ("Missing sender: identifying information removed", MISSING_SENDER),
    "1-21b": ("Missing sender: Requester element removed", MISSING_SENDER),
    "1-22": ("Invalid identity number (xxx as DNR)", WRONG_FNR),
}

PACKS: tuple[Pack, ...] = (
    Pack("dialogmelding/Testcase-Dialogmeldingen", "Dialogmelding", "1.0", _DIALOG),
    Pack("epikrise/Case-mottak-epikrise1_1", "Epikrise", "1.1", _EPIKRISE),
    Pack("henvisning/TestcaseHenvisningMottak", "Henvisning", "1.0", _HENVISNING),
    Pack("plo/Testcase-mottak-*-v1_5", "PLO", "1.5", _PLO),
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

    @property
    def rel(self) -> str:
        parts = self.path.parts
        return "/".join(parts[parts.index("akseptansetest"):])


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
                    out.append(OfficialCase(pack, path, crit, hit[0], hit[1], True))
                else:
                    out.append(OfficialCase(pack, path, crit, f"Correct message (case {crit})", OK, False))
    return out


def official_cases(mt: MessageType, ref: Path | None = None) -> list[Case]:
    """The acceptance-test M cases for one message type (matched on family and version)."""
    out = []
    for oc in acceptance_cases(ref):
        family_ok = oc.pack.family == mt.family or (oc.pack.family == "PLO" and mt.group == "plo")
        if family_ok and oc.pack.version == mt.family_version:
            out.append(Case(f"M.akseptansetest.{oc.path.stem}", "M", oc.title,
                            source=oc.rel, file=oc.path, expect=oc.expect))
    return out


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
