"""PostgreSQL backend (psycopg 3): several `hub serve` nodes share one database.

Each operation is one transaction on a connection borrowed from the store's pool (psycopg_pool) for
that operation: a process holds at most `pool_max` connections (hub.toml [postgres]) however many
threads it runs, and an operation that finds none free for `pool_timeout_s` fails with a StoreError
naming the setting (borrowing and returning one costs about 4 us of CPU). Row locks keep the lifecycle
honest across nodes: a transition locks its row (`FOR UPDATE`), and `claim_due`/`sweep` take
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
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import pq
from psycopg import sql as pgsql
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from hub.store.base import STATS_BRANCHES_SQL, Row, Store, StoreError, T, Tx, migrate, utcnow

TYPES = {"ts": "TIMESTAMPTZ", "blob": "BYTEA", "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"}
_MIGRATION_LOCK = 0x4855425F5354  # pg_advisory_xact_lock key: "HUB_ST"
_SHORT_ID_KEY = "messages_short_id_key"  # PostgreSQL's name for the UNIQUE of messages.short_id
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


_SQL: dict[str, str] = {}  # the store's SQL (? placeholders) in psycopg's (%s): converted once a text


def _pg_sql(sql: str) -> str:
    out = _SQL.get(sql)
    if out is None:
        if len(_SQL) > 4096:  # statements with a variable number of rows: keep it bounded
            _SQL.clear()
        out = _SQL[sql] = sql.replace("%", "%%").replace("?", "%s")
    return out


class _Tx:
    """Rows come as psycopg makes them (dict_row): its times are already aware and in UTC, as _setup sets
    every connection's TimeZone to 'UTC' (psycopg then gives datetime.timezone.utc), so no pass over them."""

    def __init__(self, conn: psycopg.Connection[Row], store: Store,
                 pipe: psycopg.Pipeline | None = None) -> None:
        self.conn, self.store, self.pipe = conn, store, pipe
        self.sent = 0  # statements sent since the last wait: a later() read after one costs none
        self._cur: psycopg.Cursor[Row] | None = None  # the writes' cursor: their results are never read

    def _wait(self) -> None:
        self.store.round_trips += 1
        self.sent = 0

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.store.statements += 1
        cur = self.conn.execute(_pg_sql(sql), params)
        if self.pipe is not None:
            self.pipe.sync()  # its count is read: it and the writes queued before it, in one round trip
        self._wait()
        return cur.rowcount

    def write(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.store.statements += 1
        self.sent += 1
        cur = self._cur
        if cur is None:
            cur = self._cur = self.conn.cursor()
        cur.execute(_pg_sql(sql), params)  # pipelined: sent with the next wait

    def later(self, sql: str, params: Sequence[Any] = ()) -> Callable[[], list[Row]]:
        self.store.statements += 1
        self.sent += 1
        cur = self.conn.execute(_pg_sql(sql), params)  # pipelined: read with the next wait
        mark = self.store.round_trips

        def rows() -> list[Row]:
            if self.store.round_trips == mark and self.sent:  # (counted per store: approximate)
                self._wait()
            return cur.fetchall()

        return rows

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self.store.statements += 1
        rows = self.conn.execute(_pg_sql(sql), params).fetchall()
        self._wait()
        return rows

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self.store.statements += 1
        r = self.conn.execute(_pg_sql(sql), params).fetchone()
        self._wait()
        return r


class PostgresStore(Store):
    lock_clause = " FOR UPDATE"
    skip_locked_clause = " FOR UPDATE SKIP LOCKED"
    short_id_clash_fails = True  # retried in _write: no wait for the INSERT's count
    pipelined = True
    stats_sql = STATS_BRANCHES_SQL  # its branches run in parallel; scalar subqueries would run one by one

    def __init__(self, conninfo: str, *, schema: str | None = None, retries: int = 3,
                 pool_min: int = 1, pool_max: int = 10, pool_timeout_s: float = 30.0) -> None:
        if schema is not None and not _SCHEMA_NAME.match(schema):
            raise ValueError(f"schema name must be a lower-case SQL identifier: {schema!r}")
        if not 0 <= pool_min <= pool_max or pool_max < 1:
            raise ValueError(f"postgres.pool_min {pool_min}, pool_max {pool_max}: want 0 <= min <= max >= 1")
        self.conninfo, self.schema, self._retries = conninfo, schema, retries
        self.pool_max, self.pool_timeout_s = pool_max, pool_timeout_s
        # migrated on a connection of its own, before the pool: a server that cannot be reached (or a
        # database that is not there) fails here with libpq's own error, not after the pool's timeout
        with psycopg.connect(conninfo, autocommit=True, row_factory=dict_row) as conn:
            self._setup(conn)
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                if schema:
                    conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(schema)))
                migrate(_Tx(conn, self), TYPES, utcnow())
        self._pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            conninfo, min_size=pool_min, max_size=pool_max, timeout=pool_timeout_s,
            kwargs={"autocommit": True, "row_factory": dict_row}, configure=self._setup,
            name=f"hub-store{'-' + schema if schema else ''}", open=True)

    def _setup(self, conn: psycopg.Connection[Row]) -> None:
        """Each new connection: UTC, and the store's schema first on the search path."""
        conn.execute("SET TIME ZONE 'UTC'")
        if self.schema:
            conn.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(self.schema)))

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Row]]:
        """A connection of the pool for one operation (a transaction, or one autocommit statement)."""
        try:
            conn = self._pool.getconn()
        except PoolTimeout:
            raise StoreError(
                "no PostgreSQL connection came free within postgres.pool_timeout_s = "
                f"{self.pool_timeout_s:g} s: all postgres.pool_max = {self.pool_max} of this process's "
                "connections were busy, or the server could not be reached; raise postgres.pool_max "
                "(hub.toml [postgres]) if the threads doing store work outnumber it") from None
        except PoolClosed:
            raise StoreError("the store is closed") from None
        try:
            yield conn
        finally:
            self._pool.putconn(conn)  # a broken one is replaced by the pool, in the background

    def _write(self, fn: Callable[[Tx], T]) -> T:
        for attempt in range(self._retries + 1):
            try:
                with self._conn() as conn:
                    began = time.perf_counter()  # the commit's time (hub.metrics), not the wait for conn
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
        with self._conn() as conn:
            return self._pipelined(conn, fn)  # one snapshot; BEGIN and COMMIT cost no wait of their own

    def _read_one(self, sql: str, params: Sequence[Any]) -> Row | None:
        with self._conn() as conn:
            return _Tx(conn, self).one(sql, params)  # autocommit: no BEGIN/COMMIT round trips

    def _read_all(self, sql: str, params: Sequence[Any]) -> list[Row]:
        with self._conn() as conn:
            return _Tx(conn, self).all(sql, params)

    def close(self) -> None:
        """Closes the pool's connections; one borrowed now is closed when its operation returns it."""
        self._pool.close()
