"""Schema version 3 (issue 17): partial indexes on messages, the migration from a version-2 store on both
backends, and the store's queries planned onto the indexes meant for them."""

from __future__ import annotations

import re
import secrets
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql as pgsql
from test_store import T0, H, _meta, pg_database, store_url  # noqa: F401 - fixtures: SQLite and PostgreSQL

from hub.relay.lifecycle import Event, State
from hub.store import Step, Store, open_store
from hub.store import base as B
from hub.store.postgres import PostgresStore

PARTIAL = {  # index -> what its WHERE must say (SQLite keeps the DDL as written)
    "messages_ebxml": "ebxml_message_id IS NOT NULL",
    "messages_out": "out_message_id IS NOT NULL",
    "messages_kith": "kith_msg_id IS NOT NULL",
    "messages_parent": "parent_id IS NOT NULL",
    "messages_due": B._DUE_STATES_SQL,
    "messages_state": B._OTHER_STATES_SQL,
    "messages_apprec_due": "state = 'awaiting_apprec'",
}


def test_the_two_state_indexes_hold_every_state_once() -> None:
    assert set(B.DUE_STATES) | set(B.OTHER_STATES) == set(State)
    assert not set(B.DUE_STATES) & set(B.OTHER_STATES)
    # the states claim_due, claim_received and sweep look in, and hub.metrics' waiting ones
    from hub.metrics import WAITING

    assert set(WAITING) <= set(B.DUE_STATES)
    named = set(re.findall(r"state = '(\w+)'", B._DUE_SQL + B._TIMEOUT_SQL)) - {"awaiting_apprec"}
    assert named <= {s.value for s in B.DUE_STATES}


def _versions(s: Store) -> list[int]:
    rows = s._read(lambda tx: tx.all("SELECT version FROM hub_schema ORDER BY version"))
    return [r["version"] for r in rows]


