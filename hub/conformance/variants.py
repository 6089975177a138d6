"""The messages of the Mottak battery, for any message type and addressed to the system under test.

hub.fixtures.broken is a fixed corpus (mostly Dialogmelding, addressed to the demo parties); a vendor
test needs the same defects in the message type of the cell and addressed to the vendor's HER-ids,
so the battery builds a valid message with the fixture builder and breaks it in one place.
"""

from __future__ import annotations

import uuid

from lxml import etree

from hub.conformance.catalogue import MessageType
from hub.conformance.simulated import PARTIES, TEST_CENTRE_SERVICE, register_parties
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.fixtures.people import Party, Person
from hub.messages.families import by_key

# A communication party no system of the test network has: unknown on both levels (sheet #21).
UNKNOWN_ORG = Party(899001, "Ukjent helseforetak", None, "hospital")
UNKNOWN_SERVICE = Party(899002, "Ukjent avdeling", None, "hospital", parent_her_id=899001)
register_parties([UNKNOWN_ORG, UNKNOWN_SERVICE])
# Another organisation of the test network that no system under test hosts: the other receiver of the
# copy-receiver cases (sheet #7-#10, #35-#39), answered by nobody.
OTHER_ORG = Party(899101, "Annet legekontor", None, "gp")
OTHER_SERVICE = Party(899102, "Fastlegetjenesten", None, "gp", parent_her_id=899101)
register_parties([OTHER_ORG, OTHER_SERVICE])

_LAUGHS = (b'<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
           b'<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]>\n')


def _unknown_service(target: Party, digit: int = 9) -> Party:
    """A level-2 party under the system's own organisation that the system does not have."""
    org = PARTIES[target.parent_her_id] if target.parent_her_id else target
    p = Party(org.her_id * 10 + digit, "Nedlagt avdeling" if digit == 9 else "Nedlagt tjeneste", None,
              org.kind, parent_her_id=org.her_id)
    register_parties([p])
    return p


def copy_parties(variant: str, hosted: list[Party]) -> tuple[Party, Party]:
    """(primary receiver, copy receiver) of a copy-receiver case (catalogue.COPY_BATTERY). `hosted`: the
    system's receiving parties, its services first, then its organisation: the primary is its first,
    the copy receiver in the same organisation its second (the organisation itself where it has one
    service); a rejected receiver is a service of its organisation it does not have."""
    mine = hosted[0]
    second = hosted[1] if len(hosted) > 1 else mine
    return {
        "copy-primary": (mine, OTHER_SERVICE),
        "copy-copy": (OTHER_SERVICE, mine),
        "copy-both": (mine, second),
        "copy-primary-rejected": (_unknown_service(mine), OTHER_SERVICE),
        "copy-copy-rejected": (OTHER_SERVICE, _unknown_service(mine)),
        "copy-both-rejected": (_unknown_service(mine), _unknown_service(mine, 8)),
    }[variant]


def _root_insert_unknown(data: bytes) -> bytes:
    from hub.xmlsafe import parse_bytes

    root = parse_bytes(data).getroot()
    ns = etree.QName(root).namespace
    extra = etree.Element(f"{{{ns}}}Ukjent" if ns else "Ukjent")
    extra.text = "ikke i skjemaet"
    root.insert(1, extra)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def make_variant(mt: MessageType, variant: str, target: Party, *, patient: Person, stranger: Person,
                 seed: int = 1, hosted: list[Party] | None = None) -> bytes:
    """One battery message of type `mt` for `target` (the system's receiving party); `hosted`: all of
    the system's receiving parties (copy-receiver cases; default: `target` alone)."""
    receiver = target
    kw: dict[str, object] = {"msg_id": str(uuid.uuid4())}
    who = patient
    if variant.startswith("copy-"):
        receiver, copy = copy_parties(variant, hosted or [target])
        kw["copies"] = [copy]
    elif variant == "msgid-not-uuid":
        kw["msg_id"] = f"MSG-2007-{seed:06d}"
    elif variant == "unknown-service":
        receiver = _unknown_service(target)
    elif variant == "unknown-receiver":
        receiver = UNKNOWN_SERVICE
    elif variant == "fnr-missing":
        who = people.patient_with(patient, ident=None)
    elif variant == "fnr-invalid":
        who = people.patient_with(patient, ident=people.with_wrong_check_digits(patient.ident or ""))
    elif variant == "unknown-patient":
        who = stranger
    data = build(mt.family, mt.family_version, seed=seed, sender=TEST_CENTRE_SERVICE, receiver=receiver,
                 patient=who, directory=PARTIES, **mt.build_args, **kw)
    family = by_key(mt.family, mt.family_version)
    ns = family.namespace.encode() if family else b""
    if variant == "not-well-formed":
        cut = data.rindex(b"</")
        return data[:cut] + b"</Feil>\n"
    if variant == "hostile-dtd":
        decl, rest = data.split(b"\n", 1)
        return decl + b"\n" + _LAUGHS + rest
    if variant == "schema-invalid":
        return _root_insert_unknown(data)
    if variant == "wrong-namespace":
        return data.replace(ns, b"http://www.kith.no/xmlstds/ukjent/2015-01-01")
    if variant == "unknown-version":
        base = ns.rsplit(b"/", 1)[0] if ns[-10:-9].isdigit() or ns[-1:].isdigit() else ns
        return data.replace(ns, base + b"/2099-01-01")
    return data
