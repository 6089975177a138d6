"""ebMS intake: a MIME entity from the network (SMTP DATA, HTTP POST /ebxml) stored before it is answered.

`take()` stores the raw entity (`put_received`, with an `in:<MessageId>` seen record holding the MAIL
FROM in the same commit) before the 250 / 2xx. A duplicate of an envelope answered before gets that
answer again, byte for byte, and is not stored. Signals (Acknowledgment, MessageError) are not messages
of their own: they go to `on_signal` (hub.relay.ebms_delivery) at once. Everything else (checks,
answers) happens on the worker, in hub.relay.unwrap.

Dependencies are passed in: the store, `on_stored` (the worker: id, message and bytes as stored),
`on_signal`, `send_later` (a best-effort signal), `peer_endpoint` (the register's endpoint of a HER-id)
and `handoff` (what was parsed here, for the unwrap step so it is not parsed again).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from hub.codes import EbmsError
from hub.ebxml.dedup import envelope_digest
from hub.ebxml.envelope import Envelope, parse_envelope
from hub.ebxml.errors import LOC, EbxmlError
from hub.ebxml.mime import Package, build_package, parse_package
from hub.ebxml.signals import build_soap_fault
from hub.relay.rejected import record_rejected
from hub.store import Message, MessageMeta, Store
from hub.transport.http import HttpReply
from hub.transport.http_server import HttpRequest

MAIL_FROM = "smtp-mail-from"  # the MAIL FROM of a received mail whose MessageId was answered before
IN_PREFIX = "in:"  # seen key of "stored, being processed" (value: the MAIL FROM to answer to)
INLINE_PEEK_BYTES = 8 * 1024  # mails up to this size are parsed on the listener's loop (store_mail)
SIGNAL_THREADS = 4  # received signals applied at once (store_mail)
log = logging.getLogger("hub.relay.ebms_intake")


@dataclass(frozen=True)
class Peek:
    """What intake needs to know before storing: a signal or a message, its ids and parties."""

    signal: bool
    message_id: str | None
    conversation_id: str | None
    from_her: str | None
    to_her: str | None
    cpa_id: str | None
    service: str | None
    action: str | None
    digest: str  # "" for a signal
    sync_reply: bool
    # what was parsed to peek, handed on so a signal is not parsed again when it is applied
    parsed: tuple[Package, Envelope] | None = field(default=None, repr=False, compare=False)


def peek(raw: bytes) -> Peek | EbxmlError:
    """Parse the envelope (no checks); the error when it is not readable ebXML."""
    try:
        pkg = parse_package(raw)
        env = parse_envelope(pkg.soap)
    except EbxmlError as e:
        return e
    except Exception as e:  # noqa: BLE001 - any parse failure is the sender's
        return EbxmlError(EbmsError.OTHER_XML, f"unreadable: {type(e).__name__}: {e}", LOC["envelope"])
    h = env.header
    # a signal is applied, never stored nor answered: no duplicate-elimination digest (a C14N) for it
    digest = envelope_digest(env, pkg.parts) if env.root is not None and not env.is_signal else ""
    return Peek(env.is_signal, h.message_id, h.conversation_id, h.from_party.her_id, h.to_party.her_id,
                h.cpa_id, h.service, h.action, digest, env.sync_reply, (pkg, env))


def mail_from(store: Store, m: Message) -> str | None:
    """The MAIL FROM a received envelope came with (mailto:), recorded at intake."""
    if not m.ebxml_message_id:
        return None
    own = store.blob(m.id, MAIL_FROM)  # a reused MessageId: the in: record names its first sender
    rec = store.seen_get(IN_PREFIX + m.ebxml_message_id) if own is None else None
    addr = bytes(own if own is not None else rec.response if rec is not None else b"").decode()
    return f"mailto:{addr}" if addr else None


class Answered:
    """Woken whenever this relay records its answer to a received message (HTTP SyncReply waits)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()

    def notify(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait(timeout)


@dataclass
class Taken:
    what: str  # stored | duplicate | in-process | signal | refused (unreadable: kept as rejected)
    message: Message | None = None
    response: bytes | None = None  # a duplicate's stored signal, or the MessageError, to send back
    reply_to: str | None = None
    peek: Peek | None = None


class EbmsIntake:
    def __init__(
        self, store: Store, *, node: str, answered: Answered,
        on_stored: Callable[[str, Message, bytes], None],
        on_signal: Callable[..., object],
        send_later: Callable[[bytes, str], None],
        peer_endpoint: Callable[[str], str | None],
        unreadable: Callable[[EbxmlError, str | None], bytes],
        handoff: Callable[[str, tuple[Package, Envelope], str], None] | None = None,
        tap: Callable[..., None] | None = None,
    ) -> None:
        self.store, self.node, self.answered = store, node, answered
        self.on_stored, self.on_signal, self.send_later = on_stored, on_signal, send_later
        self.peer_endpoint, self.handoff, self.tap = peer_endpoint, handoff, tap
        # the MessageError for input with no ebXML header: (what is wrong, the sender's address) -> entity
        self.unreadable = unreadable
        # signals being applied after the 250 (drained at stop), on threads made at the first one
        self.pending: set[Future[object]] = set()
        self._signals: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def take(self, raw: bytes, channel: str, mail_from: str | None = None, *,
             apply_signal: bool = True, peeked: Peek | EbxmlError | None = None) -> Taken:
        """Store a received entity durably (or settle it: a signal, a duplicate). Raises if not stored.
        `apply_signal=False`: a signal is only recognised; the caller applies it (`on_signal`).
        `peeked`: what peek(raw) gave the caller already."""
        p = peek(raw) if peeked is None else peeked
        if isinstance(p, EbxmlError):
            return self._refuse(raw, channel, p, mail_from)
        if p.signal:
            if apply_signal:
                self.on_signal(raw, channel, p.parsed)
            return Taken("signal", peek=p)
        rec = None
        if p.message_id:
            # both records in one look (one round trip to a database server instead of two)
            recs = self.store.seen_records([p.message_id, IN_PREFIX + p.message_id])
            rec = recs.get(p.message_id)
            if rec is not None and rec.digest == p.digest:
                # answered before: the same signal again, byte for byte; nothing is stored or delivered
                return Taken("duplicate", response=bytes(rec.response) or None,
                             reply_to=self._reply_to(p, mail_from), peek=p)
            if rec is None and IN_PREFIX + p.message_id in recs:
                return Taken("in-process", peek=p)  # its signal goes out when the checks are done
        meta = MessageMeta(
            direction="in", channel=channel, ebxml_message_id=p.message_id, conversation_id=p.conversation_id,
            cpa_id=p.cpa_id, service=p.service, action=p.action, sender_her=p.from_her, receiver_her=p.to_her,
        )
        seen = None
        if p.message_id:
            seen = (IN_PREFIX + p.message_id, p.digest, (mail_from or "").encode())
        who = f"{p.from_her} -> {p.to_her}"
        m = self.store.put_received(raw, meta, actor=self.node, seen=seen,
                                    reason=f"ebXML over {channel} ({who}" +
                                    (f", MAIL FROM {mail_from})" if mail_from else ")"))
        if rec is not None and mail_from:
            # answered before with other content: its MessageError goes to this sender, not the first
            self.store.put_artifact(m.id, MAIL_FROM, mail_from.encode())
        if p.parsed is not None and self.handoff is not None:
            self.handoff(m.id, p.parsed, p.digest)
        self.on_stored(m.id, m, raw)  # as stored: the worker does not read them back
        return Taken("stored", message=m, peek=p)

    def _refuse(self, raw: bytes, channel: str, e: EbxmlError, mail_from: str | None) -> Taken:
        """Not readable ebXML: nothing to route, and no MessageId to answer later. Its bytes are kept
        as a rejected message (hub.relay.rejected: `hub queue list --state rejected`). Over HTTP the
        answer is a SOAP Fault naming what is wrong and where; over SMTP a MessageError signed by the
        relay goes to the MAIL FROM (none for the null sender). A crash between the two commits leaves it
        `received`: the worker then refuses it the same way (hub.relay.unwrap)."""
        text = f"{e.location}: {e.description}" if e.location else e.description
        m = record_rejected(self.store, raw, channel=channel, actor=self.node, code=str(e.code), text=text,
                            origin=mail_from or "")
        if self.tap is not None:
            self.tap("rejected", m, f"{e.code}: {text}")
        if channel == "http":
            fault = build_package(build_soap_fault([e]), soap_base64=False)
            return Taken("refused", message=m, response=fault)
        sender = f"mailto:{mail_from}" if mail_from else None
        return Taken("refused", message=m, response=self.unreadable(e, sender), reply_to=sender)

    def _reply_to(self, p: Peek, mail_from: str | None) -> str | None:
        endpoint = self.peer_endpoint(p.from_her) if p.from_her else None
        if endpoint:
            return endpoint
        return f"mailto:{mail_from}" if mail_from else None

    async def store_mail(self, data: bytes, mail_from: str, rcpts: list[str]) -> None:
        """The SMTP listener's store step: durable before the 250."""
        # the null reverse-path (<>) is a bounce's: nobody to answer (RFC 5321 §4.5.5)
        sender = mail_from if mail_from not in ("", "<>") else None
        p = None
        if len(data) <= INLINE_PEEK_BYTES:
            # a small mail (a signal: an Acknowledgment is ~4 kB) is parsed here on the loop, which takes
            # no longer than handing it to a thread and back; a signal then needs no thread until after
            # the 250. Anything larger is parsed in a thread, so the loop's other sessions do not wait
            p = peek(data)
            if not isinstance(p, EbxmlError) and p.signal:
                self._apply_later(data, p)
                return
        taken = await asyncio.to_thread(self.take, data, "smtp", sender, apply_signal=False, peeked=p)
        if taken.what == "signal":
            self._apply_later(data, taken.peek)
        elif taken.what in ("duplicate", "refused") and taken.response and taken.reply_to:
            self.send_later(taken.response, taken.reply_to)

    def _apply_later(self, data: bytes, p: Peek | None) -> None:
        """A signal applied after the 250, so the peer's sending thread is not held by our checks and
        store writes; nothing is lost that was not lost before: a signal is never stored, and one that is
        not applied is recovered by our retry, which the peer answers from its seen record. On a thread
        of our own, not through the loop: nothing waits for it there but drain()."""
        with self._lock:
            if self._signals is None:
                self._signals = ThreadPoolExecutor(SIGNAL_THREADS, thread_name_prefix="intake-signal")
            fut = self._signals.submit(self.on_signal, data, "smtp", p.parsed if p else None)
            self.pending.add(fut)
        fut.add_done_callback(self._applied)

    def _applied(self, fut: Future[object]) -> None:
        with self._lock:
            self.pending.discard(fut)
        if not fut.cancelled() and (exc := fut.exception()) is not None:
            log.error("a received signal was not applied", exc_info=exc)

    async def drain(self) -> None:
        """Wait for the signals taken so far to be applied (orderly shutdown, tests)."""
        while True:
            with self._lock:
                pending = list(self.pending)
            if not pending:
                return
            await asyncio.gather(*(asyncio.wrap_future(f) for f in pending), return_exceptions=True)

    def stop(self) -> None:
        """After drain(): the signal threads end."""
        with self._lock:
            ex, self._signals = self._signals, None
        if ex is not None:
            ex.shutdown(wait=True)

    def http_handler(self, entity: bytes, request: HttpRequest) -> HttpReply:
        """POST /ebxml from a network peer: stored before 2xx; a SyncReply gets its signal in the response;
        unreadable ebXML is kept as rejected and answered 400 with a SOAP Fault."""
        taken = self.take(entity, "http")
        if taken.what == "refused":
            return HttpReply(400, taken.response)
        if taken.what == "duplicate":
            return HttpReply(200, taken.response)
        p = taken.peek
        if taken.what in ("stored", "in-process") and p is not None and p.sync_reply and p.message_id:
            end = time.monotonic() + 20
            while (left := end - time.monotonic()) > 0:
                rec = self.store.seen_get(p.message_id)
                if rec is not None:
                    return HttpReply(200, bytes(rec.response) or None)
                # woken by our own answer; the timeout covers one recorded by another node
                self.answered.wait(min(left, 0.5))
        return HttpReply(202, None)
