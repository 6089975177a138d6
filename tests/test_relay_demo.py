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


@pytest.mark.slow
def test_the_demos_printed_command_lists_its_messages_while_it_runs(tmp_path):
    import json
    import re
    import time

    env = {**os.environ, "HUB_HOME": str(tmp_path / "var")}
    env.pop("HUB_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--demo", "--duration", "12"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        command = None
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.search(r"inspect it with: (hub queue list --config (\S+))", line)
            if m:
                command = m.group(1)
                break
        assert command is not None, "the demo did not print how to inspect it"
        args = command.split()[1:]  # "hub" is this interpreter's -m hub
        got: dict = {}
        end = time.monotonic() + 10
        while time.monotonic() < end:  # the simulated systems send their first messages
            r = subprocess.run([sys.executable, "-m", "hub", *args, "--json"], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, r.stderr
            got = json.loads(r.stdout)
            if got["messages"]:
                break
            time.sleep(0.5)
        assert got["messages"], "the demo's store, read with its printed command, has no messages"
        assert (tmp_path / got["source"]["config"]).resolve() == tmp_path / "var" / "demo" / "hub.toml"
        check = subprocess.run([sys.executable, "-m", "hub", "config", "check", args[-1]], env=env,
                               cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr  # the file the demo wrote (with its ports) is valid
        # from the project folder without --config nothing is silently created
        bare = subprocess.run([sys.executable, "-m", "hub", "queue", "list"], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert bare.returncode == 1 and "no store at" in bare.stderr
        assert f"the demo's is read with --config {tmp_path / 'var' / 'demo' / 'hub.toml'}" in bare.stderr
        assert not (tmp_path / "var" / "hub.sqlite").exists()
    finally:
        proc.terminate()
        proc.communicate(timeout=60)
