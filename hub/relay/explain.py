"""`explain()`: why a message is where it is, in one paragraph an operator can act on at 3 a.m.

Four parts, always in this order: what happened, what the hub did, what happens next, what the
operator can do. Built only from the message's state, its last error and its timeline (pure: the
caller passes `now`), so the relay and the CLI say the same thing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from hub.relay.lifecycle import Event, State
from hub.store.base import Message, TimelineEntry


def ago(then: datetime | None, now: datetime) -> str:
    """'3h 5m ago' / 'in 2d 4h' for people; '' when unknown."""
    if then is None:
        return ""
    d = now - then
    text = span(abs(d))
    return f"{text} ago" if d >= timedelta(0) else f"in {text}"


def span(d: timedelta) -> str:
    s = int(d.total_seconds())
    if s < 60:
        return f"{s}s"
    m, h, days = s // 60 % 60, s // 3600 % 24, s // 86400
    if days:
        return f"{days}d {h}h" if h else f"{days}d"
    if h:
        return f"{h}h {m}m" if m else f"{h}h"
    return f"{m}m"


def _at(t: datetime | None, now: datetime) -> str:
    if t is None:
        return "at an unknown time"
    return f"at {t.strftime('%Y-%m-%d %H:%M')} UTC ({ago(t, now)})"


def _last(timeline: Sequence[TimelineEntry], *events: Event) -> TimelineEntry | None:
    names = {e.value for e in events}
    for e in reversed(timeline):
        if not names or e.event in names:
            return e
    return None


def _error(m: Message) -> str:
    err = m.last_error
    if err is None:
        return ""
    kind = "permanent" if err.permanent else "transient"
    return f"{err.code}: {err.text}".strip(": ") + f" ({kind})"


def explain(
    m: Message,
    timeline: Sequence[TimelineEntry],
    *,
    now: datetime,
    parent: Message | None = None,
    children: Sequence[Message] = (),
) -> str:
    """One paragraph: what happened, what the hub did, what happens next, what the operator can do."""
    who = (f"{m.msg_type or 'message'} {m.short_id} from {m.sender_her or '?'} "
           f"to {m.receiver_her or '?'}")
    # when it entered its current state (later entries such as `resent` or duplicate acks do not count)
    entered = next((e for e in reversed(timeline)
                    if e.to_state == m.state.value and e.from_state != e.to_state), None)
    since = _at(entered.at if entered else m.updated_at, now)
    err = _error(m)
    attempts = f"{m.attempts} of {m.max_retries + 1} attempts"
    resend = f"`hub queue resend {m.short_id}`"
    st = m.state
    parts: list[str]

    if st is State.RECEIVED:
        parts = [f"The {who} was stored {_at(m.created_at, now)} but not yet checked.",
                 "The relay's worker checks, routes and queues new messages within seconds.",
                 "Next it is validated and queued, or refused with an answer to the sender.",
                 "If it stays here for minutes, the relay is not running or is stuck: check `hub serve`."]
    elif st is State.REJECTED:
        parts = [f"The {who} was refused at intake {since}" + (f": {err}." if err else "."),
                 "The hub answered the sender (negative AppRec or ebMS MessageError) and keeps the original.",
                 "Nothing more happens to it.",
                 "The sender must correct and send a new message; resend only if the cause was on our "
                 f"side (e.g. the address register), with {resend}."]
    elif st is State.QUEUED:
        born = timeline[0] if timeline else None
        how = "was checked and queued"
        if born is not None and born.event == Event.RESEND.value:
            how = "was queued as an operator's resend" + (f" by {born.actor}" if born.actor else "")
        elif born is not None and born.event == Event.GENERATE.value:
            how = "was composed by the hub and queued"
        parts = [f"The {who} {how} {since}.",
                 "It waits for a delivery worker"
                 + (f"; a previous attempt failed with {err}" if err else "") + ".",
                 f"Next: delivery on the next claim (attempt {m.attempts + 1} of {m.max_retries + 1}).",
                 "If it stays queued for minutes, check that the relay runs (`hub serve`)."]
    elif st is State.SENDING:
        parts = [f"The {who} is being delivered: attempt {m.attempts} of {m.max_retries + 1}, "
                 f"claimed by {m.lease_owner or '?'} {since}.",
                 "That node holds a lease on it"
                 + (f" until {m.lease_until.strftime('%H:%M:%S')} UTC" if m.lease_until else "") + ".",
                 "If the node crashed, the lease runs out and another attempt is made.",
                 "Nothing to do unless it stays here long after the lease."]
    elif st is State.AWAITING_ACK:
        parts = [f"The {who} was transmitted {since} ({attempts} used).",
                 "The hub waits for the receiver's ebMS acknowledgment"
                 + (f" until {m.next_attempt_at.strftime('%Y-%m-%d %H:%M')} UTC" if m.next_attempt_at else "")
                 + ".",
                 "If none comes, it transmits again with the same MessageId (the receiver drops "
                 "duplicates) until the attempts are used up, then marks it undelivered.",
                 "Nothing to do yet; if acks never come from this receiver, check its endpoint and CPA."]
    elif st is State.RETRYING:
        nxt = m.next_attempt_at
        parts = [f"Delivery of the {who} failed {since}" + (f": {err}." if err else "."),
                 f"The hub will try again ({attempts} used"
                 + (f"; it gives up at TimeToLive {m.expires_at.strftime('%Y-%m-%d %H:%M')} UTC"
                    if m.expires_at else "") + ").",
                 f"Next attempt {_at(nxt, now)}." if nxt else "Next attempt when a worker is free.",
                 "Fix the cause if it is ours (endpoint, certificate, network); no resend is needed, "
                 "the retries continue by themselves."]
    elif st is State.DELIVERED:
        parts = [f"The {who} was delivered {since}.",
                 "The receiver acknowledged it (or it was written to the local system's folder).",
                 "Next the hub waits for the receiver's AppRec, or closes it if none is expected.",
                 "Nothing to do."]
    elif st is State.AWAITING_APPREC:
        parts = [f"The {who} was delivered {since}.",
                 "The receiver's system has it; the hub waits for its application receipt (AppRec).",
                 f"If none arrives by {m.apprec_due_at.strftime('%Y-%m-%d %H:%M')} UTC "
                 f"({ago(m.apprec_due_at, now)}) it is flagged overdue." if m.apprec_due_at
                 else "If none arrives within the limit it is flagged overdue.",
                 "Nothing to do yet."]
    elif st is State.APPREC_OVERDUE:
        parts = [f"The {who} was delivered but no AppRec came by "
                 + (f"{m.apprec_due_at.strftime('%Y-%m-%d %H:%M')} UTC" if m.apprec_due_at else "the limit")
                 + ".",
                 "The hub flagged it once (HIS 80415: treat as not received and alert); a late AppRec "
                 "still completes it.",
                 "Nothing more happens by itself.",
                 f"Call the receiver to ask whether they got it; if not, {resend}."]
    elif st is State.COMPLETED:
        status = f" (status {m.apprec_status})" if m.apprec_status else ""
        parts = [f"The {who} is completed {since}" + (f": AppRec received{status}." if m.apprec_status
                                                       else "; no AppRec was expected."),
                 "The hub routed the answer back to the sender.",
                 "Nothing more happens.",
                 "Nothing to do" + ("; a negative AppRec is for the sender to act on." if m.apprec_status
                                    and m.apprec_status not in ("1", "OK") else ".")]
    elif st is State.UNDELIVERED:
        parts = [f"The {who} could not be delivered: {attempts} used, last {since}"
                 + (f", last error {err}." if err else "."),
                 "The hub stopped trying and told the sender it was not delivered.",
                 "Nothing more happens by itself.",
                 f"Fix the cause (receiver's endpoint or certificate in the register, CPA, network), "
                 f"check with `hub queue resend {m.short_id} --dry-run`, then {resend}."]
    elif st is State.EXPIRED:
        parts = [f"The {who} expired {since}: its TimeToLive"
                 + (f" ({m.expires_at.strftime('%Y-%m-%d %H:%M')} UTC)" if m.expires_at else "")
                 + " passed before delivery" + (f"; last error {err}." if err else "."),
                 "The hub stopped trying and told the sender.",
                 "Nothing more happens by itself.",
                 f"Resend only if the content is still relevant: {resend}."]
    elif st is State.FAILED:
        parts = [f"Processing of the {who} failed permanently {since}" + (f": {err}." if err else "."),
                 "The hub set it aside so it cannot block other messages, and told the sender.",
                 "Nothing more happens by itself.",
                 f"Inspect it with `hub queue show {m.short_id}` / `hub queue export {m.short_id}`; "
                 f"after fixing the cause, {resend}."]
    elif st is State.DUPLICATE:
        dup = _last(timeline, Event.DUPLICATE)
        parts = [f"The {who} arrived again {since}"
                 + (f": {dup.reason}." if dup and dup.reason else ": a duplicate of an earlier message."),
                 "The hub recorded it on the original's timeline and did not deliver it a second time.",
                 "Nothing more happens to this copy; the original goes on as before.",
                 "Nothing to do; if the receiver never got the original, resend the original, not this copy."]
    else:  # CANCELLED
        by = _last(timeline, Event.CANCEL)
        parts = [f"The {who} was cancelled {since}" + (f" by {by.actor}" if by and by.actor else "")
                 + (f": {by.reason}." if by and by.reason else "."),
                 "The hub stopped delivering it.",
                 "Nothing more happens.",
                 f"If that was a mistake, {resend}."]

    lineage: list[str] = []
    if m.parent_id:
        of = parent.short_id if parent else m.parent_id
        lineage.append(f"This message is an operator's resend of {of}.")
    if children:
        # the operator already acted: point at the copy instead of suggesting another resend
        kids = ", ".join(f"{c.short_id} ({c.state.value})" for c in children)
        parts = parts[:-1] + [f"It has already been resent as {kids}: follow the copy with "
                              f"`hub queue why {children[-1].short_id}`."]
    return " ".join(parts + lineage)
