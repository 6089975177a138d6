"""Our stable validation rule ids and the AppRec error code (list 8221) each maps to.

Rule ids are published in reports and vendor evidence: never rename one, only add.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    id: str
    code: str  # AppRec error code, code list 8221
    title: str
    severity: str = "error"  # warning: reported, does not make the message invalid


_RULES = [
    # Input that cannot be read as XML at all.
    Rule("xml.empty", "T01", "The document is empty"),
    Rule("xml.not-xml", "T01", "The content is not XML"),
    Rule("xml.not-well-formed", "T01", "The XML is not well-formed"),
    Rule("xml.encoding", "T01", "The bytes do not match the declared character encoding"),
    Rule("xml.dtd", "T01", "A DOCTYPE/DTD is present (forbidden: entity attacks)"),
    Rule("xml.too-large", "T99", "The document exceeds the configured size limit"),
    # Which standard is this?
    Rule("ns.unknown", "T10", "The root namespace is not a message standard the hub supports"),
    Rule("ns.version", "T10", "The message standard is known but this version is not supported"),
    Rule("ns.payload-unknown", "T10", "MsgHead carries a payload of an unsupported standard"),
    Rule("ns.mig-version", "T10", "MIGversion names another version than the namespace's standard"),
    # Schema.
    Rule("xsd", "T02", "The message does not validate against its schema"),
    # Business rules (AppRec rules of HIS 80415 / HITS 1168, KITH code lists).
    Rule("msgid.missing", "E10", "MsgId is missing"),
    Rule("msgid.uuid", "E10", "MsgId is not a UUID"),
    Rule("msgid.unique", "E10", "MsgId was already used by another message in this run (--unique-msgid)"),
    Rule("gendate.future", "T99", "GenDate lies in the future"),
    Rule("ident.type", "T99", "An identifier has a TypeId outside its code list"),
    Rule("ident.her", "E21", "A HER-id is not a positive whole number (dots may separate digit groups)"),
    # Warning: official examples write a patient's FNR with S="...1111" instead of 8116; the value
    # itself is still checked against 9051/8116 (ident.type).
    Rule("ident.system", "T99", "An identifier's TypeId names an unexpected code system (S)", "warning"),
    Rule("code.value", "T99", "A coded value is not in the KITH code list the element uses"),
    Rule("type.namespace", "T10", "MsgInfo/Type does not fit the payload's standard"),
    # Parties: identified by any identifier on any level (HER, ENH, RSH, LAV, HPR, ...). A HER-id is what
    # the relay routes by, but standards before tjenestebasert adressering name parties by ENH + LAV/RSH
    # and HPR: its absence is a warning (the relay routes by organisation number + department instead).
    Rule("receiver.missing", "E21", "The message names no receiving party: no identifier on any level"),
    Rule("sender.missing", "X99", "The message names no sending party: no identifier on any level"),
    Rule("receiver.ident-empty", "E21", "A receiver's (primary or copy) identifier has a type but no value"),
    Rule("sender.ident-empty", "X99", "An identifier of the sender has a type but no value"),
    Rule("receiver.her-missing", "E21", "The receiver has no HER-id (routed by ENH + department)", "warning"),
    Rule("sender.her-missing", "X99", "The sender has no HER-id", "warning"),
    # Epikrise: the acceptance test (mottak, criteria 13 and 14) requires an error when the discharging
    # doctor (utskrivende lege) or the referring doctor (henvisende lege) is not identified.
    Rule("sender.person-missing", "X99", "Epikrise: the responsible (discharging) doctor is not identified"),
    Rule("receiver.person-missing", "E20", "Epikrise: no addressed doctor (referring or copy) is identified"),
    Rule("patient.fnr-missing", "E30", "The patient has no national identity number"),
    Rule("patient.fnr-invalid", "E31",
         "The patient's fødselsnummer/D-nummer/H-nummer is not 11 digits with valid check digits"),
    Rule("patient.name-missing", "E32", "The patient's name is missing"),
    Rule("patient.insufficient", "E36", "The patient is not identified (name + FNR/DNR/DOB and sex)"),
    # A Dialogmelding about a message rather than a patient (DIALOG_AVVIK) carries none: said, not rejected.
    Rule("patient.absent", "E36", "The message names no patient", "warning"),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


def rule(rule_id: str) -> Rule:
    return RULES[rule_id]
