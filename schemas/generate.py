"""Writes the hub's own XSD schemas (the *.xsd files beside this script).

Run `python schemas/generate.py` after changing a model below; tests check that the committed
files equal this script's output, so the two never drift apart.

Each model was written from the structure of the official KITH/e-helse schema of that family
(element names, order and cardinality of the parts that matter for routing, identification and
the business rules). Deep clinical content is typed `k:Lenient` (anything, checked lax) instead
of reproducing the full official model. Imports are relative file names only, so a fresh install
validates with nothing else.

Model syntax, one whitespace-separated token per particle:
  Name:kind        local element; occurrence suffix on the name: ? * +   (Name?:CS, Diagnosis+:L)
  @p:Name          reference to a global element of prefix p (occurrence suffix allowed)
  ~p               lax wildcard for the namespace of prefix p (~any: any namespace, ~strict: any
                   namespace, strict); occurrence suffix allowed
  ( a | b )?       choice; ( a b )? without `|` is a nested sequence
Kinds: CS CV TS URL PQ BL oid (common types), ST dt date bool dec uri (XSD built-ins),
L (lenient), p:Type (a type of prefix p), anything else: a type of this schema.
"""

# ruff: noqa: E501  (the content models below are data; long lines read better than split ones)
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

HERE = Path(__file__).resolve().parent

XS = "http://www.w3.org/2001/XMLSchema"
COMMON_NS = "urn:no:hub:xmlstds:common"
FK1_NS = "http://www.kith.no/xmlstds/felleskomponent1"
B64_NS = "http://www.kith.no/xmlstds/base64container"
DS_NS = "http://www.w3.org/2000/09/xmldsig#"
EPJ3_NS = "http://www.kith.no/xmlstds/epj/epj3/2008-02-20"
PO15_NS = "http://www.kith.no/xmlstds/po/poKomponent/2009-06-30"
PO16_NS = "http://www.kith.no/xmlstds/po/poKomponent/2012-04-01"
PO20_NS = "http://ehelse.no/xmlstds/po/poKomponent/2017-11-30"

BUILTIN = {
    "CS": "k:CS", "CV": "k:CV", "TS": "k:TS", "URL": "k:URL", "PQ": "k:PQ", "BL": "k:BL",
    "oid": "k:oid", "L": "k:Lenient",
    "ST": "xs:string", "dt": "xs:dateTime", "date": "xs:date", "bool": "xs:boolean",
    "dec": "xs:decimal", "uri": "xs:anyURI",
}
OCC = {"": ("1", "1"), "?": ("0", "1"), "*": ("0", "unbounded"), "+": ("1", "unbounded")}


@dataclass
class Schema:
    file: str
    ns: str
    title: str
    # prefix -> (namespace, schema file to import or None for a wildcard-only namespace)
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    roots: dict[str, str] = field(default_factory=dict)  # global element -> model or "=Type"
    types: dict[str, str] = field(default_factory=dict)  # complex type -> model
    raw: str = ""  # extra hand-written declarations


def _occ_attrs(suffix: str) -> str:
    mn, mx = OCC[suffix]
    out = ""
    if mn != "1":
        out += f' minOccurs="{mn}"'
    if mx != "1":
        out += f' maxOccurs="{mx}"'
    return out


def _kind(kind: str) -> str:
    if kind in BUILTIN:
        return BUILTIN[kind]
    if ":" in kind:
        return kind
    return "t:" + kind


def _particles(tokens: list[str], pos: int, end: str | None, indent: str) -> tuple[list[str], int]:
    """Parses tokens up to `end` (")" or None) into XSD particle lines."""
    lines: list[str] = []
    while pos < len(tokens):
        tok = tokens[pos]
        if end and tok.startswith(")"):
            return lines, pos
        if tok == "(":
            inner: list[list[str]] = []
            pos += 1
            while True:
                part, pos = _particles(tokens, pos, ")", indent + "  ")
                inner.append(part)
                if tokens[pos] == "|":
                    pos += 1
                    continue
                break
            suffix = tokens[pos][1:]
            pos += 1
            occ = _occ_attrs(suffix)
            if len(inner) == 1:
                lines.append(f"{indent}<xs:sequence{occ}>")
                lines += inner[0]
                lines.append(f"{indent}</xs:sequence>")
            else:
                lines.append(f"{indent}<xs:choice{occ}>")
                for part in inner:
                    if len(part) == 1:
                        lines.append(part[0])
                    else:
                        lines.append(f"{indent}  <xs:sequence>")
                        lines += ["  " + p for p in part]
                        lines.append(f"{indent}  </xs:sequence>")
                lines.append(f"{indent}</xs:choice>")
            continue
        if tok == "|":
            return lines, pos
        m = re.fullmatch(r"~(\w+)([?*+]?)", tok)
        if m:
            pfx, suffix = m.groups()
            if pfx == "any":
                lines.append(f'{indent}<xs:any namespace="##any" processContents="lax"{_occ_attrs(suffix)}/>')
            elif pfx == "strict":
                lines.append(f'{indent}<xs:any namespace="##any" processContents="strict"{_occ_attrs(suffix)}/>')
            else:
                lines.append(f'{indent}<xs:any namespace="{{{pfx}}}" processContents="lax"{_occ_attrs(suffix)}/>')
            pos += 1
            continue
        m = re.fullmatch(r"@(\w+:[\w]+)([?*+]?)", tok)
        if m:
            ref, suffix = m.groups()
            lines.append(f'{indent}<xs:element ref="{ref}"{_occ_attrs(suffix)}/>')
            pos += 1
            continue
        m = re.fullmatch(r"([^\W\d][\w]*)([?*+]?):([\w:]+)", tok)
        if not m:
            raise ValueError(f"bad token {tok!r}")
        name, suffix, kind = m.groups()
        lines.append(f'{indent}<xs:element name="{name}" type="{_kind(kind)}"{_occ_attrs(suffix)}/>')
        pos += 1
    if end:
        raise ValueError("unbalanced (")
    return lines, pos


