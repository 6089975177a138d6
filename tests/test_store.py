"""The store, the same suite against SQLite files and a real PostgreSQL (skipped when none is reachable)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from hub.relay.lifecycle import Event, IllegalTransition, State
from hub.store import (
    PAYLOAD,
    ErrorInfo,
    LeaseLost,
    MessageMeta,
    NotFound,
    Step,
    Store,
    open_store,
)

PG_ADMIN = os.environ.get("HUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
H = timedelta(hours=1)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throwaway database for this test session, dropped at the end."""
    try:
        admin = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN} ({exc.__class__.__name__}): store tests on "
                    "PostgreSQL skipped (set HUB_TEST_PG to point at a server)")
    name = f"hub_test_{secrets.token_hex(4)}"
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hub.sqlite'}"
    db = request.getfixturevalue("pg_database")
    return f"{db}?schema=t_{secrets.token_hex(4)}"  # a fresh schema per test


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def _meta(**kw: object) -> MessageMeta:
    base: dict[str, object] = dict(
        direction="out", channel="folder", kith_msg_id=f"kith-{secrets.token_hex(6)}",
        msg_type="DIALOG_NOTAT", sender_her="8141253", receiver_her="79768", gen_date=T0,
    )
    base.update(kw)
    return MessageMeta(**base)  # type: ignore[arg-type]


def _queued(store: Store, **kw: object) -> str:
    m = store.put_received(b"<MsgHead/>", _meta(**kw), actor="test", now=T0)
    store.transition(m.id, Event.VALIDATED, actor="test", now=T0)
    return m.id


def test_migration_is_idempotent(store_url: str) -> None:
    a = open_store(store_url)
    m = a.put_received(b"x", now=T0)
    a.close()
    b = open_store(store_url)  # reopening neither fails nor loses data
    assert b.require(m.short_id).id == m.id
    versions = b._read(lambda tx: tx.all("SELECT version FROM hub_schema"))
    assert [r["version"] for r in versions] == [1, 2, 3]
    b.close()


def test_original_bytes_kept_exactly(store: Store) -> None:
    raw = b"\xef\xbb\xbf<?xml version='1.0' encoding='ISO-8859-1'?>\r\n<a>\xe6\xf8\xe5\x00</a>\r\n"
    m = store.put_received(raw, _meta(), actor="smtp:relay", now=T0)
    assert m.state is State.RECEIVED and m.size == len(raw) and m.sha256 == hashlib.sha256(raw).hexdigest()
    assert store.blob(m.short_id) == raw
    assert len(m.short_id) == 10 and len(m.id) == 36
    with pytest.raises(ValueError, match="written once"):
        store.put_artifact(m.id, "original", b"changed")
    store.put_artifact(m.id, "outgoing", b"cms-1")
    store.put_artifact(m.id, "outgoing", b"cms-2")
    assert store.blob(m.id, "outgoing") == b"cms-2"
    assert store.blob_kinds(m.id) == ["original", "outgoing"]
    assert store.blob(m.id) == raw
    with pytest.raises(TypeError):
        store.put_received("text is not bytes")  # type: ignore[arg-type]


def test_get_by_every_id(store: Store) -> None:
    m = store.put_received(b"x", _meta(ebxml_message_id="eb-1", kith_msg_id="k-1"), now=T0)
    store.update_meta(m.id, out_message_id="eb-out-1")
    for ref in (m.id, m.short_id, m.short_id.upper(), "eb-1", "eb-out-1", "k-1"):
        got = store.get(ref)
        assert got is not None and got.id == m.id, ref
    assert store.get("nope") is None
    with pytest.raises(NotFound):
        store.require("nope")
    with pytest.raises(NotFound):
        store.transition("nope", Event.VALIDATED)


