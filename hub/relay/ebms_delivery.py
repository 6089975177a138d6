"""ebMS delivery: a validated KITH document to a network peer, and the peer's signals about it.

`prepare()` builds the signed+encrypted package before the claim (the worker stores it in the claim's
commit: every retry sends the same bytes with the same MessageId, fixed at `validated` as
`out_message_id`) and the endpoint it goes to: the endpoint of the receiver's channel in the CPA that
binds the action, else the register's; `deliver()` hands it to the one transport interface (`send`);
over SMTP the message is then awaiting_ack, over HTTP the sync signal comes back in the response.
`on_signal()` applies an Acknowledgment or MessageError (from a mail, or the HTTP response) to what we sent.

Dependencies are passed in: the store, the Msh, a blocking `send(entity, endpoint, subject)` and the
worker's `on_ack`/`on_nack`.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from hub.ebxml.envelope import Envelope
from hub.ebxml.mime import Package
from hub.ebxml.msh import Msh, Outcome, sent_references
from hub.ebxml.msh import Sent as MshSent
from hub.relay import pipeline as pl
from hub.relay.delivery import SIGNAL, Deliverer, Delivery, NetworkDeliverer
from hub.relay.delivery import Outcome as Sent
from hub.store import Message, Store
from hub.transport import NoChannel
from hub.transport.smtp import mail_address

log = logging.getLogger("hub.relay.ebms_delivery")

OUT = "ebxml-out"  # the signed+encrypted package we send; every retry sends these bytes
ENDPOINT = "ebxml-endpoint"  # where OUT goes (the CPA's channel endpoint, else the register's)

# send(entity, endpoint, subject) -> the HTTP reply (status, entity) or None (mail); raises on failure
Send = Callable[[bytes, str, str], Any]


def _now() -> datetime:
    return datetime.now(UTC)


def signal_result(env: Envelope) -> tuple[str, str] | None:
    """A MessageError's first Error (code, text), or None for an Acknowledgment / warnings only."""
    if env.error_list is None:
        return None
    errs = [e for e in env.error_list.errors if e.severity == "Error"]
    if not errs:
        return None
    return errs[0].code, "; ".join(f"{e.code}: {e.description or ''}".strip() for e in errs)


def apprec_original(data: bytes) -> tuple[str | None, str | None]:
    """What an AppRec answers: (OriginalMsgId/MsgType V, its ebXML Service; OriginalMsgId/Id)."""
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return None, None
    el = root.find(".//{*}OriginalMsgId/{*}MsgType")
    return (None if el is None else (el.get("V") or None),
            (root.findtext(".//{*}OriginalMsgId/{*}Id") or "").strip() or None)


def _out_id(message: Message) -> str:
    if not message.out_message_id:
        raise pl.DeliveryError("ebxml.id", "no out_message_id fixed at validation", permanent=True)
    return message.out_message_id


def transport_error(exc: BaseException) -> pl.DeliveryError:
    """Connection refused, timeouts, 4xx SMTP: transient; 5xx SMTP: permanent (the peer said no)."""
    code = getattr(exc, "code", None)
    name = type(exc).__name__
    if isinstance(exc, NoChannel):
        return pl.DeliveryError("route.channel", str(exc), permanent=True)
    if name.startswith("SMTP") and isinstance(code, int) and 500 <= code < 600:
        return pl.DeliveryError(f"smtp.{code}", str(exc), permanent=True)
    if name.startswith("SMTP") and isinstance(code, int) and 400 <= code < 500:
        return pl.DeliveryError(f"smtp.{code}", str(exc), permanent=False)
    f = pl.classify(exc)
    if f.code.startswith("crash."):  # an unknown transport error: worth another try, not a verdict
        return pl.DeliveryError(f"transport.{name}", str(exc) or name, permanent=False)
    return pl.DeliveryError(f.code, f.text, permanent=f.permanent)


class SentInStore:
    """The Msh's record of what it sent, for checking an Acknowledgment's reference digests: kept in
    memory for the moments until the ack comes, and read from the store otherwise (after a restart,
    or when the ack comes to another node): the package we stored (OUT) carries the references."""

    KEEP = 4096  # in memory at most; older ones are read from the store when their ack comes

    def __init__(self, store: Store) -> None:
        self.store = store
        self._recent: OrderedDict[str, MshSent] = OrderedDict()
        self._lock = threading.Lock()

    def __setitem__(self, message_id: str, sent: MshSent) -> None:
        with self._lock:
            self._recent[message_id] = sent
            while len(self._recent) > self.KEEP:
                self._recent.popitem(last=False)

    def pop(self, message_id: str, default: MshSent | None = None) -> MshSent | None:
        with self._lock:
            return self._recent.pop(message_id, default)

    def get(self, message_id: str, default: MshSent | None = None) -> MshSent | None:
        with self._lock:
            hit = self._recent.get(message_id)
        if hit is not None:
            return hit
        m = self.store.get(message_id) if message_id else None
        out = self.store.blob(m.id, OUT) if m is not None and m.out_message_id == message_id else None
        if m is None or out is None:
            return default
        return MshSent(message_id, m.receiver_her or "", sent_references(out))