def _sequence(model: str, indent: str) -> list[str]:
    tokens = model.replace("(", " ( ").replace("|", " | ").split()
    # re-join ")" with its occurrence suffix: ") ?" never occurs since suffixes are written glued
    lines, _ = _particles(tokens, 0, None, indent + "  ")
    return [f"{indent}<xs:sequence>", *lines, f"{indent}</xs:sequence>"]


def render(s: Schema) -> str:
    ns_decls = {"xs": XS, "t": s.ns, "k": COMMON_NS}
    for p, (ns, _) in s.imports.items():
        ns_decls[p] = ns
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           f"<!-- {s.title}. Written for the hub from the structure of the official schema;",
           "     generated by generate.py: edit the model there, not this file. -->"]
    attrs = " ".join(f"xmlns:{p}={quoteattr(ns)}" for p, ns in ns_decls.items())
    out.append(f'<xs:schema {attrs} targetNamespace="{s.ns}" elementFormDefault="qualified" '
               'attributeFormDefault="unqualified">')
    if s.ns != COMMON_NS:
        out.append(f'  <xs:import namespace="{COMMON_NS}" schemaLocation="kith-common.xsd"/>')
    for _, (ns, loc) in s.imports.items():
        if loc:
            out.append(f'  <xs:import namespace="{ns}" schemaLocation="{loc}"/>')
    for name, model in s.roots.items():
        if model.startswith("="):
            out.append(f'  <xs:element name="{name}" type="{_kind(model[1:])}"/>')
            continue
        out.append(f'  <xs:element name="{name}">')
        out.append("    <xs:complexType>")
        out += _sequence(model, "      ")
        out.append("    </xs:complexType>")
        out.append("  </xs:element>")
    for name, model in s.types.items():
        out.append(f'  <xs:complexType name="{name}">')
        out += _sequence(model, "    ")
        out.append("  </xs:complexType>")
    if s.raw:
        out.append(s.raw.rstrip("\n"))
    out.append("</xs:schema>")
    text = "\n".join(out) + "\n"
    # wildcard namespaces were written as {prefix}
    for p, ns in ns_decls.items():
        text = text.replace("{" + p + "}", ns)
    return text


COMMON_RAW = """\
  <!-- KITH data types (V/S/DN/OT attributes), once for all our schemas. -->
  <xs:simpleType name="oid">
    <xs:restriction base="xs:token">
      <xs:pattern value="(\\d+\\.?)*\\d+"/>
    </xs:restriction>
  </xs:simpleType>
  <xs:complexType name="CS">
    <xs:attribute name="V" type="xs:token"/>
    <xs:attribute name="DN" type="xs:string"/>
  </xs:complexType>
  <xs:complexType name="CV">
    <xs:attribute name="V" type="xs:token"/>
    <xs:attribute name="S" type="k:oid"/>
    <xs:attribute name="DN" type="xs:string"/>
    <xs:attribute name="OT" type="xs:string"/>
  </xs:complexType>
  <xs:complexType name="TS">
    <xs:attribute name="V">
      <xs:simpleType>
        <xs:union memberTypes="xs:dateTime xs:date xs:gYear xs:gYearMonth xs:time"/>
      </xs:simpleType>
    </xs:attribute>
  </xs:complexType>
  <xs:complexType name="URL">
    <xs:attribute name="V" type="xs:anyURI"/>
  </xs:complexType>
  <xs:complexType name="PQ">
    <xs:attribute name="V" type="xs:double"/>
    <xs:attribute name="U" type="xs:token"/>
  </xs:complexType>
  <xs:complexType name="BL">
    <xs:attribute name="V" type="xs:boolean"/>
  </xs:complexType>
  <!-- Deep clinical content we do not model: any text, elements and attributes. -->
  <xs:complexType name="Lenient" mixed="true">
    <xs:sequence>
      <xs:any namespace="##any" processContents="lax" minOccurs="0" maxOccurs="unbounded"/>
    </xs:sequence>
    <xs:anyAttribute namespace="##any" processContents="lax"/>
  </xs:complexType>
"""

B64_RAW = """\
  <xs:element name="Base64Container">
    <xs:complexType>
      <xs:simpleContent>
        <xs:extension base="xs:base64Binary"/>
      </xs:simpleContent>
    </xs:complexType>
  </xs:element>
"""

FK1_TYPES = {
    "Ident": "Id:ST TypeId:CV",
    "Address": "Type?:CS StreetAdr?:ST PostalCode?:ST City?:ST Postbox?:ST County?:CS Country?:CS",
    "TeleCom": "TypeTelecom?:CS TeleAddress:URL",
    "Person": "FamilyName?:ST MiddleName?:ST GivenName?:ST DateOfBirth?:date Sex?:CS Nationality?:CS "
              "Ident*:Ident Address?:Address TeleCom*:TeleCom",
    "HealthcareProfessional": "TypeHealthcareProfessional?:CS RoleToPatient?:CV FamilyName?:ST "
                              "MiddleName?:ST GivenName?:ST DateOfBirth?:date Sex?:CS Nationality?:CS "
                              "Ident+:Ident Address?:Address TeleCom*:TeleCom",
    "Organisation": "TypeOrganisation?:CV OrganisationName:ST Ident+:Ident Address?:Address "
                    "TeleCom*:TeleCom Organisation?:Organisation",
}

