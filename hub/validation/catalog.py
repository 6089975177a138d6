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
    # Schema.
    Rule("xsd", "T02", "The message does not validate against its schema"),
    # Business rules (AppRec rules of HIS 80415 / HITS 1168, KITH code lists).
    Rule("msgid.missing", "E10", "MsgId is missing"),
    Rule("msgid.uuid", "E10", "MsgId is not a UUID"),
    Rule("msgid.unique", "E10", "MsgId was already used by another message in this run"),
    Rule("gendate.future", "T99", "GenDate lies in the future"),
    Rule("ident.type", "T99", "An identifier has a TypeId outside its code list"),
    Rule("ident.her", "E21", "A HER-id is not a positive integer"),
    # Warning: official examples write a patient's FNR with S="...1111" instead of 8116; the value
    # itself is still checked against 9051/8116 (ident.type).
    Rule("ident.system", "T99", "An identifier's TypeId names an unexpected code system (S)", "warning"),
    Rule("code.value", "T99", "A coded value is not in the KITH code list the element uses"),
    Rule("type.namespace", "T10", "MsgInfo/Type does not fit the payload's standard"),
    Rule("receiver.missing", "E21", "The message names no receiving communication party (HER-id)"),
    Rule("sender.missing", "X99", "The message names no sending communication party (HER-id)"),
    Rule("patient.fnr-missing", "E30", "The patient has no national identity number"),
    Rule("patient.fnr-invalid", "E31", "The patient's fødselsnummer/D-nummer fails its check digits"),
    Rule("patient.name-missing", "E32", "The patient's name is missing"),
    Rule("patient.insufficient", "E36", "The patient is not identified (name + FNR/DNR/DOB and sex)"),
]

RULES: dict[str, Rule] = {r.id: r for r in _RULES}


def rule(rule_id: str) -> Rule:
    return RULES[rule_id]
