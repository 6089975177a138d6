"""The relay's network side: ebXML over SMTP and HTTP, joined to the store, the worker and the pipeline.

In:  SMTP DATA / HTTP POST -> `take()`: the raw MIME entity is stored (`put_received`, with an
     `in:<MessageId>` seen record in the same commit) before the 250 / 2xx. Signals (Acknowledgment,
     MessageError) are not messages of their own: they are verified and applied to the message they
     answer at once (a lost one is recovered by our retry, which the peer answers from its seen record).
     The worker then calls `unwrap()`: `Msh.receive` (envelope signature, CPA or register certificate,
     duplicate check against the store, CMS decrypt). Its seen record is held back: the pipeline's
     checks decide whether the peer gets the Acknowledgment or a MessageError (`answer_peer()`), and
     that signal is what a duplicate gets, byte for byte.
Out: `deliver()` for mailto:/http(s): routes: `Msh.send` with the MessageId fixed at `validated`
     (`out_message_id`), the signed+encrypted package kept as an artefact so every retry sends the same
     bytes; SMTP -> awaiting_ack (the ack arrives through `take()`); HTTP -> the sync signal at once.

Protocol decisions live in hub.ebxml (Msh) and hub.relay.pipeline; this module only moves bytes
between them, the store and the transports. One asyncio loop thread runs the listener and the clients.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from lxml import etree

from hub.codes import EbmsError
from hub.ebxml.dedup import content_digest
from hub.ebxml.envelope import Envelope, parse_envelope
from hub.ebxml.errors import LOC, EbxmlError
from hub.ebxml.mime import Package, join_entity, parse_package, split_entity
from hub.ebxml.msh import LocalParty, Msh, Outcome, Peer
from hub.relay import pipeline as pl
from hub.relay.delivery import Deliverer, Delivery, NetworkDeliverer
from hub.relay.delivery import Outcome as Sent
from hub.relay.intake import HttpReply
from hub.relay.lifecycle import Event
from hub.relay.register import Register
from hub.security import keystore
from hub.security.certs import CertificateValidator
from hub.security.errors import SecurityError
from hub.security.pki import Identity, layout, load_identity, load_intermediates, load_trust_anchors
from hub.security.xmldsig import DS, verify_enveloped
from hub.store import PAYLOAD, ErrorInfo, Message, MessageMeta, Store
from hub.transport.http import post
from hub.transport.smtp import SmtpListener, SmtpSender, mail_address

if TYPE_CHECKING:
    from hub.relay.server import Relay

log = logging.getLogger("hub.relay.network")
T = TypeVar("T")

# artefacts kept with a message (store blobs next to the original)
ACK = "ebxml-ack"  # the Acknowledgment the Msh built, sent once the content is accepted
DIGEST = "ebxml-digest"  # duplicate-elimination digest of the received envelope
OUT = "ebxml-out"  # the signed+encrypted package we send; every retry sends these bytes
SIGNAL = "ebxml-signal"  # the peer's last signal about a message we sent
IN_PREFIX = "in:"  # seen key of "stored, being processed" (value: the MAIL FROM to answer to)
_HTTP_KEEP = ("content-type", "soapaction", "mime-version", "content-transfer-encoding")


def _now() -> datetime:
    return datetime.now(UTC)


# --- pure parts --------------------------------------------------------------------------------------

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
    digest: str
    sync_reply: bool
    # what was parsed to peek, handed on so a signal is not parsed again when it is applied
    parsed: tuple[Package, Envelope] | None = field(default=None, repr=False, compare=False)


def peek(raw: bytes) -> Peek | None:
    """Parse the envelope (no checks); None when it is not readable ebXML (the Msh answers that)."""
    try:
        pkg = parse_package(raw)
        env = parse_envelope(pkg.soap)
    except Exception:  # noqa: BLE001 - any parse failure: store it and let the Msh give the Fault
        return None
    h = env.header
    digest = content_digest(env.root, pkg.parts) if env.root is not None else ""
    return Peek(env.is_signal, h.message_id, h.conversation_id, h.from_party.her_id, h.to_party.her_id,
                h.cpa_id, h.service, h.action, digest, env.sync_reply, (pkg, env))


def signal_result(env: Envelope) -> tuple[str, str] | None:
    """A MessageError's first Error (code, text), or None for an Acknowledgment / warnings only."""
    if env.error_list is None:
        return None
    errs = [e for e in env.error_list.errors if e.severity == "Error"]
    if not errs:
        return None
    return errs[0].code, "; ".join(f"{e.code}: {e.description or ''}".strip() for e in errs)


