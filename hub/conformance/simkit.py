"""The simulated systems' own toolkit: how a vendor's EPJ reads, judges and answers a message.

Written apart from the hub on purpose (the developers' guide: simulated vendor systems must not reuse
the hub's validation code). Nothing here imports `hub.validation`, `hub.messages.apprec` or
`hub.messages.info`: schemas are checked with xmlschema (not the hub's lxml schema registry), the
fødselsnummer with our own mod-11 code, parties and patients are read with our own XPaths, and the
AppRec is built here with lxml. If the hub's rules have a bug, a simulated system disagrees with the
hub and a conformance case fails instead of both sides agreeing.

What is shared is data about the standards, not judgement: the family table (namespace -> family,
version, where an old `Message` root names its parties) and the XSD files: the official ones from
../shared/reference/xsd when that pack is present, else ours in `schemas/`.
"""

from __future__ import annotations

import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import xmlschema
from lxml import etree

from hub.messages.families import APPREC_10_NS, MSGHEAD_NS, Family
from hub.messages.families import FAMILIES as _FAMILIES
from hub.paths import SCHEMAS_DIR, reference_dir

ERROR_OID = "2.16.578.1.12.4.1.1.8221"  # code list 8221, the AppRec error codes
STATUS_OID = "2.16.578.1.12.4.1.1.8258"

# The texts of the codes a simulated system answers with (volume 8221, as a vendor would copy them).
ERROR_TEXTS: dict[str, str] = {
    "T01": "Ikke XML / ikke 'well formed' / uleselig",
    "T02": "XML validerer ikke mot skjema",
    "T10": "Meldingstypen eller versjonen støttes ikke",
    "E10": "Ugyldig meldingsidentifikator",
    "E21": "Mottaker finnes ikke",
    "E30": "Pasientens fødselsnummer mangler",
    "E31": "Pasientens fødselsnummer er feil",
    "E32": "Pasientens navn mangler",
    "E35": "Pasienten finnes ikke i mottakersystemet",
    "E36": "Pasientens identitet er ikke tilstrekkelig angitt",
    "S01": "Feil på signatur",
    "S02": "Ugyldig sertifikat",
    "S03": "Sertifikatet er tilbakekalt",
    "X99": "Annen feil",
}


class Unreadable(Exception):
    """Not XML a receiver will read: not well-formed, or carrying a DOCTYPE (entity bombs, XXE)."""


_PARSER = etree.XMLParser(resolve_entities=False, load_dtd=False, no_network=True, huge_tree=False,
                          remove_blank_text=False)


def parse(data: bytes) -> etree._Element:
    """The document element; a DOCTYPE is refused unread, as any EPJ should."""
    head = data[:4096].lstrip()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise Unreadable("DOCTYPE declaration")
    try:
        tree = etree.fromstring(data, _PARSER).getroottree()
    except etree.XMLSyntaxError as exc:
        raise Unreadable(str(exc)) from None
    if tree.docinfo.doctype:
        raise Unreadable("DOCTYPE declaration")
    return tree.getroot()


def _local(el: etree._Element) -> str:
    return etree.QName(el).localname if isinstance(el.tag, str) else ""


def _ns(el: etree._Element) -> str:
    return etree.QName(el).namespace or "" if isinstance(el.tag, str) else ""


def _text(el: etree._Element | None) -> str:
    return (el.text or "").strip() if el is not None else ""


def _child(el: etree._Element | None, *names: str) -> etree._Element | None:
    for n in names:
        if el is None:
            return None
        el = el.find("{*}" + n)
    return el


# --- fødselsnummer ---------------------------------------------------------------------------------------

_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)


def _control(digits: list[int], weights: tuple[int, ...]) -> int | None:
    r = 11 - sum(d * w for d, w in zip(digits, weights, strict=False)) % 11
    return 0 if r == 11 else (None if r == 10 else r)


def fnr_ok(number: str) -> bool:
    """Fødselsnummer or D-nummer: 11 digits, both control digits right (Skatteetaten's mod 11)."""
    if len(number) != 11 or not all("0" <= ch <= "9" for ch in number):
        return False
    d = [int(ch) for ch in number]
    return _control(d[:9], _W1) == d[9] and _control(d[:10], _W2) == d[10]


