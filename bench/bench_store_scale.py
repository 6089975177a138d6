"""The operator's view of a store holding a million messages: `hub queue list` and `hub queue show`.

The store is built once per run by a bulk loader (one transaction of executemany on SQLite, COPY on
PostgreSQL) into the store's own schema, made by the store's own migrations: 1,000,000 messages over
30 days, each with its original and a realistic timeline, most of them completed, a few thousand
undelivered. Then the same store calls the CLI makes are timed on it:

- list: `list_messages(state=["undelivered"], limit=50)` (what `hub queue list --state undelivered` reads)
  and the same for two states at once;
- show: `get(short id)`, `timeline`, `blob_kinds`, `blob` (what `hub queue show ID` reads);
- what a running relay reads again and again: claim_due's and sweep's look (nothing is due), stats() and
  oldest() (each metrics scrape, each health check); on PostgreSQL stats() once more at the end, after a
  VACUUM of messages (index-only scans need its visibility map, which a bulk load leaves unset);
- bench_store's relay_ops into this store: a relayed message's writes, each index of messages written
  (CPU per message of this process, SQLite's writer thread, PostgreSQL's server processes).

Prints `name: value` lines: medians in milliseconds over several look-ups of different messages, and
the slowest one. PostgreSQL figures only when a server answers at $HUB_BENCH_PG. `HUB_BENCH_SCALE`
changes the size (default 1000000), for a quick look.
"""

from __future__ import annotations

import os
import random
import secrets
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import pg_url
from bench.bench_store import _relay_ops
from hub.metrics import AGES
from hub.store import Store, open_store
from hub.store.base import new_ids

SCALE = int(os.environ.get("HUB_BENCH_SCALE", "1000000"))
T_END = datetime(2026, 11, 30, tzinfo=UTC)
SPAN_S = 30 * 24 * 3600
PAYLOAD = b'<?xml version="1.0" encoding="UTF-8"?><MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24"/>'
# (final state, share, the timeline that leads there)
PATHS: list[tuple[str, float, list[tuple[str, str | None, str]]]] = [
    ("completed", 0.93, [("accept", None, "received"), ("validated", "received", "queued"),
                         ("claim", "queued", "sending"), ("ack", "sending", "delivered"),
                         ("await_apprec", "delivered", "awaiting_apprec"),
                         ("apprec", "awaiting_apprec", "completed")]),
    ("awaiting_apprec", 0.03, [("accept", None, "received"), ("validated", "received", "queued"),
                               ("claim", "queued", "sending"), ("ack", "sending", "delivered"),
                               ("await_apprec", "delivered", "awaiting_apprec")]),
    ("undelivered", 0.02, [("accept", None, "received"), ("validated", "received", "queued"),
                           ("claim", "queued", "sending"), ("nack_transient", "sending", "retrying"),
                           ("retry_due", "retrying", "queued"), ("claim", "queued", "sending"),
                           ("retries_exhausted", "sending", "undelivered")]),
    ("rejected", 0.015, [("accept", None, "received"), ("reject", "received", "rejected")]),
    ("failed", 0.005, [("accept", None, "received"), ("fail", "received", "failed")]),
]
RECEIVERS = [str(80000 + i) for i in range(400)]
SENDERS = [str(90000 + i) for i in range(2000)]
TYPES = ["DIALOG_NOTAT", "SVAR_LAB", "EPIKRISE", "HENVISNING", "APPREC", "PLO_INNLEGGELSE"]

MSG_COLS = ("id", "short_id", "direction", "channel", "kith_msg_id", "msg_type", "family", "version",
            "gen_date", "sender_her", "receiver_her", "state", "attempts", "max_retries", "retry_interval_s",
            "last_error_code", "last_error_text", "last_error_permanent", "size", "sha256",
            "created_at", "updated_at")
EVENT_COLS = ("message_id", "at", "event", "from_state", "to_state", "reason", "actor")
BLOB_COLS = ("message_id", "kind", "data", "sha256", "created_at")


