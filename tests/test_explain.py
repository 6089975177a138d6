"""`explain()`: one paragraph per state, from messages a real SQLite store moved through the lifecycle."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hub.fixtures import GP_FASTLEGE, HOSP_POLIKLINIKK, build
from hub.relay.explain import ago, explain, span
from hub.relay.lifecycle import Event, State
from hub.store import ErrorInfo, Message, MessageMeta, Store, open_store

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=3)
NODE = "node-x"
DATA = build("Dialogmelding", "1.1", seed=9, sender=GP_FASTLEGE, receiver=HOSP_POLIKLINIKK)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(f"sqlite:///{tmp_path / 'hub.sqlite'}") as s:
        yield s


def _new(st: Store, **meta: object) -> Message:
    base: dict[str, object] = dict(direction="out", channel="folder", msg_type="DIALOG_NOTAT",
                                   sender_her=GP_FASTLEGE.her_id, receiver_her=HOSP_POLIKLINIKK.her_id,
                                   gen_date=T0, max_retries=2, retry_interval_s=3600)
    base.update(meta)
    return st.put_received(DATA, MessageMeta(**base), actor="folder", now=T0)  # type: ignore[arg-type]


def _sending(st: Store, **meta: object) -> Message:
    m = _new(st, **meta)
    st.transition(m.id, Event.VALIDATED, actor=NODE, now=T0)
    [c] = st.claim_due(NODE, 1, now=T0)
    assert c.id == m.id
    return c


def _why(st: Store, m: Message, **kw: object) -> str:
    m = st.require(m.id)
    return explain(m, st.timeline(m.id), now=NOW, **kw)  # type: ignore[arg-type]


def _delivered(st: Store) -> Message:
    m = _sending(st)
    return st.transition(m.id, Event.ACK, actor=NODE, lease_owner=NODE, now=T0, reason="written")


def every_state(st: Store) -> dict[State, Message]:
    out: dict[State, Message] = {}
    out[State.RECEIVED] = _new(st)
    m = _new(st)
    out[State.REJECTED] = st.transition(m.id, Event.REJECT, actor=NODE, now=T0, reason="schema",
                                        error=ErrorInfo("E35", "MsgHead/MsgInfo/Type missing", True))
    m = _sending(st)
    out[State.SENDING] = m
    m = _sending(st)
    out[State.AWAITING_ACK] = st.mark_sent(m.id, node=NODE, now=T0)
    m = _sending(st)
    out[State.RETRYING] = st.record_failure(m.id, ErrorInfo("timeout", "no answer in 30 s", False),
                                            actor=NODE, lease_owner=NODE, now=T0)
    m = _sending(st)
    out[State.UNDELIVERED] = st.record_failure(m.id, ErrorInfo("http.403", "forbidden", True),
                                               actor=NODE, lease_owner=NODE, now=T0)
    out[State.DELIVERED] = _delivered(st)
    m = _delivered(st)
    out[State.AWAITING_APPREC] = st.transition(m.id, Event.AWAIT_APPREC, actor=NODE, now=T0,
                                               updates={"apprec_due_at": T0 + timedelta(hours=96)})
    m = _delivered(st)
    st.transition(m.id, Event.AWAIT_APPREC, actor=NODE, now=T0, updates={"apprec_due_at": T0})
    out[State.APPREC_OVERDUE] = st.transition(m.id, Event.APPREC_TIMEOUT, actor=NODE, now=T0)
    m = _delivered(st)
    st.transition(m.id, Event.AWAIT_APPREC, actor=NODE, now=T0)
    out[State.COMPLETED] = st.transition(m.id, Event.APPREC, actor=NODE, now=T0,
                                         updates={"apprec_status": "2"})
    m = _new(st, expires_at=T0 + timedelta(minutes=5))
    st.transition(m.id, Event.VALIDATED, actor=NODE, now=T0)
    out[State.EXPIRED] = st.transition(m.id, Event.TTL_EXPIRED, actor="sweeper",
                                       now=T0 + timedelta(minutes=5))
    m = _new(st)
    out[State.FAILED] = st.transition(m.id, Event.FAIL, actor=NODE, now=T0, reason="crash",
                                      error=ErrorInfo("crash", "ValueError: bad", True))
    m = _new(st)
    st.transition(m.id, Event.VALIDATED, actor=NODE, now=T0)
    out[State.CANCELLED] = st.transition(m.id, Event.CANCEL, actor="ops-anna", now=T0,
                                         reason="sent to the wrong clinic")
    m = _new(st)
    out[State.QUEUED] = st.transition(m.id, Event.VALIDATED, actor=NODE, now=T0)
    m = _new(st)
    out[State.DUPLICATE], _ = st.mark_duplicate(m.id, out[State.QUEUED].id, actor=NODE, now=T0,
                                                reason="MsgId 1234 from 82002 with identical content")
    return out


def test_every_state_gets_its_own_single_paragraph(store: Store) -> None:
    msgs = every_state(store)
    assert set(msgs) == set(State) and all(m.state is s for s, m in msgs.items())
    texts = {s: _why(store, m) for s, m in msgs.items()}
    for s, t in texts.items():
        assert msgs[s].short_id in t, s
        assert "\n" not in t and t.endswith("."), s
        assert t.count(". ") >= 3, (s, t)  # happened, did, next, you can do
    assert len(set(texts.values())) == len(texts)


def test_undelivered_says_why_what_was_done_and_what_to_do(store: Store) -> None:
    msgs = every_state(store)
    t = _why(store, msgs[State.UNDELIVERED])
    sid = msgs[State.UNDELIVERED].short_id
    assert "could not be delivered" in t and "1 of 3 attempts" in t
    assert "http.403: forbidden (permanent)" in t and "(3h ago)" in t
    assert "told the sender" in t and f"hub queue resend {sid} --dry-run" in t


def test_the_facts_of_each_state_are_in_its_paragraph(store: Store) -> None:
    msgs = every_state(store)
    t = {s: _why(store, m) for s, m in msgs.items()}
    assert "timeout: no answer in 30 s (transient)" in t[State.RETRYING]
    assert "Next attempt at 2026-03-02 09:00 UTC (2h ago)" in t[State.RETRYING]
    assert "no resend is needed" in t[State.RETRYING]
    assert "acknowledgment until 2026-03-02 09:00 UTC" in t[State.AWAITING_ACK]
    assert f"claimed by {NODE}" in t[State.SENDING]
    assert "E35: MsgHead/MsgInfo/Type missing" in t[State.REJECTED]
    assert "2026-03-06 08:00 UTC (in 3d 21h)" in t[State.AWAITING_APPREC]
    assert "Call the receiver" in t[State.APPREC_OVERDUE] and "HIS 80415" in t[State.APPREC_OVERDUE]
    assert "status 2" in t[State.COMPLETED] and "negative AppRec" in t[State.COMPLETED]
    assert "TimeToLive (2026-03-02 08:05 UTC)" in t[State.EXPIRED]
    assert "ValueError: bad" in t[State.FAILED] and "hub queue export" in t[State.FAILED]
    assert "by ops-anna: sent to the wrong clinic" in t[State.CANCELLED]
    assert "not yet checked" in t[State.RECEIVED] and "hub serve" in t[State.RECEIVED]
    assert "MsgId 1234 from 82002 with identical content" in t[State.DUPLICATE]
    assert "did not deliver it a second time" in t[State.DUPLICATE]


def test_lineage_names_parent_and_resends(store: Store) -> None:
    msgs = every_state(store)
    orig = msgs[State.UNDELIVERED]
    child = store.resend(orig.id, actor="ops-bo", now=T0 + timedelta(hours=1))
    t_orig = _why(store, orig, children=[child])
    t_child = _why(store, child, parent=store.require(orig.id))
    assert f"already been resent as {child.short_id} (queued)" in t_orig
    assert f"hub queue why {child.short_id}" in t_orig and f"hub queue resend {orig.short_id}" not in t_orig
    assert "last at 2026-03-02 08:00 UTC (3h ago)" in t_orig  # the failure, not the later resend entry
    assert f"resend of {orig.short_id}" in t_child and "was checked and queued" not in t_child
    assert "queued as an operator's resend by ops-bo" in t_child


def test_ago_and_span() -> None:
    assert span(timedelta(seconds=42)) == "42s"
    assert span(timedelta(minutes=5, seconds=59)) == "5m"
    assert span(timedelta(hours=2, minutes=5)) == "2h 5m"
    assert span(timedelta(days=3)) == "3d"
    assert ago(NOW - timedelta(hours=1), NOW) == "1h ago"
    assert ago(NOW + timedelta(days=1, hours=2), NOW) == "in 1d 2h"
    assert ago(None, NOW) == ""
