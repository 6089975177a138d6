"""Vendor profiles: what a system is, where it listens, and which message/version/direction it claims.

A profile is one TOML file (fixtures/vendors/systems/*.toml for the simulated systems; a real vendor
hands in the same format). Simulated systems also carry `[[defect]]` tables: the concrete ways that
release of the system gets things wrong. Defects are the ONLY source of a simulated system's
misbehaviour; nothing here knows which cells a campaign is expected to approve.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from hub.paths import FIXTURES_DIR

VENDORS_DIR = FIXTURES_DIR / "vendors"
SYSTEMS_DIR = VENDORS_DIR / "systems"

# Category labels as in the 2007 table; "nursing" completes it with the PLO systems.
CATEGORIES: dict[str, str] = {
    "gp": "Primærlegesystem",
    "hospital": "Sykehussystem",
    "lab": "Labsystem",
    "nursing": "Pleie- og omsorgssystem",
}
CATEGORY_ORDER = list(CATEGORIES)
DIRECTIONS = ("S", "M")


class ProfileError(ValueError):
    pass


def slugify(name: str) -> str:
    """'Fürst LIS' -> 'furst-lis': folder and anchor names that survive any file system."""
    ascii_ = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_.lower()).strip("-")


def month_key(month: str) -> tuple[int, int]:
    """'05.07' -> (2007, 5), so that months sort in time order (the 2007 table writes MM.YY)."""
    m = re.fullmatch(r"(\d{2})\.(\d{2})", month.strip())
    if not m:
        raise ProfileError(f"month {month!r} is not MM.YY")
    mm, yy = int(m.group(1)), int(m.group(2))
    if not 1 <= mm <= 12:
        raise ProfileError(f"month {month!r} is not MM.YY")
    return (2000 + yy if yy < 70 else 1900 + yy, mm)


@dataclass(frozen=True)
class Claim:
    message: str  # catalogue key "Epikrise:1.0"
    direction: str  # S | M


@dataclass(frozen=True)
class Defect:
    """One concrete defect of a simulated system.

    kind: what goes wrong (see hub.conformance.simulated.DEFECT_KINDS for the vocabulary).
    message/direction: where it applies (None = everywhere).
    since/until: the releases that have it, as MM.YY months (inclusive); None = always.
    """

    id: str
    kind: str
    text: str
    message: str | None = None
    direction: str | None = None
    since: str | None = None
    until: str | None = None
    params: dict[str, object] = field(default_factory=dict, compare=False, hash=False)

    def active(self, month: str | None) -> bool:
        if month is None:
            return True
        now = month_key(month)
        if self.since and now < month_key(self.since):
            return False
        return not (self.until and now > month_key(self.until))

    def applies(self, message: str | None, direction: str | None) -> bool:
        if self.message and message and self.message != message:
            return False
        return not (self.direction and direction and self.direction != direction)


@dataclass(frozen=True)
class Endpoint:
    transport: str = "folder"  # folder | http | smtp
    address: str | None = None  # URL or mail address; the folder endpoint needs none


@dataclass(frozen=True)
class Profile:
    name: str
    version: str
    category: str  # gp | hospital | lab | nursing
    vendor: str
    her_id: int  # the system's organisation (level 1) in the test network
    services: tuple[int, ...]  # its level-2 communication parties (services / persons)
    claims: tuple[Claim, ...]
    endpoint: Endpoint = Endpoint()
    certificate: str | None = None  # subject name of its signing certificate in the test PKI
    defects: tuple[Defect, ...] = ()
    source: Path | None = None

    @property
    def slug(self) -> str:
        return slugify(self.name)

    @property
    def category_label(self) -> str:
        return CATEGORIES.get(self.category, self.category)

    @property
    def her_ids(self) -> frozenset[int]:
        return frozenset((self.her_id, *self.services))

    def claims_cell(self, message: str, direction: str) -> bool:
        return Claim(message, direction) in self.claims

    def claimed(self, direction: str | None = None) -> list[str]:
        return [c.message for c in self.claims if direction is None or c.direction == direction]

    def active_defects(self, month: str | None, message: str | None = None,
                       direction: str | None = None) -> list[Defect]:
        return [d for d in self.defects if d.active(month) and d.applies(message, direction)]


def _claims(raw: list[dict]) -> tuple[Claim, ...]:
    out: list[Claim] = []
    for c in raw:
        key = f"{c['message']}:{c['version']}"
        for d in c.get("directions", DIRECTIONS):
            if d not in DIRECTIONS:
                raise ProfileError(f"claim {key}: direction {d!r} is not S or M")
            out.append(Claim(key, d))
    return tuple(out)


def _defects(raw: list[dict], where: str) -> tuple[Defect, ...]:
    out = []
    known = {"id", "kind", "text", "message", "direction", "since", "until"}
    for d in raw:
        for m in ("since", "until"):
            if d.get(m):
                month_key(d[m])
        if "id" not in d or "kind" not in d:
            raise ProfileError(f"{where}: a defect needs id and kind")
        out.append(Defect(
            id=d["id"], kind=d["kind"], text=d.get("text", d["kind"]), message=d.get("message"),
            direction=d.get("direction"), since=d.get("since"), until=d.get("until"),
            params={k: v for k, v in d.items() if k not in known},
        ))
    return tuple(out)


def parse_profile(data: dict, source: Path | None = None) -> Profile:
    where = str(source or data.get("name", "profile"))
    try:
        category = data["category"]
        if category not in CATEGORIES:
            raise ProfileError(f"{where}: category {category!r} is not one of {', '.join(CATEGORIES)}")
        ep = data.get("endpoint", {})
        return Profile(
            name=data["name"],
            version=str(data.get("version", "")),
            category=category,
            vendor=data.get("vendor", ""),
            her_id=int(data["her_id"]),
            services=tuple(int(x) for x in data.get("services", ())),
            claims=_claims(data.get("claim", [])),
            endpoint=Endpoint(ep.get("transport", "folder"), ep.get("address")),
            certificate=data.get("certificate"),
            defects=_defects(data.get("defect", []), where),
            source=source,
        )
    except KeyError as exc:
        raise ProfileError(f"{where}: missing field {exc.args[0]}") from None


def load_profile(path: Path) -> Profile:
    with path.open("rb") as f:
        return parse_profile(tomllib.load(f), path)


def load_profiles(folder: Path = SYSTEMS_DIR) -> dict[str, Profile]:
    """Every profile in `folder`, by system name; HER-ids must not collide (one network)."""
    profiles: dict[str, Profile] = {}
    owners: dict[int, str] = {}
    for path in sorted(folder.glob("*.toml")):
        p = load_profile(path)
        if p.name in profiles:
            raise ProfileError(f"{path}: system {p.name!r} is defined twice")
        for her in p.her_ids:
            if her in owners:
                raise ProfileError(f"{path}: HER-id {her} already belongs to {owners[her]}")
            owners[her] = p.name
        profiles[p.name] = p
    return profiles


def find_profile(name: str, profiles: dict[str, Profile] | None = None) -> Profile:
    """A profile by exact name, slug, or a unique case-insensitive prefix."""
    profiles = load_profiles() if profiles is None else profiles
    if name in profiles:
        return profiles[name]
    hits = [p for p in profiles.values()
            if p.slug == slugify(name) or p.name.lower().startswith(name.lower())]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ProfileError(f"no system named {name!r} (known: {', '.join(sorted(profiles))})")
    raise ProfileError(f"{name!r} is ambiguous: {', '.join(p.name for p in hits)}")
