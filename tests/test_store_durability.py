"""SQLite durability: what the store acknowledged survives kill -9; the files are private."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

from hub.relay.lifecycle import State
from hub.store import open_store

# Four threads store messages as fast as they can and print each id once put_received() returned:
# a printed id is an acknowledged message.
_WRITER = r"""
import sys, threading
from hub.store import open_store
s = open_store(sys.argv[1])
lock = threading.Lock()
def work(t):
    i = 0
    while True:
        data = f"thread {t} message {i} ".encode() * 50
        m = s.put_received(data)
        with lock:
            sys.stdout.write(f"{m.id} {t} {i}\n")
            sys.stdout.flush()
        i += 1
for t in range(4):
    threading.Thread(target=work, args=(t,), daemon=True).start()
threading.Event().wait()
"""


def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, f"sqlite:///{db}"], stdout=subprocess.PIPE, text=True
    )
    acked: list[tuple[str, int, int]] = []
    deadline = time.monotonic() + 20
    assert proc.stdout is not None
    while len(acked) < 300 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        mid, t, i = line.split()
        acked.append((mid, int(t), int(i)))
    os.kill(proc.pid, signal.SIGKILL)  # mid-write: the writer is still running flat out
    proc.wait()
    for line in proc.stdout:  # acknowledged between our last read and the kill
        mid, t, i = line.split()
        acked.append((mid, int(t), int(i)))
    assert len(acked) >= 300, "the writer process did not get going"

    s = open_store(f"sqlite:///{db}")
    try:
        for mid, t, i in acked:
            m = s.get(mid)
            assert m is not None, f"acknowledged message {mid} lost"
            assert m.state is State.RECEIVED
            assert s.blob(mid) == f"thread {t} message {i} ".encode() * 50
        assert [e.event for e in s.timeline(acked[0][0])] == ["accept"]
    finally:
        s.close()


def test_files_are_private(tmp_path: Path) -> None:
    db = tmp_path / "new" / "hub.sqlite"
    s = open_store(f"sqlite:///{db}")
    try:
        s.put_received(b"patient data")
        wal = Path(f"{db}-wal")
        assert wal.exists()  # WAL mode
        for p in (db, wal, Path(f"{db}-shm")):
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
        assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700
    finally:
        s.close()


def test_plain_path_and_bad_urls(tmp_path: Path) -> None:
    s = open_store(str(tmp_path / "plain.sqlite"))
    s.close()
    assert (tmp_path / "plain.sqlite").exists()
    for bad in ("mysql://x/y", "sqlite://relative"):
        try:
            open_store(bad)
        except ValueError as exc:
            assert "sqlite:///" in str(exc)
        else:
            raise AssertionError(f"{bad} accepted")
