"""What the relay would use NOW to deliver a message: endpoint, CPA, the receiver's certificates.

`resolve_now()` is pure: it asks the register (through `pipeline.route_for`, the same function the
worker delivers with) and two lookups the caller supplies, one for CPAs by id and one for certificate
files, and says what is missing or stale. `hub queue resend --dry-run` shows it per message; the relay
can use it to explain a routing failure in the same words.

The I/O lives beside it: `cert_summary()` reads a PEM file; `cpa_lookup()` turns a
`hub.ebxml.cpa.CpaRepository` (every version of every CPA id) into the lookup `resolve_now` takes, which
picks the version valid at the time asked about the same way the MSH does (`cpa.select`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hub.ascii import is_ascii_digits
from hub.ebxml.cpa import DELIVERY_TYPES, Cpa, CpaRepository
from hub.relay.pipeline import Route, RouteKind, route_for
from hub.relay.register import Register


@dataclass(frozen=True)
class CertSummary:
    path: str
    subject: str | None = None
    serial: str | None = None
    not_after: datetime | None = None
    problem: str | None = None  # "file not found", "not a PEM certificate", ...


@dataclass(frozen=True)
class CpaSummary:
    cpa_id: str
    status: str | None = None  # agreed | signed | proposed
    start: datetime | None = None
    end: datetime | None = None
    party_ids: tuple[str, ...] = ()
    path: str | None = None
    versions: int = 1  # how many versions of this id the repository holds
    valid: bool = True  # this version is valid at the time asked about (else: the latest, shown as is)
    endpoints: tuple[tuple[str, str], ...] = ()  # (party HER-id, uri) that take business messages

    @classmethod
    def of(cls, cpa: Cpa, versions: int = 1, valid: bool = True) -> CpaSummary:
        eps = tuple(dict.fromkeys((p.her_id, uri) for p in cpa.parties if p.her_id
                                  for tr in p.transports.values() for uri, kind in tr.endpoints
                                  if kind in DELIVERY_TYPES))
        return cls(cpa.cpa_id, cpa.status, cpa.start, cpa.end, tuple(cpa.her_ids), cpa.source,
                   versions, valid, eps)


CpaLookup = Callable[[str, datetime], CpaSummary | None]  # (cpa id, at) -> the version that applies
CertLookup = Callable[[str], CertSummary]


@dataclass(frozen=True)
class Resolution:
    receiver_her: str | None
    party: str | None = None  # the receiving party's name in the register
    kind: str | None = None  # folder | smtp | http
    endpoint: str | None = None
    cpa_id: str | None = None  # from the register (what a delivery would use)
    cpa: CpaSummary | None = None
    enc_cert: CertSummary | None = None  # the receiver's: the payload is encrypted for it
    sign_cert: CertSummary | None = None  # the receiver's: its AppRecs are verified with it
    problems: tuple[str, ...] = ()  # a delivery would fail for these
    notes: tuple[str, ...] = ()  # worth knowing, not blocking

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


def resolve_now(
    receiver_her: str | int | None,
    register: Register,
    spool_root: Path,
    *,
    now: datetime,
    cpas: CpaLookup | None = None,
    certs: CertLookup | None = None,
    recorded_cpa_id: str | None = None,
) -> Resolution:
    """The route, CPA and certificates a delivery to `receiver_her` would use at `now`.

    `cpas`: None when no CPA repository is configured (then the CPA id is shown unchecked).
    `certs`: None to name the certificate files without reading them.
    `recorded_cpa_id`: the CPA recorded on the message at intake, to flag a change since.
    """
    her = str(receiver_her) if receiver_her not in (None, "") else None
    if her is None or not is_ascii_digits(her):
        return Resolution(her, problems=("the message names no receiver HER-id",))
    party = register.resolve(her)
    if party is None:
        return Resolution(her, problems=(f"HER-id {her} is not in the address register",))
    if not party.active:
        return Resolution(her, party.name, problems=(f"{party.name} ({her}) is inactive in the register",))
    route = route_for(register, int(her), spool_root)
    if route is None:
        return Resolution(her, party.name, endpoint=party.endpoint,
                          problems=(f"{party.name} ({her}) has no usable endpoint in the register "
                                    f"({party.endpoint or 'none'})",))
    problems: list[str] = []
    notes: list[str] = []
    if route.kind is RouteKind.FOLDER:
        return Resolution(her, party.name, route.kind.value, route.endpoint,
                          notes=("local system: written to its folder, no CPA or encryption",))
    cpa_id = route.cpa_id
    cpa = None
    if recorded_cpa_id and cpa_id and recorded_cpa_id != cpa_id:
        notes.append(f"the register now names CPA {cpa_id}; the message was received under {recorded_cpa_id}")
    if cpa_id is None:
        notes.append("no CPA in the register: HIS 1037 defaults apply (5 retries, 12 h apart)")
    elif cpas is not None:
        cpa = cpas(cpa_id, now)
        if cpa is None:
            problems.append(f"CPA {cpa_id} is not in the CPA repository")
        else:
            if cpa.end is not None and cpa.end <= now:
                problems.append(f"CPA {cpa_id} ended {cpa.end.isoformat()}")
            if cpa.start is not None and cpa.start > now:
                problems.append(f"CPA {cpa_id} starts only {cpa.start.isoformat()}")
            # a service or person is covered by its organisation's CPA
            chain = {str(p.her_id) for p in register.chain(her)}
            if cpa.party_ids and not chain & set(cpa.party_ids):
                notes.append(f"CPA {cpa_id} names parties {', '.join(cpa.party_ids)}, not {her}")
            # the relay delivers to the receiver's CPA channel endpoint (the one over the register's
            # transport where there is one); the register's endpoint is the fallback
            eps = [u for h, u in cpa.endpoints if h in chain]
            if eps and route.endpoint not in eps:
                scheme = route.endpoint.split(":", 1)[0]
                cpa_ep = next((u for u in eps if u.split(":", 1)[0] == scheme), eps[0])
                notes.append(f"CPA {cpa_id} names endpoint {cpa_ep}: an action it binds goes there, "
                             f"not to the register's {route.endpoint}")
                kind = RouteKind.SMTP if cpa_ep.startswith("mailto:") else RouteKind.HTTP
                route = Route(kind, route.her_id, cpa_ep, route.party, route.cpa_id)
            if cpa.status and cpa.status not in ("agreed", "signed"):
                notes.append(f"CPA {cpa_id} status is {cpa.status!r}")
            if cpa.versions > 1:
                which = (f"the one valid now is {cpa.path or '?'}" if cpa.valid
                         else f"none is valid now; the latest is {cpa.path or '?'}")
                notes.append(f"CPA {cpa_id} has {cpa.versions} versions: {which}")
    enc = _cert(party.enc_cert, certs)
    sign = _cert(party.sign_cert, certs)
    if party.enc_cert is None:
        problems.append("no encryption certificate for the receiver in the register")
    for label, c in (("encryption", enc), ("signing", sign)):
        if c is None:
            continue
        # without the encryption certificate nothing can be sent; the signing one only checks answers
        into = problems if label == "encryption" else notes
        if c.problem:
            into.append(f"{label} certificate {c.path}: {c.problem}")
        elif c.not_after is not None and c.not_after <= now:
            into.append(f"{label} certificate {c.subject or c.path} expired {c.not_after.isoformat()}")
    return Resolution(her, party.name, route.kind.value, route.endpoint, cpa_id, cpa, enc, sign,
                      tuple(problems), tuple(notes))


def _cert(path: str | None, certs: CertLookup | None) -> CertSummary | None:
    if path is None:
        return None
    return certs(path) if certs is not None else CertSummary(path)


# --- I/O helpers -----------------------------------------------------------------------------------

def cert_summary(path: str) -> CertSummary:
    """Subject, serial and expiry of the first certificate in a PEM (or DER) file."""
    from cryptography import x509

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        return CertSummary(path, problem=f"cannot read ({exc.strerror or exc})")
    try:
        cert = (x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data
                else x509.load_der_x509_certificate(data))
    except ValueError:
        return CertSummary(path, problem="not a certificate (PEM or DER)")
    return CertSummary(path, cert.subject.rfc4514_string(), format(cert.serial_number, "x"),
                       cert.not_valid_after_utc)


def cpa_lookup(repo: CpaRepository) -> CpaLookup:
    """`resolve_now`'s CPA lookup over a repository: the version valid at the time asked about (agreed
    before proposed, then the latest start); when none is, the latest, so its window can be reported."""
    def lookup(cpa_id: str, at: datetime) -> CpaSummary | None:
        versions = repo.versions(cpa_id)
        cpa = repo.get(cpa_id, at)
        if cpa is None:
            return None
        return CpaSummary.of(cpa, len(versions), cpa.valid_at(at))
    return lookup
