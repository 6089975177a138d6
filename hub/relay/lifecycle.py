"""The message lifecycle: every state, every event, and the one table that joins them.

Nothing else in the hub decides a message's state. The store applies an event by calling
`next_state()` inside the transaction that locks the message row, and records the step in the
message's timeline (time, event, from -> to, reason, actor). Everything here is pure: no I/O, no clock.

Path of a message through the relay (the full table is TRANSITIONS below)::

    received ─validated─► queued ─claim─► sending ─sent─► awaiting_ack ─ack─► delivered
       │ reject                  ▲           │ nack_transient     │ retry_due      │ await_apprec / close
       ▼                         └─claim── retrying ◄─────────────┘                ▼
    rejected                                 │ retries_exhausted        awaiting_apprec ─apprec─► completed
                                             ▼                                     │ apprec_timeout   ▲
                                        undelivered                     apprec_overdue ─apprec────┘

Decisions worth knowing:
- `apprec_overdue` is a STATE, not a flag. HIS 80415/HITS 1168: no AppRec within 96 h of GenDate means
  "treat as rejected and alert". Making it a state means the alert fires exactly once (the transition
  can happen once), operators filter on it like any state, and a late positive AppRec still completes
  the message (receivers may accept after 96 h).
- An AppRec proves delivery, so `apprec` completes a message from any state after it left the hub
  (awaiting_ack, retrying, undelivered, expired, ...): a lost ebMS ack must not leave it "undelivered".
  A second AppRec for a completed message is illegal (an AppRec is final): the relay should flag it.
- A late ebMS `ack` likewise revives undelivered/expired messages to `delivered`; duplicate acks (we
  retried and both copies were acknowledged) are recorded without changing the state.
- Resend by an operator makes a NEW message (new ids, `parent_id` = the original) born `queued`; the
  original keeps its state and gets a `resent` entry in its timeline. Resending in place would reuse the
  ebXML MessageId, which the receiver's duplicate elimination would rightly swallow.
- MsgId uniqueness (issue 12) is a property of one sender's traffic: a KITH MsgId the same sender used
  before is `duplicate` when the content is the same (delivered once; `duplicate_received` goes on the
  original's timeline without changing its state) and `rejected` (E10) when it differs. Only messages
  that were accepted count as "used before": a refused one was never relayed.
- `failed` (permanent processing failure: bad signature, poison message; the sender has been told) is
  reachable from every state in which the hub still works on the message. `rejected` is the answer
  at intake (schema/rule failure answered with a negative AppRec or MessageError).
- Attempts are counted at `claim`: each claim is one transmission attempt. A crashed node's claim comes
  back through `lease_expired` (sending -> retrying), which is itself an attempt of unknown outcome;
  resending is safe because the receiver eliminates duplicates by MessageId.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum


class State(StrEnum):
    RECEIVED = "received"  # stored exactly as received; not yet checked
    REJECTED = "rejected"  # refused at intake; the sender got a negative AppRec / MessageError
    QUEUED = "queued"  # checked and routed; waiting for a delivery worker
    SENDING = "sending"  # claimed by a node under a lease
    AWAITING_ACK = "awaiting_ack"  # transmitted; waiting for the ebMS Acknowledgment
    RETRYING = "retrying"  # a transient failure; next attempt at next_attempt_at
    DELIVERED = "delivered"  # ebMS ack received (or written to a local receiver's folder)
    AWAITING_APPREC = "awaiting_apprec"  # delivered; the receiver's AppRec has not come yet
    APPREC_OVERDUE = "apprec_overdue"  # no AppRec within the limit (96 h): alerted, still open
    COMPLETED = "completed"  # AppRec received and routed back (or no AppRec is expected)
    UNDELIVERED = "undelivered"  # retries exhausted or permanent delivery failure
    EXPIRED = "expired"  # TimeToLive passed before delivery
    FAILED = "failed"  # permanent processing failure; the sender has been told
    CANCELLED = "cancelled"  # stopped by an operator before delivery
    DUPLICATE = "duplicate"  # the same sender's same MsgId with the same content again: not delivered


class Event(StrEnum):
    # births: the first entry of every timeline
    ACCEPT = "accept"  # bytes handed over by a peer or local system and stored
    GENERATE = "generate"  # a message the hub composed itself (e.g. an AppRec it answers with)
    RESEND = "resend"  # operator: a new copy of an earlier message
    # intake
    VALIDATED = "validated"
    REJECT = "reject"
    DUPLICATE = "duplicate"  # identical to a message already relayed (same sender, MsgId, content)
    # delivery
    CLAIM = "claim"
    SENT = "sent"
    ACK = "ack"
    NACK_TRANSIENT = "nack_transient"
    NACK_PERMANENT = "nack_permanent"
    RETRY_DUE = "retry_due"  # no ack within RetryInterval
    LEASE_EXPIRED = "lease_expired"  # the claiming node did not finish in time (crashed?)
    RETRIES_EXHAUSTED = "retries_exhausted"
    TTL_EXPIRED = "ttl_expired"
    # application receipt
    AWAIT_APPREC = "await_apprec"
    CLOSE = "close"  # delivered and no AppRec is expected (e.g. the message IS an AppRec)
    APPREC = "apprec"
    APPREC_TIMEOUT = "apprec_timeout"
    # anywhere
    FAIL = "fail"
    # operator
    RETRY_NOW = "retry_now"
    CANCEL = "cancel"
    RESENT = "resent"  # recorded on the original when an operator resends it
    # recorded on the original when an identical copy of it arrives (the copy ends `duplicate`)
    DUPLICATE_RECEIVED = "duplicate_received"


S, E = State, Event

# The states in which the hub still works on the message (fail/cancel apply here).
ACTIVE: frozenset[State] = frozenset(
    {S.RECEIVED, S.QUEUED, S.SENDING, S.AWAITING_ACK, S.RETRYING, S.DELIVERED}
)
# Nothing more will happen unless a peer or an operator acts.
FINAL: frozenset[State] = frozenset(
    {S.REJECTED, S.COMPLETED, S.UNDELIVERED, S.EXPIRED, S.FAILED, S.CANCELLED, S.DUPLICATE}
)
# Final states that need a person's attention; purge keeps them unless forced.
NEEDS_ATTENTION: frozenset[State] = frozenset({S.UNDELIVERED, S.FAILED, S.EXPIRED, S.APPREC_OVERDUE})

BIRTHS: dict[Event, State] = {E.ACCEPT: S.RECEIVED, E.GENERATE: S.QUEUED, E.RESEND: S.QUEUED}

_AFTER_SENT = (S.AWAITING_ACK, S.RETRYING, S.DELIVERED, S.AWAITING_APPREC, S.APPREC_OVERDUE,
               S.UNDELIVERED, S.EXPIRED)

TRANSITIONS: dict[tuple[State, Event], State] = {
    (S.RECEIVED, E.VALIDATED): S.QUEUED,
    (S.RECEIVED, E.REJECT): S.REJECTED,
    (S.RECEIVED, E.DUPLICATE): S.DUPLICATE,
    (S.QUEUED, E.CLAIM): S.SENDING,
    (S.QUEUED, E.TTL_EXPIRED): S.EXPIRED,
    (S.SENDING, E.SENT): S.AWAITING_ACK,
    (S.SENDING, E.ACK): S.DELIVERED,  # synchronous transports: HTTP sync, local folder write
    (S.SENDING, E.NACK_TRANSIENT): S.RETRYING,
    (S.SENDING, E.NACK_PERMANENT): S.UNDELIVERED,
    (S.SENDING, E.RETRIES_EXHAUSTED): S.UNDELIVERED,
    (S.SENDING, E.LEASE_EXPIRED): S.RETRYING,
    (S.SENDING, E.APPREC): S.COMPLETED,
    (S.AWAITING_ACK, E.ACK): S.DELIVERED,
    (S.AWAITING_ACK, E.NACK_TRANSIENT): S.RETRYING,
    (S.AWAITING_ACK, E.NACK_PERMANENT): S.UNDELIVERED,
    (S.AWAITING_ACK, E.RETRY_DUE): S.RETRYING,
    (S.AWAITING_ACK, E.RETRIES_EXHAUSTED): S.UNDELIVERED,
    (S.AWAITING_ACK, E.TTL_EXPIRED): S.EXPIRED,
    (S.RETRYING, E.CLAIM): S.SENDING,
    (S.RETRYING, E.RETRY_NOW): S.RETRYING,
    (S.RETRYING, E.RETRIES_EXHAUSTED): S.UNDELIVERED,
    (S.RETRYING, E.TTL_EXPIRED): S.EXPIRED,
    (S.RETRYING, E.NACK_PERMANENT): S.UNDELIVERED,
    (S.DELIVERED, E.AWAIT_APPREC): S.AWAITING_APPREC,
    (S.DELIVERED, E.CLOSE): S.COMPLETED,
    (S.AWAITING_APPREC, E.APPREC_TIMEOUT): S.APPREC_OVERDUE,
    # duplicate acks are facts worth a timeline entry, not a state change
    (S.DELIVERED, E.ACK): S.DELIVERED,
    (S.AWAITING_APPREC, E.ACK): S.AWAITING_APPREC,
    (S.APPREC_OVERDUE, E.ACK): S.APPREC_OVERDUE,
    (S.COMPLETED, E.ACK): S.COMPLETED,
}
for _s in (S.RETRYING, S.UNDELIVERED, S.EXPIRED):  # a late ack: it arrived after all
    TRANSITIONS[(_s, E.ACK)] = S.DELIVERED
for _s in _AFTER_SENT:  # an AppRec proves delivery
    TRANSITIONS[(_s, E.APPREC)] = S.COMPLETED
for _s in ACTIVE:
    TRANSITIONS[(_s, E.FAIL)] = S.FAILED
for _s in (S.RECEIVED, S.QUEUED, S.AWAITING_ACK, S.RETRYING):  # not SENDING: a node holds it
    TRANSITIONS[(_s, E.CANCEL)] = S.CANCELLED
for _s in (S.UNDELIVERED, S.EXPIRED, S.FAILED, S.CANCELLED, S.APPREC_OVERDUE, S.REJECTED):
    TRANSITIONS[(_s, E.RESENT)] = _s
for _s in set(S) - {S.RECEIVED, S.REJECTED, S.DUPLICATE}:  # a fact about the original, not a change
    TRANSITIONS[(_s, E.DUPLICATE_RECEIVED)] = _s
del _s


class IllegalTransition(ValueError):
    """An event that the lifecycle does not allow in the message's current state."""

    def __init__(self, state: State | str | None, event: Event | str, msg_id: str | None = None) -> None:
        self.state, self.event, self.msg_id = state, event, msg_id
        allowed = ", ".join(sorted(e.value for e in allowed_events(state))) if _is_state(state) else ""
        who = f"message {msg_id}: " if msg_id else ""
        super().__init__(
            f"{who}event {str(event)!r} is not allowed in state {str(state)!r}"
            + (f" (allowed: {allowed})" if allowed else "")
        )