# --- what a message is ----------------------------------------------------------------------------------


def family_of(namespace: str, mig: str | None) -> Family | None:
    """The family of a namespace; versions sharing one (Henvisning 0.9/0.91) differ in the MIGversion's
    first token ("v0.91")."""
    hits = [f for f in _FAMILIES if f.namespace == namespace and f.name not in ("MsgHead", "kith")]
    token = (mig or "").split()[:1]
    for f in hits:
        if len(hits) > 1 and token and f.mig_version and f.mig_version.split()[:1] == token:
            return f
    return hits[-1] if hits else None


@dataclass
class Level:
    """One level of a party exactly as written: what an AppRec must mirror (sheet #5)."""

    kind: str  # org | dept | person
    name: str
    ids: list[tuple[str, str]] = field(default_factory=list)  # (id, type) in document order


@dataclass
class Party:
    """One side of a message as written in it: the organisation (level 1) and what is below it."""

    name: str = ""
    her: str = ""  # level-1 HER-id
    sub_name: str = ""
    sub_her: str = ""  # level-2 HER-id (department, service or person)
    other_ids: list[tuple[str, str]] = field(default_factory=list)  # (id, type) that are not HER-ids
    levels: list[Level] = field(default_factory=list)  # every level with all its identifiers

    @property
    def her_ids(self) -> list[str]:
        return [h for h in (self.her, self.sub_her) if h]


@dataclass
class Patient:
    name: str
    ident: str
    ident_type: str


@dataclass
class Doc:
    """What the receiver reads from a message before judging it."""

    root: etree._Element
    carrier: str  # msghead | own | apprec
    family: Family | None
    payload: etree._Element | None  # the family's document (MsgHead: the Content child)
    msg_id: str
    gen_date: str
    msg_type: str
    msg_type_dn: str
    sender: Party | None
    receiver: Party | None
    patient: Patient | None
    copies: list[Party] = field(default_factory=list)  # copy receivers (OtherReceiver COP, CopyDest)
    # The primary receiver's role in the standard: REQ where it is the requester (an Epikrise's GP),
    # SPR where it is the service provider; what an AppRec 1.0 from it says it is (unit sheet #9).
    receiver_role: str = "SPR"


def _msghead_party(el: etree._Element | None) -> Party | None:
    if el is None:
        return None
    org = _child(el, "Organisation")
    p = Party()
    if org is None:
        return p
    p.name = _text(_child(org, "OrganisationName"))
    for ident in org.findall("{*}Ident"):
        _ident(p, _text(_child(ident, "Id")), _child(ident, "TypeId"), top=True)
    below = _child(org, "Organisation")
    person = _child(org, "HealthcareProfessional")
    p.levels.append(Level("org", p.name, _idents(org)))
    if below is not None:
        p.levels.append(Level("dept", _text(_child(below, "OrganisationName")), _idents(below)))
    someone = person if person is not None else (_child(below, "HealthcareProfessional")
                                                 if below is not None else None)
    if someone is not None:
        p.levels.append(Level("person", " ".join(x for x in (_text(_child(someone, "GivenName")),
                                                             _text(_child(someone, "MiddleName")),
                                                             _text(_child(someone, "FamilyName"))) if x),
                              _idents(someone)))
    if below is not None:
        p.sub_name = _text(_child(below, "OrganisationName"))
        for ident in below.findall("{*}Ident"):
            _ident(p, _text(_child(ident, "Id")), _child(ident, "TypeId"), top=False)
    elif person is not None:
        p.sub_name = " ".join(x for x in (_text(_child(person, "GivenName")),
                                          _text(_child(person, "FamilyName"))) if x)
        for ident in person.findall("{*}Ident"):
            _ident(p, _text(_child(ident, "Id")), _child(ident, "TypeId"), top=False)
    return p


def _idents(el: etree._Element) -> list[tuple[str, str]]:
    """MsgHead Ident (Id, TypeId) of one level."""
    out = []
    for ident in el.findall("{*}Ident"):
        t = _child(ident, "TypeId")
        if _text(_child(ident, "Id")):
            out.append((_text(_child(ident, "Id")), t.get("V", "") if t is not None else ""))
    return out