def _rows(n: int, seed: int = 7) -> Iterator[tuple[tuple[Any, ...], list[tuple[Any, ...]], tuple[Any, ...]]]:
    """(message row, its events, its original blob), oldest first, as the relay would have written them."""
    rnd = random.Random(seed)
    cum, acc = [], 0.0
    for state, share, steps in PATHS:
        acc += share
        cum.append((acc, state, steps))
    digest = secrets.token_hex(32)
    t0 = T_END - timedelta(seconds=SPAN_S)
    for i in range(n):
        mid, short = new_ids()
        created = t0 + timedelta(seconds=SPAN_S * i / n)
        x = rnd.random()
        state, steps = next((s, st) for c, s, st in cum if x <= c)
        err = ("transport.smtp", "connection refused by 10.0.0.1:25", 0) if state == "undelivered" else (
            ("E21", "unknown receiver", 1) if state in ("rejected", "failed") else (None, None, None))
        updated = created + timedelta(seconds=len(steps) * 3)
        yield ((mid, short, "out", "ebxml", f"kith-{i}", rnd.choice(TYPES), "Dialogmelding", "1.1", created,
                rnd.choice(SENDERS), rnd.choice(RECEIVERS), state, 2 if state == "undelivered" else 1, 2, 3,
                *err, len(PAYLOAD), digest, created, updated),
               [(mid, created + timedelta(seconds=k * 3), ev, frm, to, "", "relay-a")
                for k, (ev, frm, to) in enumerate(steps)],
               (mid, "original", PAYLOAD, digest, created))


def _chunks(n: int, size: int = 20000) -> Iterator[tuple[list[Any], list[Any], list[Any]]]:
    msgs: list[Any] = []
    events: list[Any] = []
    blobs: list[Any] = []
    for m, ev, b in _rows(n):
        msgs.append(m)
        events.extend(ev)
        blobs.append(b)
        if len(msgs) == size:
            yield msgs, events, blobs
            msgs, events, blobs = [], [], []
    if msgs:
        yield msgs, events, blobs


def _iso(v: Any) -> Any:  # noqa: ANN401 - a column value
    if isinstance(v, datetime):
        return v.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return v


def load_sqlite(path: Path, n: int) -> None:
    """Schema by the store's migrations, then rows by one bulk transaction (no fsync per message)."""
    open_store(f"sqlite:///{path}").close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    # the store's own indexes, dropped for the load and made again after it (as any bulk load does)
    indexes = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall()
    for name, _sql in indexes:
        conn.execute(f"DROP INDEX {name}")

    def ins(table: str, cols: tuple[str, ...], rows: list[Any]) -> None:
        conn.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                         [tuple(_iso(v) for v in r) for r in rows])

    for msgs, events, blobs in _chunks(n):
        ins("messages", MSG_COLS, msgs)
        ins("events", EVENT_COLS, events)
        ins("blobs", BLOB_COLS, blobs)
    for _name, sql in indexes:
        conn.execute(sql)
    conn.execute("COMMIT")
    conn.execute("ANALYZE")
    conn.close()


def load_postgres(conninfo: str, schema: str, n: int) -> None:
    import psycopg
    from psycopg import sql as pgsql

    open_store(f"{conninfo}?schema={schema}&connect_timeout=3").close()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        conn.execute("SET synchronous_commit TO off")
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)", (schema,)).fetchall()
        for name, _def in indexes:
            conn.execute(pgsql.SQL("DROP INDEX {}").format(pgsql.Identifier(name)))
        for msgs, events, blobs in _chunks(n):
            with conn.transaction():
                for table, cols, rows in (("messages", MSG_COLS, msgs), ("events", EVENT_COLS, events),
                                          ("blobs", BLOB_COLS, blobs)):
                    stmt = pgsql.SQL("COPY {} ({}) FROM STDIN").format(
                        pgsql.Identifier(table), pgsql.SQL(", ").join(map(pgsql.Identifier, cols)))
                    with conn.cursor().copy(stmt) as cp:
                        for r in rows:
                            cp.write_row(r)
        for _name, indexdef in indexes:
            conn.execute(indexdef)
        conn.execute("ANALYZE")


def _time(fn: Callable[[Any], object], args: list[Any]) -> tuple[float, float]:
    fn(args[0])  # the first touch of a table reads its pages from the OS cache into the database's
    ms = []
    for a in args:
        t0 = time.perf_counter()
        fn(a)
        ms.append((time.perf_counter() - t0) * 1000)
    return statistics.median(ms), max(ms)


def _show(store: Store, ref: str) -> None:
    m = store.get(ref)
    assert m is not None, ref
    store.timeline(m.id)
    store.blob_kinds(m.id)
    assert store.blob(m.id) == PAYLOAD
    if m.parent_id:
        store.get(m.parent_id)


def vacuum_postgres(conninfo: str, schema: str) -> None:
    """VACUUM messages: what autovacuum (on by default) does to a table after a load. A bulk load leaves
    the visibility map unset, so an index-only scan still visits the heap for every entry it counts."""
    import psycopg
    from psycopg import sql as pgsql

    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(pgsql.SQL("VACUUM {}.messages").format(pgsql.Identifier(schema)))