def _is_state(value: object) -> bool:
    return isinstance(value, str) and value in State._value2member_map_


def next_state(state: State | str, event: Event | str) -> State:
    """The state after `event`; raises IllegalTransition (also for unknown states or events)."""
    try:
        key = (State(state), Event(event))
    except ValueError:
        raise IllegalTransition(state, event) from None
    try:
        return TRANSITIONS[key]
    except KeyError:
        raise IllegalTransition(state, event) from None


def birth_state(event: Event | str) -> State:
    """The first state of a message created by `event` (accept, generate, resend)."""
    try:
        return BIRTHS[Event(event)]
    except (KeyError, ValueError):
        raise IllegalTransition(None, event) from None


def allowed_events(state: State | str | None) -> frozenset[Event]:
    if state is None:
        return frozenset(BIRTHS)
    return frozenset(e for (s, e) in TRANSITIONS if s == state)


# --- the retry ladder -----------------------------------------------------------------------------

_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(text: str) -> timedelta:
    """An xs:duration as CPAs write it (PT240M, PT12H, P2D). Years and months are refused: not exact."""
    m = _DURATION.match(text.strip())
    if not m or text.strip() in ("P", "PT") or text.strip().endswith("T"):
        raise ValueError(f"not a day/time duration: {text!r}")
    f = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return timedelta(days=f["d"], hours=f["h"], minutes=f["m"], seconds=f["s"])