def _v2_store(url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A store made and filled by the version-2 schema (MIGRATIONS 1 and 2, the DDL as it shipped):
    a message in each kind of state the indexes split on, with every id column used."""
    monkeypatch.setattr(B, "SCHEMA_VERSION", 2)
    s = open_store(url)
    try:
        ids: dict[str, str] = {}
        ids["received"] = s.put_received(b"<r/>", _meta(), actor="t", now=T0).id
        q = s.put_received(b"<q/>", _meta(), actor="t", now=T0)
        s.transition(q.id, Event.VALIDATED, actor="t", now=T0)
        ids["queued"] = q.id
        a = s.put_received(b"<a/>", _meta(), actor="t", now=T0)
        s.advance(a.id, [Step(Event.VALIDATED), Step(Event.CLAIM, claim=timedelta(minutes=5))],
                  actor="n", now=T0)
        s.mark_sent(a.id, node="n", now=T0, out_message_id="eb-out-ack")
        ids["awaiting_ack"] = a.id
        p = s.put_received(b"<p/>", _meta(), actor="t", now=T0)
        s.advance(p.id, [Step(Event.VALIDATED), Step(Event.CLAIM, claim=timedelta(minutes=5))],
                  actor="n", now=T0)
        s.mark_sent(p.id, node="n", now=T0, out_message_id="eb-out-apprec")
        s.advance(p.id, [Step(Event.ACK), Step(Event.AWAIT_APPREC)], actor="n", now=T0 + H)
        ids["awaiting_apprec"] = p.id
        i = s.put_received(b"<i/>", _meta(direction="in", ebxml_message_id="eb-in"), actor="t", now=T0)
        s.transition(i.id, Event.REJECT, actor="t", now=T0)
        ids["rejected"] = i.id
        ids["child"] = s.resend(i.id, actor="op", now=T0 + H).id
        s.audit("op", "resend", i.id, "by hand", now=T0 + H)
        assert _versions(s) == [1, 2]
    finally:
        s.close()
        monkeypatch.undo()
    return ids


def test_migration_from_version_2_keeps_the_data(store_url: str,  # noqa: F811
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    ids = _v2_store(store_url, monkeypatch)
    s = open_store(store_url)
    try:
        assert _versions(s) == [1, 2, 3]
        for state, mid in ids.items():
            m = s.require(mid)
            assert m.state.value == ("queued" if state == "child" else state), state
            assert s.timeline(mid) and s.blob(mid)
        # every lookup the relay and the operator make still finds its message
        assert s.by_out_message_id("eb-out-ack").id == ids["awaiting_ack"]
        assert s.require("eb-out-apprec").id == ids["awaiting_apprec"]
        assert s.require("eb-in").id == ids["child"]  # the resent copy keeps the meta; the newest wins
        assert s.require(ids["child"]).parent_id == ids["rejected"]
        stats = s.stats()
        assert stats["queued"] == 2 and stats["received"] == 1 and stats["rejected"] == 1, stats
        assert sum(stats.values()) == len(ids)
        listed = {m.id for m in s.list_messages(state=["rejected", "awaiting_apprec"])}
        assert listed == {ids["rejected"], ids["awaiting_apprec"]}
        assert s.oldest(["received", "queued"]) == T0
        assert [e.action for e in s.audit_log()][-1] == "resend"
        # what time decides, read through the new indexes: the ack deadline (12 h), the AppRec's (96 h)
        later = T0 + 100 * H
        swept = {w.message.id: w.events for w in s.sweep(now=later)}
        assert swept[ids["awaiting_apprec"]] == [Event.APPREC_TIMEOUT]
        claimed = {m.id for m in s.claim_due("n", 10, now=later)}
        assert claimed == {ids["queued"], ids["awaiting_ack"], ids["child"]}
        [r] = s.claim_received("n", 10, now=later)
        assert r.id == ids["received"]
        # reopening a version-3 store changes nothing
        s.close()
        s = open_store(store_url)
        assert _versions(s) == [1, 2, 3]
    finally:
        s.close()


def _sqlite_indexes(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as c:
        return dict(c.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                              "AND tbl_name = 'messages' AND sql IS NOT NULL"))


def test_sqlite_indexes_are_partial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'hub.sqlite'}"
    _v2_store(url, monkeypatch)
    assert "WHERE" not in _sqlite_indexes(tmp_path / "hub.sqlite")["messages_out"]
    open_store(url).close()
    got = _sqlite_indexes(tmp_path / "hub.sqlite")
    for name, where in PARTIAL.items():
        assert got[name].endswith(f"WHERE {where}"), got[name]
    assert set(got) == set(PARTIAL) | {"messages_receiver", "messages_sender", "messages_created"}


def _queries(stats_sql: str) -> dict[str, tuple[str, list[Any], tuple[str, ...]]]:
    """The store's queries on messages that an index must serve -> (SQL, parameters, the index);
    stats_sql: the backend's Store.stats_sql."""
    t = T0
    return {
        "claim_due look": (f"SELECT id FROM messages WHERE {B._DUE_SQL} LIMIT 1",
                           [t] * B._DUE_SQL.count("?"), ("messages_due",)),
        "sweep look": (f"SELECT id FROM messages WHERE {B._TIMEOUT_SQL} LIMIT 1",
                       [t] * B._TIMEOUT_SQL.count("?"), ("messages_due", "messages_apprec_due")),
        "claim_received": ("SELECT id FROM messages WHERE state = 'received' AND (lease_until IS NULL "
                           "OR lease_until <= ?) LIMIT 1", [t], ("messages_due",)),
        "by_out_message_id": ("SELECT * FROM messages WHERE out_message_id = ?", ["x"], ("messages_out",)),
        "get by other id": (B._BY_OTHER_ID_SQL, ["x", "x", "x"],
                            ("messages_ebxml", "messages_out", "messages_kith")),
        "find_by_kith_msg_id": ("SELECT * FROM messages WHERE kith_msg_id = ?", ["x"], ("messages_kith",)),
        "children": ("SELECT * FROM messages WHERE parent_id = ?", ["x"], ("messages_parent",)),
        "oldest waiting": (f"SELECT created_at FROM messages WHERE {B._state_in(B.DUE_STATES)} "
                           "ORDER BY created_at LIMIT 1", [], ("messages_due",)),
        "list by state": (f"SELECT * FROM messages WHERE {B._state_in(['undelivered', 'failed'])} "
                          "ORDER BY created_at DESC, id DESC LIMIT 50", [], ("messages_state",)),
        "stats": (stats_sql, [], ("messages_due", "messages_state")),
    }


@pytest.mark.parametrize("analyzed", [False, True])
def test_sqlite_queries_use_the_partial_indexes(tmp_path: Path, analyzed: bool) -> None:
    path = tmp_path / "hub.sqlite"
    s = open_store(f"sqlite:///{path}")
    try:
        mid = s.put_received(b"<x/>", _meta(), actor="t", now=T0).id
        if analyzed:
            # what ANALYZE (or an operator's PRAGMA optimize) tells SQLite of a big store, most of it
            # completed: an average per state of a full index on state made it scan messages instead
            with sqlite3.connect(path) as c:
                c.execute(
                    "INSERT INTO messages SELECT printf('%032d', value), printf('s%09d', value), direction, "
                    "channel, NULL, NULL, conversation_id, cpa_id, service, action, printf('k%d', value), "
                    "msg_type, family, version, gen_date, sender_her, receiver_her, 'completed', attempts, "
                    "max_retries, retry_interval_s, next_attempt_at, lease_owner, lease_until, expires_at, "
                    "apprec_due_at, apprec_status, last_error_code, last_error_text, last_error_permanent, "
                    "NULL, size, sha256, created_at, updated_at "
                    "FROM messages, (WITH RECURSIVE n(value) AS (SELECT 1 UNION ALL SELECT value + 1 FROM n "
                    "WHERE value < 3000) SELECT value FROM n) WHERE id = ?", (mid,))
                c.execute("ANALYZE")
        for what, (sql, params, indexes) in _queries(s.stats_sql).items():
            if analyzed and what == "list by state":
                continue  # stat1's average per state (3001 here) makes SQLite page messages_created instead
            plan = " | ".join(r["detail"] for r in s._read(lambda tx, q=sql, p=params: tx.all(
                "EXPLAIN QUERY PLAN " + q, p)))
            assert all(f"INDEX {i} " in plan for i in indexes), (what, plan)
            assert not re.search(r"\bSCAN messages\b(?! USING COVERING)", plan), (what, plan)
    finally:
        s.close()


def test_sqlite_stats_counts_the_total_from_pages(tmp_path: Path) -> None:
    """stats() on SQLite: the total by the Count opcode, which adds up an index's pages without reading
    its entries (1M messages: 4 ms; reading the state indexes' entries took 57 ms), and every other state
    by a search of its partial index. A UNION ALL branch `SELECT COUNT(*) FROM messages` loses Count."""
    s = open_store(f"sqlite:///{tmp_path / 'hub.sqlite'}")
    try:
        ops = [r["opcode"] for r in s._read(lambda tx: tx.all("EXPLAIN " + s.stats_sql))]
        assert ops.count("Count") == 1, ops
        plan = [r["detail"] for r in s._read(lambda tx: tx.all("EXPLAIN QUERY PLAN " + s.stats_sql))]
        reads = [d for d in plan if " messages " in f"{d} "]
        assert sum(d.startswith("SEARCH messages USING COVERING INDEX ") and d.endswith("(state=?)")
                   for d in reads) == len(State) - 1, plan
        assert len(reads) == len(State), plan
    finally:
        s.close()


@pytest.mark.postgres
def test_postgres_queries_can_use_the_partial_indexes(pg_database: str) -> None:  # noqa: F811
    """PostgreSQL picks by cost (a small table is read whole), so each index is shown usable: with
    sequential scans off and, in a transaction rolled back, every other index of messages dropped."""
    schema = f"t_{secrets.token_hex(4)}"
    open_store(f"{pg_database}?schema={schema}").close()
    others = {*PARTIAL, "messages_created", "messages_receiver", "messages_sender"}
    with psycopg.connect(pg_database, autocommit=True) as c:
        c.execute(pgsql.SQL("SET search_path TO {}").format(pgsql.Identifier(schema)))
        got = dict(c.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s "
                             "AND tablename = 'messages'", (schema,)).fetchall())
        for name in PARTIAL:
            assert " WHERE " in got[name], got[name]
        for what, (sql, params, indexes) in _queries(PostgresStore.stats_sql).items():
            with c.transaction(force_rollback=True):
                for other in others - set(indexes):
                    c.execute(pgsql.SQL("DROP INDEX {}").format(pgsql.Identifier(other)))
                c.execute("SET LOCAL enable_seqscan = off")
                rows = c.execute("EXPLAIN " + sql.replace("?", "%s"), params).fetchall()
                plan = " | ".join(r[0] for r in rows)
                assert all(i in plan for i in indexes) and "Seq Scan" not in plan, (what, plan)
        c.execute(pgsql.SQL("DROP SCHEMA {} CASCADE").format(pgsql.Identifier(schema)))
