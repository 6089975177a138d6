"""The address register: communication parties keyed by HER-id, and how to reach each.

A party is found by its HER-id, or (issue 12: Svarrapport, Rekvisisjon and other own-root messages
that name their parties without one) by organisation number (ENH) plus a department identifier (RSH,
LAV, LIN or LOK: code list 9051) through `by_org()`.

Two sources load into one `Register`:
- our own TOML file (`[[party]]` tables, see `docs/register.md` and `fixtures/register/demo.toml`);
- NHN address-register responses (`CommunicationParty` XML: Organization, Service, OrganizationPerson).

A level-2 party (a service or a person such as a fastlege) inherits what it does not say itself (endpoint,
certificates, CPA, accepted messages) from its parent organisation, as in Adresseregisteret.
"""

from __future__ import annotations

import hashlib
import hmac
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

from hub.ascii import is_ascii_digits
from hub.xmlsafe import parse_bytes

KINDS = ("gp", "hospital", "lab", "nursing", "municipal", "national", "other")
_CP_NS = "http://register.nhn.no/CommunicationParty"
_COMMON_NS = "http://register.nhn.no/Common"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"


class RegisterError(ValueError):
    """The register file is wrong; the message names the file and the party."""


@dataclass(frozen=True)
class Party:
    her_id: int
    name: str
    kind: str = "other"
    org_no: str | None = None
    level: str = "organisation"  # organisation | service | person (Adresseregisteret's party types)
    parent_her_id: int | None = None
    local: bool = False  # a system served by this relay (folder/HTTP submit) rather than a network peer
    endpoint: str | None = None  # mailto:..., https://..., folder:PATH
    cpa_id: str | None = None
    sign_cert: str | None = None  # PEM path of the party's signing (nonRepudiation) certificate
    enc_cert: str | None = None  # PEM path of the party's encryption certificate
    accepts: tuple[str, ...] = ()  # "Family:version" entries; empty = whatever the parent accepts
    token_sha256: str | None = None  # HTTP submit credential of a local system, stored hashed
    active: bool = True
    addresses: dict[str, str] = field(default_factory=dict)  # code list 9044 type -> address
    compress: bool = False  # gzip payloads to this peer before encryption (NAV-style), without a CPA
    allow_sha1: bool = False  # accept this peer's rsa-sha1/sha1 signatures (envelope and documents)
    # the party's own identifiers besides HER-id and organisation number, as (type, id) sorted: a
    # department's RSH/LAV/LIN/LOK id (9051), by which documents without HER-ids address it
    ids: tuple[tuple[str, str], ...] = ()

    def accepts_message(self, family: str, version: str) -> bool:
        if not self.accepts:
            return True
        key = f"{family}:{version}".lower()
        return any(a.lower() in (key, f"{family}:*".lower()) for a in self.accepts)

    def check_token(self, token: str) -> bool:
        if not self.token_sha256:
            return False
        digest = hashlib.sha256(token.encode()).hexdigest()
        return hmac.compare_digest(digest, self.token_sha256)


# identifier types of code list 9051 that name a department/service below an organisation
DEPT_ID_TYPES = ("RSH", "LAV", "LIN", "LOK")