def _inst_ids(el: etree._Element) -> list[tuple[str, str]]:
    """Id/TypeId and AdditionalId (Id, Type) of an old-standard Inst, Dept or HCPerson."""
    out = []
    t = _child(el, "TypeId")
    if _text(_child(el, "Id")):
        out.append((_text(_child(el, "Id")), t.get("V", "") if t is not None else ""))
    for add in el.findall("{*}AdditionalId"):
        kind = _child(add, "Type")
        if _text(_child(add, "Id")):
            out.append((_text(_child(add, "Id")), kind.get("V", "") if kind is not None else ""))
    return out


def _ident(p: Party, value: str, type_el: etree._Element | None, *, top: bool) -> None:
    kind = type_el.get("V", "") if type_el is not None else ""
    if not value:
        return
    if kind == "HER":
        if top and not p.her:
            p.her = value
        elif not top and not p.sub_her:
            p.sub_her = value
    else:
        p.other_ids.append((value, kind))


def _inst_party(inst: etree._Element | None) -> Party | None:
    """An old-standard HCP/Inst (or HCProf) with Dept / HCPerson below."""
    if inst is None:
        return None
    p = Party(name=_text(_child(inst, "Name")))
    _ident(p, _text(_child(inst, "Id")), _child(inst, "TypeId"), top=True)
    for add in inst.findall("{*}AdditionalId"):
        _ident(p, _text(_child(add, "Id")), _child(add, "Type"), top=True)
    for below in [*inst.findall("{*}Dept"), *inst.findall("{*}HCPerson")]:
        p.sub_name = p.sub_name or _text(_child(below, "Name"))
        _ident(p, _text(_child(below, "Id")), _child(below, "TypeId"), top=False)
    p.levels.append(Level("org", p.name, _inst_ids(inst)))
    p.levels += [Level("dept", _text(_child(d, "Name")), _inst_ids(d)) for d in inst.findall("{*}Dept")]
    p.levels += [Level("person", _text(_child(h, "Name")), _inst_ids(h)) for h in inst.findall("{*}HCPerson")]
    return p


def _own_parties(root: etree._Element, path: str | None) -> list[Party]:
    if not path:
        return []
    els = [root]
    for step in path.split("/"):
        els = [c for e in els for c in e.findall("{*}" + step.removeprefix("k:"))]
    if not els:  # the HCP may hold an HCProf instead of an Inst
        parent = path.rsplit("/", 1)[0]
        return _own_parties(root, f"{parent}/k:HCProf") if not path.endswith("HCProf") else []
    return [p for p in (_inst_party(e) for e in els) if p is not None]


def _own_party(root: etree._Element, path: str | None) -> Party | None:
    found = _own_parties(root, path)
    return found[0] if found else None


def _patient(el: etree._Element | None, msghead: bool) -> Patient | None:
    if el is None:
        return None
    if msghead:
        name = " ".join(x for x in (_text(_child(el, "GivenName")), _text(_child(el, "FamilyName"))) if x)
        ident = _child(el, "Ident")
        return Patient(name, _text(_child(ident, "Id")),
                       (_child(ident, "TypeId").get("V", "") if _child(ident, "TypeId") is not None else ""))
    type_el = _child(el, "TypeOffId")
    return Patient(_text(_child(el, "Name")), _text(_child(el, "OffId")),
                   type_el.get("V", "") if type_el is not None else "")


