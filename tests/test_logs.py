"""Logs: UTC timestamps, text or JSON lines, every state change at INFO, what needs a person at WARNING,
identity numbers masked; and `hub serve -v --log-format json` logging a message's way through a relay."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from relay_helpers import REGISTER, drop

from hub import logs
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.store import MessageMeta, open_store


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    if logs._handler is not None:
        root.removeHandler(logs._handler)
        logs._handler = None
    root.setLevel(level)
    root.handlers[:] = handlers


def test_state_lines_text_and_json(tmp_path: Path, restore_logging: None) -> None:
    with open_store(f"sqlite:///{tmp_path / 'hub.sqlite'}") as st:
        m = st.put_received(b"<x/>", MessageMeta(msg_type="DIALOG_NOTAT", sender_her="82001",
                                                 receiver_her="81002"), actor="t")
    out = io.StringIO()
    logs.setup("warning", "json", out)
    logs.log_state("queued", m, "routed")  # INFO: not shown at WARNING
    logs.log_state("retrying", m, "smtp.451: mailbox of 070599-43124 busy", "node-a")
    (line,) = out.getvalue().splitlines()
    d = json.loads(line)
    assert d["level"] == "WARNING" and d["logger"] == "hub.relay.state" and d["event"] == "retrying"
    assert d["short_id"] == m.short_id and d["message_id"] == m.id and d["node"] == "node-a"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", d["ts"])
    assert "070599-*****" in d["message"] and "43124" not in d["message"]
    out = io.StringIO()
    logs.setup("info", "text", out)
    logs.log_state("queued", m, "routed")
    logs.log_state("undelivered", m, "gave up")
    first, second = out.getvalue().splitlines()
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO hub.relay.state: " + m.short_id + " queued",
                    first)
    assert " WARNING hub.relay.state: " + m.short_id + " undelivered" in second


@pytest.mark.slow
def test_serve_logs_every_step_as_json_lines(tmp_path: Path) -> None:
    (tmp_path / "register.toml").write_text(REGISTER, encoding="utf-8")
    (tmp_path / "hub.toml").write_text('her_id = 80000\nregister = ["register.toml"]\nnode = "n1"\n'
                                       '[folders]\nroot = "spool"\npoll = 0.05\n[worker]\npoll_s = 0.05\n',
                                       encoding="utf-8")
    data = build("Dialogmelding", "1.0", sender=people.GP_FASTLEGE, receiver=people.NURSING_TILDELING,
                 msg_type="DIALOG_NOTAT")
    drop(tmp_path / "spool" / "82001", "notat.xml", data)
    env = {k: v for k, v in os.environ.items() if k not in ("HUB_CONFIG", "HUB_STORE")}
    proc = subprocess.run([sys.executable, "-m", "hub", "serve", "--config", str(tmp_path / "hub.toml"),
                           "-v", "--log-format", "json", "--duration", "3"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stderr.splitlines()]  # every line: JSON, start and stop too
    said = [d["message"] for d in lines if d["logger"] == "hub.serve"]
    assert said[0].startswith("relay node n1 running; config ") and said[-1] == "relay stopped"
    steps = [d["event"] for d in lines if d["logger"] == "hub.relay.state"]
    assert steps[:3] == ["received", "queued", "delivered"], steps
    assert all(d["ts"].endswith("Z") and d["node"] == "n1" for d in lines if "node" in d)