def kith_signature(data: bytes) -> bool:
    """Whether the document's root carries a ds:Signature (KITH documents are signed enveloped)."""
    if b"Signature" not in data:
        return False
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return False
    return root.find(f"{{{DS}}}Signature") is not None


def apprec_original_type(data: bytes) -> str | None:
    """The message type an AppRec answers (OriginalMsgId/MsgType V): its ebXML Service."""
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None
    el = root.find(".//{*}OriginalMsgId/{*}MsgType")
    return None if el is None else (el.get("V") or None)


# --- the register as the Msh's peer directory ----------------------------------------------------------

class RegisterPeers:
    """Network parties of the address register: accepted only when the register names their certificate."""

    RECHECK_S = 30.0  # how long a certificate file is taken as unchanged (a replaced one is read again)

    def __init__(self, register: Register) -> None:
        self.register = register
        # path -> (certificate, monotonic time to look at the file again): the Msh asks several times
        # per message, and even the keystore's cache hit (resolve + stat of the file) showed in profiles
        self._certs: dict[str, tuple[x509.Certificate, float]] = {}
        self._lock = threading.Lock()

    def _cert(self, path: str) -> x509.Certificate:
        now = time.monotonic()
        with self._lock:
            hit = self._certs.get(path)
        if hit is not None and hit[1] > now:
            return hit[0]
        cert = keystore.load_certificate(Path(path))
        with self._lock:
            self._certs[path] = (cert, now + self.RECHECK_S)
        return cert

    def peer(self, her_id: str) -> Peer | None:
        p = self.register.resolve(her_id)
        if p is None or p.local or not p.active or not p.sign_cert:
            return None
        enc = self._cert(p.enc_cert) if p.enc_cert else None
        return Peer(str(her_id), self._cert(p.sign_cert), enc, p.endpoint)

    def sign_cert(self, her_id: int | None) -> x509.Certificate | None:
        p = self.register.resolve(her_id) if her_id is not None else None
        return self._cert(p.sign_cert) if p is not None and p.sign_cert else None