def test_full_lifecycle_and_timeline(store: Store) -> None:
    mid = _queued(store)
    [m] = store.claim_due("node-a", 10, now=T0)
    assert (m.id, m.state, m.attempts, m.lease_owner) == (mid, State.SENDING, 1, "node-a")
    m = store.mark_sent(mid, node="node-a", now=T0, out_message_id="eb-out")
    assert m.state is State.AWAITING_ACK and m.next_attempt_at == T0 + timedelta(hours=12)
    assert m.lease_owner is None
    store.transition("eb-out", Event.ACK, actor="smtp", now=T0 + H)
    store.transition(mid, Event.AWAIT_APPREC, now=T0 + H)
    m = store.transition(mid, Event.APPREC, actor="relay", reason="AppRec OK", now=T0 + 2 * H,
                         updates={"apprec_status": "1"})
    assert (m.state, m.apprec_status, m.next_attempt_at) == (State.COMPLETED, "1", None)
    assert store.require(mid) == m
    tl = store.timeline(m.short_id)
    assert [(e.event, e.from_state, e.to_state) for e in tl] == [
        ("accept", None, "received"), ("validated", "received", "queued"), ("claim", "queued", "sending"),
        ("sent", "sending", "awaiting_ack"), ("ack", "awaiting_ack", "delivered"),
        ("await_apprec", "delivered", "awaiting_apprec"), ("apprec", "awaiting_apprec", "completed"),
    ]
    assert tl[-1].reason == "AppRec OK" and tl[-1].actor == "relay" and tl[-1].at == T0 + 2 * H
    assert tl[2].actor == "node-a"


def test_illegal_transition_changes_nothing(store: Store) -> None:
    m = store.put_received(b"x", now=T0)
    before = store.timeline(m.id)
    with pytest.raises(IllegalTransition, match=f"message {m.short_id}: event 'ack' is not allowed in state"):
        store.transition(m.id, Event.ACK)
    with pytest.raises(ValueError, match="cannot set"):
        store.transition(m.id, Event.VALIDATED, updates={"state": "completed"})
    with pytest.raises(ValueError, match="not a meta field"):
        store.update_meta(m.id, state="completed")
    assert store.require(m.id).state is State.RECEIVED
    assert store.timeline(m.id) == before


def test_advance_writes_steps_artefacts_and_seen_record_in_one_commit_or_none(store: Store) -> None:
    m = store.put_received(b"<envelope/>", now=T0)
    # an illegal second step: nothing of the call is written, neither the first step nor the seen record
    with pytest.raises(IllegalTransition):
        store.advance(m.id, [Step(Event.VALIDATED, "ok", artifacts={PAYLOAD: b"<doc/>"}), Step(Event.ACK)],
                      seen=("eb-1", "d1", b"ack-1"), now=T0)
    assert store.require(m.id).state is State.RECEIVED
    assert store.blob(m.id, PAYLOAD) is None and store.seen_get("eb-1") is None
    ms = store.advance(m.id, [Step(Event.VALIDATED, "ok", artifacts={PAYLOAD: b"<doc/>"}),
                              Step(Event.CLAIM, claim=H)],
                       actor="node-a", seen=("eb-1", "d1", b"ack-1"), now=T0)
    assert [x.state for x in ms] == [State.QUEUED, State.SENDING] and ms[-1].lease_owner == "node-a"
    assert store.blob(m.id, PAYLOAD) == b"<doc/>"
    rec = store.seen_get("eb-1")
    assert rec is not None and (rec.digest, bytes(rec.response)) == ("d1", b"ack-1")
    # the first answer recorded stays the answer
    assert bytes(store.seen_put("eb-1", "d1", b"ack-2").response) == b"ack-1"


def test_advance_answered_returns_the_seen_record_its_commit_left(store: Store) -> None:
    a, b = store.put_received(b"<a/>", now=T0), store.put_received(b"<b/>", now=T0)
    before = store.statements
    ok = [Step(Event.VALIDATED, "ok")]
    ms, rec = store.advance_answered(a.id, ok, seen=("eb-2", "d1", b"ack-1"), now=T0)
    assert ms[-1].state is State.QUEUED and (rec.message_id, rec.digest, bytes(rec.response)) == \
        ("eb-2", "d1", b"ack-1")
    # a record there before is the answer, not the one offered
    _, rec = store.advance_answered(b.id, ok, seen=("eb-2", "d2", b"ack-2"), now=T0)
    assert (rec.digest, bytes(rec.response)) == ("d1", b"ack-1") == \
        (store.seen_get("eb-2").digest, bytes(store.seen_get("eb-2").response))  # type: ignore[union-attr]
    assert store.require(b.id).state is State.QUEUED and store.statements > before


