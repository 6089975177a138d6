"""Prometheus metrics and the health verdict of a running relay: plain objects and functions; the relay's
HTTP server serves them as `GET /metrics` and `GET /health`.

Metrics (prometheus_client, text exposition format):
- `hub_messages{state}`: messages per state, read from the store at each scrape;
- `hub_oldest_message_age_seconds{kind}`: the oldest message still waiting for delivery
  (`waiting_delivery`), left `undelivered`, and delivered but `awaiting_apprec` (or overdue);
- `hub_deliveries_total{route}`, `hub_delivery_retries_total{route}`, `hub_rejections_total{channel}`:
  counted as they happen (route: folder, smtp, http; channel: how the message came in);
- `hub_store_commit_seconds`: how long each store commit takes (transaction and fsync);
- `hub_certificate_expiry_days{certificate}`: days until each of the relay's own certificates expires;
- `hub_store_up`: 1 when the store answered the scrape.

Health: the store answers (and, for SQLite, its file is still there), the worker's dispatcher goes
round, nothing waits for delivery longer than `health.max_undelivered_age_s`, and no own certificate
expires within `health.cert_warn_days`. Any failed check: 503 with the checks that failed named.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hub import config
from hub.relay import pipeline as pl
from hub.relay.hop import own_certificates
from hub.relay.lifecycle import State

if TYPE_CHECKING:
    from hub.relay.server import Relay

COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WAITING = (State.RECEIVED, State.QUEUED, State.SENDING, State.AWAITING_ACK, State.RETRYING)
AGES = {"waiting_delivery": WAITING, "undelivered": (State.UNDELIVERED,),
        "awaiting_apprec": (State.AWAITING_APPREC, State.APPREC_OVERDUE)}


def relay_config(relay: Relay) -> config.Config:
    """The hub.config view of a relay's configuration (its own certificates, health limits)."""
    s = relay.cfg.settings or config.validate({"her_id": relay.cfg.her_id})
    return config.Config(relay.cfg.base / config.FILE_NAME, s)


def _days_left(not_after: datetime, now: datetime) -> float:
    return (not_after - now).total_seconds() / 86400


class _StateCollector(Collector):
    """What the store and the certificate files say at scrape time."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = datetime.now(UTC)
        up = GaugeMetricFamily("hub_store_up", "1 when the store answered this scrape.")
        try:
            counts = self.relay.store.stats()
            oldest = {k: self.relay.store.oldest(s.value for s in states) for k, states in AGES.items()}
        except Exception:  # noqa: BLE001 - a scrape reports the store as down instead of failing
            up.add_metric([], 0)
            yield up
        else:
            up.add_metric([], 1)
            yield up
            by_state = GaugeMetricFamily("hub_messages", "Messages per state.", labels=["state"])
            for state, n in sorted(counts.items()):
                by_state.add_metric([state], n)
            yield by_state
            age = GaugeMetricFamily("hub_oldest_message_age_seconds", "Age of the oldest message waiting for "
                                    "delivery, left undelivered, or awaiting its AppRec.", labels=["kind"])
            for kind, t in oldest.items():
                age.add_metric([kind], 0 if t is None else (now - t).total_seconds())
            yield age
        certs = GaugeMetricFamily("hub_certificate_expiry_days", "Days until each of the relay's own "
                                  "certificates expires (negative: expired).", labels=["certificate"])
        for label, c in own_certificates(relay_config(self.relay)):
            if c.not_after is not None:
                certs.add_metric([label], _days_left(c.not_after, now))
        yield certs


class RelayMetrics:
    """The relay's metrics in a registry of their own (several relays may run in one process)."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.registry = CollectorRegistry()
        r = self.registry
        self.deliveries = Counter("hub_deliveries", "Messages delivered, by route.", ["route"], registry=r)
        self.retries = Counter("hub_delivery_retries", "Failed delivery attempts that will be tried again, "
                               "by route.", ["route"], registry=r)
        self.rejections = Counter("hub_rejections", "Messages refused at intake, by the channel they came "
                                  "by.", ["channel"], registry=r)
        self.commits = Histogram("hub_store_commit_seconds", "Time of each store commit (transaction and "
                                 "fsync).", registry=r, buckets=COMMIT_BUCKETS)
        r.register(_StateCollector(relay))
        relay.tap.listeners.append(self._tap)
        relay.store.observe_commits(self.commits.observe)

    def _route(self, m: Any) -> str:  # noqa: ANN401 - a hub.store.Message
        her = pl._int(m.receiver_her)
        route = pl.route_for(self.relay.register, her, self.relay.cfg.spool_root) if her is not None else None
        return route.kind.value if route is not None else "unknown"

    def _tap(self, what: str, m: Any, detail: str) -> None:  # noqa: ANN401
        if what == "delivered":
            self.deliveries.labels(self._route(m)).inc()
        elif what == "retrying":
            self.retries.labels(self._route(m)).inc()
        elif what == "rejected":
            self.rejections.labels(m.channel or "unknown").inc()

    def exposition(self) -> bytes:
        """The text exposition format (`Content-Type: CONTENT_TYPE`)."""
        return generate_latest(self.registry)


