"""The lifecycle table and the retry ladder: pure functions, checked without any store."""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from hub.relay.lifecycle import (
    ACTIVE,
    BIRTHS,
    FINAL,
    TRANSITIONS,
    Event,
    IllegalTransition,
    RetryPolicy,
    State,
    allowed_events,
    birth_state,
    claim_events,
    next_state,
    on_failure,
    parse_duration,
    timeout_events,
)

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _reachable() -> set[State]:
    seen = set(BIRTHS.values())
    todo = deque(seen)
    while todo:
        s = todo.popleft()
        for (frm, _e), to in TRANSITIONS.items():
            if frm == s and to not in seen:
                seen.add(to)
                todo.append(to)
    return seen


def test_every_state_is_reachable_from_a_birth() -> None:
    assert _reachable() == set(State)


def test_every_open_state_can_end() -> None:
    # from any state that is not final, some path leads to a final state: nothing is stuck forever
    for start in set(State) - FINAL:
        seen, todo = {start}, deque([start])
        while todo:
            s = todo.popleft()
            for (frm, _e), to in TRANSITIONS.items():
                if frm == s and to not in seen:
                    seen.add(to)
                    todo.append(to)
        assert seen & FINAL, start


def test_happy_path_network_delivery() -> None:
    s = birth_state("accept")
    path = [s]
    for e in ["validated", "claim", "sent", "ack", "await_apprec", "apprec"]:
        s = next_state(s, e)
        path.append(s)
    assert [p.value for p in path] == [
        "received", "queued", "sending", "awaiting_ack", "delivered", "awaiting_apprec", "completed",
    ]


def test_retry_then_undelivered_then_late_ack() -> None:
    s = next_state(next_state(State.QUEUED, Event.CLAIM), Event.NACK_TRANSIENT)
    assert s is State.RETRYING
    s = next_state(next_state(s, Event.CLAIM), Event.SENT)
    assert next_state(s, Event.RETRY_DUE) is State.RETRYING
    s = next_state(s, Event.RETRIES_EXHAUSTED)
    assert s is State.UNDELIVERED
    assert next_state(s, Event.ACK) is State.DELIVERED  # the receiver got it after all


def test_apprec_proves_delivery_but_is_final() -> None:
    for st in (State.AWAITING_ACK, State.RETRYING, State.UNDELIVERED, State.EXPIRED, State.APPREC_OVERDUE):
        assert next_state(st, Event.APPREC) is State.COMPLETED
    with pytest.raises(IllegalTransition, match="not allowed in state 'completed'"):
        next_state(State.COMPLETED, Event.APPREC)
    # not before it has left the hub
    for st in (State.RECEIVED, State.QUEUED):
        with pytest.raises(IllegalTransition):
            next_state(st, Event.APPREC)


def test_overdue_apprec_still_completes() -> None:
    s = next_state(State.AWAITING_APPREC, Event.APPREC_TIMEOUT)
    assert s is State.APPREC_OVERDUE
    with pytest.raises(IllegalTransition):
        next_state(s, Event.APPREC_TIMEOUT)  # the alert fires once
    assert next_state(s, Event.APPREC) is State.COMPLETED


@pytest.mark.parametrize("state", sorted(State))
def test_fail_only_while_the_hub_still_works_on_it(state: State) -> None:
    if state in ACTIVE:
        assert next_state(state, Event.FAIL) is State.FAILED
    else:
        with pytest.raises(IllegalTransition):
            next_state(state, Event.FAIL)


def test_illegal_and_unknown_inputs_raise_clearly() -> None:
    with pytest.raises(IllegalTransition) as ei:
        next_state("rejected", "claim")
    assert "'claim'" in str(ei.value) and "'rejected'" in str(ei.value) and "allowed: resent" in str(ei.value)
    with pytest.raises(IllegalTransition):
        next_state("no-such-state", "claim")
    with pytest.raises(IllegalTransition):
        next_state("queued", "no-such-event")
    with pytest.raises(IllegalTransition):
        birth_state("claim")
    with pytest.raises(IllegalTransition):
        next_state(State.SENDING, Event.CANCEL)  # a node holds it


def test_allowed_events_match_table() -> None:
    for st in State:
        for ev in Event:
            ok = ev in allowed_events(st)
            try:
                next_state(st, ev)
                assert ok, (st, ev)
            except IllegalTransition:
                assert not ok, (st, ev)
    assert allowed_events(None) == frozenset(BIRTHS)