def test_retry_ladder_until_undelivered(store: Store) -> None:
    mid = _queued(store, max_retries=2, retry_interval_s=3600)
    now = T0
    for attempt in (1, 2, 3):
        [m] = store.claim_due("n", 5, now=now)
        assert m.attempts == attempt
        m = store.record_failure(mid, ErrorInfo("421", "try later", permanent=False), actor="n", now=now,
                                 lease_owner="n")
        if attempt < 3:
            assert (m.state, m.next_attempt_at) == (State.RETRYING, now + H)
            assert store.claim_due("n", 5, now=now + H - timedelta(seconds=1)) == []
            now += H
    assert m.state is State.UNDELIVERED and m.next_attempt_at is None
    assert m.last_error is not None and m.last_error.code == "421" and not m.last_error.permanent
    assert [e.event for e in store.timeline(mid)].count("nack_transient") == 2
    assert store.timeline(mid)[-1].event == "retries_exhausted"


def test_permanent_failure_is_not_retried(store: Store) -> None:
    mid = _queued(store)
    store.claim_due("n", 1, now=T0)
    m = store.record_failure(mid, ErrorInfo("550", "no such user", permanent=True), now=T0)
    assert m.state is State.UNDELIVERED and m.last_error_permanent is True
    assert store.claim_due("n", 5, now=T0 + 100 * H) == []


def test_crashed_node_lease_comes_back(store: Store) -> None:
    mid = _queued(store)
    [m] = store.claim_due("node-a", 5, now=T0, lease=timedelta(minutes=1))
    assert store.claim_due("node-b", 5, now=T0 + timedelta(seconds=59)) == []
    [m] = store.claim_due("node-b", 5, now=T0 + timedelta(minutes=2))
    assert (m.lease_owner, m.attempts) == ("node-b", 2)
    with pytest.raises(LeaseLost):
        store.mark_sent(mid, node="node-a", now=T0 + timedelta(minutes=3))
    with pytest.raises(LeaseLost):
        store.transition(mid, Event.ACK, lease_owner="node-a")
    store.renew_lease(mid, node="node-b", lease=timedelta(hours=1), now=T0 + timedelta(minutes=3))
    assert store.claim_due("node-a", 5, now=T0 + timedelta(minutes=30)) == []
    assert [e.event for e in store.timeline(mid)][-3:] == ["claim", "lease_expired", "claim"]


