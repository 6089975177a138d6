"""Reliability with real processes: kill -9 under load, restart, repeat; two nodes on one PostgreSQL.

The relay runs as `python -m hub serve --config ...` and is killed with SIGKILL at random moments
while a load generator drops messages into the GP's folder and a consumer (the hospital's journal
system) takes delivered files away at once. Afterwards every message must have arrived exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from relay_helpers import REGISTER, drop, wait_for

from hub.fixtures import people
from hub.fixtures.builder import build
from hub.relay.server import RelayConfig

PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def write_config(home: Path, store: str, node: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    (home / "register.toml").write_text(REGISTER, encoding="utf-8")
    cfg = home / f"{node}.toml"
    cfg.write_text(f"""
store = "{store}"
her_id = 80000
node = "{node}"
register = ["register.toml"]
[folders]
root = "spool"
poll = 0.05
[worker]
threads = 4
poll_s = 0.05
local_retries = 50
local_retry_interval_s = 1
lease_s = 3
""", encoding="utf-8")
    return cfg


def start(cfg: Path, *, ready: bool = True) -> subprocess.Popen:
    """A node, with `ready` once it says it runs: a SIGTERM while it is still importing ends it with -15
    (before `hub serve` takes over its signals), which stop_all would take for an unclean stop."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--config", str(cfg)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert p.stderr is not None
    if not ready:
        return p
    said = []
    for line in p.stderr:
        said.append(line)
        if b" running; " in line:
            return p
    raise AssertionError(f"{cfg}: the node ended before it ran: {b''.join(said).decode()[-2000:]}")


def messages(n: int, seed: int) -> dict[str, bytes]:
    out = {}
    for i in range(n):
        mid = str(uuid.UUID(int=random.Random(seed * 100_000 + i).getrandbits(128), version=4))
        out[mid] = build("Dialogmelding", "1.0", seed=i + 1, sender=people.GP_FASTLEGE,
                         receiver=people.HOSP_POLIKLINIKK, msg_type="DIALOG_NOTAT", msg_id=mid,
                         gen_date="2026-01-05T10:00:00")
    return out


class Consumer(threading.Thread):
    """The receiving journal system: takes every file from in/ as soon as it appears, notes its MsgId."""

    def __init__(self, inbox: Path, read: Path) -> None:
        super().__init__(daemon=True)
        self.inbox, self.read = inbox, read
        self.got: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        self.read.mkdir(parents=True, exist_ok=True)
        while not self.stop.is_set():
            try:
                names = [n for n in os.listdir(self.inbox) if not n.startswith(".")]
            except FileNotFoundError:
                names = []
            for n in names:
                data = (self.inbox / n).read_bytes()
                mid = data.split(b"<MsgId>")[1].split(b"</MsgId>")[0].decode()
                os.replace(self.inbox / n, self.read / f"{len(self.got)}-{n}")
                self.got.append(mid)
            self.stop.wait(0.01)


def run_load(
    cfgs: list[Path], home: Path, *, total: int, kills: int, seed: int
) -> tuple[list[str], set[str]]:
    spool, msgs, consumer = begin_load(cfgs, home, total, seed)
    rng = random.Random(seed)
    procs = [start(c) for c in cfgs]
    items = list(msgs.items())
    per_round = total // (kills + 1)
    try:
        for k in range(kills + 1):
            chunk = items[k * per_round:] if k == kills else items[k * per_round:(k + 1) * per_round]
            drop_all(spool, chunk, rng)
            if k < kills:
                time.sleep(rng.uniform(0.2, 0.8))
                victim = rng.randrange(len(procs))
                procs[victim].send_signal(signal.SIGKILL)
                procs[victim].wait()
                procs[victim] = start(cfgs[victim])
        await_all(consumer, total)
    finally:
        stop_all(procs, consumer)
    return consumer.got, set(msgs)


def begin_load(cfgs: list[Path], home: Path, total: int, seed: int
               ) -> tuple[Path, dict[str, bytes], Consumer]:
    """The spool, the messages to send by MsgId, and the hospital's consumer, already running."""
    spool = RelayConfig.load(cfgs[0]).spool_root
    consumer = Consumer(spool / "81001" / "in", home / "hospital-read")
    consumer.start()
    return spool, messages(total, seed), consumer


def drop_all(spool: Path, items: list[tuple[str, bytes]], rng: random.Random | None = None) -> None:
    """Each message into the GP's out folder; with `rng`, a random pause of up to 10 ms after each."""
    for mid, data in items:
        drop(spool / "82001", f"{mid}.xml", data)
        if rng is not None:
            time.sleep(rng.uniform(0, 0.01))


def await_all(consumer: Consumer, total: int) -> None:
    wait_for(lambda: len(consumer.got) >= total, timeout=60, what=f"{total} deliveries")
    time.sleep(0.5)  # a duplicate, if any, would come now


def stop_all(procs: list[subprocess.Popen], consumer: Consumer) -> None:
    """SIGTERM every node, which must be a clean stop (exit 0), and stop the consumer."""
    for p in procs:
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
    consumer.stop.set()
    for p in procs:
        assert p.returncode == 0, p.stderr.read().decode()[-2000:]


def store_actors(store: str) -> set[str]:
    """The nodes named in any message's timeline."""
    from hub.store import open_store

    with open_store(store) as s:
        return {e.actor for m in s.list_messages(limit=1000) for e in s.timeline(m.id)}


def run_in_turns(cfgs: list[Path], home: Path, store: str, *, total: int, seed: int
                 ) -> tuple[list[str], set[str]]:
    """Two nodes that each certainly handle messages: node-a alone until the store names it, then node-b
    with node-a killed under load until the store names node-b too, then both for the second half.

    Started together, one node can take every file while the other is still starting: the test would
    then prove nothing about two nodes (and asserting that both took part would fail at random).
    """
    spool, msgs, consumer = begin_load(cfgs, home, total, seed)
    items = list(msgs.items())
    procs = [start(cfgs[0])]
    try:
        drop_all(spool, items[:total // 2])
        wait_for(lambda: "node-a" in store_actors(store), timeout=60, what="node-a at work")
        procs.append(start(cfgs[1], ready=False))  # node-a killed while node-b starts: work left for it
        procs[0].send_signal(signal.SIGKILL)
        procs[0].wait()
        wait_for(lambda: "node-b" in store_actors(store), timeout=60, what="node-b at work")
        procs[0] = start(cfgs[0])
        drop_all(spool, items[total // 2:])
        await_all(consumer, total)
    finally:
        stop_all(procs, consumer)
    return consumer.got, set(msgs)


@pytest.mark.slow
def test_kill_9_under_load_loses_nothing_and_delivers_nothing_twice(tmp_path):
    home = tmp_path / "hub"
    cfg = write_config(home, "sqlite:///hub.sqlite", "node-a")
    got, sent = run_load([cfg], home, total=150, kills=3, seed=1)
    assert sorted(got) == sorted(sent)  # every one, and each once
    assert len(got) == len(set(got))


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_URL, connect_timeout=2):
            return True
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_on_one_postgresql_deliver_each_message_once(tmp_path):
    if not _pg_available():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    schema = f"relay_test_{uuid.uuid4().hex[:10]}"
    store = f"{PG_URL}?schema={schema}"
    home = tmp_path / "hub"
    cfgs = [write_config(home, store, "node-a"), write_config(home, store, "node-b")]
    try:
        got, sent = run_in_turns(cfgs, home, store, total=120, seed=2)
        assert sorted(got) == sorted(sent)
        assert len(got) == len(set(got))
        assert {"node-a", "node-b"} <= store_actors(store)  # both nodes took part
    finally:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
