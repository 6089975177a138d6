"""The test catalogue: per message type and version, the Sending (S) and Mottak (M) cases.

S (Sending): the system under test produces the message; the runner judges what arrives with the
relay's own Validator (schema + business rules), its security and ebXML code, and the content the
message type requires (an Epikrise needs a discharge diagnosis, a Henvisning a reason for referral).
M (Mottak): the runner sends the system a valid message and a battery of broken ones and checks the
AppRec each one gets back (status, error code, in time). The battery is the official AppRec test sheet
made executable; the sheet's own rows and the acceptance-test packs load as further M cases when the
reference material is present (hub.conformance.official).

Message types come from `hub.messages.families.ELIN_K_MESSAGES` (the 2007 matrix rows) plus the PLO
messages of the nursing systems; there is no second table of families here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hub.messages import families as fam

# --- message types ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MessageType:
    """One row of the matrix: the name vendors were approved for, and the family that carries it."""

    name: str  # as in the 2007 table, e.g. "Svarrapport Mikrobiologi"
    version: str  # as in the 2007 table, e.g. "1.2"
    family: str  # hub.messages.families name, e.g. "Svarrapport"
    family_version: str
    build_args: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    group: str = "elin-k"  # elin-k | plo

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def is_apprec(self) -> bool:
        return self.family == "AppRec"


# Builder arguments that make the fixture builder produce a row's variant (its discriminator value).
_VARIANT_OF_DISCRIMINATOR = {
    "CLIN": "biokjemi", "LAB": "biokjemi", "MBIO": "mikrobiologi", "HIST": "patologi", "CYTO": "patologi",
    "CT": "radiologi", "MR": "radiologi", "UL": "radiologi", "RTG": "radiologi",
}


def _build_args(row: fam.MatrixMessage) -> dict[str, Any]:
    if not row.discriminator_values or row.family_name not in ("Svarrapport", "Rekvisisjon"):
        return {}
    variant = _VARIANT_OF_DISCRIMINATOR.get(row.discriminator_values[0])
    return {"variant": variant} if variant else {}


# ebXML Action (HISD 1209 naming, hub.ebxml.naming) of each matrix row: what the envelope says the
# message is. A receiver that cannot read a message still knows from its envelope which service failed.
ACTIONS: dict[str, str] = {
    "Applikasjons-kvittering": "APPREC", "Dialogmelding": "DIALOG_FORESPORSEL", "Epikrise": "EPIKRISE",
    "Henvisning": "HENVISNING", "Rekvisisjon Medisinsk biokjemi": "REQ_KKL", "Rekvisisjon Røntgen": "REQ_RTG",
    "Svarrapport Medisinsk biokjemi": "SVAR_KKL", "Svarrapport Mikrobiologi": "SVAR_MBIO",
    "Svarrapport Patologi": "SVAR_HIST", "Svarrapport Radiologi": "SVAR_RTG",
    "Tilbakemelding på henvisning": "TILBAKEMELD",
}


def action_of(mt: MessageType) -> str:
    """The ebXML Action a message of this type travels under (PLO: its family name in capitals)."""
    return ACTIONS.get(mt.name) or mt.name.upper().replace(" ", "_")


def message_types() -> list[MessageType]:
    """The matrix rows, in the order of the 2007 table, then the PLO messages."""
    out = [MessageType(row.name, row.version, row.family_name, row.family_version, _build_args(row))
           for row in fam.ELIN_K_MESSAGES.values()]
    return out + _later_types() + _plo_types()


def _later_types() -> list[MessageType]:
    """Versions after the 2007 table that the official acceptance-test packs test on receipt
    (Epikrise 1.1, Henvisning 1.0): cells of their own, shown in the matrix once approved."""
    return [MessageType(name, version, name, version, group="later")
            for name, version in (("Epikrise", "1.1"), ("Henvisning", "1.0"))]


def matrix_row(mt: MessageType) -> fam.MatrixMessage | None:
    """The ELIN-k row of a message type: its discriminator tells whether a message is of this row."""
    return fam.ELIN_K_MESSAGES.get((mt.name, mt.version)) if mt.group == "elin-k" else None


def _plo_types() -> list[MessageType]:
    """PLO messages the nursing systems exchange (family names as hub.messages.families has them)."""
    return [MessageType(f.name, f.version, f.name, f.version, group="plo")
            for f in fam.FAMILIES if "/po/" in f.namespace and f.version == "1.5"]


def message_type(key: str) -> MessageType:
    """'Epikrise:1.0' (or 'Epikrise 1.0') -> its MessageType."""
    norm = key.replace(" ", ":", 1) if ":" not in key else key
    name, _, version = norm.rpartition(":")
    for mt in message_types():
        if mt.key == key or (mt.name.lower() == name.lower() and mt.version == version):
            return mt
    raise KeyError(f"unknown message type {key!r}")


# --- required content (S) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Content:
    """Something the message type must carry beyond its schema.

    element: local name of the element the requirement is about; `path` the local names below it
    that must be present too (a Diagnosis needs its coded Concept).
    """

    id: str
    title: str
    element: str
    path: tuple[str, ...] = ()

    @property
    def xpath(self) -> str:
        return "//" + "/".join(f"*[local-name()='{n}']" for n in (self.element, *self.path))


CONTENT: dict[str, tuple[Content, ...]] = {
    "Epikrise": (Content("discharge-diagnosis", "Discharge diagnosis (utskrivningsdiagnose)",
                         "Diagnosis", ("Concept",)),),
    "Henvisning": (Content("referral-reason", "Reason for referral (henvisningsårsak)", "ReasonAsText"),),
    "Rekvisisjon": (Content("requested-investigation", "Requested investigation (rekvirert analyse)",
                            "ReqInvestigation", ("Investigation",)),),
    "Svarrapport": (Content("result", "At least one result item", "ResultItem"),),
}


def content_for(mt: MessageType) -> tuple[Content, ...]:
    return CONTENT.get(mt.family, ())


# --- cases ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """The AppRec a case expects. status None: no AppRec at all (ignored / unknown receiver)."""

    status: str | None
    codes: tuple[str, ...] = ()  # any one of these error codes is right (the sheet allows T01/T02/T99)

    def describe(self) -> str:
        if self.status is None:
            return "no AppRec"
        text = {"1": "OK", "2": "Avvist", "3": "OK, feil i delmelding"}.get(self.status, self.status)
        return f"{self.status} {text}" + (f" {'/'.join(self.codes)}" if self.codes else "")


@dataclass(frozen=True)
class Case:
    id: str
    direction: str  # S | M
    title: str
    source: str = "builtin"  # builtin | apprec-sheet#N | akseptansetest/<path>
    # S: which check judges the delivered message (see hub.conformance.runner.S_CHECKS)
    check: str | None = None
    # M: which message to send (a battery variant name, or a file for official cases)
    variant: str | None = None
    file: Path | None = None
    expect: Expect | None = None
    requires: str | None = None  # "security" (hub.security) | "ebxml" (an ebXML transport, not the folder)
    manual: bool = False  # needs a human (96 h timeout, manual matching): listed, not run
    topic: str | None = None  # official cases: what the criterion is about (hub.conformance.official)
    # Copy-receiver cases: the receivers of the message the system hosts ("primary", "copy"); each
    # one answers with an AppRec of its own, the others not at all (AppRec sheet #7-#11, #35-#40).
    receivers: tuple[str, ...] = ()


# S checks: (check id, title). The Validator's problems are sorted into them by AppRec code / rule.
S_CHECKS: tuple[tuple[str, str], ...] = (
    ("delivered", "The system produces the message and delivers it to the test endpoint in time"),
    ("order", "The message is the one ordered: its standard and version, the test patient, the receiver"),
    ("wellformed", "Well-formed XML in a supported encoding (T01)"),
    ("schema", "Valid against the message version's schema, right namespace and version (T02/T10)"),
    ("msgid", "MsgId present and a UUID (E10)"),
    ("addressing", "Sender and receiver identified by HER-id (E21)"),
    ("patient", "Patient identified: name and a valid FNR/DNR (E30/E31/E32/E36)"),
    ("rules", "Other business rules of the standard (code lists, identifiers, dates)"),
    ("row", "The message is the row's message: discipline/modality, MIG version or reply reference (T10)"),
)
S_SECURITY_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("signature", "Signed, and the signature verifies (S01)", "security"),
    ("certificate", "Signed with a valid, unrevoked certificate (S02/S03)", "security"),
    ("ebxml", "ebXML envelope and CPA: Service/Action/Role, PartyIds, signature (ebMS)", "ebxml"),
)
# AppRec S: what the unit sheet (Enhetstest apprec #1-#8) asks of every AppRec the system writes.
APPREC_CHECKS: tuple[tuple[str, str, str], ...] = (
    ("apprec.delivered", "An AppRec comes back for each message sent, in time", "#1"),
    ("apprec.valid", "The AppRec validates against the AppRec schema", "#1"),
    ("apprec.original-id", "OriginalMsgId/Id is the original's MsgId", "#2"),
    ("apprec.msgtype", "OriginalMsgId/MsgType is the original's type", "#3"),
    ("apprec.issue-date", "OriginalMsgId/IssueDate is the original's GenDate", "#4"),
    ("apprec.status", "Status from code list 8258: OK for the valid message, Avvist for the broken", "#5-#6"),
    ("apprec.error", "Errors coded from code list 8221 for the broken message", "#7-#8"),
)

# M battery: the official AppRec system test sheet, made executable. (variant, title, expect, sheet #)
M_BATTERY: tuple[tuple[str, str, Expect, str, str | None], ...] = (
    ("valid", "A correct message is accepted", Expect("1"), "1", None),
    ("not-well-formed", "Not well-formed XML is rejected", Expect("2", ("T01",)), "34", None),
    ("hostile-dtd", "A DOCTYPE with entity expansion (hostile XML) is rejected unread",
     Expect("2", ("T01",)), "16", None),
    ("schema-invalid", "A message that does not validate against its schema is rejected",
     Expect("2", ("T02",)), "32", None),
    ("wrong-namespace", "A message in an unknown namespace is rejected", Expect("2", ("T10",)), "33", None),
    ("unknown-version", "A known standard in a version the system does not support is rejected",
     Expect("2", ("T10",)), "33", None),
    ("msgid-not-uuid", "A MsgId that is not a UUID is rejected", Expect("2", ("E10",)), "28", None),
    ("unknown-service", "Known organisation, unknown service (level 2 HER-id)",
     Expect("2", ("E21",)), "20", None),
    ("unknown-receiver", "Unknown HER-id on both levels: no AppRec at all", Expect(None), "21", None),
    ("fnr-missing", "Patient without national identity number", Expect("2", ("E30", "E36")), "24", None),
    ("fnr-invalid", "Patient FNR with wrong check digits", Expect("2", ("E31",)), "24", None),
    ("unknown-patient", "Patient not known to the receiving system", Expect("2", ("E35",)), "23", None),
    ("duplicate", "The same message twice: one AppRec, the duplicate is ignored", Expect("1"), "12", None),
    ("duplicate-rejected", "A rejected message twice: one AppRec (Avvist), the duplicate is ignored",
     Expect("2", ("T02",)), "41", None),
    ("bad-signature", "A message whose signature does not verify", Expect("2", ("S01",)), "29", "security"),
    ("expired-certificate", "A message signed with an expired certificate", Expect("2", ("S02",)), "30",
     "security"),
    ("revoked-certificate", "A message signed with a revoked certificate", Expect("2", ("S03",)), "31",
     "security"),
    ("unknown-ca", "A message signed with a certificate from a CA nobody trusts", Expect("2", ("S02",)), "30",
     "security"),
)
SECURITY_VARIANTS = frozenset(v for v, *_rest, req in M_BATTERY if req == "security")

# Copy receivers (AppRec system test sheet #7-#11, #35-#40; unit sheet #9 for the Role): the test centre
# sends a message with a primary receiver and one copy receiver (MsgHead OtherReceiver with
# RoleReceiver COP; CopyDest in Epikrise and Henvisning), of which the system hosts the one or the
# other, or both in one organisation (then the message arrives once for each receiver, #11/#40, and
# the second is a duplicate). Each receiver the system hosts answers with one AppRec: its Sender is
# that receiver as the message wrote it, with Role PRIM (AppRec 1.1; 1.0: REQ to the requester, SPR
# to another service provider) or COP; its Receiver the original's sender with Role AVS (1.1) /
# RECEIVER (1.0). A receiver the system does not host gets no AppRec from it.
# (variant, title, expect, sheet rows, receivers the system hosts, receivers it does not know)
COPY_BATTERY: tuple[tuple[str, str, Expect, str, tuple[str, ...]], ...] = (
    ("copy-primary", "Primary receiver of a message with a copy receiver elsewhere: one AppRec, as the"
     " primary receiver (Role PRIM; AppRec 1.0: REQ/SPR)", Expect("1"), "7-9", ("primary",)),
    ("copy-copy", "Copy receiver of a message whose primary receiver is elsewhere: one AppRec, as the copy"
     " receiver (Role COP)", Expect("1"), "10", ("copy",)),
    ("copy-both", "Primary and copy receiver in the same organisation, the message received once for each:"
     " one AppRec per receiver (PRIM and COP), the second message ignored", Expect("1"), "11",
     ("primary", "copy")),
    ("copy-primary-rejected", "Primary receiver said to be in the organisation but unknown there, copy"
     " receiver elsewhere: one AppRec, Avvist E21, as the primary receiver", Expect("2", ("E21",)),
     "36-38", ("primary",)),
    ("copy-copy-rejected", "Copy receiver said to be in the organisation but unknown there: one AppRec,"
     " Avvist E21, as the copy receiver", Expect("2", ("E21",)), "39", ("copy",)),
    ("copy-both-rejected", "Primary and copy receiver said to be in the organisation, both unknown there:"
     " one AppRec each (PRIM and COP), Avvist E21, the second message ignored", Expect("2", ("E21",)),
     "40", ("primary", "copy")),
)
COPY_VARIANTS = frozenset(v for v, *_rest in COPY_BATTERY)
# The cells whose official Mottak acceptance test asks "Håndterer systemet å være kopimottaker av en
# melding?" and has a primary and copy receiver in one organisation receive the message twice
# (../shared/reference/akseptansetest-criteria/Akseptansetest-mottak-*.txt, criterion numbers given):
# the copy-receiver cases apply to these. Dialogmelding 1.0 (2009), Melding om fravær, Orientering om
# tjenestetilbud and Helseopplysninger ved søknad have no such criterion; neither had the 2007
# (ELIN-k) approvals, which predate the AppRec test sheet: the 2007 cells are tested as they were.
COPY_RECEIVER_CELLS: dict[str, str] = {
    "Epikrise:1.1": "Akseptansetest-mottak-epikrise-v1_1-20100621.txt#19-20",
    "Henvisning:1.0": "Akseptansetest-mottak-henvisning-v1_0-20100621.txt#26-27",
    "Helseopplysninger til lege:1.5": "Akseptansetest-mottak-PLO-Helseopplysninger_til_lege-v1_5.txt#19-20",
    "Innleggelsesrapport:1.5": "Akseptansetest-mottak-PLO-Innleggelsesrapport-v1_5.txt#19-20",
    "Medisinske opplysninger:1.5": "Akseptansetest-mottak-PLO-Medisinske_opplysninger-v1_5.txt#19-20",
    "Pasientlogistikk:1.5": "Akseptansetest-mottak-PLO-Pasientlogistikk-v1_5.txt#19-20",
    "Utskrivningsrapport:1.5": "Akseptansetest-mottak-PLO-Utskrivningsrapport-v1_5.txt#19-20",
}




def cases_for(mt: MessageType, direction: str, *, parts: frozenset[str] = frozenset(),
              official: bool = False) -> list[Case]:
    """The cases of one cell. `parts`: the optional hub parts present ("security", "ebxml"); cases
    that need a missing part are listed with `requires` so the runner reports them as skipped."""
    if direction == "S":
        if official:
            from hub.conformance.official import fasit_cases

            return _s_cases(mt) + fasit_cases(mt)
        return _s_cases(mt)
    cases = _m_cases(mt)
    if official:
        from hub.conformance.official import official_cases

        cases += official_cases(mt)
    return cases


def _s_cases(mt: MessageType) -> list[Case]:
    if mt.is_apprec:
        return [Case(f"S.{cid}", "S", title, source=f"apprec-unit-sheet{ref}", check=cid)
                for cid, title, ref in APPREC_CHECKS]
    out = [Case(f"S.{cid}", "S", title, check=cid) for cid, title in S_CHECKS]
    out += [Case(f"S.content.{c.id}", "S", c.title, check=f"content.{c.id}") for c in content_for(mt)]
    out += [Case(f"S.{cid}", "S", title, check=cid, requires=req) for cid, title, req in S_SECURITY_CHECKS]
    out.append(Case("S.apprec-twice", "S", "Two AppRecs on the sent message (same OriginalMsgId, different"
                    " MsgIds): neither is answered", source="apprec-sheet#13", check="apprec-twice"))
    return out + [c for c in MANUAL if c.direction == "S"]


# Criteria only a person can judge (display, print, import into the record): listed as manual in
# every cell a person tests (hub.conformance.runner.Runner.person); the tester answers with
# `hub conformance confirm RUN CASE pass|fail`, the matrix marks an approval whose manual criteria are
# still open with (*).
MANUAL: tuple[Case, ...] = (
    Case("M.manual.display", "M", "The accepted message is shown to the user: patient, sender and all of its"
         " content, readable (screenshot for the self-declaration)", source="akseptansetest/egenerklaering",
         manual=True),
    Case("M.manual.print", "M", "The accepted message can be printed with all of its content",
         source="akseptansetest/egenerklaering", manual=True),
    Case("M.manual.import", "M", "The accepted message is filed in the test patient's record; none of the"
         " rejected ones can be imported", source="apprec-sheet#1,#16-#41", manual=True),
    Case("S.manual.apprec-shown", "S", "The AppRec on the sent message is shown with it; the second AppRec"
         " on the same message is not processed", source="apprec-sheet#13", manual=True),
)


def _m_cases(mt: MessageType) -> list[Case]:
    out = []
    for variant, title, expect, sheet, requires in M_BATTERY:
        out.append(Case(f"M.{variant}", "M", title, source=f"apprec-sheet#{sheet}", variant=variant,
                        expect=expect, requires=requires))
    if mt.key in COPY_RECEIVER_CELLS:
        for variant, title, expect, rows, hosted in COPY_BATTERY:
            out.append(Case(f"M.{variant}", "M", title, source=f"apprec-sheet#{rows}", variant=variant,
                            expect=expect, receivers=hosted))
    out.append(Case("M.ebms-ack", "M", "Each message is acknowledged at the ebXML level (Acknowledgment)",
                    source="builtin", variant="valid", expect=Expect("1"), requires="ebxml"))
    return out + [c for c in MANUAL if c.direction == "M"]


def catalogue(group: str | None = None) -> dict[str, dict[str, list[Case]]]:
    """Message key -> direction -> cases: the whole catalogue (the built-in cases)."""
    return {mt.key: {d: cases_for(mt, d) for d in ("S", "M")}
            for mt in message_types() if group is None or mt.group == group}
