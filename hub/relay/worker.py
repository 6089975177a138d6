"""The loop that claims work and applies the pipeline's decisions through the store.

One dispatcher thread feeds a small pool:
- messages just stored by an intake (`received`) are checked, routed and moved on (`admit`);
- due messages are claimed from the store under a lease (`claim_due`) and delivered (`deliver`);
- once a second the sweep applies what time alone decides (TimeToLive, retries exhausted, crashed
  nodes' leases, overdue AppRecs) and the senders of messages that end undelivered are told.

Every message is handled inside its own try: a message that crashes a stage is marked `failed` with
the error as the reason, and the others carry on (a poison message never blocks the queue).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from hub.relay import pipeline as pl
from hub.relay.delivery import SIGNAL, Deliverer, Delivery, FolderDeliverer, Outcome
from hub.relay.lifecycle import Event, IllegalTransition, RetryPolicy, State
from hub.relay.register import Register
from hub.store import (
    APPREC_LIMIT,
    PAYLOAD,
    ErrorInfo,
    LeaseLost,
    Message,
    MessageMeta,
    MsgIdTaken,
    NotFound,
    Step,
    Store,
)

log = logging.getLogger("hub.relay")

Inspector = Callable[[bytes, str], pl.Facts]


class Answerer(Protocol):
    def __call__(self, facts: pl.Facts, reject: pl.Reject, own_her: int) -> bytes | None: ...


class Notifier(Protocol):
    """Tells a sender that its message ended undelivered (local: error/ note; network: MessageError)."""

    def __call__(self, message: Message, why: str) -> None: ...


@dataclass
class Tap:
    """Observers of what the worker does (the demo's live view; tests). Must not raise or block."""

    listeners: list[Callable[[str, Message, str], None]] = field(default_factory=list)

    def __call__(self, what: str, message: Message, detail: str = "") -> None:
        for fn in self.listeners:
            try:
                fn(what, message, detail)
            except Exception:  # noqa: BLE001 - an observer never stops the relay
                log.exception("tap listener failed")


@dataclass
class WorkerConfig:
    node: str = "node-1"
    threads: int = 8
    batch: int = 64
    lease: timedelta = timedelta(minutes=5)
    poll: float = 0.25  # seconds between looks at the store when nothing woke us
    sweep_every: float = 1.0
    apprec_limit: timedelta = APPREC_LIMIT  # AppRec overdue this long after delivery
    local_policy: RetryPolicy = field(default_factory=lambda: RetryPolicy(5, timedelta(seconds=30)))
    network_policy: RetryPolicy | None = None  # None: the CPA's, else HIS 1037 defaults
    ttl: timedelta | None = None  # TimeToLive when the sender gave none
    defer_s: float = 60.0  # a message whose check could not be made now (CRL away) is checked again
    # several processes share the node's store (hub.relay.processes): a `received` message is admitted
    # only by the process holding its admission lease (given at intake, or taken with claim_received)
    leased_admission: bool = False
    processes: int = 1  # this node's processes: this one (intake, listeners) and processes-1 workers


def _now() -> datetime:
    return datetime.now(UTC)


def _as_stored(msg: Message, meta: dict[str, object]) -> Message:
    """`msg` as it reads once `meta` is committed (HER-ids are stored as text)."""
    ch = {k: str(v) if k in ("sender_her", "receiver_her") else v for k, v in meta.items() if v is not None}
    return replace(msg, **ch)  # type: ignore[arg-type]


def _summary(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {tb[-1].filename.rsplit('/', 1)[-1]}:{tb[-1].lineno}" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


class Worker:
    def __init__(
        self,
        store: Store,
        register: Register,
        *,
        own_her: int,
        spool_root: Path,
        inspector: Inspector,
        deliverers: dict[pl.RouteKind, Deliverer],
        answerer: Answerer | None = None,
        notifier: Notifier | None = None,
        unwrap: Callable[[Message, bytes], bytes | None] | None = None,
        config: WorkerConfig | None = None,
        tap: Tap | None = None,
        answer_peer: Callable[..., None] | None = None,
        peer_seen: Callable[[Message], tuple[str, str, bytes] | None] | None = None,
    ) -> None:
        self.store, self.register = store, register
        self.own_her, self.spool_root = own_her, spool_root
        self.inspect, self.deliverers = inspector, deliverers
        self.answerer, self.notifier, self.unwrap = answerer, notifier, unwrap
        # network intake: the ebMS answer (Acknowledgment or MessageError) once the checks have decided
        self.answer_peer = answer_peer
        # the seen record of that Acknowledgment, when the network layer has it at hand: written in the
        # commit of the verdict instead of one of its own
        self.peer_seen = peer_seen
        self.cfg = config or WorkerConfig()
        self.tap = tap or Tap()
        # (id, and when the intake has them at hand: the stored message and its bytes, not read again)
        self._received: queue.SimpleQueue[tuple[str, Message | None, bytes | None]] = queue.SimpleQueue()
        self._wake = threading.Event()
        # something may have become due (a message queued without being claimed, a failed attempt, a
        # generated AppRec): look with claim_due at once instead of at the next poll. Messages the worker
        # validates are claimed in the same commit and delivered by the same thread, so a stream of new
        # messages costs no claim_due write per wake-up.
        self._due = threading.Event()
        self._recv_due = threading.Event()  # leased admission: look for received messages nobody holds
        self._stop = threading.Event()
        self._inflight = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self.heartbeat = 0.0  # time.monotonic() of the dispatcher's last round (/health: is it alive)
        self._timers: list[threading.Timer] = []  # deferred messages' next admit

    # --- the loop ----------------------------------------------------------------------------------
    def notify_received(self, message_id: str, message: Message | None = None,
                        data: bytes | None = None) -> None:
        """An intake stored a message: check it soon (`message`, `data`: as stored, spares two reads)."""
        self._received.put((message_id, message, data))
        self._wake.set()

    def wake(self) -> None:
        self._due.set()
        self._wake.set()

    def load(self) -> int:
        """Messages waiting for or in this worker's threads."""
        with self._lock:
            return self._inflight + self._received.qsize()

    def start(self) -> None:
        self.recover()
        self._pool = ThreadPoolExecutor(self.cfg.threads, thread_name_prefix=f"relay-{self.cfg.node}")
        self._thread = threading.Thread(target=self._run, name=f"dispatch-{self.cfg.node}", daemon=True)
        self._thread.start()

    def alive(self, within: float) -> bool:
        """The dispatcher thread runs and has gone round within `within` seconds."""
        import time

        return self._thread is not None and self._thread.is_alive() and \
            time.monotonic() - self.heartbeat <= within

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; let in-flight work finish (what does not finish is recovered by its lease)."""
        self._stop.set()
        self._wake.set()
        with self._lock:
            for t in self._timers:
                t.cancel()  # still `received`: the next start's recover() admits them again
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def recover(self) -> None:
        """After a restart: our own claims from before are void; unchecked messages are checked again."""
        for m in self.store.list_messages(state=State.SENDING, limit=100_000):
            if m.lease_owner == self.cfg.node:
                try:
                    self.store.transition(m.id, Event.LEASE_EXPIRED, actor=self.cfg.node,
                                          reason=f"{self.cfg.node} restarted while holding it")
                except (IllegalTransition, NotFound):
                    pass
        if self.cfg.leased_admission:
            # ours from before the restart, nobody's, and those of processes whose lease ran out
            for m in self.store.claim_received(self.cfg.node, 100_000, lease=self.cfg.lease, own=True):
                self._received.put((m.id, m, None))
            return
        for m in sorted(self.store.list_messages(state=State.RECEIVED, limit=100_000),
                        key=lambda m: m.created_at):
            self._received.put((m.id, None, None))

    def _submit(self, fn: Callable[..., None], *args: object) -> None:
        assert self._pool is not None
        with self._lock:
            self._inflight += 1

        def run() -> None:
            try:
                fn(*args)
            except Exception:  # noqa: BLE001 - last resort; each stage catches its own
                log.exception("unexpected error in the relay worker")
            finally:
                with self._lock:
                    self._inflight -= 1
                self._wake.set()

        self._pool.submit(run)

    def _free(self) -> int:
        with self._lock:
            return self.cfg.threads * 2 - self._inflight

    def _run(self) -> None:
        last_sweep = last_claim = 0.0
        import time

        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            self._wake.clear()
            busy = False
            while self._free() > 0:
                try:
                    mid, msg, data = self._received.get_nowait()
                except queue.Empty:
                    break
                self._submit(self.admit, mid, msg, data)
                busy = True
            free = self._free()
            t = time.monotonic()
            # due work: when something said so, else at each poll (retry and ack deadlines come by time)
            if free > 0 and (self._due.is_set() or t - last_claim >= self.cfg.poll):
                self._due.clear()
                last_claim = t
                try:
                    claimed = self.store.claim_due(self.cfg.node, min(free, self.cfg.batch),
                                                   lease=self.cfg.lease)
                except Exception:  # noqa: BLE001 - the database may be briefly away
                    log.exception("claim failed")
                    claimed = []
                for m in claimed:
                    self._submit(self.deliver, m)
                if len(claimed) >= min(free, self.cfg.batch):
                    self._due.set()  # maybe more where these came from
                busy = busy or bool(claimed)
            if self.cfg.leased_admission and self._free() > 0 and (
                    self._recv_due.is_set() or t - last_sweep >= self.cfg.sweep_every):
                self._recv_due.clear()
                busy = self._claim_received() or busy
            if t - last_sweep >= self.cfg.sweep_every:
                last_sweep = t
                try:
                    self.sweep()
                except Exception:  # noqa: BLE001
                    log.exception("sweep failed")
            if not busy:
                self._wake.wait(self.cfg.poll)

    def _claim_received(self) -> bool:
        try:
            taken = self.store.claim_received(self.cfg.node, min(self._free(), self.cfg.batch),
                                              lease=self.cfg.lease)
        except Exception:  # noqa: BLE001 - the database may be briefly away
            log.exception("claim of received messages failed")
            return False
        for m in taken:
            self._submit(self.admit, m.id, m, None)
        if len(taken) >= self.cfg.batch:
            self._recv_due.set()  # maybe more where these came from
        return bool(taken)

    def _hold(self, msg: Message) -> None:
        """Leased admission: a deferred check keeps its message ours until it is tried again."""
        if self.cfg.leased_admission:
            until = _now() + timedelta(seconds=self.cfg.defer_s) + self.cfg.lease
            self.store.hold_received(msg.id, node=self.cfg.node, until=until)

    # --- stage: admit (check and route) -----------------------------------------------------------
    def admit(self, ref: str, stored: Message | None = None, data: bytes | None = None) -> None:
        try:
            # as the intake stored it: the VALIDATED transition still checks the state under the lock
            msg = stored if stored is not None and stored.id == ref else self.store.require(ref)
            if msg.state is not State.RECEIVED:
                return  # another node (or an earlier run) got to it first
            if self.cfg.leased_admission and msg.lease_owner != self.cfg.node:
                return  # another process of this node admits it (or claims it: nobody holds it yet)
            self._admit(msg, data if stored is not None else None)
        except (IllegalTransition, NotFound):
            return
        except Exception as exc:  # noqa: BLE001 - poison: fail this message, keep the others going
            self._fail(ref, exc)

    def _admit(self, msg: Message, data: bytes | None = None) -> None:
        if data is None:
            data = self.store.blob(msg.id)
        assert data is not None
        network_in = self.unwrap is not None and msg.direction == "in"
        arts: dict[str, bytes] | None = None
        if network_in:
            assert self.unwrap is not None
            inner = self.unwrap(msg, data)  # network intake: the KITH document inside the envelope
            if inner is None:
                self._hold(msg)  # deferred: still ours (settled ones are no longer `received`)
                return  # settled by the network layer: refused envelope, duplicate, or deferred
            data = inner
            # stored with the verdict, in its commit: a delivery after a restart, and the operator, read it
            arts = {PAYLOAD: inner}
        facts = self.inspect(data, msg.short_id)
        sub = pl.Submitted(pl.Channel(msg.channel or "folder"), pl._int(msg.sender_her),
                           pl._int(msg.receiver_her))
        # parties named without a HER-id, as the register finds them: recorded and answered as such
        facts = pl.resolve_parties(facts, sub, self.register)
        decision = pl.decide_intake(facts, sub, self.register, self.spool_root)
        if isinstance(decision, pl.Defer):
            self._defer(msg, decision)
            return
        meta = {
            "family": facts.family, "version": facts.version, "msg_type": facts.msg_type,
            "kith_msg_id": facts.msg_id, "gen_date": facts.gen_date,
        }
        meta = {k: v for k, v in meta.items() if v is not None}
        if isinstance(decision, pl.Reject):
            self._reject(msg, facts, decision, meta, arts, network_in)
            return
        policy = self._policy(decision.route)
        now = _now()
        expires = msg.expires_at or (now + self.cfg.ttl if self.cfg.ttl else None)
        meta.update(
            sender_her=facts.sender_her, receiver_her=facts.receiver_her, direction=decision.direction,
            max_retries=policy.retries, retry_interval_s=int(policy.interval.total_seconds()),
            expires_at=expires, cpa_id=msg.cpa_id or decision.route.cpa_id,
        )
        if not decision.route.local and not msg.out_message_id:
            # fixed before the first attempt: retries reuse it (the peer's duplicate elimination
            # relies on that) and an ack that overtakes our own bookkeeping still finds the message
            meta["out_message_id"] = str(uuid.uuid4())
        steps = [Step(Event.VALIDATED, decision.reason, {k: v for k, v in meta.items() if v is not None},
                      artifacts=arts)]
        route = decision.route
        deliverer = self.deliverers.get(route.kind)
        prepared: dict[str, bytes] | None = None
        if deliverer is not None and (expires is None or expires > now):
            # claimed in the same commit and delivered by this thread below: no claim_due round,
            # no second commit, no hand-over to another thread; what the channel must store before
            # its first attempt (the signed+encrypted envelope) joins that commit too
            prepared = self._prepared(deliverer, route, data, _as_stored(msg, meta))
            steps.append(Step(Event.CLAIM, claim=self.cfg.lease, artifacts=prepared))
        seen = self.peer_seen(msg) if network_in and self.peer_seen is not None else None
        # the sender's MsgId becomes this message's in the same commit (issue 12: whatever the intake)
        key = pl.msg_id_key(self.register, facts, hashlib.sha256(data).hexdigest())
        answer = None  # the seen record the commit left: answer_peer does not read it back
        try:
            if seen is not None:
                ms, answer = self.store.advance_answered(msg.id, steps, actor=self.cfg.node, seen=seen,
                                                         msg_id=key)
            else:
                ms = self.store.advance(msg.id, steps, actor=self.cfg.node, msg_id=key)
        except MsgIdTaken as taken:
            assert key is not None
            self._reused(msg, facts, sub, taken, key[2], meta, arts, network_in)
            return
        m = ms[0]
        self.tap("queued", m, decision.reason)
        if network_in and self.answer_peer is not None:
            # the ebMS Acknowledgment, now that the content is accepted
            self.answer_peer(m, decision, recorded=seen is not None, answer=answer)
        if decision.closes:
            self._close_original(m, facts)
        if ms[-1].state is State.SENDING:
            self.deliver(ms[-1], route, data, prepared)
        else:
            self.wake()

    def _reject(self, msg: Message, facts: pl.Facts, decision: pl.Reject, meta: dict[str, object],
                arts: dict[str, bytes] | None, network_in: bool) -> None:
        err = ErrorInfo(decision.code, decision.text, True)
        m = self.store.advance(msg.id, [Step(Event.REJECT, decision.reason, meta, err, artifacts=arts)],
                               actor=self.cfg.node)[0]
        self.tap("rejected", m, decision.reason)
        if network_in and self.answer_peer is not None:
            self.answer_peer(m, decision)  # the MessageError, recorded for duplicates
            if decision.answer is pl.Answer.MESSAGE_ERROR:
                return
        self._answer(m, facts, decision)

    def _reused(self, msg: Message, facts: pl.Facts, sub: pl.Submitted, taken: MsgIdTaken, digest: str,
                meta: dict[str, object], arts: dict[str, bytes] | None, network_in: bool) -> None:
        """The sender's MsgId is an earlier message's: a duplicate (not delivered again) or E10."""
        original = self.store.get(taken.message_id)
        ref = original.short_id if original is not None else taken.message_id
        decision = pl.reused_msg_id(facts, sub, self.register, same_content=taken.sha256 == digest,
                                    original_id=taken.message_id, original_ref=ref)
        if isinstance(decision, pl.Reject):
            self._reject(msg, facts, decision, meta, arts, network_in)
            return
        parties = {"sender_her": facts.sender_her, "receiver_her": facts.receiver_her}
        m, orig = self.store.mark_duplicate(
            msg.id, taken.message_id, reason=decision.reason, actor=self.cfg.node,
            updates={**meta, **{k: v for k, v in parties.items() if v is not None}})
        self.tap("duplicate", m, decision.reason)
        self.tap("duplicate-received", orig, f"copy {m.short_id} not delivered again")
        if network_in and self.answer_peer is not None:
            self.answer_peer(m, decision)  # the envelope was fine: its Acknowledgment

    @staticmethod
    def _prepared(deliverer: Deliverer, route: pl.Route, data: bytes, msg: Message
                  ) -> dict[str, bytes] | None:
        prepare = getattr(deliverer, "prepare", None)
        if prepare is None:
            return None
        try:
            return prepare(route, data, msg)
        except Exception:  # noqa: BLE001 - deliver() meets the same fault and records the failed attempt
            return None

    def _defer(self, msg: Message, d: pl.Defer) -> None:
        """No verdict yet (CRL unreachable): stays `received`, admitted again after `defer_s` (and at a
        restart, by recover()); nobody is answered, so a transient outage never becomes an S-code."""
        log.warning("%s deferred: %s", msg.short_id, d.reason)
        self.tap("deferred", msg, d.reason)
        self._hold(msg)
        t = threading.Timer(self.cfg.defer_s, self.notify_received, [msg.id])
        t.daemon = True
        t.start()
        with self._lock:
            self._timers = [x for x in self._timers if x.is_alive()] + [t]

    def _policy(self, route: pl.Route) -> RetryPolicy:
        if route.local:
            return self.cfg.local_policy
        return self.cfg.network_policy or RetryPolicy()

    def _close_original(self, apprec: Message, facts: pl.Facts) -> None:
        assert facts.original_msg_id is not None
        cands = self.store.find_by_kith_msg_id(facts.original_msg_id)
        corr = pl.correlate_apprec(facts, cands, self.register)
        if corr.original_id is None:
            log.warning("AppRec %s: %s", apprec.short_id, corr.reason)
            self.tap("uncorrelated", apprec, corr.reason)
            return
        try:
            orig = self.store.transition(
                corr.original_id, Event.APPREC, actor=self.cfg.node,
                reason=f"{corr.reason}; AppRec {apprec.short_id}",
                updates={"apprec_status": facts.apprec_status or "?"},
            )
            self.tap("completed", orig, corr.reason)
        except IllegalTransition as exc:
            # a second AppRec for a completed message: HIS 80415 says an AppRec is final - flag it
            log.warning("AppRec %s for %s: %s", apprec.short_id, corr.original_id, exc)
            self.tap("apprec-illegal", apprec, str(exc))

    def _answer(self, rejected: Message, facts: pl.Facts, reject: pl.Reject) -> None:
        if reject.answer is pl.Answer.APPREC and self.answerer is not None:
            # the addressed receiver when this relay serves it, else the relay (pipeline.apprec_author)
            author = pl.apprec_author(self.register, facts, self.own_her, self.spool_root)
            body = self.answerer(facts, reject, author)
            if body is None:
                return
            her = facts.sender_her
            route = pl.route_for(self.register, her, self.spool_root) if her is not None else None
            network = route is not None and not route.local
            # a network sender's AppRec travels like any message to a peer: its MessageId fixed before
            # the first attempt (retries reuse it), the network retry policy
            policy = self._policy(route) if route is not None else self.cfg.local_policy
            m = self.store.put_generated(
                body,
                MessageMeta(direction="out" if network else "local", channel="hub",
                            sender_her=str(author), receiver_her=str(her), msg_type=pl.APPREC_TYPE,
                            family="AppRec", max_retries=policy.retries,
                            retry_interval_s=int(policy.interval.total_seconds()),
                            out_message_id=str(uuid.uuid4()) if network else None,
                            cpa_id=route.cpa_id if network and route is not None else None),
                actor=self.cfg.node, reason=f"negative AppRec ({reject.code}) for {rejected.short_id}",
            )
            self.tap("answer", m, f"AppRec {reject.code} for {rejected.short_id}")
            self.wake()  # the AppRec is queued: claim it now
        elif reject.answer is pl.Answer.MESSAGE_ERROR and self.notifier is not None:
            self.notifier(rejected, reject.reason)
        elif reject.answer is pl.Answer.NONE and self.notifier is not None and rejected.channel in (
                pl.Channel.FOLDER, pl.Channel.SUBMIT):
            self.notifier(rejected, reject.reason)

    # --- stage: deliver ------------------------------------------------------------------------------
    def deliver(self, msg: Message, route: pl.Route | None = None, payload: bytes | None = None,
                prepared: dict[str, bytes] | None = None) -> None:
        """Deliver a claimed message; `route` and `payload` (the KITH document) when admit has them, and
        `prepared`: what the deliverer's prepare() made and the claim's commit stored (not read back)."""
        try:
            if route is None:
                her = pl._int(msg.receiver_her)
                route = pl.route_for(self.register, her, self.spool_root) if her is not None else None
            if route is None:
                raise pl.DeliveryError("route.unknown", f"no route to HER-id {msg.receiver_her} in the "
                                       "address register", permanent=True)
            data = payload if payload is not None else self.store.blob(msg.id)
            assert data is not None
            if payload is None and self.unwrap is not None and msg.direction == "in":
                inner = self.unwrap(msg, data)
                if inner is None:
                    raise pl.DeliveryError("unwrap", "the received envelope's payload is not available",
                                           permanent=True)
                data = inner
            deliverer = self.deliverers.get(route.kind)
            if deliverer is None:
                raise pl.DeliveryError("route.channel", f"no {route.kind.value} channel is configured",
                                       permanent=True)
            result = deliverer.deliver(route, data, msg, prepared=prepared) if prepared \
                else deliverer.deliver(route, data, msg)
        except LeaseLost:
            return
        except Exception as exc:  # noqa: BLE001 - sorted into transient/permanent below
            self._failed_attempt(msg, pl.classify(exc))
            return
        try:
            self._delivered(msg, result)
        except LeaseLost:
            log.warning("%s: lease lost after delivery; the retry will replace the same copy", msg.short_id)

    def _delivered(self, msg: Message, result: Delivery) -> None:
        node = self.cfg.node
        if result.outcome is Outcome.SENT:
            m = self.store.mark_sent(msg.id, node=node, out_message_id=result.out_message_id)
            if m.state is State.AWAITING_ACK:  # else the peer's ack came first (delivered, tapped there)
                self.tap("sent", m, result.detail)
            return
        # delivered and what follows (awaiting the AppRec, or completed) in one commit
        # an HTTP sync Acknowledgment is stored (SIGNAL) in this commit too
        ack = Step(Event.ACK, result.detail,
                   {"out_message_id": result.out_message_id} if result.out_message_id else None,
                   artifacts={SIGNAL: result.signal} if result.signal else None)
        m, m2 = self.store.advance(msg.id, [ack, self._after_step(msg)], actor=node, lease_owner=node)
        self.tap("delivered", m, result.detail)
        self._after_tap(m2)

    def _after_step(self, m: Message) -> Step:
        ev = pl.after_delivery(m.msg_type, m.family)
        if ev is Event.AWAIT_APPREC:
            due = _now() + self.cfg.apprec_limit
            return Step(ev, f"AppRec expected by {due.isoformat(timespec='seconds')}", {"apprec_due_at": due})
        return Step(ev, "an AppRec expects no answer")

    def _after_tap(self, m2: Message) -> None:
        if m2.state is not State.AWAITING_APPREC:
            self.tap("completed", m2, "delivered")

    def after_delivered(self, m: Message) -> None:
        st = self._after_step(m)
        m2 = self.store.advance(m.id, [st], actor=self.cfg.node)[0]
        self._after_tap(m2)

    def on_ack(self, ref_to_message_id: str, detail: str = "ebMS Acknowledgment", *,
               message: Message | None = None, signal: bytes | None = None) -> Message | None:
        """A peer acknowledged our envelope `ref_to_message_id` (from the SMTP/HTTP intake). `message`:
        ours as the caller just read it (not read again); `signal`: the Acknowledgment's bytes, stored
        (delivery.SIGNAL) in the commit that applies it."""
        m = message if message is not None else self.store.get(ref_to_message_id)
        if m is None or m.out_message_id != ref_to_message_id:
            log.warning("ack for unknown MessageId %s", ref_to_message_id)
            return None
        arts = {SIGNAL: signal} if signal else None
        before = m.state
        if before in (State.SENDING, State.AWAITING_ACK, State.RETRYING, State.DELIVERED):
            # the ack and what follows delivery in one commit; if the state moved meanwhile, one by one
            try:
                m, m2 = self.store.advance(m.id, [Step(Event.ACK, detail, artifacts=arts),
                                                  self._after_step(m)], actor=self.cfg.node)
            except IllegalTransition:
                m2 = None
            if m2 is not None:
                if before is not m.state:
                    self.tap("delivered", m, detail)
                self._after_tap(m2)
                return m
        if arts:
            self.store.put_artifact(m.id, SIGNAL, arts[SIGNAL])
        m = self.store.transition(m.id, Event.ACK, actor=self.cfg.node, reason=detail)
        if before is not m.state:
            self.tap("delivered", m, detail)
        if m.state is State.DELIVERED:
            self.after_delivered(m)
        return m

    def on_nack(self, ref_to_message_id: str, code: str, text: str) -> Message | None:
        """A peer answered our envelope with an ebMS MessageError: a permanent failure, the sender told."""
        m = self.store.get(ref_to_message_id)
        if m is None or m.out_message_id != ref_to_message_id:
            log.warning("MessageError for unknown MessageId %s: %s %s", ref_to_message_id, code, text)
            return None
        try:
            m = self.store.transition(m.id, Event.NACK_PERMANENT, actor=self.cfg.node,
                                      reason=f"ebMS MessageError {code}: {text}",
                                      error=ErrorInfo(f"ebms.{code}", text, True))
        except IllegalTransition as exc:  # e.g. already delivered: an AppRec or ack came first
            log.warning("MessageError %s for %s ignored: %s", code, m.short_id, exc)
            return None
        self.tap(m.state.value, m, f"MessageError {code}: {text}")
        self._tell_sender(m)
        return m

    def _failed_attempt(self, msg: Message, f: pl.Failure) -> None:
        try:
            m = self.store.record_failure(msg.id, ErrorInfo(f.code, f.text, f.permanent),
                                          actor=self.cfg.node, lease_owner=self.cfg.node)
        except LeaseLost:
            return
        self.tap("retrying" if m.state is State.RETRYING else m.state.value, m, f"{f.code}: {f.text}")
        if m.state is State.RETRYING:
            self.wake()  # its next attempt may be due at once (a zero retry interval)
        if m.state in (State.UNDELIVERED, State.EXPIRED):
            self._tell_sender(m)

    def _tell_sender(self, m: Message) -> None:
        if self.notifier is None or m.channel == pl.Channel.HUB:
            return
        why = f"{m.state.value}: {m.last_error_code or ''} {m.last_error_text or ''}".strip()
        try:
            self.notifier(m, why)
        except Exception:  # noqa: BLE001 - the state is recorded; the note is best effort
            log.exception("could not tell the sender of %s", m.short_id)

    def _fail(self, ref: str, exc: BaseException) -> None:
        why = _summary(exc)
        log.error("message %s failed: %s", ref, why)
        try:
            m = self.store.transition(ref, Event.FAIL, actor=self.cfg.node, reason=why,
                                      error=ErrorInfo("crash", why, True))
            self.tap("failed", m, why)
            self._tell_sender(m)
        except Exception:  # noqa: BLE001
            log.exception("could not mark %s failed", ref)

    # --- stage: sweep -------------------------------------------------------------------------------
    def sweep(self) -> None:
        for s in self.store.sweep(actor=self.cfg.node):
            m = s.message
            self.tap(m.state.value, m, ", ".join(e.value for e in s.events))
            if m.state in (State.UNDELIVERED, State.EXPIRED):  # apprec_overdue: logged by hub.logs
                self._tell_sender(m)
        folder = self.deliverers.get(pl.RouteKind.FOLDER)
        if isinstance(folder, FolderDeliverer):
            folder.housekeep()


def local_notifier(register: Register, spool_root: Path) -> Notifier:
    """Tell a local system about its message in its error/ folder (JSON-free plain text for people)."""

    def notify(m: Message, why: str) -> None:
        her = pl._int(m.sender_her)
        org = register.organisation_of(her) if her is not None else None
        if org is None:
            return
        route = pl.route_for(register, org.her_id, spool_root)
        if route is None or not route.local:
            return
        text = (f"message {m.short_id} ({m.msg_type or '?'} MsgId {m.kith_msg_id or '?'} to "
                f"{m.receiver_her or '?'}) {why}\n")
        FolderDeliverer.notice(Path(route.endpoint), f"{m.short_id}.txt", text)

    return notify
