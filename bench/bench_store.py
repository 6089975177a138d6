"""Store throughput: durable intake with group commit, and claim -> sent -> ack cycles.

`*_relay_ops_*`: the writes a relayed message makes at the sending relay (intake; validated and claimed
with the prepared envelope; sent; acknowledged and awaiting the AppRec), four messages at a time as a
relay's threads make them; CPU per message of this process (best of rounds) and, on SQLite, of the
writer thread alone, user and kernel (WAL writes, fsyncs): what bench_relay's `store=` share measures,
without the rest of the relay around it.

Prints `name: value` lines. PostgreSQL figures only when a server answers at $HUB_BENCH_PG (empty: skip them).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import pg_url
from hub.relay.lifecycle import Event
from hub.store import MessageMeta, Step, Store, open_store

N = 2000
THREADS = 16
PAYLOAD = b"<MsgHead>" + b"x" * 4000 + b"</MsgHead>"  # a typical 4 kB message


def _threads(store: Store, n: int) -> float:
    per = n // THREADS
    t0 = time.perf_counter()

    def work() -> None:
        for _ in range(per):
            store.put_received(PAYLOAD)

    ts = [threading.Thread(target=work) for _ in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return per * THREADS / (time.perf_counter() - t0)


def _async(store: Store, n: int) -> float:
    async def main() -> None:
        await asyncio.gather(*(store.aput_received(PAYLOAD) for _ in range(n)))

    t0 = time.perf_counter()
    asyncio.run(main())
    return n / (time.perf_counter() - t0)


def _serial(store: Store, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        store.put_received(PAYLOAD)
    return n / (time.perf_counter() - t0)


def _cycle(store: Store) -> float:
    ids = [m.id for m in store.list_messages(state="received", limit=1000)]
    t0 = time.perf_counter()
    for i in ids:
        store.transition(i, Event.VALIDATED)
    done = 0
    while batch := store.claim_due("bench", 50):
        for m in batch:
            store.mark_sent(m.id, node="bench")
            store.transition(m.id, Event.ACK)
            done += 1
    return done / (time.perf_counter() - t0)


def _msgid_cost(store: Store, n: int = 400) -> tuple[float, float]:
    """Admitting a message (the `validated` commit) with the sender's MsgId claimed in that commit
    (issue 12) against without, in alternating chunks so that drift hits both alike: (with/without
    time ratio, validations per s with it)."""
    ids = [store.put_received(PAYLOAD).id for _ in range(2 * n)]
    spent = {True: 0.0, False: 0.0}
    for c in range(0, 2 * n, 100):
        with_id = (c // 100) % 2 == 0
        t0 = time.perf_counter()
        for i in ids[c:c + 100]:
            key = ("82001", i, "0" * 64) if with_id else None
            store.advance(i, [Step(Event.VALIDATED)], msg_id=key)
        spent[with_id] += time.perf_counter() - t0
    return spent[True] / spent[False], n / spent[True]


ENVELOPE = b"<soap:Envelope>" + b"e" * 9000 + b"</soap:Envelope>"  # signed, with the encrypted payload
SIGNAL = b"<soap:Envelope>" + b"a" * 3000 + b"</soap:Envelope>"  # the peer's signed Acknowledgment


def _relayed(store: Store, key: str) -> None:
    """A message's writes at the sending relay, as hub.relay.worker makes them."""
    m = store.put_received(PAYLOAD, MessageMeta(direction="local", channel="submit", sender_her="82001"),
                           actor="bench", reason="submit from 82001")
    now = datetime.now(UTC)
    out_id = str(uuid.uuid4())
    meta = {"family": "dialog", "version": "1.1", "msg_type": "DIALOG_NOTAT", "kith_msg_id": key,
            "gen_date": now, "sender_her": "82001", "receiver_her": "81001", "direction": "out",
            "max_retries": 3, "retry_interval_s": 120, "expires_at": now + timedelta(days=1),
            "cpa_id": "cpa-bench", "out_message_id": out_id}
    store.advance(m.id, [Step(Event.VALIDATED, "routed", meta),
                         Step(Event.CLAIM, claim=timedelta(minutes=5),
                              artifacts={"out": ENVELOPE, "endpoint": b"mailto:edi@b.test"})],
                  actor="bench", msg_id=("82001", key, "0" * 64))
    store.mark_sent(m.id, node="bench", out_message_id=out_id)
    due = {"apprec_due_at": now + timedelta(hours=96)}
    store.advance(m.id, [Step(Event.ACK, "ebMS Acknowledgment", artifacts={"signal": SIGNAL}),
                         Step(Event.AWAIT_APPREC, "AppRec expected", due)], actor="bench")


def _thread_cpu(tid: int) -> tuple[float, float]:
    """User and kernel CPU seconds of one thread of this process (Linux /proc; clock ticks)."""
    return _proc_cpu(Path(f"/proc/self/task/{tid}/stat"))