class _HeldSeen:
    """The store as the Msh's SeenMessages, except that a thread may hold its writes back (`holding`):
    the relay records the answer only after its own checks have chosen it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._local = threading.local()

    def seen_get(self, message_id: str) -> Any:  # noqa: ANN401 - hub.store.SeenRecord
        return self.store.seen_get(message_id)

    def seen_put(self, message_id: str, digest: str, response: bytes) -> object:
        held = getattr(self._local, "held", None)
        if held is not None:
            held.append((message_id, digest, bytes(response)))
            return None
        return self.store.seen_put(message_id, digest, response)

    @contextmanager
    def holding(self) -> Iterator[list[tuple[str, str, bytes]]]:
        self._local.held = held = []
        try:
            yield held
        finally:
            self._local.held = None


def _identity_name(pki: Path, her_id: int, wanted: str | None) -> str:
    if wanted:
        return wanted
    for p in layout(pki).parties:
        if str(p.her_id) == str(her_id):
            return p.name
    return "hub"


# --- the network ---------------------------------------------------------------------------------------

@dataclass
class Taken:
    what: str  # stored | duplicate | in-process | signal
    message: Message | None = None
    response: bytes | None = None  # a duplicate's stored signal, to send back
    reply_to: str | None = None
    peek: Peek | None = None


class Network:
    def __init__(self, relay: Relay) -> None:
        cfg = relay.cfg
        assert cfg.pki is not None
        self.relay, self.cfg = relay, cfg
        self.store: Store = relay.store
        self.register: Register = relay.register
        self.node = cfg.node
        name = _identity_name(cfg.pki, cfg.her_id, cfg.identity)
        self.identity: Identity = load_identity(cfg.pki, name)
        self.address = cfg.smtp_addresses[0] if cfg.smtp_addresses else f"relay-{cfg.her_id}@hub.invalid"
        # every party this relay serves signs and decrypts with the relay's own enterprise keys
        her_ids = {cfg.her_id} | {p.her_id for p in self.register if (r := self.register.resolve(p.her_id))
                                  and r.local}
        ident = self.identity
        parties = [LocalParty(str(h), ident.sign_cert, ident.sign_key, ident.decryption_keys,
                              f"mailto:{self.address}") for h in sorted(her_ids)]
        cpas = None
        if cfg.cpa_dir is not None and cfg.cpa_dir.is_dir():
            from hub.ebxml.cpa import CpaRepository

            cpas = CpaRepository.load_dir(cfg.cpa_dir)
        self.validator = CertificateValidator(load_trust_anchors(cfg.pki), load_intermediates(cfg.pki))
        self.peers = RegisterPeers(self.register)
        self.seen = _HeldSeen(self.store)
        self._valid: dict[bytes, tuple[Any, float]] = {}
        self.msh = Msh(parties, cpas=cpas, peers=self.peers, seen=self.seen,
                       validate_certificate=self._check_envelope_cert)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._timers: list[threading.Timer] = []
        # signals go out without holding a worker thread; stop() waits for them
        self._pending: set[Future[None]] = set()
        # Acknowledgments unwrap() built, for answer_peer() moments later in the same admit; kept in
        # memory, not the store: after a crash in between, answer_peer() builds the ack again
        self._acks: dict[str, bytes] = {}
        # the envelope unwrap() read, kept for answer_peer so the stored bytes are not read and parsed again
        self._envs: dict[str, Envelope] = {}
        # what take() parsed of a stored envelope, for unwrap() on the worker: not parsed a second time
        self._parsed: dict[str, tuple[Package, Envelope]] = {}
        # the content digest take() computed, for the Msh's duplicate check and answer_peer's seen record
        self._digests: dict[str, str] = {}
        # woken whenever this relay records its answer to a received message (HTTP SyncReply waits)
        self._answered = threading.Condition()
        # kept sessions: one per worker thread that may be sending at once (signals share them)
        self.smtp = SmtpSender(*cfg.smtp_relay, mail_from=self.address, pool=max(2, cfg.worker.threads)) \
            if cfg.smtp_relay else None
        self.listener: SmtpListener | None = None
        if cfg.smtp_listen:
            self.listener = SmtpListener(set(cfg.smtp_addresses) or {self.address}, self._after_mail,
                                         host=cfg.smtp_listen[0], port=cfg.smtp_listen[1],
                                         store=self._store_mail)

    VALID_FOR_S = 60.0  # a peer certificate found valid is not walked and CRL-checked again this long

    def _check_envelope_cert(self, cert: x509.Certificate, at: datetime) -> Any:  # noqa: ANN401
        """The Msh's certificate check for envelope signatures, at receipt time. Every envelope from a
        peer carries the same certificate: a chain walk with CRL lookup per message showed in profiles,
        so a pass is remembered briefly (failures never are; an expiry inside the window still fails)."""
        key = cert.fingerprint(hashes.SHA256())
        now = time.monotonic()
        with self._lock:
            hit = self._valid.get(key)
        if hit is not None and hit[1] > now and cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
            return hit[0]
        report = self.validator.check(cert, "sign", at)
        with self._lock:
            self._valid[key] = (report, now + self.VALID_FOR_S)
        return report

    # --- wiring (hub.relay.server) ---------------------------------------------------------------------
    def deliverers(self) -> dict[pl.RouteKind, Deliverer]:
        d = NetworkDeliverer(self.deliver, self.prepare)
        return {pl.RouteKind.SMTP: d, pl.RouteKind.HTTP: d}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"network-{self.node}",
                                        daemon=True)
        self._thread.start()
        if self.listener is not None:
            self._run(self.listener.start(), 10)
            log.info("SMTP listener on %s:%s for %s", self.listener.host, self.listener.port,
                     ", ".join(sorted(self.listener.recipients)))

    def stop(self) -> None:
        for t in self._timers:
            t.cancel()
        if self.listener is not None and self._thread is not None:
            try:
                self._run(self.listener.stop(), 15)
            except Exception:  # noqa: BLE001 - stopping anyway
                log.exception("SMTP listener did not stop cleanly")
        if self._thread is not None:
            # signals on their way: a lost one is sent again when the peer retries, but do not drop them
            wait(list(self._pending), timeout=15)
            if self.smtp is not None:
                try:
                    self._run(self.smtp.close(), 5)
                except Exception:  # noqa: BLE001 - stopping anyway
                    log.warning("SMTP sessions not closed cleanly")
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._thread = None
        self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    @property
    def smtp_port(self) -> int | None:
        return self.listener.port if self.listener is not None else None

    # --- intake: store first -----------------------------------------------------------------------
    def take(self, raw: bytes, channel: str, mail_from: str | None = None, *,
             apply_signal: bool = True) -> Taken:
        """Store a received entity durably (or settle it: a signal, a duplicate). Raises if not stored.
        `apply_signal=False`: a signal is only recognised; the caller applies it (`on_signal`)."""
        p = peek(raw)
        if p is not None and p.signal:
            if apply_signal:
                self.on_signal(raw, channel, p.parsed)
            return Taken("signal", peek=p)
        if p is not None and p.message_id:
            rec = self.store.seen_get(p.message_id)
            if rec is not None and rec.digest == p.digest:
                # answered before: the same signal again, byte for byte; nothing is stored or delivered
                return Taken("duplicate", response=bytes(rec.response) or None,
                             reply_to=self._reply_to(p, mail_from), peek=p)
            if rec is None and self.store.seen_get(IN_PREFIX + p.message_id) is not None:
                return Taken("in-process", peek=p)  # its signal goes out when the checks are done
        meta = MessageMeta(
            direction="in", channel=channel,
            ebxml_message_id=p.message_id if p else None, conversation_id=p.conversation_id if p else None,
            cpa_id=p.cpa_id if p else None, service=p.service if p else None, action=p.action if p else None,
            sender_her=p.from_her if p else None, receiver_her=p.to_her if p else None,
        )
        seen = None
        if p is not None and p.message_id:
            seen = (IN_PREFIX + p.message_id, p.digest, (mail_from or "").encode())
        who = f"{p.from_her} -> {p.to_her}" if p else "unreadable"
        m = self.store.put_received(raw, meta, actor=self.node, seen=seen,
                                    reason=f"ebXML over {channel} ({who}" +
                                    (f", MAIL FROM {mail_from})" if mail_from else ")"))
        if p is not None and p.parsed is not None:
            with self._lock:
                self._parsed[m.id] = p.parsed
                self._digests[m.id] = p.digest
        self.relay.worker.notify_received(m.id)
        return Taken("stored", message=m, peek=p)

    async def _store_mail(self, data: bytes, mail_from: str, rcpts: list[str]) -> None:
        taken = await asyncio.to_thread(self.take, data, "smtp", mail_from, apply_signal=False)
        task = None
        if taken.what == "signal":
            # applied after the 250, so the peer's sending thread is not held by our checks and store
            # writes; nothing is lost that was not lost before: a signal is never stored, and one that
            # is not applied is recovered by our retry, which the peer answers from its seen record
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(
                self.on_signal, data, "smtp", taken.peek.parsed if taken.peek else None))
        elif taken.what == "duplicate" and taken.response and taken.reply_to:
            task = asyncio.get_running_loop().create_task(self._send_quietly(taken.response, taken.reply_to))
        if task is not None:
            assert self.listener is not None
            self.listener.tasks.add(task)  # stop() drains these
            task.add_done_callback(self.listener.tasks.discard)

    async def _after_mail(self, data: bytes, mail_from: str, rcpts: list[str]) -> None:
        return None  # everything happened before the 250 (see _store_mail)

    def http_handler(self, body: bytes, headers: dict[str, str], peer: str) -> HttpReply:
        """POST /ebxml from a network peer: stored before 2xx; a SyncReply gets its signal in the response."""
        entity = join_entity([(k, v) for k, v in headers.items() if k.lower() in _HTTP_KEEP], body)
        taken = self.take(entity, "http")
        if taken.what == "duplicate":
            return _entity_reply(200, taken.response)
        p = taken.peek
        if taken.what in ("stored", "in-process") and p is not None and p.sync_reply and p.message_id:
            end = time.monotonic() + 20
            while (left := end - time.monotonic()) > 0:
                rec = self.store.seen_get(p.message_id)
                if rec is not None:
                    return _entity_reply(200, bytes(rec.response) or None)
                with self._answered:
                    # woken by our own answer; the timeout covers one recorded by another node
                    self._answered.wait(min(left, 0.5))
        return _entity_reply(202, None)

    # --- signals about what we sent ------------------------------------------------------------------
    def on_signal(self, raw: bytes, channel: str = "smtp",
                  parsed: tuple[Package, Envelope] | None = None) -> Outcome:
        outcome = self.msh.receive(raw, _now(), transport=channel, parsed=parsed)
        env = outcome.envelope
        ref = env.header.ref_to_message_id if env is not None else None
        if outcome.status != "signal" or env is None or not ref:
            log.warning("signal refused (%s): %s", ref, "; ".join(str(e) for e in outcome.errors))
            return outcome
        self.msh.sent.pop(ref, None)  # matched now; the Msh keeps no history for us
        fatal = [e for e in outcome.errors if e.severity == "Error"]
        if fatal:
            log.warning("signal for %s not accepted: %s", ref, "; ".join(map(str, fatal)))
            return outcome
        m = self.store.get(ref)
        if m is not None and m.out_message_id == ref:
            self.store.put_artifact(m.id, SIGNAL, raw)
        nack = signal_result(env)
        if nack is not None:
            self.relay.worker.on_nack(ref, *nack)
        elif env.acknowledgment is not None:
            self.relay.worker.on_ack(ref, f"ebMS Acknowledgment over {channel}")
        return outcome

    # --- unwrap: the Msh's checks for a stored envelope ----------------------------------------------
    def unwrap(self, msg: Message, raw: bytes) -> bytes | None:
        """The KITH document in a stored envelope, or None when the envelope settled it (refused,
        duplicate, deferred)."""
        with self._lock:
            parsed = self._parsed.pop(msg.id, None)
            digest = self._digests.get(msg.id)
        done = self.store.blob(msg.id, PAYLOAD)
        if done is not None:  # accepted and answered before (a delivery after a restart)
            with self._lock:
                self._digests.pop(msg.id, None)
            return done
        with self.seen.holding() as held:
            outcome = self.msh.receive(raw, _now(), transport=msg.channel or "smtp", parsed=parsed,
                                       digest=digest)
        if outcome.status == "delivered" and outcome.delivery is not None:
            payloads = [outcome.delivery.payloads[r.cid] for r in outcome.delivery.envelope.manifest
                        if r.cid in outcome.delivery.payloads]
            if payloads:
                if outcome.response:
                    with self._lock:
                        self._acks[msg.id] = outcome.response
                        self._envs[msg.id] = outcome.delivery.envelope
                # the worker stores it (PAYLOAD) in the commit that records its verdict on the content
                return payloads[0]
        with self._lock:
            self._digests.pop(msg.id, None)
        for rec in held:
            self.seen.store.seen_put(*rec)  # the Msh's own answer (MessageError) is final
        if held:
            self._notify_answered()
        reply = outcome.reply_to or self._mail_from(msg)
        if outcome.status == "deferred":
            why = "; ".join(e.description for e in outcome.errors)
            self.relay.tap("deferred", msg, f"checked again in {self.cfg.defer_s:g} s: {why}")
            log.warning("%s deferred: %s", msg.short_id, why)
            t = threading.Timer(self.cfg.defer_s, self.relay.worker.notify_received, [msg.id])
            t.daemon = True
            t.start()
            with self._lock:
                self._timers = [x for x in self._timers if x.is_alive()] + [t]
            return None
        if outcome.status == "signal":
            self.on_signal(raw, msg.channel or "smtp")
            code, text = "signal", "a signal, applied to the message it answers"
        elif outcome.status == "duplicate":
            code, text = "duplicate", f"duplicate of ebXML MessageId {msg.ebxml_message_id}"
        else:
            first = outcome.errors[0] if outcome.errors else None
            code = str(first.code) if first else "Unknown"
            text = first.description if first else outcome.status
        m = self.store.transition(msg.id, Event.REJECT, actor=self.node, reason=f"ebXML {code}: {text}",
                                  error=ErrorInfo(code, text, True))
        self.relay.tap("rejected", m, f"{code}: {text}")
        if outcome.response and reply:
            self._send_signal(outcome.response, reply)
        return None

    def ack_record(self, m: Message) -> tuple[str, str, bytes] | None:
        """The seen record (MessageId, digest, Acknowledgment) of an envelope unwrap() accepted in this
        process, for the worker to write in the commit that accepts its content; None: answer_peer
        records the answer itself."""
        with self._lock:
            env, ack, digest = self._envs.get(m.id), self._acks.get(m.id), self._digests.get(m.id)
        if env is None or not ack or not digest or not env.header.message_id:
            return None
        return env.header.message_id, digest, ack

    def answer_peer(self, m: Message, decision: pl.Decision, *, recorded: bool = False) -> None:
        """The checks have decided: Acknowledgment (accepted) or MessageError; recorded, then sent.
        `recorded`: the worker wrote ack_record() with its verdict; the record is read, not written."""
        with self._lock:
            env = self._envs.pop(m.id, None)
        pkg = None
        if env is None:  # not unwrapped by this process (a restart): read the stored envelope
            raw = self.store.blob(m.id)
            assert raw is not None
            pkg = parse_package(raw)
            env = parse_envelope(pkg.soap)
        if isinstance(decision, pl.Accept) or decision.answer is pl.Answer.APPREC:
            signal = self._ack_for(m)
        else:
            try:
                code = EbmsError(decision.ebms_code)
            except ValueError:
                code = EbmsError.OTHER_XML
            loc = LOC["to_party"] if code in (EbmsError.DELIVERY_FAILURE, EbmsError.INCONSISTENT) \
                else LOC["manifest_ref"]
            signal = self.msh.message_error(env, [EbxmlError(code, decision.text, loc)], _now())
        mid = env.header.message_id
        with self._lock:
            digest = self._digests.pop(m.id, "")
        if mid:
            digest = digest or (self.store.blob(m.id, DIGEST) or b"").decode()
            if not digest:
                if pkg is None:
                    pkg = parse_package(self.store.blob(m.id) or b"")
                digest = content_digest(env.root, pkg.parts)
            rec = self.store.seen_get(mid) if recorded else None
            if rec is None:
                rec = self.store.seen_put(mid, digest, signal)
            signal = bytes(rec.response)  # the first answer recorded is the answer
            self._notify_answered()
        reply = self.msh.reply_address(env) or self._mail_from(m)
        if signal and reply:
            self._send_signal(signal, reply)

    def _ack_for(self, m: Message) -> bytes:
        """The Acknowledgment unwrap() built for this envelope; built again when it is not at hand
        (a restart between unwrap and the answer: nothing was answered yet, so nothing differs)."""
        with self._lock:
            ack = self._acks.pop(m.id, None)
        if ack is None:
            ack = self.store.blob(m.id, ACK)  # kept by earlier versions
        if ack is None:
            raw = self.store.blob(m.id)
            assert raw is not None
            with self.seen.holding():  # the seen record is answer_peer's to write
                ack = self.msh.receive(raw, _now(), transport=m.channel or "smtp").response
        return ack or b""

    def _notify_answered(self) -> None:
        with self._answered:
            self._answered.notify_all()

    def tell_peer(self, m: Message, why: str) -> None:
        """A message from the network ended without being delivered here: DeliveryFailure to its sender."""
        with self._lock:
            self._envs.pop(m.id, None)  # answered here, not by answer_peer
            self._digests.pop(m.id, None)
        raw = self.store.blob(m.id)
        if raw is None:
            return
        try:
            env = parse_envelope(parse_package(raw).soap)
        except Exception:  # noqa: BLE001 - unreadable: nobody to tell
            return
        signal = self.msh.message_error(env, [EbxmlError(EbmsError.DELIVERY_FAILURE, why, LOC["to_party"])],
                                        _now())
        if env.header.message_id and self.store.seen_get(env.header.message_id) is None:
            self.store.seen_put(env.header.message_id, content_digest(env.root, parse_package(raw).parts),
                                signal)
            self._notify_answered()
        reply = self.msh.reply_address(env) or self._mail_from(m)
        if reply:
            self._send_signal(signal, reply)

    def _mail_from(self, m: Message) -> str | None:
        if not m.ebxml_message_id:
            return None
        rec = self.store.seen_get(IN_PREFIX + m.ebxml_message_id)
        addr = bytes(rec.response).decode() if rec is not None else ""
        return f"mailto:{addr}" if addr else None

    def _reply_to(self, p: Peek, mail_from: str | None) -> str | None:
        peer = self.peers.peer(p.from_her) if p.from_her else None
        if peer is not None and peer.endpoint:
            return peer.endpoint
        return f"mailto:{mail_from}" if mail_from else None

    def _send_signal(self, entity: bytes, to: str) -> None:
        """Best effort, and without waiting: the answer is recorded before this is called, and a signal
        that does not get through is sent again when the peer retries (from the seen record)."""
        try:
            fut = asyncio.run_coroutine_threadsafe(self._send_quietly(entity, to), self._loop)
        except RuntimeError as exc:  # the loop is closed: stopping
            log.warning("signal to %s not sent: %s", to, exc)
            return
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._sent)

    def _sent(self, fut: Future[None]) -> None:
        with self._lock:
            self._pending.discard(fut)

    async def _send_quietly(self, entity: bytes, to: str) -> None:
        try:
            await self._transmit(entity, to, subject="ebXML signal")
        except Exception as exc:  # noqa: BLE001
            log.warning("signal to %s not sent: %s", to, exc)

    async def _transmit(self, entity: bytes, to: str, *, subject: str = "ebXML") -> Any:  # noqa: ANN401
        if to.lower().startswith("mailto"):
            if self.smtp is None:
                raise pl.DeliveryError("smtp.config", "no SMTP relay is configured", permanent=True)
            return await self.smtp.send(entity, mail_address(to), subject=subject)
        if to.lower().startswith(("http://", "https://")):
            return await post(to, entity, timeout=60)
        raise pl.DeliveryError("route.channel", f"unsupported endpoint {to!r}", permanent=True)

    # --- delivery to a network peer ------------------------------------------------------------------
    def prepare(self, route: pl.Route, data: bytes, message: Message) -> dict[str, bytes]:
        """The envelope, built before the claim so it is stored in the claim's commit (see deliver)."""
        return {OUT: self._build(route, data, message, _out_id(message))}

    def deliver(self, route: pl.Route, data: bytes, message: Message) -> Delivery:
        out_id = _out_id(message)
        entity = self.store.blob(message.id, OUT)  # prepared and stored with the claim, or by an earlier try
        if entity is None:
            entity = self._build(route, data, message, out_id)
            self.store.put_artifact(message.id, OUT, entity)  # before sending: retries send these bytes
        try:
            reply = self._run(self._transmit(entity, route.endpoint), 90)
        except pl.DeliveryError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted below; the ladder decides what follows
            raise _transport_error(exc) from exc
        if route.kind is pl.RouteKind.SMTP:
            return Delivery(Sent.SENT, f"smtp {mail_address(route.endpoint)} (MessageId {out_id})", out_id)
        status = getattr(reply, "status", 0)
        if status >= 500 or status in (408, 429):
            raise pl.DeliveryError(f"http.{status}", f"{route.endpoint} answered {status}", permanent=False)
        if status >= 300:
            raise pl.DeliveryError(f"http.{status}", f"{route.endpoint} answered {status}", permanent=True)
        signal = getattr(reply, "entity", None)
        if signal:
            outcome = self.msh.receive(signal, _now(), transport="http")
            env = outcome.envelope
            if outcome.status == "signal" and env is not None and env.header.ref_to_message_id == out_id \
                    and not outcome.errors:
                self.msh.sent.pop(out_id, None)
                nack = signal_result(env)
                if nack is not None:
                    raise pl.DeliveryError(f"ebms.{nack[0]}", nack[1], permanent=True)
                if env.acknowledgment is not None:
                    self.store.put_artifact(message.id, SIGNAL, signal)
                    return Delivery(Sent.DELIVERED, f"http {route.endpoint}: sync Acknowledgment", out_id,
                                    signal)
        return Delivery(Sent.SENT, f"http {route.endpoint} {status} (MessageId {out_id})", out_id)

    def _build(self, route: pl.Route, data: bytes, message: Message, out_id: str) -> bytes:
        now = _now()
        from_her = message.sender_her or str(self.cfg.her_id)
        if from_her not in self.msh.parties:
            from_her = str(self.cfg.her_id)
        kw: dict[str, Any] = {}
        if (message.msg_type or "").upper() == pl.APPREC_TYPE:
            # an AppRec travels in the service of the message it answers, roles reversed (HISD 1209)
            kw = {"message_type": apprec_original_type(data) or pl.APPREC_TYPE, "action": "APPREC"}
            orig = self.store.find_by_kith_msg_id(_original_id(data) or "") if _original_id(data) else []
            conv = next((o.conversation_id for o in orig if o.conversation_id), None)
            if conv:
                kw["conversation_id"] = conv
        else:
            kw = {"message_type": message.msg_type or "DIALOG_NOTAT"}
        ttl = message.expires_at - now if message.expires_at and message.expires_at > now else None
        try:
            out = self.msh.send(from_her=from_her, to_her=str(route.her_id), payload=data, now=now,
                                time_to_live=ttl, message_id=out_id, **kw)
        except ValueError as exc:  # no encryption certificate: a register fault an operator fixes
            raise pl.DeliveryError("ebxml.peer", str(exc), permanent=True) from exc
        return out.data

    # --- KITH document signatures ------------------------------------------------------------------
    def checked(self, inspect: Any) -> Any:  # noqa: ANN401 - an Inspector in, an Inspector out
        """Wrap an inspector: a signed document must verify, signed by the sender's registered certificate
        (findings S01 signature, S02 certificate, S03 revoked; the pipeline answers them)."""

        def run(data: bytes, name: str) -> pl.Facts:
            facts = inspect(data, name)
            if not kith_signature(data):
                return facts
            finding = self.check_signature(data, facts)
            if finding is not None and finding.transient:  # no verdict yet: the pipeline defers it
                return replace(facts, pending=(finding,))
            return facts if finding is None else replace(facts, errors=(finding, *facts.errors))

        return run

    def check_signature(self, data: bytes, facts: pl.Facts) -> pl.Finding | None:
        expected = self.peers.sign_cert(facts.sender_her)
        try:
            v = verify_enveloped(data, expected_certs=[expected] if expected is not None else [])
            self.validator.check(v.certificate, "sign", facts.gen_date)
        except SecurityError as e:
            # e.g. crl-unavailable: the revocation status is unknown now, not bad (issue #3)
            return pl.Finding(e.apprec_code, f"security.{e.kind}", e.message, transient=e.transient)
        except Exception as e:  # noqa: BLE001 - not XML the verifier can read: a broken signature
            return pl.Finding("S01", "security.signature-malformed", str(e))
        return None


