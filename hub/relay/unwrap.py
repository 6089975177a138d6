"""Unwrap: the KITH document inside a stored ebXML envelope, and the answer to its sender.

The worker calls `unwrap()` for a message the ebMS intake stored: `Msh.receive` checks the envelope
signature, the CPA (or the register's certificate), duplicates against the store and decrypts. Its seen
record is held back: the pipeline's checks decide whether the peer gets the Acknowledgment or a
MessageError (`answer_peer()`), and that signal is what a duplicate gets, byte for byte. A `deferred`
unwrap (CRL unreachable) stays `received` and is tried again after `defer_s`.

Dependencies are passed in: the store, the Msh, `send_later` (best-effort signal), `on_signal` (a
signal found in a stored entity), `on_received` (admit again later), `tap` and the `answered` board.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hub.codes import EbmsError
from hub.ebxml.dedup import content_digest
from hub.ebxml.envelope import Envelope, parse_envelope
from hub.ebxml.errors import LOC, EbxmlError
from hub.ebxml.mime import Package, parse_package
from hub.ebxml.msh import Msh, Peer
from hub.relay import pipeline as pl
from hub.relay.ebms_intake import Answered, mail_from
from hub.relay.lifecycle import Event
from hub.relay.register import Register
from hub.security import keystore
from hub.security.certs import CertificateValidator
from hub.store import PAYLOAD, ErrorInfo, Message, SeenRecord, Store

log = logging.getLogger("hub.relay.unwrap")

ACK = "ebxml-ack"  # the Acknowledgment the Msh built (kept by earlier versions)
DIGEST = "ebxml-digest"  # duplicate-elimination digest of the received envelope (earlier versions)


def _now() -> datetime:
    return datetime.now(UTC)


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
        return Peer(str(her_id), self._cert(p.sign_cert), enc, p.endpoint, p.compress, p.allow_sha1)

    def allow_sha1(self, her_id: int | str | None) -> bool:
        """The register's per-peer SHA-1 setting, for envelopes and KITH documents alike."""
        p = self.register.resolve(her_id) if her_id is not None else None
        return bool(p is not None and p.allow_sha1)

    def endpoint(self, her_id: str) -> str | None:
        peer = self.peer(her_id)
        return peer.endpoint if peer is not None else None

    def sign_cert(self, her_id: int | None) -> x509.Certificate | None:
        p = self.register.resolve(her_id) if her_id is not None else None
        return self._cert(p.sign_cert) if p is not None and p.sign_cert else None


