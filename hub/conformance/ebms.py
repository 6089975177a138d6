"""Reaching a system over ebXML on HTTP or SMTP (127.0.0.1): the runner and the system each get an Msh.

The business behaviour stays where it is: the simulated system still reads `to-system` and writes
`from-system`; `SystemGateway` puts its folder behind a listener and an Msh (signed, encrypted ebXML
packages, Acknowledgments), the way a vendor's message service sits in front of its EPJ.
`EbmsExchange` is the runner's side with the FolderExchange interface, and also knows
whether each message it sent was acknowledged at the ebMS level. Orders and patients.json stay test
setup on the folder (the tester at the system's keyboard).

HTTP: SyncReply, the Acknowledgment comes back in the same exchange. SMTP (hub.transport SmtpListener /
SmtpSender): each side has a mailbox on its own listener; a message asks for an Acknowledgment
(AckRequested) and the receiving Gateway mails it back to the sender's mailto: endpoint, so an
acknowledgment is only known once that mail has arrived and been verified by the sender's Msh.

Correlation: the runner's transfer id travels as the ebXML ConversationId; the system answers within
the same conversation, so an answer's `ref` is the transfer it answers, as on the folder.
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hub.conformance import exchange as ex
from hub.conformance.profiles import Profile
from hub.conformance.trust import TEST_CENTRE as TEST_CENTRE_PARTY
from hub.conformance.trust import NetworkPki
from hub.ebxml.msh import Delivery, LocalParty, Msh, Peer, Peers
from hub.ebxml.naming import APPREC
from hub.security.pki import Identity
from hub.transport import Gateway
from hub.transport.http import HttpReply
from hub.transport.http_server import HttpListener
from hub.transport.smtp import SmtpListener, SmtpSender

TRANSPORTS = ("http", "smtp")
MAIL_DOMAIN = "conformance.test"  # the test network's mail domain (never resolved: loopback listeners)


class _Loop:
    """An asyncio loop in a daemon thread: listeners live there, callers block on its futures."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def _parties(identity: Identity, her_ids: list[int]) -> list[LocalParty]:
    """One LocalParty per HER-id the MSH serves (organisation and services share the enterprise keys)."""
    return [LocalParty(str(h), identity.sign_cert, identity.sign_key, list(identity.decryption_keys))
            for h in her_ids]


def _peers(identity: Identity, her_ids: list[int], url: str) -> Peers:
    return Peers({str(h): Peer(str(h), identity.sign_cert, identity.enc_cert, url) for h in her_ids})


def _now() -> datetime:
    return datetime.now(UTC)


