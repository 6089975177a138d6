"""The relay's network side, assembled: ebXML over SMTP and HTTP, one module per pipeline step.

    ebms_intake   SMTP DATA / POST /ebxml -> stored (+ `in:` seen record) -> 250 / 2xx; signals applied
    unwrap        the worker's first step for it: envelope signature, CPA, duplicates, decryption;
                  then the Acknowledgment or MessageError the checks chose (`answer_peer`)
    kith_signature  the KITH document's own signature, wrapped around the inspector
    ebms_delivery prepare (sign + encrypt, stored) / deliver over the one transport interface
                  (hub.transport.transmit); the peer's signals applied to what we sent

`Network` builds those from explicit dependencies (configuration, store, register and the worker's
callbacks) and owns the one asyncio loop thread that runs the SMTP listener and the outbound clients.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from hub.ebxml.errors import EbxmlError
from hub.ebxml.msh import LocalParty, Msh
from hub.relay import pipeline as pl
from hub.relay.delivery import Deliverer
from hub.relay.ebms_delivery import EbmsDelivery, SentInStore
from hub.relay.ebms_intake import Answered, EbmsIntake
from hub.relay.identities import IdentityConfigError
from hub.relay.kith_signature import KithSignatureCheck
from hub.relay.register import Register
from hub.relay.unwrap import EnvelopeCertCheck, RegisterPeers, Unwrapper
from hub.security.certs import CertificateValidator
from hub.store import Store
from hub.transport import HttpReply, transmit
from hub.transport.http import HttpClient
from hub.transport.loops import new_event_loop
from hub.transport.smtp import SmtpListener, SmtpSender

if TYPE_CHECKING:
    from hub.relay.server import RelayConfig

log = logging.getLogger("hub.relay.network")
T = TypeVar("T")


class Outbound:
    """One asyncio loop thread and the transport clients on it: `send` blocks for a delivery,
    `send_later` is a best-effort signal (recorded before it is sent; stop() waits for it)."""

    def __init__(self, name: str, smtp: SmtpSender | None, http: HttpClient | None = None,
                 event_loop: str = "auto") -> None:
        self.smtp, self.http = smtp, http
        self.loop = new_event_loop(event_loop)  # hub.transport.loops: uvloop unless told otherwise
        # its default executor runs the SMTP intake's store step (asyncio.to_thread): its threads named
        # as asyncio names them on either loop (uvloop's: ThreadPoolExecutor-N), as bench_relay counts them
        self.loop.set_default_executor(ThreadPoolExecutor(thread_name_prefix="asyncio"))
        self._name = name
        self._thread: threading.Thread | None = None
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.loop.run_forever, name=self._name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop is closed (stopping): the attempt fails as a transient one
            coro.close()
            raise
        return fut.result(timeout)

    def send(self, entity: bytes, endpoint: str, subject: str = "ebXML") -> HttpReply | None:
        return self.run(transmit(entity, endpoint, smtp=self.smtp, http=self.http, subject=subject), 90)

    def send_later(self, entity: bytes, endpoint: str) -> None:
        """Without waiting: a signal that does not get through is sent again when the peer retries."""
        if self.loop.is_closed():
            log.warning("signal to %s not sent: stopping", endpoint)
            return
        coro = self._quietly(entity, endpoint)
        try:
            fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError as exc:  # the loop is closed: stopping
            coro.close()
            log.warning("signal to %s not sent: %s", endpoint, exc)
            return
        with self._lock:
            self._pending.add(fut)
        fut.add_done_callback(self._sent)

    def _sent(self, fut: Future[None]) -> None:
        with self._lock:
            self._pending.discard(fut)

    async def _quietly(self, entity: bytes, endpoint: str) -> None:
        try:
            await transmit(entity, endpoint, smtp=self.smtp, http=self.http, subject="ebXML signal")
        except Exception as exc:  # noqa: BLE001
            log.warning("signal to %s not sent: %s", endpoint, exc)

    def stop(self) -> None:
        if self._thread is not None:
            # signals on their way: a lost one is sent again when the peer retries, but do not drop them
            wait(list(self._pending), timeout=15)
            if self.smtp is not None:
                try:
                    self.run(self.smtp.close(), 5)
                except Exception:  # noqa: BLE001 - stopping anyway
                    log.warning("SMTP sessions not closed cleanly")
            if self.http is not None:
                try:
                    self.run(self.http.aclose(), 5)
                except Exception:  # noqa: BLE001 - stopping anyway
                    log.warning("HTTP connections not closed cleanly")
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
            self._thread = None
        if not self.loop.is_running() and not self.loop.is_closed():
            # what was handed over while stopping still has to run its callbacks and be cancelled, or
            # its coroutine and task are dropped half-born (never awaited / destroyed while pending)
            self.loop.run_until_complete(self._cancel_rest())
        self.loop.close()

    @staticmethod
    async def _cancel_rest() -> None:
        await asyncio.sleep(0)  # callbacks scheduled from other threads make their tasks now
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)


class Network:
    def __init__(
        self, cfg: RelayConfig, store: Store, register: Register, *,
        on_received: Callable[..., None],  # (id[, message, bytes as stored]): the worker admits it
        on_ack: Callable[..., object],  # (RefToMessageId, detail, *, message=, signal=): Worker.on_ack
        on_nack: Callable[[str, str, str], object],
        tap: Callable[..., None],
    ) -> None:
        self.cfg, self.store, self.node = cfg, store, cfg.node
        sec = cfg.security.with_test_pki(cfg.her_id)
        own = sec.identity(cfg.her_id)
        if own is None or sec.trust is None:
            raise IdentityConfigError(f"no identity for the relay's own HER-id {cfg.her_id} ([[identities]]) "
                                      "or no [trust] anchors: the network channels need both")
        self.address = cfg.smtp_addresses[0] if cfg.smtp_addresses else f"relay-{cfg.her_id}@hub.invalid"
        # every party this relay serves signs and decrypts with its own keys when [[identities]] names
        # them, else with the relay's own enterprise keys
        her_ids = {cfg.her_id} | {p.her_id for p in register if (r := register.resolve(p.her_id)) and r.local}
        parties = []
        for h in sorted(her_ids):
            sign_cert, sign_key, dec = (sec.identity(h) or own).load()
            parties.append(LocalParty(str(h), sign_cert, sign_key, dec, f"mailto:{self.address}"))
        cpas = None
        if cfg.cpa_dir is not None and cfg.cpa_dir.is_dir():
            from hub.ebxml.cpa import CpaRepository

            cpas = CpaRepository.load_dir(cfg.cpa_dir)
        validator = sec.trust.validator()
        self.server_tls = sec.server_tls()
        self.peers = RegisterPeers(register)
        self.envelope_check = EnvelopeCertCheck(validator)
        self.msh = Msh(parties, cpas=cpas, peers=self.peers, seen=store, sent=SentInStore(store),
                       validate_certificate=self.envelope_check)
        # kept sessions: one per worker thread that may be sending at once (signals share them)
        smtp = SmtpSender(*cfg.smtp_relay, mail_from=self.address, pool=max(2, cfg.worker.threads),
                          tls_context=sec.trust.client_tls(),
                          require_tls=cfg.smtp.relay_starttls == "required") if cfg.smtp_relay else None
        # outbound https: one pooled client (keep-alive), peers verified against the configured anchors
        http = HttpClient(verify=cfg.http.client_ssl() if cfg.http is not None else True,
                          max_connections=max(2, cfg.worker.threads))
        self.outbound = Outbound(f"network-{self.node}", smtp, http, cfg.event_loop)
        answered = Answered()
        self.delivery = EbmsDelivery(store, self.msh, her_id=cfg.her_id, send=self.outbound.send,
                                     on_ack=on_ack, on_nack=on_nack)
        self.kith = KithSignatureCheck(self.peers.sign_cert, validator, self.peers.allow_sha1)
        self.unwrapper = Unwrapper(store, self.msh, node=self.node, defer_s=cfg.defer_s,
                                   answered=answered, send_later=self.outbound.send_later,
                                   on_signal=self.delivery.on_signal, on_received=on_received, tap=tap)
        self.intake = EbmsIntake(store, node=self.node, answered=answered, on_stored=on_received,
                                 on_signal=self.delivery.on_signal, send_later=self.outbound.send_later,
                                 peer_endpoint=self.peers.endpoint, unreadable=self._unreadable,
                                 handoff=self.unwrapper.handoff, tap=tap)
        self.listener: SmtpListener | None = None
        if cfg.smtp_listen:
            st = cfg.smtp.starttls
            if st == "required" and self.server_tls is None:
                raise IdentityConfigError("smtp.starttls = \"required\" needs a [tls] certificate and key")
            self.listener = SmtpListener(set(cfg.smtp_addresses) or {self.address}, _after_mail,
                                         host=cfg.smtp_listen[0], port=cfg.smtp_listen[1],
                                         store=self.intake.store_mail, max_bytes=cfg.smtp.max_bytes,
                                         timeout=cfg.smtp.timeout_s, max_sessions=cfg.smtp.max_sessions,
                                         tls_context=self.server_tls if st != "off" else None,
                                         require_starttls=st == "required")

    def _unreadable(self, e: EbxmlError, sender: str | None) -> bytes:
        return self.msh.unreadable_error([e], datetime.now(UTC), own_her=str(self.cfg.her_id), sender=sender)

    @property
    def validator(self) -> CertificateValidator:
        return self.kith.validator

    @validator.setter
    def validator(self, v: CertificateValidator) -> None:
        """One validator for envelope and document signatures (tests and the demo swap it)."""
        self.kith.validator = v
        self.envelope_check.validator = v

    def deliverers(self) -> dict[pl.RouteKind, Deliverer]:
        return self.delivery.deliverers()

    def start(self) -> None:
        self.outbound.start()
        if self.listener is not None:
            self.outbound.run(self.listener.start(), 10)
            log.info("SMTP listener on %s:%s for %s", self.listener.host, self.listener.port,
                     ", ".join(sorted(self.listener.recipients)))

    def stop(self) -> None:
        self.unwrapper.stop()
        if self.listener is not None and self.outbound.running:
            try:
                self.outbound.run(self.listener.stop(), 15)
                self.outbound.run(self.intake.drain(), 15)
            except Exception:  # noqa: BLE001 - stopping anyway
                log.exception("SMTP listener did not stop cleanly")
        self.intake.stop()
        self.outbound.stop()

    @property
    def smtp_port(self) -> int | None:
        return self.listener.port if self.listener is not None else None


async def _after_mail(data: bytes, mail_from: str, rcpts: list[str]) -> None:
    return None  # everything happened before the 250 (EbmsIntake.store_mail)