def read(root: etree._Element) -> Doc:
    """The header facts of a parsed message (nothing judged yet)."""
    ns = _ns(root)
    if _local(root) == "AppRec":
        return Doc(root, "apprec", None, root, _text(_child(root, "Id")), _text(_child(root, "GenDate")),
                   "APPREC", "Applikasjonskvittering", None, None, None)
    if ns == MSGHEAD_NS:
        info = _child(root, "MsgInfo")
        content = _child(root, "Document", "RefDoc", "Content")
        payload = next((c for c in content if isinstance(c.tag, str)), None) if content is not None else None
        fam = family_of(_ns(payload), None) if payload is not None else None
        type_el = _child(info, "Type")
        copies = [_msghead_party(o) for o in info.findall("{*}OtherReceiver")
                  if (_child(o, "RoleReceiver") is not None and _child(o, "RoleReceiver").get("V") == "COP")]
        return Doc(root, "msghead", fam, payload, _text(_child(info, "MsgId")),
                   _text(_child(info, "GenDate")),
                   type_el.get("V", "") if type_el is not None else "",
                   type_el.get("DN", "") if type_el is not None else "",
                   _msghead_party(_child(info, "Sender")), _msghead_party(_child(info, "Receiver")),
                   _patient(_child(info, "Patient"), True), [c for c in copies if c is not None])
    fam = family_of(ns, _text(_child(root, "MIGversion")))
    gen = _child(root, "GenDate")
    type_el = _child(root, "Type")
    patients = root.xpath("//*[local-name()='Patient']")
    return Doc(root, "own", fam, root, _text(_child(root, "MsgId")),
               (gen.get("V") or _text(gen)) if gen is not None else "",
               type_el.get("V", "") if type_el is not None else "",
               type_el.get("DN", "") if type_el is not None else "",
               _own_party(root, fam.sender_path if fam else None),
               _own_party(root, fam.receiver_path if fam else None),
               _patient(patients[0] if patients else None, False),
               _own_parties(root, fam.copy_path if fam else None),
               "REQ" if fam and "Requester" in (fam.receiver_path or "") else "SPR")


def patient_idents(data: bytes) -> set[str]:
    """The patient identity numbers a message carries (for registering test patients)."""
    try:
        root = parse(data)
    except Unreadable:
        return set()
    found = root.xpath("//*[local-name()='Patient']/*[local-name()='OffId']"
                       " | //*[local-name()='Patient']/*[local-name()='Ident']/*[local-name()='Id']")
    return {_text(e) for e in found if _text(e)}


# --- schema validation with xmlschema --------------------------------------------------------------------

_schemas: dict[tuple[Path, ...], xmlschema.XMLSchema] = {}
_schema_lock = threading.Lock()


def _schema(files: tuple[Path, ...]) -> xmlschema.XMLSchema:
    """The files compiled together (MsgHead with its payload's schema: Content is strict). Imports
    are resolved to the file of the same name in the same folder (official schemas import by http://
    URL and by the folders they were published in); nothing is fetched."""
    folder = files[0].parent

    def local(uri: str) -> str:
        name = uri.rsplit("/", 1)[-1]
        return (folder / name).as_uri() if (folder / name).exists() else uri

    with _schema_lock:
        s = _schemas.get(files)
        if s is None:
            s = xmlschema.XMLSchema(str(files[0]), build=False, allow="local", uri_mapper=local)
            for extra in files[1:]:
                s.add_schema(str(extra), build=False)
            s.build()
            _schemas[files] = s
        return s


def schema_files(family: Family, carrier: str) -> tuple[Path, ...] | None:
    """The official XSDs when the reference pack is present (../shared/reference/xsd), else ours."""
    ref = reference_dir()
    for folder, name, head in ((ref / "xsd" if ref else None, family.official_xsd, "MsgHead-v1_2.xsd"),
                               (SCHEMAS_DIR, family.own_xsd, "MsgHead-v1_2.xsd")):
        if folder is None or not name:
            continue
        names = (name,) if carrier == "own" else (head, name)
        if all((folder / n).exists() for n in names):
            return tuple(folder / n for n in names)
    return None


def schema_errors(doc: Doc) -> list[str]:
    """Why the message does not validate against its schema(s) ([] when it does)."""
    if doc.carrier == "apprec":
        return []
    files = schema_files(doc.family, doc.carrier) if doc.family else None
    if files is None:
        return ["no schema for this namespace"]
    return [f"{e.path}: {e.reason}" for e in _schema(files).iter_errors(doc.root)][:5]


# --- signatures (signxml, not the hub's hub.security) ----------------------------------------------------

_DS = "http://www.w3.org/2000/09/xmldsig#"


def is_signed(data: bytes) -> bool:
    return _DS.encode() in data and b"Signature" in data


def without_signature(root: etree._Element) -> etree._Element:
    """The document as its standard defines it: the enveloped ds:Signature removed (older schemas
    do not allow one)."""
    for el in root.findall(f"{{{_DS}}}Signature"):
        root.remove(el)
    return root