class Register:
    def __init__(self, parties: list[Party] | None = None) -> None:
        self._parties: dict[int, Party] = {}
        # (org_no -> parties stating it, (type, id) -> parties): built on the first by_org() after a change
        self._index: tuple[dict[str, list[Party]], dict[tuple[str, str], list[Party]]] | None = None
        # resolve()'s answers (a relay asks several times per message): dropped by every add()
        self._resolved: dict[int, Party | None] = {}
        for p in parties or []:
            self.add(p)

    def add(self, party: Party) -> None:
        self._parties[party.her_id] = party
        self._index = None
        self._resolved = {}

    def __len__(self) -> int:
        return len(self._parties)

    def __iter__(self):  # noqa: ANN204 - iterator of Party
        return iter(sorted(self._parties.values(), key=lambda p: p.her_id))

    def get(self, her_id: int | str) -> Party | None:
        try:
            return self._parties.get(int(her_id))
        except (TypeError, ValueError):
            return None

    def chain(self, her_id: int | str) -> list[Party]:
        """The party and its ancestors, deepest first (person -> service -> organisation)."""
        out: list[Party] = []
        p = self.get(her_id)
        while p is not None and p not in out:
            out.append(p)
            p = self.get(p.parent_her_id) if p.parent_her_id else None
        return out

    def resolve(self, her_id: int | str) -> Party | None:
        """The party with every unset field inherited from its ancestors (the effective view)."""
        try:
            key = int(her_id)
        except (TypeError, ValueError):
            return None
        resolved = self._resolved  # add() swaps the dict: a concurrent add never gets an old answer stored
        if key not in resolved:
            resolved[key] = self._resolve(key)
        return resolved[key]

    def _resolve(self, her_id: int) -> Party | None:
        chain = self.chain(her_id)
        if not chain:
            return None
        party = chain[0]
        inherited = ("kind", "org_no", "endpoint", "cpa_id", "sign_cert", "enc_cert", "accepts", "local",
                     "compress", "allow_sha1")
        changes = {}
        for name in inherited:
            value = getattr(party, name)
            if value in (None, (), "other", False):
                for anc in chain[1:]:
                    v = getattr(anc, name)
                    if v not in (None, (), "other", False):
                        changes[name] = v
                        break
        return replace(party, **changes) if changes else party

    def by_org(self, org_no: str, dept_ids: tuple[tuple[str, str], ...] | list[tuple[str, str]] = ()
               ) -> Party | None:
        """The party a document addresses by organisation number and, optionally, department ids.

        With department ids: the one party under that organisation (its own or an ancestor's org_no)
        that carries one of them; the organisation alone is not taken in its place, a department the
        register does not know is not delivered to a guess. Without: the one organisation-level party
        with that number. None when nothing, or more than one party, fits."""
        org_no = org_no.strip()
        if not org_no:
            return None
        if self._index is None:
            by_org: dict[str, list[Party]] = {}
            by_id: dict[tuple[str, str], list[Party]] = {}
            for p in self._parties.values():
                if p.org_no:
                    by_org.setdefault(p.org_no, []).append(p)
                for key in p.ids:
                    by_id.setdefault(key, []).append(p)
            self._index = by_org, by_id
        by_org, by_id = self._index
        wanted = {(t.upper(), v.strip()) for t, v in dept_ids if t.upper() in DEPT_ID_TYPES and v.strip()}
        if wanted:
            hits = {p.her_id: p for key in wanted for p in by_id.get(key, ())
                    if any(a.org_no == org_no for a in self.chain(p.her_id))}
        else:
            hits = {p.her_id: p for p in by_org.get(org_no, ()) if p.parent_her_id is None}
        return next(iter(hits.values())) if len(hits) == 1 else None

    def organisation_of(self, her_id: int | str) -> Party | None:
        chain = self.chain(her_id)
        return chain[-1] if chain else None

    def find(self, text: str) -> list[Party]:
        """Parties whose HER-id, name, organisation number or department id (`4711`, `LAV:4711`)
        matches `text` (case-insensitive)."""
        t = text.strip().lower()
        return [p for p in self if t in p.name.lower() or t == str(p.her_id) or (p.org_no and t == p.org_no)
                or any(t in (v.lower(), f"{k}:{v}".lower()) for k, v in p.ids)]

    def by_token(self, token: str) -> Party | None:
        for p in self:
            if p.local and p.check_token(token):
                return p
        return None

    def merge(self, other: Register) -> None:
        for p in other:
            self.add(p)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _party_from_table(t: dict, source: str, base: Path) -> Party:
    try:
        her_id = int(t["her_id"])
        name = str(t["name"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RegisterError(f"{source}: a [[party]] needs an integer her_id and a name ({exc})") from None
    kind = t.get("kind", "other")
    if kind not in KINDS:
        raise RegisterError(f"{source}: party {her_id}: kind {kind!r} is not one of {', '.join(KINDS)}")

    def path(key: str) -> str | None:
        v = t.get(key)
        if not v:
            return None
        p = Path(v)
        return str(p if p.is_absolute() else base / p)

    org_no = t.get("orgnr", t.get("org_no"))
    org_no = str(org_no).strip() if org_no not in (None, "") else None
    if org_no is not None and not (len(org_no) == 9 and is_ascii_digits(org_no)):
        raise RegisterError(f"{source}: party {her_id}: orgnr {org_no!r} is not a 9-digit "
                            "organisation number")
    raw_ids = t.get("ids", {})
    if not isinstance(raw_ids, dict):
        raise RegisterError(f"{source}: party {her_id}: ids must be a table such as {{ LAV = \"4711\" }}")
    ids = []
    for typ, value in raw_ids.items():
        if typ.upper() not in DEPT_ID_TYPES:
            raise RegisterError(f"{source}: party {her_id}: ids.{typ} is not a department identifier type "
                                f"({', '.join(DEPT_ID_TYPES)}; HER-id and orgnr have their own keys)")
        ids.append((typ.upper(), str(value).strip()))
    endpoint = t.get("endpoint")
    if endpoint and endpoint.startswith("folder:") and not Path(endpoint[7:]).is_absolute():
        endpoint = "folder:" + str(base / endpoint[7:])
    token = t.get("token")
    return Party(
        her_id=her_id,
        name=name,
        kind=kind,
        org_no=org_no,
        level=t.get("level", "organisation" if not t.get("parent") else "service"),
        parent_her_id=int(t["parent"]) if t.get("parent") else None,
        local=bool(t.get("local", False)),
        endpoint=endpoint,
        cpa_id=t.get("cpa"),
        sign_cert=path("sign_cert"),
        enc_cert=path("enc_cert"),
        accepts=tuple(t.get("accepts", ())),
        token_sha256=t.get("token_sha256") or (hash_token(token) if token else None),
        active=bool(t.get("active", True)),
        compress=bool(t.get("compress", False)),
        allow_sha1=bool(t.get("allow_sha1", False)),
        ids=tuple(sorted(ids)),
    )


def load_toml(path: Path) -> Register:
    """Our own register format; relative paths are relative to the file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise RegisterError(f"{path}: not valid TOML: {exc}") from None
    reg = Register()
    for i, t in enumerate(data.get("party", [])):
        reg.add(_party_from_table(t, f"{path} party #{i + 1}", path.parent))
    for p in reg:
        if p.parent_her_id and reg.get(p.parent_her_id) is None:
            raise RegisterError(
                f"{path}: party {p.her_id} names parent {p.parent_her_id}, which is not listed"
            )
    return reg


_NHN_TYPES = ("Organization", "Service", "OrganizationPerson")


def _org_number(text: str | None) -> str | None:
    """An NHN OrganizationNumber/ParentOrganizationNumber as text; the register writes -1 for none."""
    t = (text or "").strip()
    return t if is_ascii_digits(t) and int(t) > 0 else None


def load_nhn_xml(data: bytes) -> Register:
    """Parties from an NHN address-register response (CommunicationParty, possibly in a SOAP envelope).

    The organisation numbers are what the register records: OrganizationNumber of an Organization,
    ParentOrganizationNumber (its organisation's) of a Service or OrganizationPerson. The register
    records no department identifiers (RSH/LAV): those come from our own TOML register. Services and
    people listed inside an Organization (`Services/Service`, `People/OrganizationPerson`, without an
    xsi:type) are parties too."""
    root = parse_bytes(data).getroot()
    reg = Register()
    for el in root.iter():
        if not isinstance(el.tag, str) or el.find(f"{{{_CP_NS}}}HerId") is None:
            continue
        local = el.tag.rsplit("}", 1)[-1]
        typ = el.get(_XSI_TYPE, "").split(":")[-1] or (local if local in _NHN_TYPES else "")
        if not typ:
            continue
        level = {"Organization": "organisation", "Service": "service", "OrganizationPerson": "person"}.get(
            typ, "organisation"
        )
        addresses: dict[str, str] = {}
        # its own addresses only: an Organization's iter() would reach its nested services' as well
        for ea in el.iterfind(f"{{{_CP_NS}}}ElectronicAddresses/{{{_COMMON_NS}}}ElectronicAddress"):
            code = ea.findtext(f"{{{_COMMON_NS}}}TypeCodeValue") or ""
            addr = (ea.findtext(f"{{{_COMMON_NS}}}Address") or "").strip()
            if code and addr:
                addresses[code] = addr
        edi = addresses.get("E_EDI")
        parent = (el.findtext(f"{{{_CP_NS}}}ParentHerId") or "").strip()
        name = el.findtext(f"{{{_CP_NS}}}Name") or el.findtext(f"{{{_CP_NS}}}DisplayName") or ""
        org_no = _org_number(el.findtext(f"{{{_CP_NS}}}OrganizationNumber")) or _org_number(
            el.findtext(f"{{{_CP_NS}}}ParentOrganizationNumber"))
        reg.add(
            Party(
                her_id=int(el.findtext(f"{{{_CP_NS}}}HerId") or 0),
                name=name.strip(),
                org_no=org_no or None,
                level=level,
                parent_her_id=int(parent) if is_ascii_digits(parent) and int(parent) else None,
                endpoint=f"mailto:{edi}" if edi and "@" in edi and not edi.startswith("mailto:") else edi,
                active=(el.findtext(f"{{{_CP_NS}}}Active") or "true").strip() == "true",
                addresses=addresses,
            )
        )
    return reg


def load(paths: list[Path]) -> Register:
    """Load and merge register sources: *.toml in our format, *.xml from Adresseregisteret."""
    reg = Register()
    for p in paths:
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        for f in files:
            if f.suffix == ".toml":
                reg.merge(load_toml(f))
            elif f.suffix == ".xml":
                reg.merge(load_nhn_xml(f.read_bytes()))
    return reg
