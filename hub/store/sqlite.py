"""SQLite backend: one file, WAL, group commit through a single writer thread.

Durability with throughput: every write (intake, transition, claim, seen record, audit) is a small
function queued to ONE writer thread. The thread takes whatever has queued up (up to `max_batch`), runs
each function inside one `BEGIN IMMEDIATE` transaction, commits once (synchronous=FULL: the commit is
fsynced) and only then resolves the callers' futures. So many messages share one fsync, and no caller,
sync or async, hears "stored" before its data is on disk. A failing function raises in its own caller
only; the rest of the batch commits. Most failures (illegal transition, lost lease, unknown message)
happen before the function writes anything, so there is nothing to undo; one that fails after writing
has the whole transaction rolled back and the batch run again without it. That spares a SAVEPOINT and
a RELEASE per write, each a statement the writer thread runs with the GIL dropped and retaken.

Several processes on one file (a node's worker processes, `hub queue` beside `hub serve`) take turns
at writing through an flock on `<file>-lock` held around each transaction: a waiting writer wakes the
moment the other commits, where SQLite's own busy handler would poll, sleeping up to 100 ms a time.

The writer keeps the messages rows its own commits left, so that a write need not first read the row
it changes (_RowCache: exact, and forgotten when anything else may have changed them).

Reads run on per-thread connections (WAL readers do not block the writer). The file, and with it the
-wal and -shm files SQLite derives from it, is created with mode 0600: it holds patient data.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
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


_last_time: tuple[datetime | None, str] = (None, "")  # the time written last, and its text


def _param(v: datetime) -> str:
    global _last_time
    last = _last_time  # one tuple, replaced whole: safe to read from any thread
    if v is last[0]:
        return last[1]  # an operation writes its one `now` several times (row, events, blobs)
    if v.tzinfo is UTC:
        # the same text as strftime(_FMT) for years 1000-9999, at a tenth of strftime's cost: the UTC
        # times the store makes itself need no conversion, only the "+00:00" cut off
        text = v.isoformat(" ", "microseconds")[:26]
    elif v.tzinfo is None:
        raise ValueError(f"naive datetime given to the store: {v!r}")
    else:
        text = v.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    _last_time = (v, text)
    return text


def _params(params: Sequence[Any]) -> list[Any]:
    # a statement has up to ~40 parameters, few of them times: a type test each, a call only for those
    return [_param(p) if isinstance(p, datetime) else p for p in params]


def _rows(cur: sqlite3.Cursor, rows: list[tuple[Any, ...]]) -> list[Row]:
    """Rows as dicts by column name, times read back as aware datetimes (the column names looked at
    once per statement, not per row)."""
    if not rows:
        return []
    names = [d[0] for d in cur.description]
    times = [(i, n) for i, n in enumerate(names) if n in _TIME_COLUMNS]
    out: list[Row] = []
    for r in rows:
        d: Row = dict(zip(names, r, strict=True))
        for i, n in times:
            v = r[i]
            if isinstance(v, str):
                # fromisoformat reads _FMT in C; strptime took ~30 us a column, a third of a transition
                d[n] = datetime.fromisoformat(v).replace(tzinfo=UTC)
        out.append(d)
    return out


# The writer's copy of the messages rows its own commits left (_RowCache): Store._locked reads a row by
# its id at the start of nearly every write (3 of a relayed message's 4 writes at the sending relay); the
# copy answers that read when nothing else has written the file since (PRAGMA data_version, asked once
# per transaction). Writes keep it exact: an UPDATE of columns by id and an INSERT of a row, in the shapes
# Store writes them, are applied to it; any other write to messages, and any rollback, forgets it all.
_ROW_BY_ID = "SELECT * FROM messages WHERE id = ?"  # Store._locked's read (SQLite has no lock clause)
_UPDATE_BY_ID = re.compile(r"UPDATE messages SET ((?:\w+ = \?, )*\w+ = \?) WHERE id = \?")
_INSERT_ROW = re.compile(
    r"INSERT INTO messages \(([\w, ]+)\) VALUES \((?:\?, )*\?\)(?: ON CONFLICT \(short_id\) DO NOTHING)?")
_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "CREATE", "DROP", "ALTER", "WITH")
_OTHER, _UPDATE, _INSERT, _UNKNOWN = 0, 1, 2, 3
_TEXT, _TIME, _INT = 1, 2, 3
_shapes: dict[str, tuple[int, tuple[str, ...]]] = {}  # SQL text -> what it does to messages rows


def _shape(sql: str) -> tuple[int, tuple[str, ...]]:
    known = _shapes.get(sql)
    if known is not None:
        return known
    if not sql.lstrip().upper().startswith(_WRITES) or "messages" not in sql.lower():
        known = (_OTHER, ())  # a read, or a write to another table (no trigger or cascade reaches messages)
    elif m := _UPDATE_BY_ID.fullmatch(sql):
        known = (_UPDATE, tuple(a.split(" = ")[0] for a in m.group(1).split(", ")))
    elif m := _INSERT_ROW.fullmatch(sql):
        known = (_INSERT, tuple(n.strip() for n in m.group(1).split(",")))
    else:
        known = (_UNKNOWN, ())
    if len(_shapes) > 4096:  # statements with a variable number of parameters: keep it bounded
        _shapes.clear()
    _shapes[sql] = known
    return known


class _RowCache:
    """messages rows by id as SELECT * would read them now; the writer thread's alone."""

    LIMIT = 1024  # rows of messages in flight; past it, all are forgotten (a read brings one back)

    def __init__(self, columns: dict[str, tuple[str, object]]) -> None:
        self.columns = columns  # name -> (declared type, default)
        # how SELECT * gives a column back: text, a time (text _rows parses), an integer (else: not kept)
        self.kinds = {n: (_TIME if n in _TIME_COLUMNS else _TEXT) if t == "TEXT" else _INT if t == "INTEGER"
                      else 0 for n, (t, _default) in columns.items()}
        self.rows: dict[str, Row] = {}
        self.data_version: int | None = None

    def _as_read(self, names: Sequence[str], params: Sequence[Any]) -> Row | None:
        """The values as SQLite gives them back, or None when that is not certain (a type the column's
        affinity would convert, text in a time column, a column not known)."""
        kinds = self.kinds
        out: Row = dict(zip(names, params, strict=True))
        for n, v in out.items():
            k = kinds.get(n)
            t = type(v)
            if v is None:
                if k is None:
                    return None
            elif t is str:
                if k != _TEXT:
                    return None
            elif t is int:
                if k != _INT:
                    return None
            elif k == _TIME and isinstance(v, datetime):
                out[n] = v.astimezone(UTC)  # stored to the microsecond, read back in UTC
            elif k == _TEXT and isinstance(v, str):
                out[n] = str.__str__(v)  # a StrEnum member: its value is what is stored
            elif k == _INT and t is bool:
                out[n] = int(v)
            else:
                return None
        return out

    def wrote(self, sql: str, params: Sequence[Any], changed: int) -> None:
        kind, names = _shape(sql)
        if kind == _OTHER:
            return
        if kind == _UPDATE:
            mid = params[-1]
            row = self.rows.get(mid)
            if row is not None and changed:
                vals = self._as_read(names, params[:-1])
                if vals is None:
                    del self.rows[mid]
                else:
                    row.update(vals)
        elif kind == _INSERT:
            if changed != 1:
                return
            vals = self._as_read(names, params)
            if vals is not None and all(c[1] is None for n, c in self.columns.items() if n not in vals):
                self.keep({**dict.fromkeys(self.columns), **vals})
        else:
            self.rows.clear()

    def keep(self, row: Row) -> None:
        if len(self.rows) >= self.LIMIT:
            self.rows.clear()
        self.rows[row["id"]] = row


