"""Resend as an operator does it, end to end: relay A sends a Dialogmelding over ebXML (SMTP, HTTP) to
relay B, which is down; the message ends `undelivered` with a WARNING line; B comes up; `hub queue
resend ID --config A's hub.toml` makes a copy with its own ebXML MessageId that A's running worker
delivers, exactly once; the original's timeline says it was resent as the copy.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from pathlib import Path

import pytest
from relay_helpers import drop, files, wait_for
from test_relay_network import A_ADDR, B_ADDR, config, dialog, free_port, one, register_a, register_b
from typer.testing import CliRunner

from hub.cli.main import app
from hub.relay.lifecycle import State
from hub.relay.server import Relay, RelayConfig
from hub.security.testing import shared_test_pki

pytestmark = pytest.mark.timeout(90)
runner = CliRunner()


def a_config(home: Path, pki: Path, b_endpoint: str, pa: int, pb: int) -> Path:
    """Relay A's hub.toml on disk: the relay and the operator's commands read the same file."""
    home.mkdir(parents=True)
    (home / "register.toml").write_text(register_a(pki, b_endpoint), encoding="utf-8")
    path = home / "hub.toml"
    path.write_text(f"""
store = "sqlite:///hub.sqlite"
her_id = 80000
node = "relay-a"
register = ["register.toml"]
pki = "{pki}"
identity = "hub"

[smtp]
listen = "127.0.0.1:{pa}"
relay = "127.0.0.1:{pb}"
addresses = ["{A_ADDR}"]

[folders]
root = "spool"
poll = 0.05

[worker]
threads = 2
poll_s = 0.05
network_retries = 1
network_retry_interval_s = 1
apprec_limit_s = 3600
""", encoding="utf-8")
    return path


@pytest.mark.parametrize("route", ["smtp", "http"])
def test_resend_delivers_once_after_the_peer_comes_back(tmp_path: Path, route: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    pki = shared_test_pki().dir
    pa, pb, hp = free_port(), free_port(), free_port()
    b_ep = f"http://127.0.0.1:{hp}/ebxml" if route == "http" else f"mailto:{B_ADDR}"
    conf = a_config(tmp_path / "a", pki, b_ep, pa, pb)
    caplog.set_level(logging.INFO, logger="hub.relay.state")
    a = Relay(RelayConfig.load(conf))
    b: Relay | None = None
    a.start()
    try:
        mid = str(uuid.uuid4())
        drop(a.cfg.spool_root / "82001", "notat.xml", dialog(msg_id=mid))
        orig = wait_for(one(a, mid, State.UNDELIVERED), 30, "A: undelivered, B being down")
        assert orig.out_message_id and orig.attempts == 2
        warned = [r for r in caplog.records
                  if r.levelno == logging.WARNING and orig.short_id in r.getMessage()]
        assert [r.getMessage().split(":")[0] for r in warned] == [f"{orig.short_id} retrying",
                                                                  f"{orig.short_id} undelivered"]
        assert any(r.levelno == logging.INFO and r.getMessage().startswith(f"{orig.short_id} queued")
                   for r in caplog.records)  # the other steps at INFO

        # --dry-run checks the hop that failed, with the configured ladder; words and exit code agree
        dry = ["queue", "resend", orig.short_id, "--dry-run", "--config", str(conf)]
        r = runner.invoke(app, dry)
        hop = f"127.0.0.1:{pb}" if route == "smtp" else f"127.0.0.1:{hp}"
        assert r.exit_code == 1, r.stdout
        assert "would NOT be delivered now" in r.stdout and f"{hop} not reachable" in r.stdout
        assert "retries  1 after the first attempt, every 1s" in r.stdout
        assert "would resend; the copy can be delivered now" not in r.stdout
        r = runner.invoke(app, [*dry, "--json"])
        (dm,) = json.loads(r.stdout)["messages"]
        assert r.exit_code == 1 and dm["would_deliver_now"] is False and dm["hop"]["retries"] == 1
        assert any(hop in p for p in dm["hop"]["problems"])

        b = Relay(config(tmp_path / "b", 81000, "lab", register_b(pki), pb, pa, B_ADDR,
                         http=hp if route == "http" else None))
        b.start()
        r = runner.invoke(app, dry)
        assert r.exit_code == 0 and "would resend; the copy can be delivered now" in r.stdout, r.stdout
        assert a.store.get(orig.id).state is State.UNDELIVERED  # a dry run changes nothing
        r = runner.invoke(app, ["queue", "resend", orig.id[:13], "--config", str(conf), "--json",
                                "--actor", "ops-night"])
        assert r.exit_code == 0, r.stderr
        got = json.loads(r.stdout)
        assert got["source"]["config"] == str(conf)
        (resent,) = got["resent"]
        child = wait_for(lambda: (m := a.store.get(resent["full_id"])) is not None
                         and m.state is State.AWAITING_APPREC and m, 30, "A: the copy acknowledged by B")
        assert child.parent_id == orig.id and child.out_message_id not in (None, orig.out_message_id)
        inbox = b.cfg.spool_root / "81001" / "in"
        wait_for(lambda: files(inbox), 10, "the hospital's in/")
        time.sleep(1.0)  # a second delivery, if there were one, would land now
        assert len(files(inbox)) == 1 and f"<MsgId>{mid}</MsgId>".encode() in files(inbox)[0].read_bytes()
        incoming = [m for m in b.store.find_by_kith_msg_id(mid) if m.direction == "in"]
        assert len(incoming) == 1 and incoming[0].ebxml_message_id == child.out_message_id
        tl = a.store.timeline(orig.id)
        assert tl[-1].event == "resent" and tl[-1].reason == f"resent as {child.short_id}"
        assert tl[-1].actor == "ops-night" and a.store.require(orig.id).state is State.UNDELIVERED
        assert [e.event for e in a.store.timeline(child.id)][:1] == ["resend"]
    finally:
        for relay in (a, b):
            if relay is not None and not relay.stopped.is_set():
                relay.stop()


def test_resend_of_a_folder_delivery_after_the_folder_is_back(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from relay_helpers import make_config

    from hub.fixtures import people

    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    r = Relay(make_config(tmp_path / "hub", worker={"local_retries": 1, "local_retry_interval_s": 1}))
    r.start()
    try:
        inbox = r.cfg.spool_root / "84001" / "in"
        shutil.rmtree(inbox)  # the nursing home's folder is gone (a share not mounted)
        mid = str(uuid.uuid4())
        drop(r.cfg.spool_root / "82001", "n.xml", dialog(receiver=people.NURSING_TILDELING, msg_id=mid))
        orig = wait_for(one(r, mid, State.UNDELIVERED), 20, "undelivered: no in/ folder")
        assert orig.last_error is not None and orig.last_error.code == "folder.missing"
        inbox.mkdir()
        res = runner.invoke(app, ["queue", "resend", orig.short_id, "--store", r.cfg.store, "--json"])
        assert res.exit_code == 0, res.stderr
        child_id = json.loads(res.stdout)["resent"][0]["full_id"]
        child = wait_for(lambda: (m := r.store.get(child_id)) is not None and m.state is State.AWAITING_APPREC
                         and m, 20, "the copy delivered")
        assert child.out_message_id is None  # a folder route has no ebXML MessageId
        time.sleep(0.5)
        assert len(files(inbox)) == 1 and f"<MsgId>{mid}</MsgId>".encode() in files(inbox)[0].read_bytes()
    finally:
        r.stop()
