"""/metrics and /health of a running relay: the exposition parses with prometheus_client's own parser and
counts what happened; health names the check that failed (store gone, dispatcher stopped, a message
waiting too long, an own certificate about to expire)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from relay_helpers import drop, make_config, wait_for
from test_relay_network import config as network_config
from test_relay_network import register_a

from hub.fixtures import people
from hub.fixtures.builder import build
from hub.metrics import health
from hub.relay.lifecycle import Event, State
from hub.relay.server import Relay
from hub.security.testing import shared_test_pki
from hub.store import MessageMeta


def samples(relay: Relay) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = relay.metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def dialog(receiver: people.Party, msg_id: str) -> bytes:
    return build("Dialogmelding", "1.0", sender=people.GP_FASTLEGE, receiver=receiver,
                 msg_type="DIALOG_NOTAT",
                 gen_date=datetime.now(UTC).replace(tzinfo=None, microsecond=0), msg_id=msg_id)


@pytest.fixture
def relay(tmp_path: Path):
    r = Relay(make_config(tmp_path / "hub", worker={"apprec_limit_s": 3600}))
    r.start()
    yield r
    if not r.stopped.is_set():
        r.stop()


def test_metrics_count_what_the_relay_did(relay: Relay) -> None:
    ok, bad = str(uuid.uuid4()), str(uuid.uuid4())
    drop(relay.cfg.spool_root / "82001", "ok.xml", dialog(people.HOSP_POLIKLINIKK, ok))
    drop(relay.cfg.spool_root / "82001", "bad.xml", dialog(people.Party(89999, "Ukjent", None, "gp"), bad))
    wait_for(lambda: any(m.state is State.AWAITING_APPREC for m in relay.store.find_by_kith_msg_id(ok)))
    wait_for(lambda: any(m.state is State.REJECTED for m in relay.store.find_by_kith_msg_id(bad)))
    # the counters follow the state a moment later (the tap runs after the commit that moved it)
    wait_for(lambda: samples(relay).get(("hub_deliveries_total", (("route", "folder"),)), 0) >= 1
             and samples(relay).get(("hub_rejections_total", (("channel", "folder"),)), 0) >= 1)
    s = samples(relay)
    stats = relay.store.stats()
    for state, n in stats.items():
        assert s[("hub_messages", (("state", state),))] == n
    assert s[("hub_store_up", ())] == 1
    assert s[("hub_deliveries_total", (("route", "folder"),))] >= 1
    assert s[("hub_rejections_total", (("channel", "folder"),))] == 1
    assert s[("hub_store_commit_seconds_count", ())] >= 4  # intake, verdicts, deliveries: real commits
    assert 0 < s[("hub_store_commit_seconds_sum", ())] < 60
    assert s[("hub_oldest_message_age_seconds", (("kind", "awaiting_apprec"),))] > 0
    assert s[("hub_oldest_message_age_seconds", (("kind", "undelivered"),))] == 0
    h = health(relay)
    assert h.status == 200 and h.as_dict()["failed"] == [], h.as_dict()


def test_health_turns_503_when_the_store_is_gone(relay: Relay) -> None:
    assert health(relay).ok
    store_file = relay.store.path  # type: ignore[attr-defined]
    for p in store_file.parent.glob(store_file.name + "*"):
        p.unlink()
    h = health(relay)
    assert h.status == 503 and h.as_dict()["failed"] == ["store", "queue"], h.as_dict()
    assert str(store_file) in h.as_dict()["checks"]["store"]["detail"]


def test_health_names_a_stopped_dispatcher_and_a_message_waiting_too_long(relay: Relay) -> None:
    old = datetime.now(UTC) - timedelta(hours=3)
    m = relay.store.put_received(b"<x/>", MessageMeta(msg_type="DIALOG_NOTAT"), actor="t", now=old)
    relay.store.transition(m.id, Event.VALIDATED, actor="t", now=old)  # queued, to no one: stays
    h = health(relay)
    assert h.as_dict()["failed"] == ["queue"], h.as_dict()
    assert "limit 3600 s" in h.as_dict()["checks"]["queue"]["detail"]
    relay.worker.stop()
    h = health(relay)
    assert "workers" in h.as_dict()["failed"] and h.status == 503


def test_own_certificate_expiry_against_openssl(tmp_path: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    pki = shared_test_pki().dir
    r = Relay(network_config(tmp_path / "a", 80000, "hub", register_a(pki), 0, 1, "a@x.test"))
    try:
        s = samples(r)
        for purpose in ("sign", "enc"):
            out = subprocess.run(["openssl", "x509", "-noout", "-enddate", "-in",
                                  str(pki / "parties" / "hub" / f"{purpose}.pem")],
                                 capture_output=True, text=True, check=True).stdout
            end = datetime.strptime(out.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
            days = (end - datetime.now(UTC)).total_seconds() / 86400
            got = s[("hub_certificate_expiry_days", (("certificate", f"hub {purpose}"),))]
            assert abs(got - days) < 0.01, (purpose, got, days)
        cert = health(r).as_dict()["checks"]["certificates"]
        assert cert["ok"] and "hub sign" in cert["detail"]
        r.cfg.settings.health.cert_warn_days = 100_000  # type: ignore[union-attr]
        h = health(r)
        assert "certificates" in h.as_dict()["failed"] and "warning at 100000 days" in \
            h.as_dict()["checks"]["certificates"]["detail"]
    finally:
        r.store.close()


def test_metrics_and_health_over_http(tmp_path: Path) -> None:
    import httpx

    r = Relay(make_config(tmp_path / "hub", http=True))
    r.start()
    try:
        assert r.http is not None
        with httpx.Client(base_url=r.http.url(), timeout=10) as c:
            got = c.get("/metrics")
            assert got.status_code == 200 and got.headers["content-type"].startswith("text/plain")
            names = {f.name for f in text_string_to_metric_families(got.text)}
            assert {"hub_messages", "hub_store_up", "hub_store_commit_seconds",
                    "hub_oldest_message_age_seconds"} <= names
            ok = c.get("/health")
            assert ok.status_code == 200 and ok.json()["ok"] is True
            assert c.get("/no/such/path").status_code == 404
            assert c.post("/metrics").status_code == 405
            store_file = r.store.path  # type: ignore[attr-defined]
            for p in store_file.parent.glob(store_file.name + "*"):
                p.unlink()
            bad = c.get("/health")
            assert bad.status_code == 503 and "store" in bad.json()["failed"]
            assert str(store_file) in bad.json()["checks"]["store"]["detail"]
    finally:
        r.stop()
