"""The PostgreSQL store's connection pool (hub.toml [postgres]), seen from the server's pg_stat_activity.

Each store here names its connections with a fresh application_name (a libpq parameter of the URL), so
the server's count is of that store alone. Skipped when no PostgreSQL answers at $HUB_TEST_PG."""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import psycopg
import pytest

from hub.config import PostgresSection
from hub.store import MessageMeta, Store, StoreError, open_store

pytestmark = pytest.mark.postgres

PG_ADMIN = os.environ.get("HUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def admin() -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN} ({exc.__class__.__name__}): pool tests skipped "
                    "(set HUB_TEST_PG to point at a server)")
    yield conn
    conn.close()


@pytest.fixture
def app(admin: psycopg.Connection) -> Iterator[tuple[str, str]]:
    """(url, application_name): a fresh schema, and a name for this test's connections."""
    schema, name = f"t_{secrets.token_hex(4)}", f"hub_pool_{secrets.token_hex(4)}"
    yield f"{PG_ADMIN}?schema={schema}&application_name={name}", name
    admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _connections(admin: psycopg.Connection, name: str) -> int:
    row = admin.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                        (name,)).fetchone()
    assert row is not None
    return int(row[0])


def _wait_for(admin: psycopg.Connection, name: str, want: int) -> int:
    """The count once it is `want`, or what it is after 10 s (a closed backend leaves the view soon after)."""
    end = time.monotonic() + 10
    while (n := _connections(admin, name)) != want and time.monotonic() < end:
        time.sleep(0.02)
    return n


def _meta() -> MessageMeta:
    return MessageMeta(direction="out", channel="folder", kith_msg_id=f"kith-{secrets.token_hex(6)}",
                       msg_type="DIALOG_NOTAT", sender_her="8141253", receiver_her="79768", gen_date=T0)


def _busy(store: Store, threads: int, per_thread: int, watch: tuple[psycopg.Connection, str]) -> int:
    """`threads` threads storing and reading messages at once; the most connections the server saw."""
    admin, name = watch
    start, errors, most = threading.Barrier(threads + 1), [], 0

    def work() -> None:
        start.wait()
        try:
            for _ in range(per_thread):
                m = store.put_received(b"<MsgHead/>", _meta(), actor="test", now=T0)
                assert store.require(m.id).id == m.id
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    ts = [threading.Thread(target=work) for _ in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    while any(t.is_alive() for t in ts):
        most = max(most, _connections(admin, name))
        time.sleep(0.002)
    for t in ts:
        t.join()
    assert not errors, errors[0]
    return most


def test_many_threads_share_at_most_pool_max_connections(admin: psycopg.Connection,
                                                         app: tuple[str, str]) -> None:
    url, name = app
    n = 3
    store = open_store(url, postgres=PostgresSection(pool_max=n))
    try:
        most = _busy(store, 4 * n, 15, (admin, name))
        assert store.stats()["received"] == 4 * n * 15  # every thread's work done
        assert 1 <= most <= n  # (one connection per thread: 4n)
        assert _connections(admin, name) <= n
    finally:
        store.close()


def test_close_closes_every_connection(admin: psycopg.Connection, app: tuple[str, str]) -> None:
    url, name = app
    store = open_store(url, postgres=PostgresSection(pool_max=4))
    _busy(store, 8, 5, (admin, name))
    assert _connections(admin, name) >= 1
    store.close()
    assert _wait_for(admin, name, 0) == 0
    with pytest.raises(StoreError, match="closed"):
        store.stats()


def test_an_exhausted_pool_is_a_store_error_naming_the_setting(admin: psycopg.Connection,
                                                                app: tuple[str, str]) -> None:
    url, name = app
    store = open_store(url, postgres=PostgresSection(pool_min=1, pool_max=1, pool_timeout_s=0.2))
    schema = url.split("schema=")[1].split("&")[0]
    blocker = psycopg.connect(PG_ADMIN)  # holds a lock the store's one connection will wait for
    try:
        blocker.execute(f"LOCK TABLE {schema}.messages IN ACCESS EXCLUSIVE MODE")
        held = threading.Thread(target=store.stats)  # takes the pool's only connection, then waits
        held.start()
        end = time.monotonic() + 10
        while not admin.execute("SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND "
                                "wait_event_type = 'Lock'", (name,)).fetchone():
            assert time.monotonic() < end, "the store's query never waited for the lock"
            time.sleep(0.01)
        with pytest.raises(StoreError) as exc:
            store.get("nothing")  # no connection free within pool_timeout_s
        assert "postgres.pool_max = 1" in str(exc.value) and "postgres.pool_timeout_s" in str(exc.value)
        blocker.rollback()
        held.join()
        assert store.get("nothing") is None  # the connection came back: the store works again
        assert _connections(admin, name) == 1
    finally:
        blocker.close()
        store.close()