# --- MsgHead 1.2 -------------------------------------------------------------------------------
MSGHEAD_PERSON = ("FamilyName?:ST MiddleName?:ST GivenName?:ST DateOfBirth?:date Sex?:CS Nationality?:CS "
                  "Ident*:Ident Address?:Address TeleCom*:TeleCom")
MSGHEAD = Schema(
    "MsgHead-v1_2.xsd", "http://www.kith.no/xmlstds/msghead/2006-05-24", "MsgHead (Hodemelding) v1.2",
    imports={"b64": (B64_NS, "base64container.xsd"), "ds": (DS_NS, None)},
    roots={"MsgHead": "MsgInfo:MsgInfo ( Document+:Document | PatientReport+:PatientReport ) ~ds?"},
    types={
        "MsgInfo": "Type:CS MIGversion:ST GenDate:dt MsgId:ST ProcessingStatus?:CS RequestedPriority?:CS "
                   "Ack?:CS ConversationRef?:ConversationRef Sender:Party Receiver:Party "
                   "OtherReceiver*:OtherReceiver Patient?:Person",
        "ConversationRef": "RefToParent:ST RefToConversation:ST",
        "Party": "ComMethod?:CS Organisation:Organisation",
        "OtherReceiver": "ComMethod?:CS RoleReceiver:CS ( Organisation:Organisation | Patient:Person "
                         "| Person:Person | HealthcareProfessional:HealthcareProfessional )?",
        "PatientReport": "DocumentConnection?:CS CaseNo:ST Document+:Document Patient?:Person",
        "Document": "DocumentConnection?:CS ContentType?:CV ContentDescription?:ST ContentCategory?:CV "
                    "Consent?:CV Annotation?:ST FromDate?:TS ToDate?:TS OidRef?:oid EnquiryRefId?:ST "
                    "RefDoc:RefDoc",
        # Content is strict like the official one: the payload's schema must be loaded with this one.
        "RefDoc": "IssueDate?:TS MsgType:CS Id?:ST MimeType?:ST Description?:ST Compression?:CS "
                  "( FileReference:uri | Content:Content )?",
        "Content": "~strict*",
        "Organisation": "( OrganisationName:ST TypeOrganisation?:CV Ident+:Ident Address?:Address "
                        "TeleCom*:TeleCom Organisation?:Organisation "
                        "HealthcareProfessional?:HealthcareProfessional )?",
        "HealthcareProfessional": "TypeHealthcareProfessional?:CS RoleToPatient?:CV FamilyName?:ST "
                                  "MiddleName?:ST GivenName?:ST DateOfBirth?:date Sex?:CS Nationality?:CS "
                                  "Ident+:Ident Address?:Address TeleCom*:TeleCom",
        "Person": MSGHEAD_PERSON,
        "Ident": "Id:ST TypeId:CV",
        "Address": "Type?:CS StreetAdr?:ST PostalCode?:ST City?:ST Postbox?:ST County?:CS Country?:CS",
        "TeleCom": "TypeTelecom?:CS TeleAddress:URL",
    },
)


def apprec(file: str, ns: str, version: str) -> Schema:
    return Schema(
        file, ns, f"AppRec (Applikasjonskvittering) v{version}",
        roots={"AppRec": "MsgType:CS MIGversion:ST SoftwareName?:ST SoftwareVersion?:ST GenDate:dt Id:ST "
                         "Sender:Party Receiver:Party Status:CS Error*:CV OriginalMsgId:OriginalMsgId"},
        types={
            "Party": "Role?:CS HCP:HCP",
            "OriginalMsgId": "MsgType:CS IssueDate:dt Id:ST",
            "HCP": "( Inst:Inst | HCProf:HCProf ) MedSpeciality?:CV Address?:Address",
            "Inst": "Name?:ST Id?:ST TypeId?:CS Dept*:Dept AdditionalId*:AdditionalId HCPerson*:HCPerson",
            "Dept": "Type?:CS Name?:ST Id?:ST TypeId?:CS AdditionalId*:AdditionalId",
            "HCPerson": "Name?:ST Id?:ST TypeId?:CS AdditionalId*:AdditionalId",
            "HCProf": "Type?:CS Name?:ST Id?:ST TypeId?:CS AdditionalId*:AdditionalId",
            "AdditionalId": "Id:ST Type:CS",
            "Address": "Type:CS StreetAdr?:ST PostalCode?:ST City?:ST County?:CS Country?:CS CityDistr?:CS "
                       "TeleAddress*:URL",
        },
    )


# --- Dialogmelding -----------------------------------------------------------------------------
DIALOG_PEOPLE = {
    "HealthcareProfessional": "TypeHealthcareProfessional?:CS RoleToPatient?:CV FamilyName?:ST MiddleName?:ST "
                              "GivenName?:ST DateOfBirth?:date Sex?:CS Nationality?:CS Ident*:fk1:Ident "
                              "Address?:fk1:Address TeleCom*:fk1:TeleCom",
    "Person": "GivenName?:ST MiddleName?:ST FamilyName?:ST DateOfBirth?:date Sex?:CS Nationality?:CS "
              "Ident*:fk1:Ident Address?:fk1:Address TeleCom*:fk1:TeleCom",
}
DIALOG_ROOT = "SakstypeKodet?:CV Sakstype?:ST ( Foresporsel*:Foresporsel | Notat*:Notat )"
DIALOG_NOTAT = ("TemaKodet:CV Tema?:ST TekstNotatInnhold?:L Merknad?:ST DokIdNotat?:ST DatoNotat?:date "
                "Foresporsel?:Foresporsel RollerRelatertNotat*:RollerRelatertNotat")
