"""The table of message families the hub knows: namespace -> family, version, layout, schema files.

Three layouts exist (STANDARDS.md §1-3):
- carrier "msghead": the payload sits in MsgHead/Document/RefDoc/Content (Dialogmelding, PLO,
  Henvisning 2.0, ...); parties are MsgHead's MsgInfo/Sender and MsgInfo/Receiver.
- carrier "own": older standards with their own `Message` root (Epikrise <= 1.2, Henvisning <= 1.1,
  Rekvisisjon <= 1.6, Svarrapport <= 1.4) that name sender and receiver in their own parts.
- carrier "self": MsgHead and AppRec themselves.

`own_xsd` names our own schema in `schemas/` (written from the official structure, see
schemas/generate.py); `official_xsd` the file of the official pack that takes precedence when loaded.
The ELIN-k 2007 vendor matrix rows are mapped to these families at the end (`ELIN_K_MESSAGES`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

MSGHEAD_NS = "http://www.kith.no/xmlstds/msghead/2006-05-24"
APPREC_10_NS = "http://www.kith.no/xmlstds/apprec/2004-11-21"
APPREC_11_NS = "http://www.kith.no/xmlstds/apprec/2012-02-15"
BASE64_NS = "http://www.kith.no/xmlstds/base64container"
# Our schema of MsgHead imports this one, so attachments in Content validate with nothing else.
BASE64_XSD = "base64container.xsd"

_KITH = "http://www.kith.no/xmlstds/"


@dataclass(frozen=True)
class Family:
    name: str  # family name as vendors know it, e.g. "Dialogmelding"
    version: str  # e.g. "1.1"
    namespace: str
    root: str  # local name of the document element of this family's schema
    carrier: str  # msghead | own | self
    official_xsd: str  # file name in the official schema pack
    own_xsd: str | None  # file name in schemas/ (ours), None where we rely on the pack only
    # Distinguishes versions sharing one namespace (Henvisning 0.9/0.91): MIGversion text.
    mig_version: str | None = None
    # XPaths (relative to the family root, prefix `k` = the family namespace) of the sending and
    # receiving party's organisation element, for carrier "own".
    sender_path: str | None = None
    receiver_path: str | None = None
    # Message/Type or MsgInfo/Type values this family carries (8279 or the old one-letter codes).
    msg_types: tuple[str, ...] = ()
    # Copy receivers' organisation elements (carrier "own"), same conventions as receiver_path.
    copy_path: str | None = None

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


def _own(name: str, version: str, ns: str, official: str, service: str, sender: str, receiver: str,
         msg_types: tuple[str, ...], mig: str | None = None) -> Family:
    """A Message-root family; `service` is ServReq/ServRprt/ServReport, parties are its HCP/Inst."""
    return Family(
        name, version, ns, "Message", "own", official, f"{name}-v{version}.xsd", mig_version=mig,
        sender_path=f"k:{service}/k:{sender}/k:HCP/k:Inst",
        receiver_path=f"k:{service}/k:{receiver}/k:HCP/k:Inst",
        copy_path=f"k:{service}/k:CopyDest/k:HCP/k:Inst",
        msg_types=msg_types,
    )


def _plo(name: str, version: str, segment: str, root: str, official: str, own_stem: str,
         msg_types: tuple[str, ...]) -> Family:
    date = {"1.5": "2009-06-30", "1.6": "2012-04-01"}[version]
    return Family(name, version, f"{_KITH}po/{segment}/{date}", root, "msghead", official,
                  f"PLO-{own_stem}-v{version}.xsd", msg_types=msg_types)


DIALOG_10_TYPES = ("DIALOG_NOTAT", "DIALOG_FORESPORSEL", "DIALOG_SVAR", "DIALOG_AVVIK")
DIALOG_11_TYPES = (*DIALOG_10_TYPES, "DIALOG_HELSEFAGLIG", "DIALOG_STATUS_HENVISNING",
                   "DIALOG_INNBYGGER_EKONTAKT", "DIALOG_INNBYGGER_RESEPTFORNYELSE")
REQ_TYPES = ("REQ_LAB", "REQ_RTG", "REQ_CYT", "REQ_HIST", "REQ_KKL", "REQ_MBIO")
SVAR_TYPES = ("SVAR_LAB", "SVAR_RTG", "SVAR_CYT", "SVAR_HIST", "SVAR_KKL", "SVAR_MBIO")
LOG_TYPES = ("LOG_INNLAGT", "LOG_UTSKREVET", "LOG_UTSKRIVNINGSKLAR", "LOG_AVMELDING", "LOG_DOD")

FAMILIES: list[Family] = [
    Family("MsgHead", "1.2", MSGHEAD_NS, "MsgHead", "self", "MsgHead-v1_2.xsd", "MsgHead-v1_2.xsd",
           mig_version="v1.2 2006-05-24"),
    Family("AppRec", "1.0", APPREC_10_NS, "AppRec", "self", "AppRec-v1-2004-11-21.xsd", "AppRec-v1.0.xsd",
           mig_version="1.0 2004-11-21", msg_types=("APPREC",)),
    Family("AppRec", "1.1", APPREC_11_NS, "AppRec", "self", "AppRec-v1.1.xsd", "AppRec-v1.1.xsd",
           mig_version="v1.1 2012-02-15", msg_types=("APPREC",)),
    # --- payloads inside MsgHead ---
    Family("Dialogmelding", "1.0", f"{_KITH}dialog/2006-10-11", "Dialogmelding", "msghead",
           "dialogmelding.xsd", "Dialogmelding-v1.0.xsd", msg_types=DIALOG_10_TYPES),
    Family("Dialogmelding", "1.1", f"{_KITH}dialog/2013-01-23", "Dialogmelding", "msghead",
           "dialogmelding-v1.1.xsd", "Dialogmelding-v1.1.xsd", msg_types=DIALOG_11_TYPES),
    Family("Henvisning", "2.0", "http://ehelse.no/xmlstds/henvisning/2017-11-30", "Henvisning", "msghead",
           "Henvisning-v2.0.xsd", "Henvisning-v2.0.xsd",
           msg_types=("HENVISNING_NYTILSTAND", "HENVISNING_VIDERE")),
    # --- PLO (pleie- og omsorgsmeldinger) 1.5 and 1.6 ---
    *[f for v in ("1.5", "1.6") for f in (
        _plo("Innleggelsesrapport", v, "Innleggelsesrapport", "Innleggelsesrapport",
             f"Innleggelsesrapport-v{v}.xsd", "Innleggelsesrapport", ("INNLEGGELSESRAPPORT",)),
        _plo("Utskrivningsrapport", v, "TverrfagligEpikrise", "TverrfagligEpikrise",
             f"TverrfagligEpikrise-v{v}.xsd", "TverrfagligEpikrise", ("UTSKRIVNINGSRAPPORT",)),
        _plo("Helseopplysninger til lege", v, "Konsultasjon" if v == "1.5" else "HelseopplysningerTilLege",
             "Konsultasjon", f"HelseopplysningerTilLege-v{v}.xsd", "HelseopplysningerTilLege",
             ("HELSEOPPLYSNINGER_LEGE",)),
        _plo("Helseopplysninger ved søknad", v, "HelseopplysningerVedSoknad", "HelseopplysningerVedSoknad",
             "HelseopplysningerVedSoknad-v1.5.xsd" if v == "1.5" else "Helseopplysninger-v1.6.xsd",
             "HelseopplysningerVedSoknad", ("HELSEOPPL_SOKNAD",)),
        _plo("Medisinske opplysninger", v,
             "OverforingMedisinskeOpplysninger" if v == "1.5" else "MedisinskeOpplysninger",
             "OverforingMedisinskeOpplysninger", f"MedisinskeOpplysninger-v{v}.xsd", "MedisinskeOpplysninger",
             ("MEDISINSKE_OPPLYSNINGER",)),
        _plo("Orientering om tjenestetilbud", v, "OrienteringOmTjenestetilbud", "OrienteringOmTjenestetilbud",
             f"OrienteringOmTjenestetilbud-v{v}.xsd", "OrienteringOmTjenestetilbud",
             ("ORIENTERING_TJENESTETILBUD",)),
        _plo("Pasientlogistikk", v, "Pasientlogistikk", "Pasientlogistikk", f"Pasientlogistikk-v{v}.xsd",
             "Pasientlogistikk", LOG_TYPES),
    )],
    _plo("Melding om fravær", "1.5", "MeldingFravar", "MeldingFravar", "MeldingFravar-v1.5.xsd",
         "MeldingFravar", ("FRAVARSMELDING",)),
    # --- own Message root; Epikrise: sender ServProvider, receiver Requester ---
    _own("Epikrise", "1.0", f"{_KITH}epikrise", "Epikrise-v1.0.xsd", "ServRprt", "ServProvider", "Requester",
         ("E",)),
    _own("Epikrise", "1.1", f"{_KITH}epikrise/2006-09-23", "Epikrise-v1.1.xsd", "ServRprt", "ServProvider",
         "Requester", ("E",)),
    _own("Epikrise", "1.2", f"{_KITH}epikrise/2012-02-15", "Epikrise-v1.2.xsd", "ServRprt", "ServProvider",
         "Requester", ("EPIKRISE",)),
    # Henvisning 0.9 and 0.91 share one namespace: told apart by MIGversion.
    _own("Henvisning", "0.9", f"{_KITH}henvisning/2003-10-13", "Henvisning-v0.9.xsd",
         "ServReq", "Requester", "ServProvider", ("H",), mig="v0.9 2003-10-13"),
    _own("Henvisning", "0.91", f"{_KITH}henvisning/2003-10-13", "Henvisning-v0.91.xsd",
         "ServReq", "Requester", "ServProvider", ("H",), mig="v0.91 2004-08-30"),
    _own("Henvisning", "1.0", f"{_KITH}henvisning/2005-07-08", "Henvisning-v1.0.xsd",
         "ServReq", "Requester", "ServProvider", ("H",)),
    _own("Henvisning", "1.1", f"{_KITH}henvisning/2012-02-15", "Henvisning-v1.1.xsd",
         "ServReq", "Requester", "ServProvider", ("HENVISNING",)),
    _own("Rekvisisjon", "1.4", f"{_KITH}rekvisisjon/2005-05-20", "Rekvisisjon-v1_4.xsd",
         "ServReq", "Requester", "ServProvider", ("R",)),
    _own("Rekvisisjon", "1.5", f"{_KITH}rekvisisjon/2008-12-01", "Rekvisisjon-v1_5.xsd",
         "ServReq", "Requester", "ServProvider", ("R",)),
    _own("Rekvisisjon", "1.6", f"{_KITH}rekvisisjon/2012-02-15", "Rekvisisjon-v1.6.xsd",
         "ServReq", "Requester", "ServProvider", REQ_TYPES),
    # Svarrapport: sender ServProvider (the lab), receiver Requester.
    _own("Svarrapport", "1.2", f"{_KITH}labsvar/2005-03-14", "svar-v12.xsd", "ServReport", "ServProvider",
         "Requester", ("S",)),
    _own("Svarrapport", "1.3", f"{_KITH}labsvar/2008-12-01", "svar-v13.xsd", "ServReport", "ServProvider",
         "Requester", ("S",)),
    _own("Svarrapport", "1.4", f"{_KITH}labsvar/2012-02-15", "svar-v1.4.xsd", "ServReport", "ServProvider",
         "Requester", SVAR_TYPES),
]


def _mig_matches(family: Family, mig_version: str) -> bool:
    """Exact MIGversion text, or just its version token ("v0.91") - senders vary the date part."""
    if not family.mig_version:
        return False
    want = mig_version.strip()
    have = family.mig_version.strip()
    return want == have or (want.split() or [""])[0] == have.split()[0]


def by_namespace(namespace: str, mig_version: str | None = None) -> Family | None:
    """The family for a namespace; MIGversion picks among versions that share one namespace."""
    hits = [f for f in FAMILIES if f.namespace == namespace]
    if not hits:
        return None
    if len(hits) > 1 and mig_version:
        for f in hits:
            if _mig_matches(f, mig_version):
                return f
    return hits[-1]


def _fold(name: str) -> str:
    """Case-, accent- and space-insensitive name: "Melding om fravær" == "melding_om_fravar"."""
    name = name.lower().replace("æ", "a").replace("ø", "o").replace("å", "a")
    name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return "".join(ch for ch in name if ch.isalnum())


def by_key(name: str, version: str) -> Family | None:
    for f in FAMILIES:
        if _fold(f.name) == _fold(name) and f.version == version:
            return f
    return None


def by_own_xsd(file_name: str) -> Family | None:
    for f in FAMILIES:
        if f.own_xsd == file_name:
            return f
    return None


# --- ELIN-k 2007 vendor matrix -----------------------------------------------------------------


@dataclass(frozen=True)
class MatrixMessage:
    """One message row of the ELIN-k 2007 matrix and the family+version we validate it with.

    `discriminator_path` (XPath from the family root, prefix `k` = family namespace) and
    `discriminator_values` tell this row's messages apart from others of the same family: the
    value is the element's `V` attribute, or its text when it has no `V`. `requires_path` names an
    element that must be present. `note` records why a schema was chosen where the 2007 version
    number has no schema of its own.
    """

    name: str
    version: str
    family_name: str
    family_version: str
    discriminator_path: str | None = None
    discriminator_values: tuple[str, ...] = ()
    requires_path: str | None = None
    note: str = ""

    @property
    def family(self) -> Family:
        f = by_key(self.family_name, self.family_version)
        assert f is not None, f"ELIN-k row {self.name} {self.version} maps to unknown family"
        return f

    def matches(self, root: Any) -> bool:
        """Whether a parsed message (lxml root element of the family's document) is of this row."""
        ns = {"k": self.family.namespace}
        if self.requires_path and not root.xpath(self.requires_path, namespaces=ns):
            return False
        if not self.discriminator_path:
            return True
        for el in root.xpath(self.discriminator_path, namespaces=ns):
            value = el.get("V") if el.get("V") is not None else (el.text or "")
            if value.strip() in self.discriminator_values:
                return True
        return False


_SVAR12 = ("The generic Svarrapport 1.2 (labsvar/2005-03-14) carried every discipline in 2005-2007; "
           "the discipline is ServReport/MsgDescr.")
_MSGDESCR_REPORT = "k:ServReport/k:MsgDescr"
_MSGDESCR_REQ = "k:ServReq/k:MsgDescr"

ELIN_K_MESSAGES: dict[tuple[str, str], MatrixMessage] = {
    (m.name, m.version): m
    for m in (
        MatrixMessage("Applikasjons-kvittering", "1.0", "AppRec", "1.0"),
        MatrixMessage("Dialogmelding", "1.0", "Dialogmelding", "1.0"),
        MatrixMessage("Epikrise", "1.0", "Epikrise", "1.0",
                      note="Epikrise 1.0 (namespace .../epikrise, 2002) is the matrix's own version."),
        MatrixMessage("Henvisning", "0.91", "Henvisning", "0.91",
                      discriminator_path="k:MIGversion", discriminator_values=("v0.91 2004-08-30",),
                      note="Shares its namespace with Henvisning 0.9; MIGversion tells them apart."),
        MatrixMessage("Rekvisisjon Medisinsk biokjemi", "1.0", "Rekvisisjon", "1.4",
                      discriminator_path=_MSGDESCR_REQ, discriminator_values=("CLIN", "LAB"),
                      note="No schema of Rekvisisjon 1.0 survives; Rekvisisjon 1.4 (2005-05-20) is the "
                           "generic requisition of that era and the oldest in the pack. Lab requisitions "
                           "carry ServReq/MsgDescr LAB (laboratoriemedisin) or CLIN (medisinsk biokjemi)."),
        MatrixMessage("Rekvisisjon Røntgen", "1.3", "Rekvisisjon", "1.4",
                      discriminator_path=_MSGDESCR_REQ, discriminator_values=("CT", "MR", "UL", "RTG"),
                      note="No schema of Rekvisisjon 1.3 survives; 1.4 (2005-05-20) is its direct successor. "
                           "Radiology requisitions carry the modality in ServReq/MsgDescr (CT, MR, UL seen "
                           "in the official examples; RTG for plain X-ray)."),
        MatrixMessage("Svarrapport Medisinsk biokjemi", "1.4", "Svarrapport", "1.2",
                      discriminator_path=_MSGDESCR_REPORT, discriminator_values=("CLIN",),
                      note="The 2007 '1.4' is the old discipline-specific biochemistry report's number; the "
                           "pack's Svarrapport 1.4 (labsvar/2012-02-15) postdates the matrix. " + _SVAR12),
        MatrixMessage("Svarrapport Mikrobiologi", "1.2", "Svarrapport", "1.2",
                      discriminator_path=_MSGDESCR_REPORT, discriminator_values=("MBIO",), note=_SVAR12),
        MatrixMessage("Svarrapport Patologi", "1.2", "Svarrapport", "1.2",
                      discriminator_path=_MSGDESCR_REPORT, discriminator_values=("HIST", "CYTO"),
                      note=_SVAR12),
        MatrixMessage("Svarrapport Radiologi", "1.2", "Svarrapport", "1.2",
                      discriminator_path=_MSGDESCR_REPORT, discriminator_values=("CT", "MR", "UL", "RTG"),
                      note=_SVAR12),
        MatrixMessage("Tilbakemelding på henvisning", "0.9", "Epikrise", "1.0",
                      requires_path="k:ServRprt/k:ServReq",
                      note="Neither Henvisning 0.9 nor 0.91 has a reply message: both schemas only model the "
                           "referral (ServReq). The reply is the KITH 'Tilbakemeldingsmelding' - the schema "
                           "published as Epikrise 1.0, whose ServRprt is documented as feedback 'etter helt "
                           "eller delvis utført behandling eller som svar på en forespørsel'. A "
                           "Tilbakemelding på henvisning is such a message that refers back to the referral "
                           "in ServRprt/ServReq; 0.9 has no schema of its own, so Epikrise 1.0 is the "
                           "closest."),
    )
}


def elin_k_message(name: str, version: str) -> MatrixMessage | None:
    """The ELIN-k row (message name as in the CSV, e.g. "Svarrapport Patologi", and version)."""
    hit = ELIN_K_MESSAGES.get((name, version))
    if hit:
        return hit
    for (n, v), m in ELIN_K_MESSAGES.items():
        if _fold(n) == _fold(name) and v == version:
            return m
    return None