class _Side(ABC):
    """An Msh behind an HTTP or SMTP listener on 127.0.0.1; deliveries go to `deliver`."""

    def __init__(self, name: str, pki: NetworkPki, identity: Identity, her_ids: list[int],
                 transport: str = "http", port: int = 0, mailbox: str | None = None) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
        self.pki = pki
        self.identity = identity
        self.her_ids = her_ids
        self.transport = transport
        self.mailbox = mailbox or f"{name}@{MAIL_DOMAIN}"
        self.loop = _Loop(name)

        def validate(cert: object, at: datetime) -> None:  # the hub's certificate validation
            pki.validator.check(cert, "sign", at)  # type: ignore[arg-type]

        self.msh = Msh(_parties(identity, her_ids), handoff=self.deliver, validate_certificate=validate)
        self.gateway = Gateway(self.msh)
        self.listener: HttpListener | SmtpListener
        if transport == "smtp":
            self.listener = SmtpListener({self.mailbox}, self.on_mail, port=port)
        else:
            self.listener = HttpListener(self.on_http, port=port)
        self.loop.run(self.listener.start())

    @property
    def url(self) -> str:
        """Where peers send to: the HTTP URL, or the mailto: address of our SMTP mailbox."""
        if isinstance(self.listener, SmtpListener):
            return f"mailto:{self.mailbox}"
        return self.listener.url

    def connect(self, other: _Side, her_ids: list[int]) -> None:
        """Route `her_ids` to the other side (its keys, its endpoint). Over SMTP our Gateway also
        gets a sender to the other side's listener: the loopback stands in for the mail relay."""
        self.msh.peers = _peers(other.identity, her_ids, other.url)
        if isinstance(other.listener, SmtpListener):
            self.gateway.smtp = SmtpSender("127.0.0.1", other.listener.port, self.mailbox, timeout=10.0)

    async def on_mail(self, data: bytes, mail_from: str, rcpts: list[str]) -> None:
        await self.gateway.on_mail(data, mail_from, rcpts)

    async def on_http(self, entity: bytes) -> HttpReply:
        return await self.gateway.on_http(entity)

    @abstractmethod
    def deliver(self, d: Delivery) -> None:
        """What this side does with a business message its message service accepted."""

    def post(self, data: bytes, *, sender: int, receiver: int, action: str, conversation: str,
             answers: str | None = None) -> str:
        """Send one payload; returns the ebXML MessageId. HTTP asks for the Acknowledgment in the
        same exchange (SyncReply); SMTP asks for it by mail (AckRequested).
        An AppRec travels in the service of the message it `answers` (its Action), roles reversed."""
        sync = self.transport == "http"
        if action == APPREC and answers:
            out = self.msh.send(from_her=str(sender), to_her=str(receiver), payload=data, now=_now(),
                                message_type=answers, action=APPREC, conversation_id=conversation,
                                sync_reply=sync)
        else:
            out = self.msh.send(from_her=str(sender), to_her=str(receiver), payload=data, now=_now(),
                                message_type=action, conversation_id=conversation, sync_reply=sync)
        self.loop.run(self.gateway.send(out))
        return out.message_id

    def acknowledged(self, message_id: str, wait: float = 0.0) -> bool:
        """Acknowledged without error. `wait`: over SMTP the Acknowledgment is a mail of its own that
        may still be on its way; wait up to that long for it."""
        deadline = time.monotonic() + wait
        while True:
            sent = self.msh.sent.get(message_id)
            if sent and sent.acked_at is not None and not sent.error:
                return True
            if (sent and sent.error) or time.monotonic() >= deadline:
                return False
            time.sleep(0.005)

    def close(self) -> None:
        self.loop.run(self.listener.stop())
        self.loop.close()


class SystemGateway(_Side):
    """The system's message service: packages in -> `to-system`; `from-system` -> packages out."""

    def __init__(self, profile: Profile, root: Path, pki: NetworkPki, *, poll: float = 0.005,
                 transport: str = "http", month: str | None = None) -> None:
        # The profile's `no-ebms-ack` defect: its message service takes messages in but never sends
        # an ebMS signal back (no Acknowledgment, no MessageError).
        self.mute = any(d.kind == "no-ebms-ack" for d in profile.active_defects(month))
        super().__init__(f"ebms-{profile.slug}", pki, pki.identity(profile.slug), sorted(profile.her_ids),
                         transport)
        self.root = root
        self.poll = poll
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._outbound, name=f"ebms-out-{profile.slug}", daemon=True)
        self.errors: list[str] = []
        self._actions: dict[str, str] = {}  # conversation -> Action of the message received in it
        for sub in (ex.TO_SYSTEM, ex.FROM_SYSTEM, ex.ORDERS):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def deliver(self, d: Delivery) -> None:
        h = d.envelope.header
        conversation = h.conversation_id or d.message_id
        self._actions[conversation] = h.action or ""
        for payload in d.payloads.values():
            env = ex.Envelope(conversation, int(h.from_party.her_id or 0), int(h.to_party.her_id or 0), None,
                              h.action)
            ex.put(self.root / ex.TO_SYSTEM, env, payload)

    async def on_mail(self, data: bytes, mail_from: str, rcpts: list[str]) -> None:
        if self.mute:
            await asyncio.to_thread(self.msh.receive, data, _now(), transport="smtp")
            return
        await super().on_mail(data, mail_from, rcpts)

    async def on_http(self, entity: bytes) -> HttpReply:
        if self.mute:
            await asyncio.to_thread(self.msh.receive, entity, _now(), transport="http")
            return HttpReply(202, None)
        return await super().on_http(entity)

    def _outbound(self) -> None:
        while not self._stop.is_set():
            for t in ex.take(self.root / ex.FROM_SYSTEM):
                try:
                    e = t.envelope
                    self.post(t.data, sender=int(e.sender or 0), receiver=int(e.receiver or 0),
                              action=e.action or APPREC, conversation=e.ref or e.id,
                              answers=self._actions.get(e.ref or ""))
                except Exception as exc:  # noqa: BLE001 - the runner sees the missing message
                    self.errors.append(repr(exc))
            time.sleep(self.poll)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        super().close()