DIALOG_10 = Schema(
    "Dialogmelding-v1.0.xsd", "http://www.kith.no/xmlstds/dialog/2006-10-11", "Dialogmelding v1.0",
    imports={"fk1": (FK1_NS, "felleskomponent1-common.xsd")},
    roots={"Dialogmelding": DIALOG_ROOT},
    types={
        "Notat": DIALOG_NOTAT,
        "Foresporsel": "TypeForesp:CV Sporsmal?:ST Formål?:CV Begrunnelse?:ST Hastegrad?:CS FraDato?:date "
                       "TilDato?:date TypeJournalinfo?:CV DokIdForesp?:ST "
                       "RollerRelatertNotat*:RollerRelatertNotat",
        "RollerRelatertNotat": "RolleNotat?:CV RoleToPatient?:CV "
                               "( HealthcareProfessional:HealthcareProfessional | Person:Person )",
        **DIALOG_PEOPLE,
    },
)
DIALOG_11 = Schema(
    "Dialogmelding-v1.1.xsd", "http://www.kith.no/xmlstds/dialog/2013-01-23", "Dialogmelding v1.1",
    imports={"fk1": (FK1_NS, "felleskomponent1-common.xsd")},
    roots={"Dialogmelding": DIALOG_ROOT},
    types={
        "Notat": DIALOG_NOTAT,
        "Foresporsel": "TypeForesp:CV EmneSporsmal?:ST Sporsmal?:L Formål?:CV Begrunnelse?:ST Hastegrad?:CS "
                       "FraDato?:date TilDato?:date TypeJournalinfo*:CV KodetOpplysning?:CV DokIdForesp?:ST "
                       "RollerRelatertNotat*:RollerRelatertNotat",
        "RollerRelatertNotat": "RolleNotat?:CV RoleToPatient?:CV TilknyttetEnhet?:TilknyttetEnhet "
                               "( HealthcareProfessional:HealthcareProfessional | Person:Person )?",
        "TilknyttetEnhet": "Kontaktenhet:fk1:Organisation Merknad?:ST "
                           "( HealthcareProfessional:HealthcareProfessional | Person:Person )?",
        **DIALOG_PEOPLE,
    },
)

# --- Message-root families (own `Message`, parties in HCP structures) ---------------------------
ADDRESS = "Type:CS StreetAdr?:ST PostalCode?:ST City?:ST County?:CS Country?:CS CityDistr?:CS TeleAddress*:URL"
REFDOC_OLD = "IssueDate?:TS MsgType:CS Id?:ST"
REFDOC_NEW = ("IssueDate?:TS MsgType:CS Id?:ST MimeType?:ST Description?:ST Compression?:CS "
              "( FileReference:uri | Content:L )?")
MESSAGE_HEAD = "Type{t}:CS MsgVersion?:ST MIGversion:ST GenDate:TS MsgId:ST"


def own_root(file: str, ns: str, title: str, message: str, types: dict[str, str],
             imports: dict[str, tuple[str, str | None]] | None = None) -> Schema:
    base = {"AdditionalId": "Id:ST Type:CS", "Address": ADDRESS}
    return Schema(file, ns, title, imports=imports or {}, roots={"Message": message}, types={**types, **base})


def hcp_types(hcp_tail: str, inst: str, with_addid: bool, party: str) -> dict[str, str]:
    add = " AdditionalId*:AdditionalId" if with_addid else ""
    return {
        "Party": party,
        "CopyDest": "Role?:CS CopyDestRole*:L HCP:HCP",
        "HCP": "( Inst:Inst | HCProf:L ) " + hcp_tail,
        "Inst": inst,
        "Dept": "Type?:CS Name?:ST Id?:ST TypeId?:CS" + add,
        "HCPerson": "Name?:ST Id?:ST TypeId?:CS" + add,
    }


PARTY = "Role?:CS HCP:HCP"
PARTY_COM = "Role?:CS ComMethod?:CS HCP:HCP"

# Epikrise: sender ServRprt/ServProvider, receiver ServRprt/Requester.
EPI_PATIENT = ("Sex?:CS DateOfBirth?:TS DateOfDeath?:TS Name?:ST IdByServProvider?:ST IdByRequester?:ST "
               "OffId?:ST TypeOffId?:CS PatientPrecaution*:L PatientRelParty*:L PatRelHCP*:L "
               "AdditionalId*:AdditionalId Address?:Address")
EPI_RPRT = ("ServType:CS IssueDate:TS ApprDate?:TS Status:CS Priority?:CS Ack?:CS MsgDescr:ST ServProvId?:ST "
            "ServReq*:L Event*:L Patient:Patient ServProvider:Party CopyDest*:CopyDest Requester:Party "
            "RelServProvider*:L RefDoc*:RefDoc")
EPI_HCP_OLD = "MedSpecialty?:CV PartyIdByRequester?:ST PartyIdByServProv?:ST Address?:Address"


