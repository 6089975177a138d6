"""The table of message families the hub knows: namespace -> family, version, layout, schema files.

Two layouts exist (STANDARDS.md §1-3):
- carrier "msghead": the payload sits in MsgHead/Document/RefDoc/Content (Dialogmelding, PLO,
  Henvisning 2.0, ...); parties are MsgHead's MsgInfo/Sender and MsgInfo/Receiver.
- carrier "own": older standards with their own `Message` root (Epikrise <= 1.2, Henvisning <= 1.1,
  Rekvisisjon <= 1.6, Svarrapport <= 1.4) that name sender and receiver in their own parts.
- carrier "self": MsgHead and AppRec themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

MSGHEAD_NS = "http://www.kith.no/xmlstds/msghead/2006-05-24"
APPREC_10_NS = "http://www.kith.no/xmlstds/apprec/2004-11-21"
APPREC_11_NS = "http://www.kith.no/xmlstds/apprec/2012-02-15"


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

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"


FAMILIES: list[Family] = [
    Family("MsgHead", "1.2", MSGHEAD_NS, "MsgHead", "self", "MsgHead-v1_2.xsd", "MsgHead-v1_2.xsd"),
    Family("AppRec", "1.0", APPREC_10_NS, "AppRec", "self", "AppRec-v1-2004-11-21.xsd", "AppRec-v1.0.xsd",
           msg_types=("APPREC",)),
    Family("AppRec", "1.1", APPREC_11_NS, "AppRec", "self", "AppRec-v1.1.xsd", "AppRec-v1.1.xsd",
           msg_types=("APPREC",)),
    # The rest of the table (Dialogmelding, Epikrise, Henvisning, Rekvisisjon, Svarrapport, PLO ...)
    # is completed together with schemas/.
]


def by_namespace(namespace: str, mig_version: str | None = None) -> Family | None:
    """The family for a namespace; MIGversion picks among versions that share one namespace."""
    hits = [f for f in FAMILIES if f.namespace == namespace]
    if not hits:
        return None
    if len(hits) > 1 and mig_version:
        for f in hits:
            if f.mig_version and f.mig_version.strip() == mig_version.strip():
                return f
    return hits[-1]


def by_key(name: str, version: str) -> Family | None:
    for f in FAMILIES:
        if f.name.lower() == name.lower() and f.version == version:
            return f
    return None
