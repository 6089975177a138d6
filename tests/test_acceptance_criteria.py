"""The official acceptance tests as the oracle: every case of cases.tsv gets the verdict its criterion asks.

../shared/reference/akseptansetest-criteria/cases.tsv lists every case message of the Dialogmelding,
Epikrise, Henvisning and PLO acceptance packs with its expected outcome, read from the official documents:
- accept: a correct message -> no error (warnings allowed);
- warn: received with a warning (unknown patient) -> no error;
- reject: the criterion requires an error -> an error naming what the criterion is about (TOPICS);
- unknown: the document only asks "how is this handled" (duplicates, a message to the wrong unit, a
  patient registered under other identifiers). Our call: those are questions for the relay (duplicates,
  routing) and for the receiver's patient register, not for a validator judging one message. Such a
  case is judged on its content like any other: no error, but for the listed ones whose content breaks
  the same rule as a row judged below.

One Validator judges the whole table: the packs reuse a MsgId across the variants of one case, and
uniqueness across files is not a validator default (it is `hub validate --unique-msgid`).
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from hub.paths import reference_dir
from hub.validation.result import ValidationResult
from hub.validation.validate import Validator

REF = reference_dir()
TABLE = REF / "akseptansetest-criteria" / "cases.tsv" if REF else None
pytestmark = pytest.mark.skipif(TABLE is None or not TABLE.is_file(), reason="no ../shared/reference")

# What an error must be about for each kind of criterion (keyword of the criterion text -> rules).
# (keyword of the criterion text, rules that name its problem, elements a schema error may name instead)
TOPICS: list[tuple[str, frozenset[str], tuple[str, ...]]] = [
    ("feil XML syntaks", frozenset({"xml.not-well-formed", "xml.encoding", "xml.not-xml", "xsd"}), ()),
    ("utskrivende lege", frozenset({"sender.person-missing"}), ()),
    ("henvisende lege", frozenset({"receiver.person-missing", "receiver.ident-empty"}), ()),
    ("avsender", frozenset({"sender.missing", "sender.ident-empty"}), ("Sender",)),
    ("fødselsnummer", frozenset({"patient.fnr-missing", "patient.fnr-invalid", "patient.insufficient"}), ()),
    ("pasientinformasjon", frozenset({"patient.insufficient", "patient.name-missing", "patient.fnr-missing",
                                      "patient.fnr-invalid"}), ("Patient",)),
    ("feil/mangler i fagmeldingen", frozenset({"xsd", "code.value"}), ()),
]

# Rows we are sure are wrong, with why; each is asserted to get the verdict given here instead.
H_NUMBER = ("an H-nummer is built like a fødselsnummer (month + 40) with the same mod-11 check digits; "
            "{n} is the fødselsnummer {f} with 40 added to the month and its check digits left as they "
            "were, so it is no valid H-nummer (the PLO and Dialogmelding packs reject exactly such a "
            "'locally made' number in their criterion 11/14 cases)")
JUDGED_WRONG: dict[str, tuple[str, set[str]]] = {
    "samples/akseptansetest/dialogmelding/Testcase-Dialogmeldingen/Case3.xml": (
        "its MsgId 4c661458-c412-4c14-baae-8f092g54f6e2 holds a 'g': no UUID, which AppRec rule E10 makes "
        "the receiver reject (the 2009 pack predates that rule)", {"msgid.uuid"}),
    "samples/akseptansetest/epikrise/Case-mottak-epikrise1_1/Epikrise1-1-case1-15.xml": (
        "its MsgId 25904950-c3fd-11-ad55-083c2a966 (the base case's, edited by hand) is no UUID, which "
        "AppRec rule E10 makes the receiver reject", {"msgid.uuid"}),
    "samples/akseptansetest/dialogmelding/Testcase-Dialogmeldingen/Case1-15.xml": (
        "meant as a valid but unknown patient, yet the fødselsnummer 15075500565 fails its mod-11 check "
        "digits: no such number can exist (E31); the PLO packs' unknown-patient cases use a valid one",
        {"patient.fnr-invalid"}),
    "samples/akseptansetest/epikrise/Case-mottak-epikrise1_1/Epikrise1-1-case1-16a.xml": (
        H_NUMBER.format(n="21416400952", f="21016400952"), {"patient.fnr-invalid", "patient.fnr-missing"}),
    "samples/akseptansetest/epikrise/Case-mottak-epikrise1_1/Epikrise1-1-case1-16b.xml": (
        H_NUMBER.format(n="21416400952", f="21016400952"), {"patient.fnr-invalid", "patient.insufficient"}),
    "samples/akseptansetest/henvisning/TestcaseHenvisningMottak/Case1-23a.xml": (
        H_NUMBER.format(n="12457900499", f="12057900499"), {"patient.fnr-invalid", "patient.fnr-missing"}),
    "samples/akseptansetest/henvisning/TestcaseHenvisningMottak/Case1-23b.xml": (
        H_NUMBER.format(n="12457900499", f="12057900499"), {"patient.fnr-invalid", "patient.insufficient"}),
}
# Unknown rows whose content breaks a rule: the same non-recomputed H-numbers as the rows above.
UNKNOWN_ERRORS: dict[str, set[str]] = {
    "samples/akseptansetest/epikrise/Case-mottak-epikrise1_1/Epikrise1-1-case1-17a.xml":
        {"patient.fnr-invalid", "patient.insufficient"},
    "samples/akseptansetest/henvisning/TestcaseHenvisningMottak/Case1-24a.xml":
        {"patient.fnr-invalid", "patient.insufficient"},
}


def _rows() -> list[dict[str, str]]:
    if TABLE is None or not TABLE.is_file():
        return []
    with TABLE.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = _rows()
VALIDATOR = Validator()
_CACHE: dict[str, ValidationResult] = {}


def _verdict(path: str) -> ValidationResult:
    if path not in _CACHE:
        assert REF is not None
        _CACHE[path] = VALIDATOR.validate_path(Path(REF) / path)
    return _CACHE[path]


def _topic(criterion: str) -> tuple[frozenset[str], tuple[str, ...]]:
    for keyword, rules, names in TOPICS:
        if keyword in criterion:
            return rules, names
    raise AssertionError(f"no topic for reject criterion {criterion!r}: add one to TOPICS")


def _errors(r: ValidationResult) -> list[tuple[str, str]]:
    return [(p.rule, p.text) for p in r.errors]


def test_the_table_is_there_and_complete() -> None:
    counts: dict[str, int] = {}
    for row in ROWS:
        counts[row["expected"]] = counts.get(row["expected"], 0) + 1
        assert REF is not None and (Path(REF) / row["path"]).is_file(), row["path"]
    assert counts == {"accept": 82, "reject": 102, "warn": 9, "unknown": 43}
    assert set(JUDGED_WRONG) <= {r["path"] for r in ROWS}
    assert set(UNKNOWN_ERRORS) <= {r["path"] for r in ROWS if r["expected"] == "unknown"}


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r["path"].split("akseptansetest/", 1)[-1])
def test_case_gets_the_verdict_its_criterion_asks(row: dict[str, str]) -> None:
    path, expected = row["path"], row["expected"]
    r = _verdict(path)
    rules = {p.rule for p in r.errors}
    if path in JUDGED_WRONG:
        _why, ours = JUDGED_WRONG[path]
        assert rules == ours, _errors(r)
    elif expected in ("accept", "warn"):
        assert r.valid, _errors(r)
    elif expected == "reject":
        topic, names = _topic(row["criterion"])
        # A schema error counts when it names the element the criterion is about (a Patient left out).
        named = any(p.rule == "xsd" and any(n in p.text.split() for n in names) for p in r.errors)
        assert rules & topic or named, (row["criterion"], _errors(r))
    else:
        assert rules == UNKNOWN_ERRORS.get(path, set()), _errors(r)


def test_reject_errors_say_where() -> None:
    """Every error on a reject case points at an element (or, for XML that cannot be read, a line)."""
    for row in ROWS:
        if row["expected"] != "reject":
            continue
        for p in _verdict(row["path"]).errors:
            assert p.xpath or p.line, (row["path"], p)
            assert p.xpath is None or p.xpath.startswith("/") and "*" not in p.xpath, (row["path"], p.xpath)