class EbmsDelivery:
    def __init__(self, store: Store, msh: Msh, *, her_id: int, send: Send,
                 on_ack: Callable[..., object], on_nack: Callable[[str, str, str], object]) -> None:
        self.store, self.msh, self.her_id = store, msh, her_id
        self.send, self.on_ack, self.on_nack = send, on_ack, on_nack

    def deliverers(self) -> dict[pl.RouteKind, Deliverer]:
        d = NetworkDeliverer(self.deliver, self.prepare)
        return {pl.RouteKind.SMTP: d, pl.RouteKind.HTTP: d}

    def prepare(self, route: pl.Route, data: bytes, message: Message) -> dict[str, bytes]:
        """The envelope and its endpoint, built before the claim so they are stored in the claim's commit
        (see deliver)."""
        entity, endpoint = self._build(route, data, message, _out_id(message))
        return {OUT: entity, ENDPOINT: endpoint.encode()}

    def deliver(self, route: pl.Route, data: bytes, message: Message, *,
                prepared: dict[str, bytes] | None = None) -> Delivery:
        """`prepared`: prepare()'s artefacts, stored with the claim just now (else read from the store)."""
        out_id = _out_id(message)
        prepared = prepared or {}
        # prepared and stored with the claim, or by an earlier try
        entity = prepared.get(OUT) or self.store.blob(message.id, OUT)
        stored = (prepared.get(ENDPOINT) or self.store.blob(message.id, ENDPOINT)) if entity is not None \
            else None
        endpoint = stored.decode() if stored else route.endpoint
        if entity is None:
            entity, endpoint = self._build(route, data, message, out_id)
            # before sending: retries send these bytes to this endpoint
            self.store.put_artifact(message.id, OUT, entity)
            self.store.put_artifact(message.id, ENDPOINT, endpoint.encode())
        try:
            reply = self.send(entity, endpoint, "ebXML")
        except pl.DeliveryError:
            raise
        except Exception as exc:  # noqa: BLE001 - sorted below; the ladder decides what follows
            raise transport_error(exc) from exc
        if endpoint.startswith("mailto:"):
            return Delivery(Sent.SENT, f"smtp {mail_address(endpoint)} (MessageId {out_id})", out_id)
        status = getattr(reply, "status", 0)
        if status >= 500 or status in (408, 429):
            raise pl.DeliveryError(f"http.{status}", f"{endpoint} answered {status}", permanent=False)
        if status >= 300:
            raise pl.DeliveryError(f"http.{status}", f"{endpoint} answered {status}", permanent=True)
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
                if env.acknowledgment is not None:  # stored (SIGNAL) with the delivered step
                    return Delivery(Sent.DELIVERED, f"http {endpoint}: sync Acknowledgment", out_id,
                                    signal)
        return Delivery(Sent.SENT, f"http {endpoint} {status} (MessageId {out_id})", out_id)

    def _build(self, route: pl.Route, data: bytes, message: Message, out_id: str) -> tuple[bytes, str]:
        """The package, and the endpoint it goes to: a CPA that binds the action to a channel of the
        receiver decides; the register's endpoint is the fallback without one."""
        now = _now()
        from_her = message.sender_her or str(self.her_id)
        if from_her not in self.msh.parties:
            from_her = str(self.her_id)
        kw: dict[str, Any] = {}
        if (message.msg_type or "").upper() == pl.APPREC_TYPE:
            # an AppRec travels in the service of the message it answers, roles reversed (HISD 1209)
            orig_type, orig_id = apprec_original(data)  # one parse of the AppRec for both
            kw = {"message_type": orig_type or pl.APPREC_TYPE, "action": "APPREC"}
            orig = self.store.find_by_kith_msg_id(orig_id) if orig_id else []
            conv = next((o.conversation_id for o in orig if o.conversation_id), None)
            if conv:
                kw["conversation_id"] = conv
        else:
            kw = {"message_type": message.msg_type or "DIALOG_NOTAT"}
        ttl = message.expires_at - now if message.expires_at and message.expires_at > now else None
        try:
            out = self.msh.send(from_her=from_her, to_her=str(route.her_id), payload=data, now=now,
                                time_to_live=ttl, message_id=out_id,
                                protocol="HTTP" if route.kind is pl.RouteKind.HTTP else "SMTP", **kw)
        except ValueError as exc:  # no encryption certificate: a register fault an operator fixes
            raise pl.DeliveryError("ebxml.peer", str(exc), permanent=True) from exc
        plan = out.plan
        cpa_endpoint = plan.endpoints[0] if plan.cpa is not None and plan.bound and plan.endpoints else None
        if cpa_endpoint and cpa_endpoint != route.endpoint:
            log.info("%s: CPA %s channel %s endpoint %s (the register says %s)", message.short_id,
                     plan.cpa_id, plan.channel_id, cpa_endpoint, route.endpoint)
        return out.data, cpa_endpoint or route.endpoint

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
        m = self.store.by_out_message_id(ref)
        nack = signal_result(env)
        if nack is None and env.acknowledgment is not None:
            # the ack is stored (SIGNAL) in the commit that applies it; the message as just read goes along
            self.on_ack(ref, f"ebMS Acknowledgment over {channel}", message=m, signal=raw)
            return outcome
        if m is not None:
            self.store.put_artifact(m.id, SIGNAL, raw)
        if nack is not None:
            self.on_nack(ref, *nack)
        return outcome
