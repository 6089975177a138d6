"""One node, two processes (issue 17): `worker.processes = 2` under load, `kill -9` of either process.

`hub serve` runs as a real process that starts its worker process itself; the test finds that one
through /proc and kills it with SIGKILL (the main process must restart it), then kills the main process
(its worker process dies with it; the test starts the node again). Every message must reach the
hospital's folder exactly once, and both processes must have admitted messages: the work is shared,
not merely allowed to be.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest
from relay_helpers import pg_store, wait_for
from test_relay_reliability import (
    await_all,
    begin_load,
    drop_all,
    start,
    stop_all,
    write_config,
)

from hub.relay.lifecycle import Event
from hub.store import open_store

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def two_process_config(home: Path, store: str) -> Path:
    cfg = write_config(home, store, "node-a")
    # two threads: the main process keeps a message only while it has nothing in hand, so the worker
    # process surely gets its share of a stream of files
    text = cfg.read_text().replace("threads = 4", "threads = 2\nprocesses = 2")
    cfg.write_text(text)
    return cfg


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (of any of its threads: the supervisor thread starts the restarts)."""
    out = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(x) for x in (task / "children").read_text().split()]
    except OSError:
        return []
    return sorted(c for c in out if _running(c))


def admitted_by(store: str) -> dict[str, int]:
    """How many messages each process admitted (validated, the CPU-heavy step)."""
    out: dict[str, int] = {}
    with open_store(store) as s:
        for m in s.list_messages(limit=1000):
            for e in s.timeline(m.id):
                if e.event == Event.VALIDATED:
                    out[e.actor] = out.get(e.actor, 0) + 1
    return out


def run_two_processes(home: Path, store: str, total: int, seed: int) -> None:
    import random

    cfg = two_process_config(home, store)
    spool, msgs, consumer = begin_load([cfg], home, total, seed)
    items = list(msgs.items())
    rng = random.Random(seed)
    third = total // 3
    procs = [start(cfg)]
    try:
        wait_for(lambda: len(children(procs[0].pid)) == 1, timeout=30, what="the worker process")
        drop_all(spool, items[:third], rng)
        wait_for(lambda: admitted_by(store).get("node-a-w1", 0) > 0, timeout=60,
                 what="the worker process at work")
        # kill -9 the worker process under load: the main process starts it again
        victim = children(procs[0].pid)[0]
        drop_all(spool, items[third:third + third // 2])
        os.kill(victim, signal.SIGKILL)
        drop_all(spool, items[third + third // 2:2 * third], rng)
        wait_for(lambda: children(procs[0].pid) not in ([], [victim]), timeout=30,
                 what="the worker process restarted")
        # kill -9 the main process under load: its worker process dies with it; the node starts again
        drop_all(spool, items[2 * third:2 * third + third // 2])
        old_child = children(procs[0].pid)
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        wait_for(lambda: not any(Path(f"/proc/{c}").exists() and _running(c) for c in old_child),
                 timeout=10, what="the worker process gone with its main process")
        procs[0] = start(cfg)
        drop_all(spool, items[2 * third + third // 2:], rng)
        await_all(consumer, total)
    finally:
        stop_all(procs, consumer)
    got, sent = consumer.got, set(msgs)
    assert sorted(got) == sorted(sent)  # every one, and each once
    assert len(got) == len(set(got))
    by = admitted_by(store)
    assert by.get("node-a", 0) > 0 and by.get("node-a-w1", 0) > 0, by  # both processes took part
    assert sum(by.values()) == total, by  # each admitted once


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.slow
def test_two_processes_on_sqlite_kill_9_of_either_loses_nothing_and_delivers_once(tmp_path):
    run_two_processes(tmp_path / "hub", f"sqlite:///{tmp_path / 'hub' / 'hub.sqlite'}", 120, seed=7)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_on_postgresql_kill_9_of_either_loses_nothing_and_delivers_once(tmp_path):
    with pg_store("relay_proc") as store:
        run_two_processes(tmp_path / "hub", store, 120, seed=8)


def test_worker_process_names_are_stable_and_distinct():
    from hub.relay.processes import worker_names

    assert worker_names("relay-a", 3) == ["relay-a-w1", "relay-a-w2"]
    assert worker_names("relay-a", 1) == []


def test_a_received_message_is_admitted_by_the_process_holding_it(tmp_path):
    """The store's admission lease: nobody's messages go to the first claimer, a holder's stay its own
    until the lease runs out, and the verdict's commit ends it."""
    from datetime import timedelta

    from hub.store import MessageMeta, Step

    with open_store(f"sqlite:///{tmp_path / 'h.sqlite'}") as s:
        s.birth_lease = lambda actor: (actor, timedelta(seconds=60)) if actor == "main" else None
        kept = s.put_received(b"<a/>", MessageMeta(direction="local"), actor="main")
        left = s.put_received(b"<b/>", MessageMeta(direction="local"), actor="elsewhere")
        assert kept.lease_owner == "main" and left.lease_owner is None
        assert [m.id for m in s.claim_received("w1", 10, lease=timedelta(seconds=30))] == [left.id]
        assert s.claim_received("w2", 10) == []  # held by main and by w1
        later = kept.created_at + timedelta(seconds=61)
        assert [m.id for m in s.claim_received("w2", 10, now=later)] == [kept.id, left.id]
        assert [m.id for m in s.claim_received("w1", 10, own=True)] == []  # w2 holds both now
        m = s.advance(kept.id, [Step(Event.VALIDATED, "ok")], actor="w2")[0]
        assert m.lease_owner is None and m.lease_until is None
        assert not s.hold_received(kept.id, node="w2", until=later)  # no longer received
        assert s.hold_received(left.id, node="w2", until=later + timedelta(seconds=60))
        assert s.claim_received("w1", 10, now=later + timedelta(seconds=30)) == []
