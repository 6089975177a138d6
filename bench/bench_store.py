"""Store throughput: durable intake with group commit, and claim -> sent -> ack cycles.

Prints `name: value` lines. PostgreSQL figures only when a server answers at $HUB_BENCH_PG.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

from hub.relay.lifecycle import Event
from hub.store import Step, Store, open_store

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


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        s = open_store(f"sqlite:///{Path(d) / 'bench.sqlite'}")
        try:
            _report("sqlite", s)
        finally:
            s.close()
    pg = os.environ.get("HUB_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
    schema = f"bench_{secrets.token_hex(4)}"
    try:
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
