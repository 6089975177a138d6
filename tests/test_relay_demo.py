"""`hub serve --demo --duration N` starts from nothing under HUB_HOME, relays (the hospital behind a
second relay, over ebXML on SMTP), and stops by itself."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hub.store import open_store


@pytest.mark.slow
def test_demo_runs_from_an_empty_home_and_stops_by_itself(tmp_path):
    env = {**os.environ, "HUB_HOME": str(tmp_path / "var")}
    proc = subprocess.run([sys.executable, "-m", "hub", "serve", "--demo", "--duration", "5"],
                          env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "demo stopped" in proc.stdout
    demo = tmp_path / "var" / "demo"
    assert (demo / "hub.toml").is_file() and (demo / "register.toml").is_file()
    with open_store(f"sqlite:///{demo / 'hub.sqlite'}") as s:
        stats = s.stats()
        done = s.list_messages(state="completed", limit=1000)
    # business messages answered by the simulated systems, and their AppRecs relayed back
    assert stats["completed"] >= 4, stats
    assert {m.msg_type for m in done} - {"APPREC"}, "no business message was completed"
    assert any(m.msg_type == "APPREC" for m in done)
    assert stats["failed"] == 0 and stats["undelivered"] == 0, stats
    # the hospital sits behind the second relay: messages crossed the network both ways and completed
    assert (demo / "pki" / "pki.json").is_file() and (demo / "sykehus" / "hub.toml").is_file()
    out = [m for m in done if m.direction == "out" and m.msg_type != "APPREC"]
    assert out and all(m.out_message_id for m in out), "no business message to the hospital completed"
    assert any(m.channel == "smtp" and m.msg_type == "APPREC" for m in done), "no AppRec came back by ebXML"
    with open_store(f"sqlite:///{demo / 'sykehus' / 'hub.sqlite'}") as s:
        peer_done = s.list_messages(state="completed", limit=1000)
        peer_stats = s.stats()
    assert any(m.channel == "smtp" and m.direction == "in" for m in peer_done), peer_stats
    assert peer_stats["failed"] == 0 and peer_stats["undelivered"] == 0, peer_stats
    assert "(ebXML out)" in proc.stdout and "ebMS Acknowledgment" in proc.stdout