def epikrise(version: str, ns: str) -> Schema:
    status = " Status?:CS" if version == "1.2" else ""
    if version == "1.0":
        hcp = hcp_types(EPI_HCP_OLD, "Name?:ST Type?:CS Id?:ST TypeId?:CS Dept*:Dept HCPerson*:HCPerson",
                        False, PARTY)
    elif version == "1.1":
        hcp = hcp_types(EPI_HCP_OLD, "Name?:ST Type?:CS Id?:ST TypeId?:CS Dept*:Dept HCPerson*:HCPerson "
                        "AdditionalId*:AdditionalId", True, PARTY_COM)
    else:
        hcp = hcp_types("MedSpecialty?:CV Address?:Address", "Name?:ST Id?:ST TypeId?:CS Dept*:Dept "
                        "HCPerson*:HCPerson AdditionalId*:AdditionalId", True, PARTY_COM)
    return own_root(
        f"Epikrise-v{version}.xsd", ns, f"Epikrise v{version}",
        MESSAGE_HEAD.format(t="?") + status + " ServRprt:ServRprt",
        {"ServRprt": EPI_RPRT, "Patient": EPI_PATIENT,
         "RefDoc": REFDOC_OLD if version == "1.0" else REFDOC_NEW, **hcp},
    )


# Henvisning <= 1.1: sender ServReq/Requester, receiver ServReq/ServProvider, copies CopyDest.
HENV_SERVREQ = ("ServType:CS IssueDate:TS PaymentCat?:CS ReqComment?:ST Ack?:CS MsgDescr:CS Id:ST "
                "Patient:Patient ServProvider:Party Requester:Party CopyDest*:CopyDest RefDoc*:RefDoc "
                "ReasonAsText*:L")
HENV_PAT_HEAD = ("BasisForHealthServices?:CS Sex?:CS DateOfBirth?:TS DateOfDeath?:TS Name?:ST IdByRequester?:ST "
                 "OffId?:ST TypeOffId?:CS PatientPrecaution*:L InfItem*:L PatRelHCP*:L")
HENV_HCP_OLD = "MedSpeciality?:CV PartyIdByRequester?:ST PartyIdByServProv?:ST Address?:Address"


def henvisning(version: str, ns: str) -> Schema:
    tail = {"0.9": " Diagnosis+:L ReqServ?:L", "0.91": " Diagnosis+:L ReqServ?:L",
            "1.0": " Diagnosis+:L ReqServ?:L Comment*:L", "1.1": " Diagnosis*:L ReqServ:L Comment*:L"}[version]
    imports: dict[str, tuple[str, str | None]] = {}
    if version in ("0.9", "0.91"):
        patient = HENV_PAT_HEAD + " AdditionalId*:AdditionalId Address?:Address"
        hcp = hcp_types(HENV_HCP_OLD, "Name?:ST Id?:ST TypeId?:CS Dept*:Dept HCPerson*:HCPerson", False, PARTY)
        refdoc = REFDOC_OLD + (" Booking?:L" if version == "0.91" else "")
    elif version == "1.0":
        patient = (HENV_PAT_HEAD + " NeedTranslator*:L CareSituation?:L PatRelperson*:L PatRelInst*:L "
                   "Consent?:L AdditionalId*:AdditionalId Address?:Address")
        hcp = hcp_types(HENV_HCP_OLD, "Name?:ST Id?:ST TypeId?:CS AdditionalId*:AdditionalId "
                        "HCPerson*:HCPerson Dept*:Dept", True, PARTY)
        refdoc = REFDOC_OLD + " Booking?:L"
    else:
        # po-komponent parts of the patient (AssistertKommunikasjon, ParorendeForesatt) taken lax
        imports = {"po": (PO15_NS, None)}
        patient = (HENV_PAT_HEAD + " ~po* ContactPerson*:L PatRelInst*:L Consent?:L "
                   "AdditionalId*:AdditionalId Address?:Address")
        hcp = hcp_types("MedSpeciality?:CV Address?:Address", "Name?:ST Id?:ST TypeId?:CS "
                        "AdditionalId*:AdditionalId HCPerson*:HCPerson Dept*:Dept", True, PARTY_COM)
        refdoc = REFDOC_NEW
    status = "" if version in ("0.9", "0.91") else " Status?:CS"
    return own_root(
        f"Henvisning-v{version}.xsd", ns, f"Henvisning v{version}",
        MESSAGE_HEAD.format(t="?") + status + " ServReq:ServReq",
        {"ServReq": HENV_SERVREQ + tail, "Patient": patient, "RefDoc": refdoc, **hcp},
        imports,
    )


# Rekvisisjon and Svarrapport: Requester/ServProvider as in Henvisning (Svarrapport: reversed roles).
LAB_PATIENT = ("BasisForHealthServices?:CS Sex?:CS DateOfBirth?:TS DateOfDeath?:TS Name?:ST IdByServProvider?:ST "
               "IdByRequester?:ST OffId:ST TypeOffId:CS Relation?:CS ResponsibleHcp?:L AdmLocation?:L "
               "AdditionalId*:AdditionalId Address?:Address InfItem*:L")
LAB_HCP = hcp_types("MedSpeciality?:CV Address?:Address", "Name?:ST Id?:ST TypeId?:CS Dept*:Dept "
                    "HCPerson*:HCPerson AdditionalId*:AdditionalId", True, PARTY)