class _Tx:
    def __init__(self, conn: sqlite3.Connection, store: Store, cache: _RowCache | None = None) -> None:
        self.conn, self.store, self.cache = conn, store, cache

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.store.statements += 1
        n: int = self.conn.execute(sql, _params(params)).rowcount
        if self.cache is not None:
            self.cache.wrote(sql, params, n)
        return n

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.execute(sql, params)  # nothing to send later here; the row copy follows it as any write

    def later(self, sql: str, params: Sequence[Any] = ()) -> Callable[[], list[Row]]:
        rows = self.all(sql, params)
        return lambda: rows

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.store.statements += 1
        cur = self.conn.execute(sql, _params(params))
        if self.cache is not None and _shape(sql)[0] != _OTHER:
            self.cache.rows.clear()  # a write with RETURNING: not followed
        return _rows(cur, cur.fetchall())

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        cache = self.cache
        if cache is not None and sql == _ROW_BY_ID:
            row = cache.rows.get(params[0])
            if row is not None:
                return dict(row)  # the caller's to change
        self.store.statements += 1
        cur = self.conn.execute(sql, _params(params))
        r = cur.fetchone()
        out = None if r is None else _rows(cur, [r])[0]
        if cache is not None:
            if sql == _ROW_BY_ID:
                if out is not None:
                    cache.keep(dict(out))
            elif _shape(sql)[0] != _OTHER:
                cache.rows.clear()
        return out


