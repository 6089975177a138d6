"""What `hub queue resend --dry-run` checks: the hop a delivery would take now, for real.

`hub.relay.route.resolve_now` answers from the register, CPAs and certificate files (pure). This adds
what only the network can say, with the relay's configured settings: does the SMTP relay (for mailto:
routes) or the peer's HTTP endpoint accept a connection now, is the spool folder writable, are this
relay's own certificates (which sign the envelope and decrypt the answers) valid, and which retry
ladder a copy would get. Probes are timed out connections, nothing is sent.
"""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from hub import config
from hub.config import Config
from hub.relay.lifecycle import RetryPolicy
from hub.relay.route import CertSummary, Resolution, cert_summary

PROBE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    what: str  # "smtp relay", "endpoint", "own certificate", "spool", "retries"
    detail: str
    ok: bool


@dataclass(frozen=True)
class HopCheck:
    resolution: Resolution
    checks: tuple[Check, ...] = ()
    retries: int | None = None
    interval: timedelta | None = None

    @property
    def problems(self) -> tuple[str, ...]:
        return self.resolution.problems + tuple(f"{c.what}: {c.detail}" for c in self.checks if not c.ok)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, "problems": list(self.problems),
                "checks": [{"what": c.what, "detail": c.detail, "ok": c.ok} for c in self.checks],
                "retries": self.retries,
                "retry_interval_s": None if self.interval is None else self.interval.total_seconds()}


def own_certificates(cfg: Config) -> list[tuple[str, CertSummary]]:
    """This relay's own certificates (sign, enc) in its PKI: the identity named, else the party whose
    HER-id is the relay's."""
    pki = cfg.pki
    if pki is None or not (pki / "pki.json").is_file():
        return []
    from hub.security.pki import layout

    lay = layout(pki)
    name = cfg.settings.identity or next(
        (p.name for p in lay.parties if str(p.her_id) == str(cfg.settings.her_id)), None)
    if name is None:
        return []
    return [(f"{name} {purpose}", cert_summary(str(lay.cert(name, purpose)))) for purpose in ("sign", "enc")]


def smtp_probe(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when an SMTP server at host:port greets and answers EHLO; else what went wrong."""
    try:
        with smtplib.SMTP(host, port, timeout=timeout) as s:
            code, _ = s.ehlo()
            if code != 250:
                return f"{host}:{port} answered EHLO with {code}"
    except (OSError, smtplib.SMTPException) as exc:
        return f"{host}:{port} not reachable: {exc}"
    return None


def tcp_probe(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return f"{host}:{port} not reachable: {exc.strerror or exc}"


def retry_policies(w: config.WorkerSection) -> tuple[RetryPolicy, RetryPolicy | None]:
    """The folder ladder, and the network one (None: the CPA's, else HIS 1037's) from [worker]."""
    local = RetryPolicy(w.local_retries, timedelta(seconds=max(1.0, w.local_retry_interval_s)))
    if w.network_retries is None and w.network_retry_interval_s is None:
        return local, None
    d = RetryPolicy()
    return local, RetryPolicy(d.retries if w.network_retries is None else w.network_retries,
                              timedelta(seconds=w.network_retry_interval_s) if w.network_retry_interval_s
                              else d.interval)


Probe = Callable[[str, int], str | None]


@dataclass
class HopChecker:
    """Checks per route kind, with the probes made once per endpoint for a bulk dry run."""

    cfg: Config
    now: datetime
    smtp: Probe = smtp_probe
    tcp: Probe = tcp_probe
    _seen: dict[tuple[str, str, int], str | None] = field(default_factory=dict)

    def _probe(self, kind: str, host: str, port: int) -> str | None:
        key = (kind, host, port)
        if key not in self._seen:
            self._seen[key] = (self.smtp if kind == "smtp" else self.tcp)(host, port)
        return self._seen[key]

    def check(self, r: Resolution) -> HopCheck:
        if r.kind is None:
            return HopCheck(r)
        checks: list[Check] = []
        local, network = retry_policies(self.cfg.settings.worker)
        if r.kind == "folder":
            retries, interval = local.retries, local.interval
            folder = Path(r.endpoint or "")
            ok = folder.is_dir()
            checks.append(Check("spool", f"{folder} {'exists' if ok else 'does not exist'}", ok))
            return HopCheck(r, tuple(checks), retries, interval)
        policy = network or RetryPolicy()  # as the worker does (hub.relay.worker._policy)
        retries, interval = policy.retries, policy.interval
        if r.kind == "smtp":
            relay = self.cfg.settings.smtp.relay
            if not relay:
                checks.append(Check("smtp relay", "none configured (smtp.relay)", False))
            else:
                host, _, port = relay.rpartition(":")
                err = self._probe("smtp", host, int(port))
                checks.append(Check("smtp relay", err or f"{relay} answers", err is None))
        elif r.kind == "http":
            u = urlsplit(r.endpoint or "")
            port = u.port or (443 if u.scheme == "https" else 80)
            err = self._probe("tcp", u.hostname or "", port)
            checks.append(Check("endpoint", err or f"{u.hostname}:{port} accepts connections", err is None))
        own = own_certificates(self.cfg)
        if self.cfg.pki is None:
            checks.append(Check("own certificate", "no pki configured: envelopes cannot be signed", False))
        for label, c in own:
            if c.problem:
                checks.append(Check("own certificate", f"{label}: {c.path}: {c.problem}", False))
            elif c.not_after is not None and c.not_after <= self.now:
                checks.append(Check("own certificate", f"{label} expired {c.not_after.date()}", False))
            else:
                until = f" until {c.not_after.date()}" if c.not_after else ""
                checks.append(Check("own certificate", f"{label}{until}", True))
        return HopCheck(r, tuple(checks), retries, interval)