def rekvisisjon(version: str, ns: str) -> Schema:
    servprovid = "" if version == "1.4" else " ServProvId?:ST"
    permission = "" if version == "1.6" else " Permission*:CV"
    servreq = ("ServType:CS IssueDate:TS PaymentCat?:CS ReqComment?:ST Ack?:CS MsgDescr:CS Id:ST" + servprovid +
               " RequestedDateReport?:TS RequestedPrioReport?:CS NoReport?:BL LevelOfDetail?:ST EscortRequired?:CS "
               "Reservation*:CV" + permission + " ( Patient:Patient | Material:L | Animal:L )? "
               "ServProvider:Party Requester:Party PaymentResponsible?:L CopyDest*:CopyDest RefDoc*:RefDoc "
               "ReasonAsText*:L Comment*:L ReqInvestigation*:L")
    refdoc = {"1.4": REFDOC_OLD + " Booking?:L", "1.5": REFDOC_NEW + " Booking?:L", "1.6": REFDOC_NEW}[version]
    hcp = {**LAB_HCP, "Party": PARTY if version == "1.4" else PARTY_COM}
    return own_root(
        f"Rekvisisjon-v{version}.xsd", ns, f"Rekvisisjon v{version}",
        MESSAGE_HEAD.format(t="") + " Status?:CS ServReq?:ServReq",
        {"ServReq": servreq, "Patient": LAB_PATIENT, "RefDoc": refdoc, **hcp},
    )


def svarrapport(version: str, ns: str) -> Schema:
    servprovid = " ServProvId:ST" if version == "1.4" else " ServProvId?:ST"
    report = ("ServType:CS IssueDate:TS ApprDate?:TS Status:CS CancellationCode?:CV Ack?:CS MsgDescr:CS" + servprovid +
              " Comment?:ST CodedComment*:CV RefDoc*:RefDoc ServReq*:L ( Patient:Patient | Animal:L | Material:L )? "
              "ServProvider:Party Requester:Party PaymentResponsible?:L CopyDest*:CopyDest RelServProv?:L")
    patient = LAB_PATIENT + " AnalysedSubject*:L ResultItem*:L Patient?:L"
    hcp = {**LAB_HCP, "Party": PARTY if version == "1.2" else PARTY_COM}
    occ = "?" if version == "1.4" else "+"
    return own_root(
        f"Svarrapport-v{version}.xsd", ns, f"Svarrapport v{version}",
        MESSAGE_HEAD.format(t="") + f" Status?:CS ServReport{occ}:ServReport",
        {"ServReport": report, "Patient": patient, "RefDoc": REFDOC_OLD if version == "1.2" else REFDOC_NEW, **hcp},
    )


# --- PLO (pleie og omsorg) 1.5/1.6 and the poKomponent parts they are built from ---------------
PO_LENIENT = (
    "ParorendeForesatt TilknyttetEnhet KontaktpersonHelsepersonell TilleggsopplysningPasient SendtDokument "
    "AnsvarForRapport Foresporsel InfoInformasjonGitt InfoAssistertKommunikasjon InfoIPLOSrelevantInformasjon "
    "InfoKartleggingFunksjonsniva MedisinskfagligeOpplysninger Sykepleierdokumentasjon InfoMedisinskDiagnose "
    "InfoReservasjon InfoAndreViktigeOpplysninger OpplysningerAndreFaggrupper InfoKontrolltime "
    "OpplysningerOmHjelpemidler TjenesteBehov AssistertKommunikasjon InnholdKonsultasjon StedForHendelse"
).split()
PO_STRICT = {
    "InformasjonOmForsendelsen": "Forsendelsesstatus:CS ForbeholdOmVideresending?:bool SvarPaaForesporsel?:bool "
                                 "@t:Foresporsel?",
    "TypeInnholdIMelding": "TypeInnhold:CV Merknad?:ST",
    "OpplysningOpphold": "@t:TidsfestetHendelse",
    "TidsfestetHendelse": "Hendelsekode?:CV BeskrivelseAvHendelse?:ST TidspunktForHendelse:TS Anslag:bool "
                          "Merknad?:ST @t:StedForHendelse?",
    "UtskrevetTil": "Uttilstand?:CV UtTil:CV Merknad?:ST",
    "Fraversassistent": "MottakerFravarende:bool MeldingVideresendt?:bool FravarendeFraDato?:date "
                        "FravarendeTilDato?:date VideresendtTil?:fk1:HealthcareProfessional Merknad?:ST",
    "OpplysningerTilSoknad": "EgensoknadSendt:bool Merknad?:ST",
    "EksisterendeTjeneste": "IPLOStjenestetype?:CV BetegnelseTjeneste?:ST PrivatTjeneste:bool "
                            "TjenestenLevertAv?:ST OpplysningerOmTjenesten?:ST AntallEnheter?:dec Enhet?:ST "
                            "Startdato?:date Sluttdato?:date Merknad?:ST",
}


def po_komponent(version: str, ns: str) -> Schema:
    roots = {n: "=L" for n in PO_LENIENT}
    roots.update(PO_STRICT)
    return Schema(f"poKomponent-v{version}-common.xsd", ns, f"poKomponent v{version} (the parts PLO messages use)",
                  imports={"fk1": (FK1_NS, "felleskomponent1-common.xsd")}, roots=roots)


PO20 = Schema(
    "poKomponent-v2.0-common.xsd", PO20_NS, "poKomponent v2.0 (the parts Henvisning 2.0 uses)",
    roots={**{n: "=L" for n in (
        "TilleggsopplysningPasient ParorendeForesatt TilknyttetEnhet KontaktpersonHelsepersonell AnsvarForRapport "
        "SendtDokument InfoAssistertKommunikasjon OpplysningerOmIndividuellPlan PasientrelatertKontaktperson "
        "Legemiddelgjennomgang").split()},
        "TypeInnholdIMelding": "TypeInnhold:CV Merknad?:ST"},
)