def _server_cpu(store: Store) -> dict[int, float] | None:
    """CPU seconds of each PostgreSQL server process behind `store`'s idle pooled connections, by pid (a
    server on this machine: /proc; psycopg_pool's deque of them, private: a bench's look), None for
    another store or server. Between operations every connection the store opened is idle in its pool."""
    pool = getattr(getattr(store, "_pool", None), "_pool", None)
    if pool is None:
        return None
    try:
        pids = [c.info.backend_pid for c in list(pool)]
        return {pid: sum(_proc_cpu(Path(f"/proc/{pid}/stat"))) for pid in pids}
    except OSError:
        return None


def _proc_cpu(stat: Path) -> tuple[float, float]:
    f = stat.read_text().rsplit(")", 1)[1].split()
    tck = os.sysconf("SC_CLK_TCK")
    return int(f[11]) / tck, int(f[12]) / tck


def _relay_ops(store: Store, n: int = 1000, rounds: int = 3, threads: int = 4) -> dict[str, float]:
    writer = getattr(getattr(store, "_thread", None), "native_id", None)
    best: dict[str, float] = {}
    server0 = _server_cpu(store)
    for r in range(rounds):
        per = n // threads
        w0 = _thread_cpu(writer) if writer else (0.0, 0.0)
        c0, p0 = getattr(store, "commits", 0), time.process_time()

        def work(k: int, r: int = r, per: int = per) -> None:
            for j in range(per):
                _relayed(store, f"bench-{r}-{k}-{j}-{secrets.token_hex(3)}")

        ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        done = per * threads
        got = {"cpu": (time.process_time() - p0) * 1e6 / done,
               "commits": (getattr(store, "commits", 0) - c0) / done}
        if writer:
            w1 = _thread_cpu(writer)
            got.update(user=(w1[0] - w0[0]) * 1e6 / done, kernel=(w1[1] - w0[1]) * 1e6 / done)
            got["writer"] = got["user"] + got["kernel"]
        if not best or got["cpu"] < best["cpu"]:
            best = got
    server1 = _server_cpu(store)  # the connections the threads opened are there now: all rounds, not best
    if server0 is not None and server1:
        used = sum(v - server0.get(pid, 0.0) for pid, v in server1.items())
        best["server"] = used * 1e6 / (rounds * (n // threads) * threads)
    return best


def _report(prefix: str, store: Store) -> None:
    print(f"{prefix}_serial_puts_per_s: {_serial(store, 200):.0f}", flush=True)
    print(f"{prefix}_threaded_puts_per_s: {_threads(store, N):.0f}", flush=True)
    before = getattr(store, "commits", None)
    print(f"{prefix}_async_puts_per_s: {_async(store, N):.0f}", flush=True)
    if before is not None:
        print(f"{prefix}_async_msgs_per_commit: {N / max(1, store.commits - before):.1f}", flush=True)
    print(f"{prefix}_delivery_cycles_per_s: {_cycle(store):.0f}", flush=True)
    ratio, rate = _msgid_cost(store)
    print(f"{prefix}_validated_with_msgid_per_s: {rate:.0f}", flush=True)
    print(f"{prefix}_validated_with_msgid_vs_without: {ratio:.2f}  (time per message; 1.00 = free)",
          flush=True)
    ops = _relay_ops(store)
    print(f"{prefix}_relay_ops_cpu_us_per_msg: {ops['cpu']:.0f}  (this process; a relayed message's writes "
          "at the sending relay, 4 threads, best of 3 rounds of 1000)", flush=True)
    if "writer" in ops:
        print(f"{prefix}_relay_ops_writer_cpu_us_per_msg: {ops['writer']:.0f}  (the writer thread: user "
              f"{ops['user']:.0f}, kernel {ops['kernel']:.0f}; {ops['commits']:.2f} commits per message)",
              flush=True)
    if "server" in ops:
        print(f"{prefix}_relay_ops_server_cpu_us_per_msg: {ops['server']:.0f}  (the PostgreSQL server's "
              "processes of the store's connections, all 3 rounds)", flush=True)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        s = open_store(f"sqlite:///{Path(d) / 'bench.sqlite'}")
        try:
            _report("sqlite", s)
        finally:
            s.close()
    pg = pg_url("postgresql://postgres@127.0.0.1:5432/test")
    schema = f"bench_{secrets.token_hex(4)}"
    try:
        if pg is None:
            raise ValueError("HUB_BENCH_PG is empty")
        s = open_store(f"{pg}?schema={schema}&connect_timeout=3")
    except Exception as exc:  # noqa: BLE001 - no server: skip the PostgreSQL figures
        print(f"# postgres skipped: {exc.__class__.__name__}")
        return
    try:
        _report("postgres", s)
    finally:
        s._write(lambda tx: tx.execute(f"DROP SCHEMA {schema} CASCADE"))
        s.close()


if __name__ == "__main__":
    main()