_STOP = object()


class _Call:
    """A write queued to the writer thread, and how its caller hears that it committed: a lock held until
    then (a thread blocks on it: cheaper than a concurrent.futures.Future's condition, which the caller
    then also had to wrap for asyncio), or an asyncio future settled on its loop."""

    __slots__ = ("fn", "value", "error", "done", "loop", "afut")

    def __init__(self, fn: Callable[[Tx], Any], loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.fn = fn
        self.value: Any = None
        self.error: BaseException | None = None
        self.loop = loop
        if loop is None:
            self.done: threading.Lock | None = threading.Lock()
            self.done.acquire()
            self.afut: asyncio.Future[Any] | None = None
        else:
            self.done = None
            self.afut = loop.create_future()

    def cancelled(self) -> bool:
        # an awaiting caller that gave up before its write began: not run (as a cancelled Future was not)
        return self.afut is not None and self.afut.cancelled()

    def settle(self, value: Any, error: BaseException | None) -> None:  # noqa: ANN401
        """The writer thread: the transaction committed (error None) or this write failed."""
        self.value, self.error = value, error
        if self.done is not None:
            self.done.release()
            return
        assert self.loop is not None
        try:
            self.loop.call_soon_threadsafe(_settle_future, self.afut, value, error)
        except RuntimeError:
            pass  # the caller's loop is closed: nobody is waiting any more

    def result(self, timeout: float | None = None) -> Any:  # noqa: ANN401
        """Wait (a thread's caller) for the commit; the value, or the write's exception raised."""
        assert self.done is not None
        if not self.done.acquire(timeout=-1 if timeout is None else timeout):
            raise TimeoutError("the store's writer has not committed this write yet")
        self.done.release()  # a second result() returns at once
        if self.error is not None:
            raise self.error
        return self.value


def _settle_future(fut: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:  # noqa: ANN401
    if fut.done():
        return  # cancelled meanwhile
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(value)


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
        # 0600 like the database: its name is all it holds, but it sits beside patient data
        self._lockfd = os.open(f"{self.path}-lock", os.O_CREAT | os.O_RDWR, 0o600)
        self._writer = self._connect()
        self._writer.execute("PRAGMA journal_mode=WAL")
        self._writer.execute("PRAGMA synchronous=FULL")
        self._writer.execute("BEGIN IMMEDIATE")  # also serialises two processes opening at once
        try:
            migrate(_Tx(self._writer, self), TYPES, utcnow())
            self._writer.execute("COMMIT")
        except BaseException:
            self._writer.execute("ROLLBACK")
            self._writer.close()
            os.close(self._lockfd)
            raise
        self._cache = _RowCache({r[1]: (str(r[2]).upper(), r[4]) for r in
                                 self._writer.execute("PRAGMA table_info(messages)").fetchall()})
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
        conn.execute(f"PRAGMA busy_timeout={int(self._busy)}")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    # writes ------------------------------------------------------------------------------------------
    def _submit(self, fn: Callable[[Tx], T], loop: asyncio.AbstractEventLoop | None = None) -> _Call:
        call = _Call(fn, loop)
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            self._queue.put(call)
        return call

    def _write(self, fn: Callable[[Tx], T]) -> T:
        return self._submit(fn).result()  # type: ignore[no-any-return]

    async def _write_async(self, fn: Callable[[Tx], T]) -> T:
        call = self._submit(fn, asyncio.get_running_loop())
        assert call.afut is not None
        return await call.afut  # type: ignore[no-any-return]

    def _write_many(self, ops: Sequence[Callable[[Tx], T]]) -> list[T | Exception]:
        # queued together, so the writer takes them into one transaction and one fsync
        calls = [self._submit(op) for op in ops]
        out: list[T | Exception] = []
        for c in calls:
            try:
                out.append(c.result())
            except Exception as exc:  # noqa: BLE001 - the caller's, in the message's place
                out.append(exc)
        return out

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

    def _run_batch(self, batch: list[_Call]) -> None:
        conn, cache = self._writer, self._cache
        tx = _Tx(conn, self, cache)
        todo = [c for c in batch if not c.cancelled()]
        failed: dict[int, BaseException] = {}
        while True:
            results: dict[int, Any] = {}
            again = False
            fcntl.flock(self._lockfd, fcntl.LOCK_EX)  # other processes' writers: see the module's doc
            try:
                began = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                version = conn.execute("PRAGMA data_version").fetchone()[0]
                if version != cache.data_version:  # another connection committed: our copy may be stale
                    cache.rows.clear()
                    cache.data_version = version
                for i, call in enumerate(todo):
                    if i in failed:
                        continue
                    changes = conn.total_changes
                    try:
                        results[i] = call.fn(tx)
                    except BaseException as exc:  # noqa: BLE001 - delivered to its caller, not swallowed
                        if not conn.in_transaction:
                            raise  # SQLite ended the transaction (disk full, I/O error): nothing commits
                        failed[i] = exc
                        if conn.total_changes != changes:
                            # it wrote before failing: undo everything, run the others again without it
                            cache.rows.clear()
                            conn.execute("ROLLBACK")
                            again = True
                            break
                if not again:
                    conn.execute("COMMIT")
                    self.commits += 1
                    self._committed(time.perf_counter() - began)
            except BaseException as exc:  # noqa: BLE001 - the commit failed: nobody's write is durable
                cache.rows.clear()
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                for call in todo:
                    call.settle(None, StoreError(f"commit failed: {exc}"))
                return
            finally:
                fcntl.flock(self._lockfd, fcntl.LOCK_UN)
            if not again:
                break
        # only now, after COMMIT returned (fsynced), may a caller hear that its write is stored
        for i, call in enumerate(todo):
            if i in failed:
                call.settle(None, failed[i])
            else:
                call.settle(results[i], None)

    # reads -------------------------------------------------------------------------------------------
    def _reader(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            conn.execute("PRAGMA query_only=ON")
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    def _read(self, fn: Callable[[Tx], T]) -> T:
        conn = self._reader()
        conn.execute("BEGIN")  # one snapshot for the whole read
        try:
            return fn(_Tx(conn, self))
        finally:
            conn.execute("COMMIT")

    def _read_one(self, sql: str, params: Sequence[Any]) -> Row | None:
        return _Tx(self._reader(), self).one(sql, params)  # autocommit: the statement is its own snapshot

    def _read_all(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return _Tx(self._reader(), self).all(sql, params)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        self._writer.close()
        os.close(self._lockfd)
        with self._lock:
            for c in self._readers:
                c.close()
            self._readers.clear()