PO_HEAD = ("@po:InformasjonOmForsendelsen @po:TilleggsopplysningPasient? @po:ParorendeForesatt* @po:TilknyttetEnhet* "
           "@po:KontaktpersonHelsepersonell* @po:AnsvarForRapport* @po:SendtDokument*")
PLO_BODIES = {
    "Innleggelsesrapport": "@po:InfoMedisinskDiagnose* @po:MedisinskfagligeOpplysninger? ~epj3* "
                           "@po:EksisterendeTjeneste* @po:InfoKartleggingFunksjonsniva? @po:InfoAndreViktigeOpplysninger? "
                           "@po:Sykepleierdokumentasjon? @po:OpplysningerAndreFaggrupper? @po:OpplysningerOmHjelpemidler? "
                           "@po:InfoAssistertKommunikasjon* @po:InfoReservasjon* @po:InfoInformasjonGitt*",
    "TverrfagligEpikrise": "@po:TypeInnholdIMelding @po:OpplysningOpphold* @po:InfoMedisinskDiagnose* "
                           "@po:MedisinskfagligeOpplysninger? ~epj3* @po:InfoAndreViktigeOpplysninger? "
                           "@po:Sykepleierdokumentasjon? @po:OpplysningerAndreFaggrupper* "
                           "@po:InfoKartleggingFunksjonsniva? @po:TjenesteBehov* @po:InfoInformasjonGitt* "
                           "@po:InfoAssistertKommunikasjon* @po:InfoReservasjon* @po:InfoKontrolltime* "
                           "@po:OpplysningerOmHjelpemidler?",
    "Konsultasjon": "@po:InnholdKonsultasjon? @po:InfoMedisinskDiagnose* @po:MedisinskfagligeOpplysninger? ~epj3* "
                    "@po:InfoAndreViktigeOpplysninger? @po:Sykepleierdokumentasjon? @po:InfoKartleggingFunksjonsniva? "
                    "@po:InfoInformasjonGitt* @po:InfoAssistertKommunikasjon* @po:InfoReservasjon*",
    "HelseopplysningerVedSoknad-1.5": "@po:OpplysningerTilSoknad @po:InfoMedisinskDiagnose* "
                                      "@po:MedisinskfagligeOpplysninger? @po:Sykepleierdokumentasjon? "
                                      "@po:OpplysningerAndreFaggrupper* @po:InfoKartleggingFunksjonsniva? "
                                      "@po:InfoAssistertKommunikasjon* @po:InfoInformasjonGitt* @po:TjenesteBehov*",
    "HelseopplysningerVedSoknad-1.6": "@po:TypeInnholdIMelding @po:OpplysningOpphold+ @po:OpplysningerTilSoknad? "
                                      "@po:InfoMedisinskDiagnose* @po:MedisinskfagligeOpplysninger? "
                                      "@po:Sykepleierdokumentasjon? @po:OpplysningerAndreFaggrupper* "
                                      "@po:InfoKartleggingFunksjonsniva? @po:InfoAssistertKommunikasjon* "
                                      "@po:InfoInformasjonGitt* @po:TjenesteBehov*",
    "OverforingMedisinskeOpplysninger": "@po:TypeInnholdIMelding? @po:OpplysningerTilSoknad? "
                                        "@po:InfoMedisinskDiagnose? @po:MedisinskfagligeOpplysninger? ~epj3* "
                                        "@po:InfoIPLOSrelevantInformasjon? @po:OpplysningerAndreFaggrupper* "
                                        "@po:InfoKartleggingFunksjonsniva? @po:InfoAssistertKommunikasjon* "
                                        "@po:InfoInformasjonGitt* @po:TjenesteBehov* "
                                        "@po:InfoAndreViktigeOpplysninger? @po:InfoReservasjon*",
    "OrienteringOmTjenestetilbud": "@po:EksisterendeTjeneste+ @po:AssistertKommunikasjon*",
    "MeldingFravar": "@po:Fraversassistent",
    "Pasientlogistikk": "( OrienteringOmDod:EnHendelse | MeldingOmUtskrevetPasient:UtskrevetPasient "
                        "| MeldingUtskrivningsklarPasient:Hendelser | AvmeldingUtskrivningsklarPasient:Hendelser "
                        "| MeldingInnlagtPasient:EnHendelse )",
}
PLO_TYPES = {
    "Pasientlogistikk": {"EnHendelse": "@po:TidsfestetHendelse", "Hendelser": "@po:TidsfestetHendelse+",
                         "UtskrevetPasient": "@po:UtskrevetTil @po:TidsfestetHendelse @po:InfoInformasjonGitt?"},
}
PO_FILE = {"1.5": ("poKomponent-v1.5-common.xsd", PO15_NS), "1.6": ("poKomponent-v1.6-common.xsd", PO16_NS)}


def plo(file: str, ns: str, title: str, root: str, version: str, body: str | None = None) -> Schema:
    pofile, pons = PO_FILE[version]
    return Schema(file, ns, f"PLO {title} v{version}",
                  imports={"po": (pons, pofile), "epj3": (EPJ3_NS, None)},
                  roots={root: PO_HEAD + " " + PLO_BODIES[body or root]},
                  types=PLO_TYPES.get(root, {}))


