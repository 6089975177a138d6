"""The store counts the SQL statements it runs (benchmarks report them per relayed message)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import psycopg
import pytest

from hub.relay.lifecycle import Event
from hub.store import open_store

PG_ADMIN = os.environ.get("HUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    else:
        try:
            psycopg.connect(PG_ADMIN, connect_timeout=3).close()
        except psycopg.OperationalError as exc:
            pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN}: {exc.__class__.__name__}")
        s = open_store(f"{PG_ADMIN}?schema=t_{secrets.token_hex(4)}")
    yield s
    if request.param == "postgres":
        s._write(lambda tx: tx.execute(f"DROP SCHEMA {s.schema} CASCADE"))
    s.close()


def test_statements_are_counted_per_operation(store):
    before = store.statements
    m = store.put_received(b"<MsgHead/>")
    # the message row, its original, its first timeline entry: one statement each
    assert store.statements - before == 3
    before = store.statements
    store.transition(m.id, Event.VALIDATED)
    after_write = store.statements - before
    # read the row under lock (SQLite's writer has it as the intake's commit left it: no read), update it,
    # add the event
    assert after_write >= (2 if store.__class__.__name__ == "SQLiteStore" else 3)
    before = store.statements
    assert store.get(m.short_id) is not None
    assert store.statements - before == 1