class EnvelopeCertCheck:
    """The Msh's certificate check for envelope signatures, at receipt time. Every envelope from a peer
    carries the same certificate: a chain walk with CRL lookup per message showed in profiles, so a pass
    is remembered briefly (failures never are; an expiry inside the window still fails)."""

    VALID_FOR_S = 60.0

    def __init__(self, validator: CertificateValidator) -> None:
        self.validator = validator
        self._valid: dict[bytes, tuple[Any, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, cert: x509.Certificate, at: datetime) -> Any:  # noqa: ANN401 - a check report
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


@dataclass
class _Held:
    """What one step learnt of a stored envelope that the next one needs, for the moments between them:
    the intake's parse and digest (for unwrap), unwrap's envelope and Acknowledgment (for answer_peer)."""

    parsed: tuple[Package, Envelope] | None = None
    digest: str | None = None
    env: Envelope | None = None
    ack: bytes | None = None


class Unwrapper:
    KEEP = 1024  # envelopes in flight remembered at most; one forgotten is read from the store again

    def __init__(
        self, store: Store, msh: Msh, *, node: str, defer_s: float, answered: Answered,
        send_later: Callable[[bytes, str], None],
        on_signal: Callable[..., object],
        on_received: Callable[[str], None],
        tap: Callable[..., None],
    ) -> None:
        self.store, self.msh, self.node, self.defer_s = store, msh, node, defer_s
        self.answered, self.send_later, self.on_signal = answered, send_later, on_signal
        self.on_received, self.tap = on_received, tap
        self._lock = threading.Lock()
        self._timers: list[threading.Timer] = []
        # by message id, until answer_peer (or tell_peer) is done with it; bounded: a message whose
        # answer never comes (a crash in its checks) is forgotten, and after a restart nothing is held:
        # each step then reads the stored envelope again and the Msh builds the same Acknowledgment
        self._held: OrderedDict[str, _Held] = OrderedDict()

    def _hold(self, message_id: str) -> _Held:
        with self._lock:
            h = self._held.get(message_id)
            if h is None:
                h = self._held[message_id] = _Held()
                while len(self._held) > self.KEEP:
                    self._held.popitem(last=False)
            return h

    def _peek(self, message_id: str) -> _Held:
        with self._lock:
            return self._held.get(message_id) or _Held()

    def _release(self, message_id: str) -> _Held:
        with self._lock:
            return self._held.pop(message_id, None) or _Held()

    @property
    def held(self) -> int:
        """Envelopes remembered between steps now (bounded by KEEP; 0 when nothing is in flight)."""
        with self._lock:
            return len(self._held)

    def handoff(self, message_id: str, parsed: tuple[Package, Envelope], digest: str) -> None:
        """The intake's parse and digest of a stored envelope, for unwrap(): not parsed a second time."""
        h = self._hold(message_id)
        h.parsed, h.digest = parsed, digest

    def stop(self) -> None:
        for t in self._timers:
            t.cancel()

    def unwrap(self, msg: Message, raw: bytes) -> bytes | None:
        """The KITH document in a stored envelope, or None when the envelope settled it (refused,
        duplicate, deferred)."""
        h = self._peek(msg.id)
        parsed, h.parsed = h.parsed, None
        # the intake of this process handed its parse over: stored just now, so not accepted before (a
        # store read per message spared); otherwise (a restart, a retry) it may have been
        done = self.store.blob(msg.id, PAYLOAD) if parsed is None else None
        if done is not None:  # accepted and answered before (a delivery after a restart)
            return done
        # the seen record is not written by the Msh: the relay's checks choose the answer first
        outcome = self.msh.receive(raw, _now(), transport=msg.channel or "smtp", parsed=parsed,
                                   digest=h.digest, record=False)
        if outcome.status == "delivered" and outcome.delivery is not None:
            payloads = [outcome.delivery.payloads[r.cid] for r in outcome.delivery.envelope.manifest
                        if r.cid in outcome.delivery.payloads]
            if payloads:
                if outcome.response:
                    h = self._hold(msg.id)
                    h.ack, h.env = outcome.response, outcome.delivery.envelope
                    if outcome.record is not None:
                        h.digest = outcome.record[1]
                # the worker stores it (PAYLOAD) in the commit that records its verdict on the content
                return payloads[0]
        self._release(msg.id)
        if outcome.record is not None:
            self.store.seen_put(*outcome.record)  # the Msh's own answer (MessageError) is final
            self.answered.notify()
        reply = outcome.reply_to or mail_from(self.store, msg)
        if outcome.status == "deferred":
            why = "; ".join(e.description for e in outcome.errors)
            self.tap("deferred", msg, f"checked again in {self.defer_s:g} s: {why}")
            log.warning("%s deferred: %s", msg.short_id, why)
            t = threading.Timer(self.defer_s, self.on_received, [msg.id])
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
        self.tap("rejected", m, f"{code}: {text}")
        if outcome.response and reply:
            self.send_later(outcome.response, reply)
        return None

    def ack_record(self, m: Message) -> tuple[str, str, bytes] | None:
        """The seen record (MessageId, digest, Acknowledgment) of an envelope unwrap() accepted in this
        process, for the worker to write in the commit that accepts its content; None: answer_peer
        records the answer itself."""
        h = self._peek(m.id)
        if h.env is None or not h.ack or not h.digest or not h.env.header.message_id:
            return None
        return h.env.header.message_id, h.digest, h.ack

    def answer_peer(self, m: Message, decision: pl.Decision, *, recorded: bool = False,
                    answer: SeenRecord | None = None) -> None:
        """The checks have decided: Acknowledgment (accepted) or MessageError; recorded, then sent.
        `recorded`: the worker wrote ack_record() with its verdict; the record is read, not written.
        `answer`: that record as the worker's commit left it (Store.advance_answered): not read either."""
        h = self._release(m.id)  # whatever the verdict: nothing of this message is held after its answer
        env = h.env
        pkg = None
        if env is None:  # not unwrapped by this process (a restart): read the stored envelope
            raw = self.store.blob(m.id)
            assert raw is not None
            pkg = parse_package(raw)
            env = parse_envelope(pkg.soap)
        if not isinstance(decision, pl.Reject) or decision.answer is pl.Answer.APPREC:
            signal = h.ack or self._ack_for(m)
        else:
            try:
                code = EbmsError(decision.ebms_code)
            except ValueError:
                code = EbmsError.OTHER_XML
            loc = LOC["to_party"] if code in (EbmsError.DELIVERY_FAILURE, EbmsError.INCONSISTENT) \
                else LOC["manifest_ref"]
            signal = self.msh.message_error(env, [EbxmlError(code, decision.text, loc)], _now())
        mid = env.header.message_id
        digest = h.digest or ""
        if mid:
            digest = digest or (self.store.blob(m.id, DIGEST) or b"").decode()
            if not digest:
                if pkg is None:
                    pkg = parse_package(self.store.blob(m.id) or b"")
                digest = content_digest(env.root, pkg.parts)
            rec = answer if answer is not None else self.store.seen_get(mid) if recorded else None
            if rec is None:
                rec = self.store.seen_put(mid, digest, signal)
            signal = bytes(rec.response)  # the first answer recorded is the answer
            self.answered.notify()
        reply = self.msh.reply_address(env) or mail_from(self.store, m)
        if signal and reply:
            self.send_later(signal, reply)

    def _ack_for(self, m: Message) -> bytes:
        """The Acknowledgment when unwrap()'s is not at hand (a restart between unwrap and the answer:
        nothing was answered yet, so building it again changes nothing)."""
        ack = self.store.blob(m.id, ACK)  # kept by earlier versions
        if ack is None:
            raw = self.store.blob(m.id)
            assert raw is not None
            # record=False: the seen record is answer_peer's to write
            ack = self.msh.receive(raw, _now(), transport=m.channel or "smtp", record=False).response
        return ack or b""

    def tell_peer(self, m: Message, why: str) -> None:
        """A message from the network ended without being delivered here: DeliveryFailure to its sender."""
        self._release(m.id)  # answered here, not by answer_peer
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
            self.answered.notify()
        reply = self.msh.reply_address(env) or mail_from(self.store, m)
        if reply:
            self.send_later(signal, reply)