KITH = "http://www.kith.no/xmlstds/"
PLO_MESSAGES = [
    # file stem, namespace segment, title, root, versions, body key
    ("Innleggelsesrapport", "Innleggelsesrapport", "Innleggelsesrapport", "Innleggelsesrapport", None),
    ("TverrfagligEpikrise", "TverrfagligEpikrise", "Utskrivningsrapport", "TverrfagligEpikrise", None),
    ("MedisinskeOpplysninger", None, "Medisinske opplysninger", "OverforingMedisinskeOpplysninger", None),
    ("OrienteringOmTjenestetilbud", "OrienteringOmTjenestetilbud", "Orientering om tjenestetilbud",
     "OrienteringOmTjenestetilbud", None),
    ("Pasientlogistikk", "Pasientlogistikk", "Pasientlogistikk", "Pasientlogistikk", None),
]


def plo_schemas() -> list[Schema]:
    out: list[Schema] = []
    for version, date in (("1.5", "2009-06-30"), ("1.6", "2012-04-01")):
        for stem, seg, title, root, body in PLO_MESSAGES:
            if seg is None:  # Medisinske opplysninger changed its namespace segment in 1.6
                seg = "OverforingMedisinskeOpplysninger" if version == "1.5" else "MedisinskeOpplysninger"
            out.append(plo(f"PLO-{stem}-v{version}.xsd", f"{KITH}po/{seg}/{date}", title, root, version, body))
        # Helseopplysninger til lege: root Konsultasjon; 1.5 namespace segment "Konsultasjon"
        seg = "Konsultasjon" if version == "1.5" else "HelseopplysningerTilLege"
        out.append(plo(f"PLO-HelseopplysningerTilLege-v{version}.xsd", f"{KITH}po/{seg}/{date}",
                       "Helseopplysninger til lege", "Konsultasjon", version))
        out.append(plo(f"PLO-HelseopplysningerVedSoknad-v{version}.xsd",
                       f"{KITH}po/HelseopplysningerVedSoknad/{date}", "Helseopplysninger ved søknad",
                       "HelseopplysningerVedSoknad", version, f"HelseopplysningerVedSoknad-{version}"))
    out.append(plo("PLO-MeldingFravar-v1.5.xsd", f"{KITH}po/MeldingFravar/2009-06-30", "Melding om fravær",
                   "MeldingFravar", "1.5"))
    return out


HENVISNING_20 = Schema(
    "Henvisning-v2.0.xsd", "http://ehelse.no/xmlstds/henvisning/2017-11-30", "Henvisning v2.0",
    imports={"po": (PO20_NS, "poKomponent-v2.0-common.xsd")},
    roots={"Henvisning": "ServType:CS IssueDate:dt PaymentCat?:CS ReqComment?:ST DocumentId:ST "
                         "BasisForHealthServices?:CS @po:TilleggsopplysningPasient? @po:ParorendeForesatt* "
                         "@po:TilknyttetEnhet* @po:KontaktpersonHelsepersonell* @po:AnsvarForRapport* "
                         "@po:SendtDokument* @po:TypeInnholdIMelding @po:InfoAssistertKommunikasjon* "
                         "@po:OpplysningerOmIndividuellPlan? @po:PasientrelatertKontaktperson* "
                         "@po:Legemiddelgjennomgang? PatientPrecaution*:L InfItem*:L ReasonAsText*:L "
                         "Diagnosis*:L ReqServ:ReqServ Comment*:L VurderingAvHenvisning?:L Pakkeforlop*:L "
                         "Consent*:L"},
    types={"ReqServ": "ServType:CS ReqDate?:date Priority:CS Comment?:ST"},
)


def all_schemas() -> list[Schema]:
    return [
        Schema("kith-common.xsd", COMMON_NS, "Common KITH data types (CS, CV, TS, ...) and Lenient", raw=COMMON_RAW),
        Schema("felleskomponent1-common.xsd", FK1_NS, "felleskomponent1 (Ident, Address, Organisation, ...)",
               types=FK1_TYPES),
        Schema("base64container.xsd", B64_NS, "Base64Container for MsgHead attachments", raw=B64_RAW),
        MSGHEAD,
        apprec("AppRec-v1.0.xsd", "http://www.kith.no/xmlstds/apprec/2004-11-21", "1.0"),
        apprec("AppRec-v1.1.xsd", "http://www.kith.no/xmlstds/apprec/2012-02-15", "1.1"),
        DIALOG_10,
        DIALOG_11,
        epikrise("1.0", f"{KITH}epikrise"),
        epikrise("1.1", f"{KITH}epikrise/2006-09-23"),
        epikrise("1.2", f"{KITH}epikrise/2012-02-15"),
        henvisning("0.9", f"{KITH}henvisning/2003-10-13"),
        henvisning("0.91", f"{KITH}henvisning/2003-10-13"),
        henvisning("1.0", f"{KITH}henvisning/2005-07-08"),
        henvisning("1.1", f"{KITH}henvisning/2012-02-15"),
        HENVISNING_20,
        PO20,
        rekvisisjon("1.4", f"{KITH}rekvisisjon/2005-05-20"),
        rekvisisjon("1.5", f"{KITH}rekvisisjon/2008-12-01"),
        rekvisisjon("1.6", f"{KITH}rekvisisjon/2012-02-15"),
        svarrapport("1.2", f"{KITH}labsvar/2005-03-14"),
        svarrapport("1.3", f"{KITH}labsvar/2008-12-01"),
        svarrapport("1.4", f"{KITH}labsvar/2012-02-15"),
        po_komponent("1.5", PO15_NS),
        po_komponent("1.6", PO16_NS),
        *plo_schemas(),
    ]


def rendered() -> dict[str, str]:
    """File name -> text of every schema this script writes."""
    return {s.file: render(s) for s in all_schemas()}


def main() -> None:
    for name, text in rendered().items():
        (HERE / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