def sign(data: bytes, key: object, cert: object) -> bytes:
    """An enveloped XMLDSig signature over the whole document (RSA-SHA256, SHA-256, inclusive c14n),
    made with signxml: what the hub verifies is then a signature it did not write itself."""
    from cryptography.hazmat.primitives import serialization
    from signxml import XMLSigner, methods

    key_pem = key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined]
                                serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)  # type: ignore[attr-defined]
    signer = XMLSigner(method=methods.enveloped, signature_algorithm="rsa-sha256", digest_algorithm="sha256",
                       c14n_algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315")
    signed = signer.sign(parse(data), key=key_pem, cert=cert_pem)
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8")


_ca_files: dict[Path, str] = {}


def _ca_file(pki_dir: Path) -> str:
    """signxml reads its trust anchors from a file: the network's root and issuing CA in one, written
    once per process to a temporary file that goes when the process does."""
    import atexit
    import os
    import tempfile

    with _schema_lock:
        if pki_dir not in _ca_files:
            fd, name = tempfile.mkstemp(suffix=".pem", prefix="sim-ca-")
            with os.fdopen(fd, "wb") as f:
                f.write(b"".join((pki_dir / "ca" / n).read_bytes() for n in ("root.pem", "issuing.pem")))
            atexit.register(os.unlink, name)
            _ca_files[pki_dir] = name
        return _ca_files[pki_dir]


def signature_code(data: bytes, pki_dir: Path) -> str | None:
    """None when the enveloped signature verifies with a certificate of the test network that is in
    force and not revoked; else the AppRec code: S01 signature, S02 certificate, S03 revoked.
    Verified with signxml against the network's CA certificates; revocation read from its CRLs
    (the folder layout of the test network's PKI: ca/*.pem, crl/*.crl)."""
    import base64

    from cryptography import x509
    from signxml import XMLVerifier
    from signxml.exceptions import InvalidCertificate, InvalidSignature

    try:
        XMLVerifier().verify(data, ca_pem_file=_ca_file(pki_dir))
    except InvalidCertificate:
        return "S02"
    except InvalidSignature:
        return "S01"
    except Exception:  # noqa: BLE001 - a signature that cannot even be read does not verify
        return "S01"
    found = parse(data).findall(f"{{{_DS}}}Signature/{{{_DS}}}KeyInfo/{{{_DS}}}X509Data/"
                                f"{{{_DS}}}X509Certificate")
    cert = x509.load_der_x509_certificate(base64.b64decode("".join((found[0].text or "").split())))
    for crl_file in sorted((pki_dir / "crl").glob("*.crl")):
        crl = x509.load_der_x509_crl(crl_file.read_bytes())
        if crl.issuer == cert.issuer and crl.get_revoked_certificate_by_serial_number(cert.serial_number):
            return "S03"
    return None


# --- judging (the receiver's own checks) ----------------------------------------------------------------

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def msgid_ok(msg_id: str) -> bool:
    return bool(_UUID.fullmatch(msg_id))


def patient_codes(p: Patient | None, known: set[str] | None) -> list[str]:
    """One code for what is wrong with the patient's identification; E35 when `known` (the patients
    registered in the system; None: not looked up) does not have them."""
    if p is None:
        return ["E36"]
    if not p.name:  # whatever number it carries, nobody takes a patient without a name
        return ["E32"]
    if not p.ident:
        return ["E30"]
    if p.ident_type == "HNR":  # a help number identifies a named patient; it is not an FNR
        pass
    elif p.ident_type not in ("FNR", "DNR", "") or not fnr_ok(p.ident):
        return ["E31"]
    return [] if known is None or p.ident in known else ["E35"]


# --- the AppRec ------------------------------------------------------------------------------------------

_A = f"{{{APPREC_10_NS}}}"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: str) -> etree._Element:
    el = etree.SubElement(parent, _A + tag, {k: v for k, v in attrs.items() if v})
    if text is not None:
        el.text = text
    return el