class EbmsExchange(_Side):
    """The runner's side over ebXML (HTTP, or SMTP with transport="smtp"), with FolderExchange's
    interface (send, order, wait)."""

    def __init__(self, root: Path, pki: NetworkPki, her_ids: list[int], transport: str = "http",
                 port: int = 0, mailbox: str | None = None) -> None:
        super().__init__("ebms-runner", pki, pki.identity(TEST_CENTRE_PARTY), her_ids, transport, port,
                         mailbox)
        self.ack_wait = 5.0  # how long an SMTP Acknowledgment may still be in the mail
        self.folder = ex.FolderExchange(root)  # test setup only: orders and registered patients
        self.root = root
        self._lock = threading.Lock()
        self._inbox: list[ex.Transfer] = []
        self.message_ids: dict[str, str] = {}  # transfer id -> ebXML MessageId
        self.signers: dict[str, str] = {}  # received transfer id -> who signed its envelope

    def deliver(self, d: Delivery) -> None:
        h = d.envelope.header
        for payload in d.payloads.values():
            env = ex.Envelope(d.message_id, int(h.from_party.her_id or 0), int(h.to_party.her_id or 0),
                              h.conversation_id, h.action)
            if d.signer is not None:
                self.signers[d.message_id] = d.signer.subject.rfc4514_string()
            with self._lock:
                self._inbox.append(ex.Transfer(env, payload, Path(f"{d.message_id}.xml"), time.monotonic()))

    def register_patients(self, patients: list[dict]) -> None:
        self.folder.register_patients(patients)

    def order(self, order: dict) -> str:
        return self.folder.order(order)

    def send(self, data: bytes, *, sender: int | None, receiver: int | None, ref: str | None = None,
             action: str | None = None) -> str:
        tid = ex.new_id()
        self.message_ids[tid] = self.post(data, sender=int(sender or 0), receiver=int(receiver or 0),
                                          action=action or "APPREC", conversation=tid)
        return tid

    def acknowledged_transfer(self, tid: str) -> bool:
        mid = self.message_ids.get(tid)
        wait = self.ack_wait if self.transport == "smtp" else 0.0
        return bool(mid) and self.acknowledged(mid or "", wait)

    def wait(self, want: set[str], *, by: str = "ref", timeout: float,
             quiet: float = 0.0) -> list[ex.Transfer]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if {getattr(t.envelope, by) for t in self._inbox} & want == want:
                    break
            time.sleep(0.005)
        if quiet:
            time.sleep(quiet)
        with self._lock:
            hits = [t for t in self._inbox if getattr(t.envelope, by) in want]
            self._inbox = [t for t in self._inbox if t not in hits]
        return hits


def connect(runner_side: EbmsExchange, system: SystemGateway, profile: Profile, extra: list[int]) -> None:
    """Tell each side where the other listens. `extra`: HER-ids the runner also routes to the system
    (the unknown receiver of the battery: the system's MSH refuses it, as a real one would)."""
    from hub.conformance.simulated import TEST_CENTRE, TEST_CENTRE_SERVICE

    runner_side.connect(system, sorted(profile.her_ids) + extra)
    system.connect(runner_side, [TEST_CENTRE.her_id, TEST_CENTRE_SERVICE.her_id])



HttpExchange = EbmsExchange  # the name the HTTP-only runner side had