def _out_id(message: Message) -> str:
    if not message.out_message_id:
        raise pl.DeliveryError("ebxml.id", "no out_message_id fixed at validation", permanent=True)
    return message.out_message_id


def _original_id(data: bytes) -> str | None:
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None
    return (root.findtext(".//{*}OriginalMsgId/{*}Id") or "").strip() or None


def _entity_reply(status: int, entity: bytes | None) -> HttpReply:
    if not entity:
        return HttpReply(status, b"", "text/plain")
    headers, body = split_entity(entity)
    ctype = next((v for k, v in headers if k.lower() == "content-type"), "text/xml")
    extra = tuple((k, v) for k, v in headers if k.lower() in ("soapaction", "mime-version"))
    return HttpReply(status, body, ctype, extra)


def _transport_error(exc: BaseException) -> pl.DeliveryError:
    """Connection refused, timeouts, 4xx SMTP: transient; 5xx SMTP: permanent (the peer said no)."""
    code = getattr(exc, "code", None)
    name = type(exc).__name__
    if name.startswith("SMTP") and isinstance(code, int) and 500 <= code < 600:
        return pl.DeliveryError(f"smtp.{code}", str(exc), permanent=True)
    if name.startswith("SMTP") and isinstance(code, int) and 400 <= code < 500:
        return pl.DeliveryError(f"smtp.{code}", str(exc), permanent=False)
    f = pl.classify(exc)
    if f.code.startswith("crash."):  # an unknown transport error: worth another try, not a verdict
        return pl.DeliveryError(f"transport.{name}", str(exc) or name, permanent=False)
    return pl.DeliveryError(f.code, f.text, permanent=f.permanent)