def _level_xml(el: etree._Element, lv: Level) -> None:
    """Name, the first identifier as Id/TypeId (a HER-id first), the others as AdditionalId."""
    if lv.name:
        _sub(el, "Name", lv.name)
    ids = sorted(lv.ids, key=lambda x: x[1] != "HER")
    if ids:
        _sub(el, "Id", ids[0][0])
        _sub(el, "TypeId", V=ids[0][1] or "UKJENT")
    for value, kind in ids[1:]:
        add = _sub(el, "AdditionalId")
        _sub(add, "Id", value)
        _sub(add, "Type", V=kind or "UKJENT")


ROLE_TEXTS = {"PRIM": "Primærmottaker", "COP": "Kopimottaker", "REQ": "Rekvirent", "SPR": "Tjenesteyter",
              "AVS": "Avsender", "RECEIVER": "Mottaker"}


def _party_xml(parent: etree._Element, tag: str, p: Party, role: str | None = None) -> None:
    side = _sub(parent, tag)
    if role:
        _sub(side, "Role", V=role, DN=ROLE_TEXTS.get(role, role))
    inst = _sub(_sub(side, "HCP"), "Inst")
    if p.levels:  # mirrored as written: every level, every identifier; the signer not beside a service
        org = p.levels[0]
        depts = [lv for lv in p.levels if lv.kind == "dept"]
        people = [] if any(t == "HER" for d in depts for _v, t in d.ids) else \
            [lv for lv in p.levels if lv.kind == "person"]
        org_ids = sorted(org.ids, key=lambda x: x[1] != "HER")
        _level_xml(inst, Level("org", org.name, org_ids[:1]))
        for d in depts:
            _level_xml(_sub(inst, "Dept"), d)
        for value, kind in org_ids[1:]:
            add = _sub(inst, "AdditionalId")
            _sub(add, "Id", value)
            _sub(add, "Type", V=kind or "UKJENT")
        for h in people:
            _level_xml(_sub(inst, "HCPerson"), h)
        return
    if p.name:
        _sub(inst, "Name", p.name)
    if p.her:
        _sub(inst, "Id", p.her)
        _sub(inst, "TypeId", V="HER", DN="HER-id")
    if p.sub_her or p.sub_name:
        dept = _sub(inst, "Dept")
        if p.sub_name:
            _sub(dept, "Name", p.sub_name)
        if p.sub_her:
            _sub(dept, "Id", p.sub_her)
            _sub(dept, "TypeId", V="HER", DN="HER-id")
    for value, kind in p.other_ids:
        add = _sub(inst, "AdditionalId")
        _sub(add, "Id", value)
        _sub(add, "Type", V=kind or "UKJENT")


def apprec(*, sender: Party, receiver: Party, status: str, errors: list[str], original_type: str,
           original_type_dn: str, issue_date: str, original_id: str, error_oid: bool = True,
           gen_date: datetime | None = None, roles: tuple[str, str] | None = None) -> bytes:
    """An AppRec 1.0: `sender` is us (the original's receiver), `receiver` the original's sender;
    `roles`: the Sender's and the Receiver's Role (AppRec 1.0: REQ/SPR or COP, and RECEIVER)."""
    root = etree.Element(_A + "AppRec", nsmap={None: APPREC_10_NS})
    _sub(root, "MsgType", V="APPREC", DN="Applikasjonskvittering")
    _sub(root, "MIGversion", "1.0 2004-11-21")
    _sub(root, "GenDate", (gen_date or datetime.now()).replace(microsecond=0).isoformat())
    _sub(root, "Id", str(uuid.uuid4()))
    _party_xml(root, "Sender", sender, roles[0] if roles else None)
    _party_xml(root, "Receiver", receiver, roles[1] if roles else None)
    _sub(root, "Status", V=status, DN={"1": "OK", "2": "Avvist", "3": "OK, feil i delmelding"}[status])
    for code in errors:
        _sub(root, "Error", V=code, DN=ERROR_TEXTS.get(code, code), S=ERROR_OID if error_oid else "")
    orig = _sub(root, "OriginalMsgId")
    _sub(orig, "MsgType", V=original_type or "UKJENT", DN=original_type_dn or original_type or "Ukjent")
    _sub(orig, "IssueDate", issue_date)
    _sub(orig, "Id", original_id)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)