def test_parse_duration() -> None:
    assert parse_duration("PT240M") == timedelta(hours=4)
    assert parse_duration("PT720M") == timedelta(hours=12)
    assert parse_duration("P2D") == timedelta(days=2)
    assert parse_duration("P1DT1H30M15S") == timedelta(days=1, hours=1, minutes=30, seconds=15)
    for bad in ("", "P", "PT", "P1M", "P1Y", "12h", "P1DT"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_policy_defaults_are_his_1037() -> None:
    p = RetryPolicy.from_cpa(None, None)
    assert (p.retries, p.interval, p.max_attempts) == (5, timedelta(hours=12), 6)
    with pytest.raises(ValueError):
        RetryPolicy(retries=-1)


def test_ladder_with_cpa_4_x_pt240m() -> None:
    p = RetryPolicy.from_cpa("4", "PT240M")
    now, times = T0, []
    for attempt in range(1, 10):
        d = on_failure(attempt, permanent=False, policy=p, now=now, expires_at=None)
        if d.next_attempt_at is None:
            assert d.event is Event.RETRIES_EXHAUSTED
            break
        assert d.event is Event.NACK_TRANSIENT
        times.append(d.next_attempt_at)
        now = d.next_attempt_at
    assert attempt == 5  # 1 first attempt + 4 retries
    assert [t - T0 for t in times] == [timedelta(hours=4 * i) for i in range(1, 5)]


def test_ladder_permanent_and_ttl() -> None:
    p = RetryPolicy()
    assert on_failure(1, permanent=True, policy=p, now=T0, expires_at=None).event is Event.NACK_PERMANENT
    d = on_failure(1, permanent=False, policy=p, now=T0, expires_at=T0 + timedelta(hours=6))
    assert (d.event, d.next_attempt_at) == (Event.RETRIES_EXHAUSTED, None)
    assert "TimeToLive" in d.reason
    d = on_failure(1, permanent=False, policy=p, now=T0, expires_at=T0)
    assert d.event is Event.TTL_EXPIRED
    d = on_failure(1, permanent=False, policy=p, now=T0, expires_at=T0 + timedelta(hours=13))
    assert d.next_attempt_at == T0 + timedelta(hours=12)


def test_policy_from_the_real_nav_cpa(reference: object) -> None:
    path = reference / "cpa" / "navikt_nav-qass-31162.xml"  # type: ignore[operator]
    root = etree.parse(str(path)).getroot()
    ns = {"c": "http://www.oasis-open.org/committees/ebxml-cppa/schema/cpp-cpa-2_0.xsd"}
    rm = root.find(".//c:ReliableMessaging", ns)
    assert rm is not None
    p = RetryPolicy.from_cpa(
        rm.findtext("c:Retries", namespaces=ns), rm.findtext("c:RetryInterval", namespaces=ns)
    )
    assert (p.max_attempts, p.interval) == (5, timedelta(minutes=240))


def _times(**kw: object) -> dict[str, object]:
    base: dict[str, object] = dict(
        now=T0, attempts=1, max_attempts=3, next_attempt_at=None, lease_until=None, expires_at=None,
    )
    base.update(kw)
    return base


def test_claim_events() -> None:
    assert claim_events("queued", **_times(attempts=0)) == [Event.CLAIM]
    assert claim_events("retrying", **_times(next_attempt_at=T0 + timedelta(seconds=1))) is None
    assert claim_events("retrying", **_times(next_attempt_at=T0)) == [Event.CLAIM]
    assert claim_events("awaiting_ack", **_times(next_attempt_at=T0)) == [Event.RETRY_DUE, Event.CLAIM]
    assert claim_events("awaiting_ack", **_times(next_attempt_at=T0, attempts=3)) is None
    assert claim_events("sending", **_times(lease_until=T0 + timedelta(seconds=1))) is None
    assert claim_events("sending", **_times(lease_until=T0)) == [Event.LEASE_EXPIRED, Event.CLAIM]
    assert claim_events("queued", **_times(expires_at=T0)) is None
    assert claim_events("delivered", **_times()) is None


def test_timeout_events_follow_the_table() -> None:
    assert timeout_events("queued", **_times(expires_at=T0), apprec_due_at=None) == [Event.TTL_EXPIRED]
    assert timeout_events("awaiting_ack", **_times(next_attempt_at=T0, attempts=3), apprec_due_at=None) == [
        Event.RETRIES_EXHAUSTED
    ]
    assert timeout_events("awaiting_ack", **_times(next_attempt_at=T0), apprec_due_at=None) == []
    assert timeout_events("sending", **_times(lease_until=T0, attempts=3), apprec_due_at=None) == [
        Event.LEASE_EXPIRED, Event.RETRIES_EXHAUSTED,
    ]
    assert timeout_events("awaiting_apprec", **_times(), apprec_due_at=T0) == [Event.APPREC_TIMEOUT]
    assert timeout_events("awaiting_apprec", **_times(), apprec_due_at=T0 + timedelta(1)) == []
    # every planned sequence is legal under the table
    for st in State:
        for kw in (_times(expires_at=T0, lease_until=T0, next_attempt_at=T0, attempts=9),):
            s = st
            for ev in timeout_events(st, **kw, apprec_due_at=T0):
                s = next_state(s, ev)
