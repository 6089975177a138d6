"""PostgreSQL backend (psycopg 3): several `hub serve` nodes share one database.

Each calling thread has its own connection; each operation is one transaction. Row locks keep the
lifecycle honest across nodes: a transition locks its row (`FOR UPDATE`), and `claim_due`/`sweep` take
due rows with `FOR UPDATE SKIP LOCKED`, so two nodes never claim the same message and never wait for
each other. A claim is a lease; a crashed node's claims come back when it expires.

Durability is PostgreSQL's own: a commit returns after the WAL is flushed, and concurrent commits share
that flush (its group commit), so no batching is needed here.

Round trips: a transaction runs in pipeline mode. BEGIN goes out with the first statement, a write
whose outcome is not read (`Tx.write`) waits for nothing, and the COMMIT goes out with the writes still
queued: an operation waits once per statement whose answer it reads, plus once for the commit. Under
load each wait costs more than the statement (the server process and then the calling thread must be
scheduled again, and the thread must get the GIL back): a transition of the relay was 5-8 round trips.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import pq
from psycopg import sql as pgsql
from psycopg.rows import dict_row

from hub.store.base import Row, Store, StoreError, T, Tx, migrate, utcnow

TYPES = {"ts": "TIMESTAMPTZ", "blob": "BYTEA", "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"}
_MIGRATION_LOCK = 0x4855425F5354  # pg_advisory_xact_lock key: "HUB_ST"
_SHORT_ID_KEY = "messages_short_id_key"  # PostgreSQL's name for the UNIQUE of messages.short_id
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _utc(v: Any) -> Any:  # noqa: ANN401
    return v.astimezone(UTC) if isinstance(v, datetime) else v


class _Tx:
    def __init__(self, conn: psycopg.Connection[Row], store: Store,
                 pipe: psycopg.Pipeline | None = None) -> None:
        self.conn, self.store, self.pipe = conn, store, pipe
        self.sent = 0  # statements sent since the last wait: a later() read after one costs none

    def _wait(self) -> None:
        self.store.round_trips += 1
        self.sent = 0

    @staticmethod
    def _sql(sql: str) -> str:
        return sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.store.statements += 1
        cur = self.conn.execute(self._sql(sql), list(params))
        if self.pipe is not None:
            self.pipe.sync()  # its count is read: it and the writes queued before it, in one round trip
        self._wait()
        return cur.rowcount

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.store.statements += 1
        self.sent += 1
        self.conn.execute(self._sql(sql), list(params))  # pipelined: sent with the next wait

    def later(self, sql: str, params: Sequence[Any] = ()) -> Callable[[], list[Row]]:
        self.store.statements += 1
        self.sent += 1
        cur = self.conn.execute(self._sql(sql), list(params))  # pipelined: read with the next wait
        mark = self.store.round_trips

        def rows() -> list[Row]:
            if self.store.round_trips == mark and self.sent:  # (counted per store: approximate)
                self._wait()
            return [{k: _utc(v) for k, v in r.items()} for r in cur.fetchall()]

        return rows

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.store.statements += 1
        rows = self.conn.execute(self._sql(sql), list(params)).fetchall()
        self._wait()
        return [{k: _utc(v) for k, v in r.items()} for r in rows]

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self.store.statements += 1
        r = self.conn.execute(self._sql(sql), list(params)).fetchone()
        self._wait()
        return None if r is None else {k: _utc(v) for k, v in r.items()}


class PostgresStore(Store):
    lock_clause = " FOR UPDATE"
    skip_locked_clause = " FOR UPDATE SKIP LOCKED"
    short_id_clash_fails = True  # retried in _write: no wait for the INSERT's count
    pipelined = True

    def __init__(self, conninfo: str, *, schema: str | None = None, retries: int = 3) -> None:
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema name must be a lower-case SQL identifier: {schema!r}")
        self.conninfo, self.schema, self._retries = conninfo, schema, retries
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[psycopg.Connection[Row]] = []
        self._closed = False
        conn = self._conn()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            if schema:
                conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(schema)))
            migrate(_Tx(conn, self), TYPES, utcnow())

    def _conn(self) -> psycopg.Connection[Row]:
        if self._closed:
            raise StoreError("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed:
            return conn
        conn = psycopg.connect(self.conninfo, autocommit=True, row_factory=dict_row)
        conn.execute("SET TIME ZONE 'UTC'")
        if self.schema:
            conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(self.schema)))
        self._local.conn = conn
        with self._lock:
            self._conns.append(conn)
        return conn

    def _write(self, fn: Callable[[Tx], T]) -> T:
        for attempt in range(self._retries + 1):
            conn = self._conn()
            began = time.perf_counter()
            try:
                out = self._pipelined(conn, fn)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
                if attempt == self._retries:
                    raise
                continue
            except psycopg.errors.UniqueViolation as exc:
                # a new message's short id was taken (short_id_clash_fails): run it again, new ids drawn
                if exc.diag.constraint_name != _SHORT_ID_KEY or attempt == self._retries:
                    raise
                continue
            self._committed(time.perf_counter() - began)
            return out
        raise AssertionError("unreachable")

    def _pipelined(self, conn: psycopg.Connection[Row], fn: Callable[[Tx], T]) -> T:
        """`fn` in one transaction, in pipeline mode (see the module's doc); committed on return.

        The transaction is opened and closed by hand (the connection is in autocommit mode):
        psycopg's transaction() would wait for its BEGIN and its COMMIT each on its own."""
        try:
            with conn.pipeline() as pipe:
                conn.execute("BEGIN")
                out = fn(_Tx(conn, self, pipe))
                conn.execute("COMMIT")
            # leaving the pipeline sent what was queued, the COMMIT last, and waited for all of it
            self.round_trips += 1
        except BaseException:
            # fn raised (nothing committed: the writes it queued ran at the pipeline's exit, inside the
            # open transaction) or a statement failed: end the transaction before the next one
            if not conn.closed and conn.pgconn.transaction_status != pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise
        return out

    async def _write_async(self, fn: Callable[[Tx], T]) -> T:
        return await asyncio.to_thread(self._write, fn)

    def _read(self, fn: Callable[[Tx], T]) -> T:
        return self._pipelined(self._conn(), fn)  # one snapshot; BEGIN and COMMIT cost no wait of their own

    def _read_one(self, sql: str, params: Sequence[Any]) -> Row | None:
        return _Tx(self._conn(), self).one(sql, params)  # autocommit: no BEGIN/COMMIT round trips

    def _read_all(self, sql: str, params: Sequence[Any]) -> list[Row]:
        return _Tx(self._conn(), self).all(sql, params)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for c in self._conns:
                c.close()
            self._conns.clear()
