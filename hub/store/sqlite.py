"""SQLite backend: one file, WAL, group commit through a single writer thread.

Durability with throughput: every write (intake, transition, claim, seen record, audit) is a small
function queued to ONE writer thread. The thread takes whatever has queued up (up to `max_batch`), runs
each function in its own SAVEPOINT inside one `BEGIN IMMEDIATE` transaction, commits once
(synchronous=FULL: the commit is fsynced) and only then resolves the callers' futures. So many messages
share one fsync, and no caller, sync or async, hears "stored" before its data is on disk. A failing
function rolls back to its savepoint and raises in its own caller only; the rest of the batch commits.

Reads run on per-thread connections (WAL readers do not block the writer). The file, and with it the
-wal and -shm files SQLite derives from it, is created with mode 0600: it holds patient data.
"""

from __future__ import annotations

import asyncio
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.store.base import Row, Store, StoreError, T, Tx, migrate, utcnow

_TIME_COLUMNS = frozenset({
    "gen_date", "next_attempt_at", "lease_until", "expires_at", "apprec_due_at", "created_at", "updated_at",
    "at", "applied_at",
})
_FMT = "%Y-%m-%d %H:%M:%S.%f"  # fixed width, UTC: text order is time order
TYPES = {"ts": "TEXT", "blob": "BLOB", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"}


def _param(v: Any) -> Any:  # noqa: ANN401
    if isinstance(v, datetime):
        if v.tzinfo is None:
            raise ValueError(f"naive datetime given to the store: {v!r}")
        return v.astimezone(UTC).strftime(_FMT)
    return v


def _load(row: sqlite3.Row) -> Row:
    out: Row = {}
    for k in row.keys():  # noqa: SIM118 - sqlite3.Row is not a mapping
        v = row[k]
        if k in _TIME_COLUMNS and isinstance(v, str):
            v = datetime.strptime(v, _FMT).replace(tzinfo=UTC)
        out[k] = v
    return out


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.conn.execute(sql, [_param(p) for p in params]).rowcount

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [_load(r) for r in self.conn.execute(sql, [_param(p) for p in params]).fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        r = self.conn.execute(sql, [_param(p) for p in params]).fetchone()
        return None if r is None else _load(r)


_STOP = object()


class SQLiteStore(Store):
    def __init__(
        self, path: str | os.PathLike[str], *, max_batch: int = 512, busy_timeout_ms: int = 30_000
    ) -> None:
        self.path = Path(path)
        self.max_batch = max_batch
        self._busy = busy_timeout_ms
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, mode=0o700)
        # create the file ourselves so it never exists with looser permissions
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute("PRAGMA synchronous=FULL")
        self._writer.execute("BEGIN IMMEDIATE")  # also serialises two processes opening at once
        try:
            migrate(_Tx(self._writer), TYPES, utcnow())
            self._writer.execute("COMMIT")
        except BaseException:
            self._writer.execute("ROLLBACK")
            self._writer.close()
            raise
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.commits = 0  # batches committed, for tests and benchmarks: commits < writes = batching works
        self._closed = False
        self._readers: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"store-writer:{self.path.name}", daemon=True)
        self._thread.start()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={int(self._busy)}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    # writes ------------------------------------------------------------------------------------------
    def _submit(self, fn: Callable[[Tx], T]) -> Future[T]:
        fut: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            self._queue.put((fn, fut))
        return fut

    def _write(self, fn: Callable[[Tx], T]) -> T:
        return self._submit(fn).result()

    async def _write_async(self, fn: Callable[[Tx], T]) -> T:
        return await asyncio.wrap_future(self._submit(fn))

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(batch)

    def _run_batch(self, batch: list[tuple[Callable[[Tx], Any], Future[Any]]]) -> None:
        conn, tx = self._writer, _Tx(self._writer)
        outcomes: list[tuple[Future[Any], bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                if not fut.set_running_or_notify_cancel():
                    continue
                conn.execute("SAVEPOINT op")
                try:
                    result = fn(tx)
                except BaseException as exc:  # noqa: BLE001 - delivered to the caller, not swallowed
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    outcomes.append((fut, False, exc))
                else:
                    conn.execute("RELEASE op")
                    outcomes.append((fut, True, result))
            conn.execute("COMMIT")
            self.commits += 1
        except BaseException as exc:  # noqa: BLE001 - the commit failed: nobody's write is durable
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            for _fn, fut in batch:
                if fut.running():
                    fut.set_exception(StoreError(f"commit failed: {exc}"))
            return
        for fut, ok, value in outcomes:
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    # reads -------------------------------------------------------------------------------------------
    def _read(self, fn: Callable[[Tx], T]) -> T:
        if self._closed:
            raise StoreError("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        conn.execute("BEGIN")  # one snapshot for the whole read
        try:
            return fn(_Tx(conn))
        finally:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        self._writer.close()
        with self._lock:
            for c in self._readers:
                c.close()
            self._readers.clear()