# --- health ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str  # store | workers | queue | certificates
    ok: bool
    detail: str


@dataclass(frozen=True)
class Health:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def status(self) -> int:
        return 200 if self.ok else 503

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "failed": [c.name for c in self.checks if not c.ok],
                "checks": {c.name: {"ok": c.ok, "detail": c.detail} for c in self.checks}}


def _store_check(relay: Relay) -> Check:
    path = getattr(relay.store, "path", None)
    if isinstance(path, Path) and not path.is_file():
        # SQLite keeps answering from a deleted file's open handle: the file itself must be there
        return Check("store", False, f"the store file {path} is gone")
    try:
        relay.store.stats()
    except Exception as exc:  # noqa: BLE001 - any failure of the store is the finding
        return Check("store", False, f"the store does not answer: {exc}")
    return Check("store", True, "answers")


def health(relay: Relay, now: datetime | None = None) -> Health:
    """The relay's health now; see the module docstring."""
    now = now or datetime.now(UTC)
    cfg = relay_config(relay)
    limits = cfg.settings.health
    checks = [_store_check(relay)]
    within = max(5.0, 20 * relay.cfg.worker.poll)
    if relay.worker.alive(within):
        checks.append(Check("workers", True, "the dispatcher goes round"))
    else:
        since = time.monotonic() - relay.worker.heartbeat
        checks.append(Check("workers", False, "the dispatcher is not running" if relay.worker.heartbeat == 0
                            else f"the dispatcher has not gone round for {since:.0f} s"))
    if checks[0].ok:
        try:
            oldest = relay.store.oldest(s.value for s in WAITING)
        except Exception as exc:  # noqa: BLE001
            checks.append(Check("queue", False, f"cannot read the queue: {exc}"))
        else:
            age = 0.0 if oldest is None else (now - oldest).total_seconds()
            ok = age <= limits.max_undelivered_age_s
            checks.append(Check("queue", ok, f"oldest message waiting for delivery: {age:.0f} s (limit "
                                f"{limits.max_undelivered_age_s:.0f} s)"))
    else:
        checks.append(Check("queue", False, "not checked: the store is down"))
    bad, good = [], []
    for label, c in own_certificates(cfg):
        if c.problem or c.not_after is None:
            bad.append(f"{label}: {c.problem or 'no expiry date'}")
            continue
        days = _days_left(c.not_after, now)
        (bad if days <= limits.cert_warn_days else good).append(f"{label}: {days:.0f} days left")
    if bad or good:
        checks.append(Check("certificates", not bad, "; ".join(bad or good)
                            + (f" (warning at {limits.cert_warn_days:g} days)" if bad else "")))
    return Health(tuple(checks))