def report(prefix: str, store: Store, n: int, vacuum: Callable[[], None] | None = None) -> None:
    tag = "1m" if n == 1_000_000 else str(n)
    page = store.list_messages(state=["undelivered"], limit=50)
    assert len(page) == 50 and all(m.state.value == "undelivered" for m in page), "the loader went wrong"
    receivers = random.Random(3).sample(RECEIVERS, 15)
    med, worst = _time(lambda r: store.list_messages(state=["undelivered"], receiver=r, limit=50), receivers)
    rounds = list(range(15))
    plain, plain_worst = _time(lambda _: store.list_messages(state=["undelivered"], limit=50), rounds)
    two, _ = _time(lambda _: store.list_messages(state=["undelivered", "failed"], limit=50), rounds)
    print(f"{prefix}_queue_list_{tag}_ms: {plain:.1f}", flush=True)
    print(f"{prefix}_queue_list_{tag}_worst_ms: {plain_worst:.1f}", flush=True)
    print(f"{prefix}_queue_list_two_states_{tag}_ms: {two:.1f}", flush=True)
    print(f"{prefix}_queue_list_by_receiver_{tag}_ms: {med:.1f}", flush=True)
    refs = [m.short_id for m in page[:10]] + [m.id for m in page[10:20]]
    med, worst = _time(lambda r: _show(store, r), refs)
    print(f"{prefix}_queue_show_{tag}_ms: {med:.1f}", flush=True)
    print(f"{prefix}_queue_show_{tag}_worst_ms: {worst:.1f}", flush=True)
    # what a running relay reads of this store again and again: the worker's look for due messages (every
    # poll, 50 ms in bench_relay) and for timed-out ones (each second; nothing is due in this store), and
    # stats() and oldest() of every metrics scrape and health check
    rounds = list(range(9))
    for name, fn in (("claim_look", lambda _: store.claim_due("bench", 10)),
                     ("sweep_look", lambda _: store.sweep()),
                     ("stats", lambda _: store.stats()),
                     ("oldest", lambda _: [store.oldest([s.value for s in st]) for st in AGES.values()])):
        med, _ = _time(fn, rounds)
        print(f"{prefix}_{name}_{tag}_ms: {med:.2f}", flush=True)
    # a relayed message's writes (bench_store's) into this store: each index of messages is written
    ops = _relay_ops(store, n=600, rounds=3)
    name = f"{prefix}_relay_ops_{tag}"
    print(f"{name}_cpu_us_per_msg: {ops['cpu']:.0f}  (this process; bench_store's relay_ops on this store, "
          "best of 3 rounds of 600)", flush=True)
    if "writer" in ops:
        print(f"{name}_writer_cpu_us_per_msg: {ops['writer']:.0f}  (the writer thread: user "
              f"{ops['user']:.0f}, kernel {ops['kernel']:.0f})", flush=True)
    if "server" in ops:
        print(f"{name}_server_cpu_us_per_msg: {ops['server']:.0f}  (the PostgreSQL server's processes of "
              "this store's connections, all 3 rounds)", flush=True)
    if vacuum is not None:  # last: every figure above is of the store as loaded
        vacuum()
        med, _ = _time(lambda _: store.stats(), list(range(9)))
        print(f"{prefix}_stats_vacuumed_{tag}_ms: {med:.2f}  (after VACUUM messages: the visibility map "
              "set, as autovacuum keeps it)", flush=True)


def main() -> None:
    n = SCALE
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "scale.sqlite"
        t0 = time.perf_counter()
        load_sqlite(path, n)
        print(f"sqlite_bulk_load_msgs_per_s: {n / (time.perf_counter() - t0):.0f}", flush=True)
        s = open_store(f"sqlite:///{path}")
        try:
            report("sqlite", s, n)
        finally:
            s.close()
    pg = pg_url()
    schema = f"bench_scale_{secrets.token_hex(4)}"
    try:
        if pg is None:
            raise ValueError("HUB_BENCH_PG is empty")
        t0 = time.perf_counter()
        load_postgres(pg, schema, n)
    except Exception as exc:  # noqa: BLE001 - no server: skip the PostgreSQL figures
        print(f"# postgres skipped: {exc.__class__.__name__}: {str(exc)[:200]}")
        return
    print(f"postgres_bulk_load_msgs_per_s: {n / (time.perf_counter() - t0):.0f}", flush=True)
    s = open_store(f"{pg}?schema={schema}")
    try:
        report("postgres", s, n, vacuum=lambda: vacuum_postgres(pg, schema))
    finally:
        s._write(lambda tx: tx.execute(f"DROP SCHEMA {schema} CASCADE"))
        s.close()


if __name__ == "__main__":
    main()