@dataclass(frozen=True)
class RetryPolicy:
    """ebMS reliable messaging: `retries` resends after the first attempt, `interval` apart.

    Defaults are HIS 1037 §5.2 for peers without a CPA: Retries 5, RetryInterval 12 h.
    """

    retries: int = 5
    interval: timedelta = timedelta(hours=12)

    def __post_init__(self) -> None:
        if self.retries < 0 or self.interval <= timedelta(0):
            raise ValueError(f"invalid retry policy: {self.retries} x {self.interval}")

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    @classmethod
    def from_cpa(cls, retries: int | str | None, interval: str | timedelta | None) -> RetryPolicy:
        """From a CPA's ReliableMessaging (`Retries` 4, `RetryInterval` PT240M); missing parts default."""
        d = cls()
        r = d.retries if retries is None or retries == "" else int(retries)
        if interval is None or interval == "":
            i = d.interval
        else:
            i = interval if isinstance(interval, timedelta) else parse_duration(interval)
        return cls(retries=r, interval=i)


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class FailureDecision:
    event: Event  # nack_transient, nack_permanent, retries_exhausted or ttl_expired
    next_attempt_at: datetime | None
    reason: str


def on_failure(
    attempts: int,
    *,
    permanent: bool,
    policy: RetryPolicy,
    now: datetime,
    expires_at: datetime | None,
) -> FailureDecision:
    """What a failed attempt (the `attempts`-th) leads to. Transient/permanent is the caller's call."""
    if permanent:
        return FailureDecision(E.NACK_PERMANENT, None, "permanent failure: not retried")
    if expires_at is not None and now >= expires_at:
        return FailureDecision(E.TTL_EXPIRED, None, f"TimeToLive {expires_at.isoformat()} has passed")
    if attempts >= policy.max_attempts:
        return FailureDecision(
            E.RETRIES_EXHAUSTED, None, f"{attempts} attempts made ({policy.retries} retries allowed)"
        )
    at = now + policy.interval
    if expires_at is not None and at >= expires_at:
        # waiting would only end in expiry; give up now so the sender hears sooner
        return FailureDecision(
            E.RETRIES_EXHAUSTED, None,
            f"next attempt at {at.isoformat()} would be after TimeToLive {expires_at.isoformat()}",
        )
    return FailureDecision(
        E.NACK_TRANSIENT, at, f"attempt {attempts} of {policy.max_attempts} failed; next at {at.isoformat()}"
    )