def test_a_taken_short_id_is_drawn_again(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new message whose short id (50 random bits) is taken gets another; nothing of the first try
    stays (on PostgreSQL the clash fails the transaction, which runs again)."""
    from hub.store import base

    first = store.put_received(b"first", _meta(), actor="test", now=T0)
    draws = iter([(str(uuid.uuid4()), first.short_id)])  # the first draw clashes, then real ones
    real = base.new_ids
    monkeypatch.setattr(base, "new_ids", lambda: next(draws, None) or real())
    m = store.put_received(b"second", _meta(), actor="test", now=T0)
    assert m.short_id != first.short_id and store.require(m.short_id).id == m.id
    assert store.blob(m.id) == b"second" and store.blob(first.id) == b"first"
    assert len(store.list_messages()) == 2 and [e.event for e in store.timeline(m.id)] == ["accept"]


def test_an_ack_that_overtakes_mark_sent_is_no_lost_lease(store: Store) -> None:
    """The peer's Acknowledgment can reach the listener, and be applied, before the thread that sent the
    envelope records the transmission (seen under load with two worker processes: "lease lost after
    delivery; the retry will replace the same copy", though no retry was due). The message is delivered:
    mark_sent leaves it as it stands."""
    mid = _queued(store, out_message_id="eb-out")
    store.claim_due("node-a", 5, now=T0)
    store.advance(mid, [Step(Event.ACK, "ebMS Acknowledgment over smtp"), Step(Event.AWAIT_APPREC)],
                  actor="node-a", now=T0 + timedelta(milliseconds=5))
    m = store.mark_sent(mid, node="node-a", now=T0 + timedelta(milliseconds=9), out_message_id="eb-out")
    assert m.state is State.AWAITING_APPREC and m.attempts == 1
    assert [e.event for e in store.timeline(mid)][-3:] == ["claim", "ack", "await_apprec"]
    # not for someone else's message: a lease lost to another node's claim is still LeaseLost
    other = _queued(store)
    store.claim_due("node-a", 5, now=T0, lease=timedelta(minutes=1))
    store.claim_due("node-b", 5, now=T0 + timedelta(minutes=2))
    with pytest.raises(LeaseLost):
        store.mark_sent(other, node="node-a", now=T0 + timedelta(minutes=3))


def test_ack_timeout_resends(store: Store) -> None:
    mid = _queued(store, max_retries=1, retry_interval_s=600)
    store.claim_due("n", 5, now=T0)
    store.mark_sent(mid, node="n", now=T0)
    assert store.claim_due("n", 5, now=T0 + timedelta(minutes=9)) == []
    [m] = store.claim_due("n", 5, now=T0 + timedelta(minutes=10))
    assert m.attempts == 2
    store.mark_sent(mid, node="n", now=T0 + timedelta(minutes=10))
    # the last attempt's ack never comes: nothing more to claim; the sweep gives up, once
    assert store.claim_due("n", 5, now=T0 + H) == []
    [sw] = store.sweep(now=T0 + H)
    assert sw.message.state is State.UNDELIVERED and sw.events == [Event.RETRIES_EXHAUSTED]
    assert store.sweep(now=T0 + 2 * H) == []
    # a late ack is still the truth
    assert store.transition(mid, Event.ACK, now=T0 + 3 * H).state is State.DELIVERED


def test_sweep_ttl_and_apprec_timeout(store: Store) -> None:
    ttl = _queued(store, expires_at=T0 + H)
    waiting = _queued(store, gen_date=T0)
    store.claim_due("n", 5, now=T0)  # takes both
    store.transition(waiting, Event.ACK, now=T0)
    store.transition(waiting, Event.AWAIT_APPREC, now=T0)
    store.record_failure(ttl, ErrorInfo("timeout", "connect timed out", False), now=T0)  # -> expires first
    assert store.require(ttl).state is State.UNDELIVERED  # next try (12 h) would be after TTL
    ttl2 = _queued(store, expires_at=T0 + H)
    assert store.claim_due("n", 5, now=T0 + H) == []
    out = {s.message.id: s for s in store.sweep(now=T0 + 97 * H)}
    assert out[ttl2].message.state is State.EXPIRED and out[ttl2].events == [Event.TTL_EXPIRED]
    assert out[waiting].message.state is State.APPREC_OVERDUE
    assert set(out) == {ttl2, waiting}
    assert store.sweep(now=T0 + 98 * H) == []
    # a late AppRec still closes it
    assert store.transition(waiting, Event.APPREC, now=T0 + 99 * H).state is State.COMPLETED


def test_overdue_apprecs(store: Store) -> None:
    old = _queued(store, gen_date=T0)
    new = _queued(store, gen_date=T0 + 50 * H)
    done = _queued(store, gen_date=T0)
    store.claim_due("n", 5, now=T0 + 50 * H)
    for mid in (old, new, done):
        store.transition(mid, Event.ACK, now=T0 + 50 * H)
        store.transition(mid, Event.AWAIT_APPREC, now=T0 + 50 * H)
    store.transition(done, Event.APPREC, now=T0 + 51 * H)
    assert [m.id for m in store.overdue_apprecs(now=T0 + 97 * H)] == [old]
    assert [m.id for m in store.overdue_apprecs(now=T0 + 97 * H, after=timedelta(hours=24))] == [old, new]
    assert store.require(old).apprec_due_at == T0 + 96 * H


def test_duplicate_elimination_records(store: Store) -> None:
    ack = b"<SOAP:Envelope>ack \x00\xff exact</SOAP:Envelope>\r\n"
    assert store.seen_get("mid-1") is None
    r = store.seen_put("mid-1", "sha256:abc", ack, now=T0)
    assert (r.digest, r.response) == ("sha256:abc", ack)
    again = store.seen_put("mid-1", "sha256:other", b"another answer", now=T0 + H)
    assert again.response == ack and again.digest == "sha256:abc"  # the first answer stands
    got = store.seen_get("mid-1")
    assert got is not None and got.response == ack and got.created_at == T0
    m = store.put_received(b"payload", _meta(ebxml_message_id="mid-2"), seen=("mid-2", "d2", b"ack2"), now=T0)
    assert store.seen_get("mid-2").response == b"ack2"  # type: ignore[union-attr]
    assert store.get("mid-2").id == m.id  # type: ignore[union-attr]
    assert store.purge_seen(T0 + timedelta(seconds=1)) == 2
    assert store.seen_get("mid-1") is None


def test_resend_makes_a_child(store: Store) -> None:
    mid = _queued(store, max_retries=0)
    store.claim_due("n", 1, now=T0)
    store.record_failure(mid, ErrorInfo("c", "refused", False), now=T0)
    child = store.resend(mid, actor="operator:kari", reason="receiver fixed", now=T0 + H)
    assert child.state is State.QUEUED and child.parent_id == mid and child.id != mid
    assert store.blob(child.id) == store.blob(mid)
    parent = store.require(mid)
    assert parent.state is State.UNDELIVERED
    last = store.timeline(mid)[-1]
    assert (last.event, last.actor) == ("resent", "operator:kari")
    assert child.short_id in last.reason
    ctl = store.timeline(child.id)
    assert (ctl[0].event, ctl[0].actor, ctl[0].to_state) == ("resend", "operator:kari", "queued")
    assert [m.id for m in store.find_by_kith_msg_id(parent.kith_msg_id or "")] == [child.id, mid]
    # a message in progress cannot be resent, and no child is left behind
    other = _queued(store)
    n = len(store.list_messages())
    with pytest.raises(IllegalTransition):
        store.resend(other, actor="operator:kari")
    assert len(store.list_messages()) == n


def test_list_filters_and_stats(store: Store) -> None:
    a = store.put_received(b"a", _meta(receiver_her=1, sender_her=2, msg_type="APPREC"), now=T0)
    b = store.put_received(b"b", _meta(receiver_her=3, sender_her=2), now=T0 + H)
    store.transition(b.id, Event.REJECT, now=T0 + H)
    assert [m.id for m in store.list_messages()] == [b.id, a.id]
    assert [m.id for m in store.list_messages(state="received")] == [a.id]
    assert [m.id for m in store.list_messages(state=["received", "rejected"], limit=1)] == [b.id]
    assert [m.id for m in store.list_messages(receiver=1)] == [a.id]
    assert [m.id for m in store.list_messages(sender="2", since=T0 + H)] == [b.id]
    assert [m.id for m in store.list_messages(msg_type="APPREC")] == [a.id]
    with pytest.raises(ValueError):
        store.list_messages(state="bogus")
    st = store.stats()
    assert st["received"] == 1 and st["rejected"] == 1 and sum(st.values()) == 2 and set(st) == set(State)


def _grouped(store: Store) -> dict[str, int]:
    """Messages per state as a plain GROUP BY over the table reads them (every state, 0 if none)."""
    rows = store._read(lambda tx: tx.all("SELECT state, COUNT(*) AS n FROM messages GROUP BY state"))
    return {s.value: 0 for s in State} | {r["state"]: int(r["n"]) for r in rows}


def test_stats_counts_every_state_exactly(store: Store) -> None:
    """stats() counts each state but `completed` by a search of its partial index, and `completed` as all
    messages less those: a count in the wrong state, a state left out or counted twice shows here."""
    assert store.stats() == {s.value: 0 for s in State}
    want = {s.value: (i * 5) % 7 for i, s in enumerate(State)}  # 0..6; neighbours differ; some empty
    ids = [store.put_received(f"<m{i}/>".encode(), _meta(), now=T0).id for i in range(sum(want.values()))]
    assert store.stats() == {s.value: len(ids) if s is State.RECEIVED else 0 for s in State}
    states = [state for state, n in want.items() for _ in range(n)]
    for mid, state in zip(ids, states, strict=True):
        store._write(lambda tx, m=mid, st=state: tx.execute(
            "UPDATE messages SET state = ? WHERE id = ?", (st, m)))
    assert _grouped(store) == want and want["completed"] > 0
    assert store.stats() == want
    # deleted rows leave the total and their state's count: completed, all final, is gone then
    assert store.purge(T0 + H, actor="operator:ola", force=True) > want["completed"]
    left = _grouped(store)
    assert left["completed"] == 0 and sum(left.values()) > 0
    assert store.stats() == left


def test_purge_keeps_what_needs_attention(store: Store) -> None:
    done = store.put_received(b"a", now=T0)
    store.transition(done.id, Event.REJECT, now=T0)
    undelivered = _queued(store, max_retries=0)
    store.claim_due("n", 1, now=T0)
    store.record_failure(undelivered, ErrorInfo("x", "y", True), now=T0)
    active = _queued(store)
    assert store.purge(T0 + H, actor="operator:ola") == 1
    assert store.get(done.id) is None and store.get(undelivered) is not None
    with pytest.raises(NotFound):
        store.timeline(done.id)
    assert store.purge(T0 + H, actor="operator:ola", force=True) == 1
    assert store.get(undelivered) is None and store.get(active) is not None
    log = store.audit_log()
    assert [(e.actor, e.action) for e in log] == [("operator:ola", "purge")] * 2 and "forced" in log[0].detail


def test_audit_log(store: Store) -> None:
    store.audit("operator:kari", "reveal", "k3f9x2mq7a", "national ids shown", now=T0)
    store.audit("operator:ola", "export", "other", now=T0 + H)
    log = store.audit_log()
    assert [(e.actor, e.action, e.target) for e in log] == [
        ("operator:ola", "export", "other"), ("operator:kari", "reveal", "k3f9x2mq7a"),
    ]
    assert log[1].at == T0 and log[1].detail == "national ids shown"
    assert [e.actor for e in store.audit_log(target="k3f9x2mq7a")] == ["operator:kari"]
    assert [e.actor for e in store.audit_log(since=T0 + H)] == ["operator:ola"]


def test_naive_times_are_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="time zone"):
        store.put_received(b"x", now=datetime(2026, 1, 1))


def test_async_writes(store: Store) -> None:
    async def main() -> list[str]:
        ms = await asyncio.gather(*(store.aput_received(f"m{i}".encode(), now=T0) for i in range(100)))
        await store.atransition(ms[0].id, Event.VALIDATED)
        r = await store.aseen_put("eb-x", "d", b"ack")
        assert r.response == b"ack"
        return [m.id for m in ms]

    ids = asyncio.run(main())
    assert len(set(ids)) == 100
    assert all(store.blob(i) == f"m{n}".encode() for n, i in enumerate(ids))
    assert store.require(ids[0]).state is State.QUEUED
    if hasattr(store, "commits"):  # SQLite: 100 concurrent writes shared commits
        assert store.commits < 60


def _claim_all(url: str, node: str, out: list[str], start: threading.Barrier) -> None:
    s = open_store(url)
    try:
        start.wait()
        while True:
            got = s.claim_due(node, 3)
            if not got:
                break
            out.extend(m.id for m in got)
    finally:
        s.close()


def test_concurrent_claims_never_overlap(store: Store, store_url: str) -> None:
    ids = {_queued(store) for _ in range(60)}
    results: list[list[str]] = [[] for _ in range(4)]
    start = threading.Barrier(4)
    threads = [threading.Thread(target=_claim_all, args=(store_url, f"node-{i}", results[i], start))
               for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    claimed = [i for r in results for i in r]
    assert len(claimed) == len(set(claimed)) == 60  # nobody got a message twice
    assert set(claimed) == ids
    assert store.stats()["sending"] == 60


def test_concurrent_sweeps_report_each_message_once(store: Store, store_url: str) -> None:
    ids = {_queued(store, expires_at=T0 + H) for _ in range(40)}
    results: list[list[str]] = [[] for _ in range(3)]
    start = threading.Barrier(3)

    def sweep(i: int) -> None:
        s = open_store(store_url)
        try:
            start.wait()
            while got := s.sweep(now=T0 + 2 * H, limit=4, actor=f"node-{i}"):
                results[i].extend(w.message.id for w in got)
        finally:
            s.close()

    run_threads(sweep, 3)
    swept = [i for r in results for i in r]
    assert len(swept) == len(set(swept)) == 40 and set(swept) == ids
    assert store.stats()["expired"] == 40


def test_update_meta(store: Store) -> None:
    m = store.put_received(b"x", now=T0)
    assert (m.max_retries, m.retry_interval_s, m.apprec_due_at) == (5, 12 * 3600, None)
    m = store.update_meta(m.id, max_retries=4, retry_interval_s=14400, gen_date=T0, receiver_her=79768)
    assert (m.max_retries, m.retry_interval_s, m.receiver_her) == (4, 14400, "79768")
    assert m.apprec_due_at == T0 + 96 * H
    m = store.update_meta(m.id, max_retries=None)
    assert store.require(m.id).max_retries == 5
    assert store.require(m.id).state is State.RECEIVED
    assert len(store.timeline(m.id)) == 1  # meta is not a lifecycle step


def test_failed_write_does_not_spoil_its_batch(store: Store) -> None:
    # many writers at once: one illegal transition among them fails alone
    good: list[str] = []
    errors: list[BaseException] = []
    bad = store.put_received(b"bad", now=T0)

    def put(i: int) -> None:
        try:
            if i == 7:
                store.transition(bad.id, Event.ACK)
            else:
                good.append(store.put_received(f"{i}".encode(), now=T0).id)
        except Exception as exc:  # noqa: BLE001 - collected and checked below
            errors.append(exc)

    run_threads(put, 20)
    assert len(good) == 19 and len(errors) == 1 and isinstance(errors[0], IllegalTransition), errors
    assert all(store.get(i) is not None for i in good)


def run_threads(fn: Callable[[int], None], n: int) -> None:
    ts = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)


def test_sqlite_batch_member_failing_after_its_writes_is_undone_alone(tmp_path: Path) -> None:
    """One commit for the batch; a function that wrote and then raised leaves nothing behind."""
    from hub.store.base import _audit
    from hub.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "batch.sqlite")
    try:
        gate = threading.Event()
        first = s._submit(lambda tx: gate.wait(10))  # holds the writer so the next five queue up

        def wrote_then_failed(tx: object) -> None:
            _audit(tx, "t", "bad", None, None, T0)  # type: ignore[arg-type]
            raise RuntimeError("after writing")

        def failed_first(tx: object) -> None:
            raise ValueError("before writing")

        futs = [
            s._submit(lambda tx: _audit(tx, "t", "a", None, None, T0)),
            s._submit(wrote_then_failed),
            s._submit(failed_first),
            s._submit(lambda tx: s._op_insert(b"kept", None, Event.ACCEPT, "t", "", T0, None, None)(tx)),
            s._submit(lambda tx: _audit(tx, "t", "b", None, None, T0)),
        ]
        commits = s.commits
        gate.set()
        assert first.result(10) is True
        assert futs[0].result(10) is None and futs[4].result(10) is None
        kept = futs[3].result(10)
        with pytest.raises(RuntimeError, match="after writing"):
            futs[1].result(10)
        with pytest.raises(ValueError, match="before writing"):
            futs[2].result(10)
        assert s.commits - commits <= 2  # the five shared a commit (or two, had the first gone alone)
        assert sorted(e.action for e in s.audit_log()) == ["a", "b"]
        assert s.blob(kept.id) == b"kept" and s.require(kept.short_id).state is State.RECEIVED
    finally:
        s.close()


def test_reads_by_any_reference(store: Store) -> None:
    m = store.put_received(b"body", MessageMeta(ebxml_message_id="eb-1", kith_msg_id="k-1"), now=T0)
    for ref in (m.id, m.short_id, m.short_id.upper(), "eb-1", "k-1"):
        assert store.require(ref).id == m.id, ref
        assert store.blob(ref) == b"body", ref
    assert store.blob(m.id, "absent") is None
    with pytest.raises(NotFound):
        store.blob("nope")
    assert store.get("nope") is None


def test_operator_queries_oldest_prefix_counts_and_commit_times(store: Store) -> None:
    """What /metrics, /health, `purge` and id prefixes ask of the store, on both backends."""
    t0 = datetime.now(UTC) - timedelta(hours=5)
    seen: list[float] = []
    store.observe_commits(seen.append)
    old = store.put_received(b"<a/>", _meta(), now=t0)
    new = store.put_received(b"<b/>", _meta(), now=t0 + timedelta(hours=1))
    store.transition(new.id, Event.VALIDATED, now=t0 + timedelta(hours=2))
    assert len(seen) == 3 and all(0 <= s < 30 for s in seen)  # one per commit, in seconds
    assert store.oldest(["received", "queued"]) == t0
    assert store.oldest(["queued"]) == t0 + timedelta(hours=1)
    assert store.oldest(["undelivered"]) is None
    assert store.counts_before(t0 + timedelta(minutes=90)) == {"received": 1}
    assert store.counts_before(t0 + timedelta(hours=3)) == {"received": 1, "queued": 1}
    assert [m.id for m in store.by_prefix(old.short_id[:6])] == [old.id]
    assert [m.id for m in store.by_prefix(old.id[:30].upper())] == [old.id]
    assert store.by_prefix("x%") == [] and store.by_prefix("") == []  # LIKE wildcards are not ids


def test_sqlite_writer_row_copy_never_stale(tmp_path: Path) -> None:
    """The writer answers Store._locked's read from the rows its own commits left; what another
    connection commits, a write it does not follow, and a rolled-back write all reach the next write."""
    import sqlite3

    from hub.store.base import Message
    from hub.store.sqlite import SQLiteStore

    path = tmp_path / "copy.sqlite"
    s1, s2 = SQLiteStore(path), SQLiteStore(path)
    try:
        locked = lambda s, mid: s._write(lambda tx: s._locked(tx, mid))  # noqa: E731
        mid = s1.put_received(b"x", _meta(), now=T0).id
        s1.transition(mid, Event.VALIDATED, now=T0)
        assert locked(s1, mid)["state"] == "queued"
        # another store (another process's writer) claims it: s1's next write sees the claim
        assert [m.id for m in s2.claim_due("n2", 10, now=T0)] == [mid]
        assert s1.mark_sent(mid, node="n2", now=T0).state is State.AWAITING_ACK
        with pytest.raises(IllegalTransition):
            s1.transition(mid, Event.VALIDATED, now=T0)
        # a plain connection (the sqlite3 shell, say)
        with sqlite3.connect(path) as c:
            c.execute("UPDATE messages SET apprec_status = 'by-hand' WHERE id = ?", (mid,))
        assert locked(s1, mid)["apprec_status"] == "by-hand"
        # a write in a shape the copy does not follow
        s1._write(lambda tx: tx.execute("UPDATE messages SET attempts = attempts + 5 WHERE id = ?", (mid,)))
        assert locked(s1, mid)["attempts"] == 6
        # a followed shape with a value the read gives back otherwise (text in a time column: a datetime)
        s1._write(lambda tx: tx.execute("UPDATE messages SET next_attempt_at = ? WHERE id = ?",
                                        ("2026-03-02 09:00:00.000000", mid)))
        assert locked(s1, mid)["next_attempt_at"] == T0 + H

        # a write undone (its function failed after writing)
        def wrote_then_failed(tx: object) -> None:
            s1._update(tx, mid, {"apprec_status": "undone"})  # type: ignore[arg-type]
            raise RuntimeError("after writing")

        with pytest.raises(RuntimeError):
            s1._write(wrote_then_failed)
        assert locked(s1, mid)["apprec_status"] == "by-hand"
        # and the writes it follows, read back as a fresh read has them
        s1.transition(mid, Event.ACK, now=T0 + H, updates={"apprec_status": "pending"})
        assert Message.from_row(locked(s1, mid)) == s1.require(mid)  # require: a reader, no copy
    finally:
        s1.close()
        s2.close()


def test_sqlite_async_write_cancelled_before_it_began_is_not_run(tmp_path: Path) -> None:
    """An awaiting caller that gave up while its write was still queued: the write is not made; one that
    waits gets its value, and a write that fails raises in its own caller."""
    from hub.store.sqlite import SQLiteStore

    s = SQLiteStore(tmp_path / "cancel.sqlite")
    try:
        gate, holding = threading.Event(), threading.Event()

        async def main() -> tuple[str, str]:
            s._submit(lambda tx: (holding.set(), gate.wait(10)))  # holds the writer
            assert holding.wait(10)  # the writes below queue behind it, in the next batch
            given_up = asyncio.ensure_future(s.aput_received(b"given up", now=T0))
            kept = asyncio.ensure_future(s.aput_received(b"kept", now=T0))
            failing = asyncio.ensure_future(s.atransition("no-such-message", Event.VALIDATED))
            await asyncio.sleep(0.05)
            given_up.cancel()
            gate.set()
            with pytest.raises(NotFound):
                await failing
            return (await kept).id, "ok"

        kept_id, _ = asyncio.run(main())
        assert s.blob(kept_id) == b"kept"
        assert [m.id for m in s.list_messages()] == [kept_id]
    finally:
        s.close()
