"""Campaigns: a series of test sessions (which system, which cell, which month), replayed in order.

A campaign file (fixtures/vendors/campaign-*.toml) lists `[[test]]` sessions. Replaying it starts each
simulated system as released in that month (its profile's defects active then), runs the cell's cases
against it over its profile's endpoint (the folder, or ebXML over HTTP or SMTP on 127.0.0.1) and stores
the evidence; the matrix is then computed from the evidence.

What history says about a session is written in the file (`expect = "fail"`; a pass is the default),
what happened is found out by running: `surprises()` lists every session whose verdict is not the one
history records. The simulated systems never read the file: their behaviour is their profile.
"""

from __future__ import annotations

import shutil
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from hub.conformance.catalogue import message_type
from hub.conformance.evidence import Evidence
from hub.conformance.exchange import Exchange, FolderExchange
from hub.conformance.profiles import DIRECTIONS, Profile, ProfileError, find_profile, load_profiles, month_key
from hub.conformance.runner import CellResult, Runner, default_pki_dir
from hub.conformance.simulated import SimulatedSystem
from hub.conformance.trust import NetworkPki, network_pki


@dataclass(frozen=True)
class Session:
    month: str
    system: str
    message: str  # catalogue key
    direction: str
    note: str = ""
    expect: str = "pass"  # what history recorded: pass | fail

    @property
    def label(self) -> str:
        return f"{self.month} {self.system} {self.message} {self.direction}"


@dataclass(frozen=True)
class Campaign:
    name: str
    sessions: tuple[Session, ...]
    source: Path | None = None


def load_campaign(path: Path, profiles: dict[str, Profile] | None = None) -> Campaign:
    with path.open("rb") as f:
        raw = tomllib.load(f)
    profiles = load_profiles() if profiles is None else profiles
    sessions = []
    for i, t in enumerate(raw.get("test", []), 1):
        try:
            month_key(t["month"])
            if t["direction"] not in DIRECTIONS:
                raise ProfileError(f"direction {t['direction']!r}")
            name = find_profile(t["system"], profiles).name
            message_type(t["message"])
            if t.get("expect", "pass") not in ("pass", "fail"):
                raise ProfileError(f"expect {t['expect']!r} is not pass or fail")
        except (KeyError, ProfileError) as exc:
            raise ProfileError(f"{path}: test #{i}: {exc}") from None
        sessions.append(Session(t["month"], name, t["message"], t["direction"], t.get("note", ""),
                                t.get("expect", "pass")))
    return Campaign(raw.get("name", path.stem), tuple(sessions), path)


def run_session_group(runner: Runner, profile: Profile, sessions: list[Session], work: Path,
                      *, simulate: bool = True, transport: str | None = None) -> list[CellResult]:
    """Run sessions of one system in one month against that month's release of the system.
    transport: folder | http | smtp (default: the profile's endpoint); http and smtp carry ebXML between
    an Msh of the runner and one in front of the simulated system, both on 127.0.0.1."""
    root = work / profile.slug
    shutil.rmtree(root, ignore_errors=True)  # each session starts from an empty exchange
    transport = transport or profile.endpoint.transport
    system = SimulatedSystem(profile, root, month=runner.month, pki=runner.pki) if simulate else None
    closers: list[Callable[[], None]] = []
    if transport in ("http", "smtp"):
        if not simulate:
            raise ValueError(f"over {transport.upper()} only simulated systems are reached"
                             " (a vendor's endpoint needs a CPA)")
        from hub.conformance.ebms import EbmsExchange, SystemGateway, connect
        from hub.conformance.simulated import TEST_CENTRE, TEST_CENTRE_SERVICE
        from hub.conformance.variants import UNKNOWN_ORG

        gateway = SystemGateway(profile, root, runner.pki, transport=transport, month=runner.month)
        closers.append(gateway.close)
        ebms = EbmsExchange(root, runner.pki, [TEST_CENTRE.her_id, TEST_CENTRE_SERVICE.her_id], transport)
        ebms.ack_wait = runner.timeout
        closers.append(ebms.close)
        connect(ebms, gateway, profile, [UNKNOWN_ORG.her_id])
        exchange: Exchange = ebms
    elif transport == "folder":
        exchange = FolderExchange(root)
    else:
        raise ValueError(f"transport {transport!r} is not folder, http or smtp")
    if system:
        system.start()
        closers.append(system.stop)
    try:
        return [runner.run_cell(profile, exchange, message_type(s.message), s.direction) for s in sessions]
    finally:
        for close in reversed(closers):
            close()


def run_campaign(campaign: Campaign, evidence: Evidence, work: Path, *, timeout: float = 5.0,
                 profiles: dict[str, Profile] | None = None, progress: Callable[[str], None] | None = None,
                 on_result: Callable[[Session, CellResult], None] | None = None,
                 pki: NetworkPki | None = None) -> list[CellResult]:
    """Replay the sessions in month order. `pki`: the test network's PKI (default: kept under HUB_HOME)."""
    profiles = load_profiles() if profiles is None else profiles
    pki = pki or network_pki(default_pki_dir(), profiles)
    ordered = sorted(campaign.sessions, key=lambda s: (month_key(s.month), s.system))
    results: list[CellResult] = []
    for (month, system), group in groupby(ordered, key=lambda s: (s.month, s.system)):
        sessions = list(group)
        runner = Runner(evidence, month=month, campaign=campaign.name, timeout=timeout, progress=progress,
                        pki=pki)
        cells = run_session_group(runner, profiles[system], sessions, work)
        for s, r in zip(sessions, cells, strict=True):
            if on_result:
                on_result(s, r)
        results += cells
    return results


@dataclass(frozen=True)
class Surprise:
    """A session that did not go as history says: what was expected, what happened, which cases."""

    session: Session
    result: CellResult

    def describe(self) -> str:
        cases = ", ".join(c.case_id for c in self.result.failed) or "every case passed"
        return (f"{self.session.label}: expected {self.session.expect}, got {self.result.verdict}"
                f" (run {self.result.run_id}; {cases})")


def surprises(pairs: list[tuple[Session, CellResult]]) -> list[Surprise]:
    return [Surprise(s, r) for s, r in pairs if r.verdict != s.expect]