def ack_deadline(now: datetime, policy: RetryPolicy) -> datetime:
    """When to stop waiting for the ebMS ack of a transmission made at `now` (ebMS RetryInterval)."""
    return now + policy.interval


def timeout_events(
    state: State | str,
    *,
    now: datetime,
    attempts: int,
    max_attempts: int,
    next_attempt_at: datetime | None,
    lease_until: datetime | None,
    expires_at: datetime | None,
    apprec_due_at: datetime | None,
) -> list[Event]:
    """Events that time alone triggers for a message (the store's sweep applies them in order)."""
    st = State(state)
    out: list[Event] = []
    if st is S.SENDING:
        if lease_until is None or now < lease_until:
            return []
        out.append(E.LEASE_EXPIRED)
        st = S.RETRYING
    ttl_gone = expires_at is not None and now >= expires_at
    if st in (S.QUEUED, S.RETRYING, S.AWAITING_ACK) and ttl_gone:
        return [*out, E.TTL_EXPIRED]
    if st is S.AWAITING_ACK and next_attempt_at is not None and now >= next_attempt_at:
        if attempts >= max_attempts:
            return [*out, E.RETRIES_EXHAUSTED]
    if st is S.RETRYING and attempts >= max_attempts:
        return [*out, E.RETRIES_EXHAUSTED]
    if st is S.AWAITING_APPREC and apprec_due_at is not None and now >= apprec_due_at:
        return [*out, E.APPREC_TIMEOUT]
    return out


def claim_events(
    state: State | str,
    *,
    now: datetime,
    attempts: int,
    max_attempts: int,
    next_attempt_at: datetime | None,
    lease_until: datetime | None,
    expires_at: datetime | None,
) -> list[Event] | None:
    """The events that hand a due message to a delivery worker, or None when it is not claimable now."""
    st = State(state)
    if expires_at is not None and now >= expires_at:
        return None  # the sweep expires it
    if attempts >= max_attempts and st is not S.QUEUED:
        return None  # the sweep gives up on it
    due = next_attempt_at is None or now >= next_attempt_at
    if st is S.QUEUED and due:
        return [E.CLAIM]
    if st is S.RETRYING and due:
        return [E.CLAIM]
    if st is S.AWAITING_ACK and next_attempt_at is not None and due:
        return [E.RETRY_DUE, E.CLAIM]
    if st is S.SENDING and lease_until is not None and now >= lease_until:
        return [E.LEASE_EXPIRED, E.CLAIM]
    return None
