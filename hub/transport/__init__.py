"""Transports: thin adapters that move the Msh's MIME entities over SMTP and HTTP.

`Gateway` joins one Msh to its listeners: each received entity goes through `Msh.receive` (in a worker
thread: RSA and XML work would stall the event loop) and the answer goes back the way the framework
says: over SMTP to the sender's endpoint, over HTTP in the same exchange when SyncReply asks for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from hub.ebxml.msh import Msh, Outcome, Outgoing
from hub.transport.http import HttpClient, HttpReply, post
from hub.transport.smtp import SmtpSender, mail_address


def utcnow() -> datetime:
    return datetime.now(UTC)


async def transmit(entity: bytes, endpoint: str, *, smtp: SmtpSender | None, subject: str = "ebXML",
                   http_ssl: object | None = None, http: HttpClient | None = None) -> HttpReply | None:
    """The one way a MIME entity leaves: mailto: over SMTP (None back), http(s): POST (the reply back).
    `http`: a pooled client (keep-alive, its own TLS anchors); else one POST on a client of its own."""
    if endpoint.lower().startswith("mailto"):
        if smtp is None:
            raise NoChannel(f"no SMTP relay is configured for {endpoint}")
        await smtp.send(entity, mail_address(endpoint), subject=subject)
        return None
    if endpoint.lower().startswith(("http://", "https://")):
        if http is not None:
            return await http.post(endpoint, entity)
        return await post(endpoint, entity, ssl_context=http_ssl)  # type: ignore[arg-type]
    raise NoChannel(f"unsupported endpoint {endpoint!r} (mailto:, http(s): only; AMQP is not carried)")


class NoChannel(ValueError):
    """The endpoint names a channel this side cannot send on (a configuration fault, not a retry)."""


@dataclass
class Gateway:
    msh: Msh
    smtp: SmtpSender | None = None
    clock: Callable[[], datetime] = utcnow
    outcomes: list[Outcome] = field(default_factory=list)
    http_ssl: object | None = None

    async def _receive(self, entity: bytes, transport: str) -> Outcome:
        outcome = await asyncio.to_thread(self.msh.receive, entity, self.clock(), transport=transport)
        self.outcomes.append(outcome)
        return outcome

    async def on_mail(self, data: bytes, mail_from: str, rcpts: list[str]) -> Outcome:
        """SmtpListener callback: process, then mail the signal back (CPA/register endpoint, or MAIL FROM).
        Returns the outcome (a caller that wraps the gateway sees what this mail was)."""
        outcome = await self._receive(data, "smtp")
        if outcome.response and self.smtp is not None:
            to = outcome.reply_to if outcome.reply_to and outcome.reply_to.lower().startswith("mailto") \
                else mail_from
            subject = {"ack": "ebXML acknowledgment", "error": "ebXML MessageError"}.get(
                outcome.response_kind or "", "ebXML")
            await self.smtp.send(outcome.response, to, subject=subject)
        return outcome

    async def on_http(self, entity: bytes) -> HttpReply:
        """HttpListener handler: a sync signal in the response; a Fault as 500; else 202 and async reply."""
        outcome = await self._receive(entity, "http")
        if outcome.status == "deferred":
            return HttpReply(503, None)  # try again later; nothing was remembered
        if outcome.response_kind == "fault":
            return HttpReply(500, outcome.response)
        if outcome.response and (outcome.sync or not outcome.reply_to):
            return HttpReply(200, outcome.response)
        if outcome.response and outcome.reply_to:
            await self.deliver(outcome.response, outcome.reply_to)
        return HttpReply(202, None)

    async def deliver(self, entity: bytes, endpoint: str) -> HttpReply | None:
        """Send an entity to an endpoint (mailto: or http(s):). An HTTP reply with a body is a signal
        for us and is processed at once."""
        reply = await transmit(entity, endpoint, smtp=self.smtp, http_ssl=self.http_ssl)
        if reply is not None and reply.entity:
            await self._receive(reply.entity, "http")
        return reply

    async def send(self, out: Outgoing, endpoint: str | None = None) -> HttpReply | None:
        target = endpoint or (out.endpoints[0] if out.endpoints else None)
        if not target:
            raise ValueError(f"no endpoint for message {out.message_id}")
        return await self.deliver(out.data, target)
