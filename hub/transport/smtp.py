"""SMTP adapters around the Msh: they move MIME entities and nothing else.

Out: `SmtpSender` wraps the entity in a mail (From/To/Subject/Date/Message-ID) and hands it to the
relay host with aiosmtplib, using STARTTLS whenever the server offers it; a pooling sender keeps its
sessions open and sends mail after mail over them; where the server offers PIPELINING (RFC 2920) a
mail's MAIL, RCPT and DATA go in one write.
In: `SmtpListener` is an aiosmtpd server that accepts mail only for our configured addresses, refuses
oversized mail (552) and, without a `store` step, mail that is not ebXML (554), and passes each
accepted mail to a callback. STARTTLS is offered with a `tls_context` and can be required; lines of
any length within the size limit are taken as postfix takes them (real NAV mails carry 3,858-character
lines; RFC 5321's 1,000 is a limit for senders); an idle or stalled session is closed after `timeout`
seconds; at most `max_sessions` sessions are open at once (postfix's default process limit is 100), a
connection beyond them is answered `421` and closed, as postfix's smtpd does under its limits. It offers
PIPELINING and answers a group of commands in one write.
Nothing of a mail stays in memory once it is handed on (`keep` > 0: the last mails, for tests).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import ssl
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiosmtplib
from aiosmtpd.smtp import MISSING, SMTP, Envelope, Session, syntax
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import MAX_RESPONSE_LENGTH, SMTPProtocol, normalize_message_line_endings

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
log = logging.getLogger("hub.transport.smtp")


def mail_address(endpoint: str) -> str:
    """`mailto://a@b` and `mailto:a@b` (both seen in CPAs) -> `a@b`."""
    e = endpoint.strip()
    for prefix in ("mailto://", "mailto:"):
        if e.lower().startswith(prefix):
            return e[len(prefix) :]
    return e


def wrap_mail(entity: bytes, *, mail_from: str, rcpt_to: str, subject: str = "ebXML") -> bytes:
    """The mail headers in front of the MIME entity's own (MIME-Version, SOAPAction, Content-Type)."""
    head = (
        f"From: {mail_from}\r\nTo: {rcpt_to}\r\nSubject: {subject}\r\n"
        f"Date: {email.utils.formatdate(usegmt=True)}\r\n"
        f"Message-ID: {email.utils.make_msgid(domain=mail_from.rpartition('@')[2] or 'hub')}\r\n"
    )
    return head.encode("ascii") + entity


@dataclass
class SmtpSender:
    """Sends through one relay host (e.g. the HelseNett mail server, or a peer's listener in tests).

    `pool` > 0 keeps up to that many SMTP sessions open to the host and sends mail after mail over them
    (connect, EHLO, STARTTLS and QUIT once per session instead of once per mail). Sessions belong to the
    event loop that opened them: a pooling sender is used from one loop and `close()`d on it.
    """

    host: str
    port: int
    mail_from: str
    tls_context: ssl.SSLContext | None = None
    username: str | None = None
    password: str | None = None
    timeout: float = 30.0
    pool: int = 0
    require_tls: bool = False  # refuse to send in clear text when the server offers no STARTTLS
    _idle: list[aiosmtplib.SMTP] = field(default_factory=list, init=False, repr=False)
    _slots: asyncio.Semaphore | None = field(default=None, init=False, repr=False)

    def _client(self) -> _PipeliningSMTP:
        return _PipeliningSMTP(
            hostname=self.host,
            port=self.port,
            # fixed EHLO name: aiosmtplib would otherwise look up our FQDN in a thread for every session
            local_hostname=self.mail_from.rpartition("@")[2] or "hub.local",
            # None: STARTTLS when the server offers it, plain otherwise; True: STARTTLS or no mail
            start_tls=True if self.require_tls else None,
            tls_context=self.tls_context,
            validate_certs=self.tls_context is not None,
            username=self.username,
            password=self.password,
            timeout=self.timeout,
        )

    async def send(self, entity: bytes, to: str, *, subject: str = "ebXML") -> None:
        rcpt = mail_address(to)
        data = wrap_mail(entity, mail_from=self.mail_from, rcpt_to=rcpt, subject=subject)
        if self.pool <= 0:
            async with self._client() as client:
                try:
                    await client.send_one(self.mail_from, rcpt, data)
                except _Unsent as e:
                    raise e.cause from None
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.pool)
        async with self._slots:
            await self._send_pooled(data, rcpt)

    async def _send_pooled(self, data: bytes, rcpt: str) -> None:
        client = self._idle.pop() if self._idle else None
        if client is not None:
            try:
                await client.send_one(self.mail_from, rcpt, data)
            except _Unsent:
                # a kept session the server dropped while idle fails before the mail's body was sent:
                # nothing of it was taken, so it is safe to open a new session and send the mail there
                client.close()
                client = None
            except BaseException:
                # whatever state the session is in now, it is not one to send the next mail in
                client.close()
                raise
            else:
                self._idle.append(client)
                return
        client = self._client()
        try:
            await client.connect()
            await client.send_one(self.mail_from, rcpt, data)
        except _Unsent as e:
            client.close()
            raise e.cause from None
        except BaseException:
            client.close()
            raise
        self._idle.append(client)

    async def close(self) -> None:
        """Drop the kept sessions (pooling senders; on the loop that used them). No QUIT: the peer may
        be gone already, and waiting for its answer would only hold up a shutdown."""
        idle, self._idle = self._idle, []
        for client in idle:
            client.close()


class _Unsent(Exception):
    """The session failed before the mail's body was sent (a lost or silent session): nothing was taken."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


# aiosmtplib's reply state that _GroupProtocol reads and sets
_GROUP_STATE = ("_response_waiter", "_response_pending", "_buffer", "_command_lock",
                "_read_response_from_buffer")


class _GroupProtocol(SMTPProtocol):
    """aiosmtplib's protocol, able to read the replies to a group of pipelined commands (RFC 2920).

    aiosmtplib reads one reply per command written and drops bytes that come while no reply is awaited;
    the replies of a group may arrive together or split anywhere, before their reads. While a group is
    open such bytes are kept in the buffer, and each reply after the first is taken from it when there."""

    _group_open = False  # class default: a connected protocol is switched to this class (_PipeliningSMTP)

    def data_received(self, data: bytes) -> None:
        w = self._response_waiter
        if self._group_open and w is not None and (w.done() or not self._response_pending):
            self._buffer.extend(data)  # a later reply of the group, before its read: kept for it
            if len(self._buffer) > MAX_RESPONSE_LENGTH:  # nonsense: the session ends, the reads see it
                del self._buffer[:]
                self.transport.close()  # type: ignore[union-attr]
            return
        super().data_received(data)

    async def execute_group(self, commands: list[bytes],
                            timeout: float | None) -> list[aiosmtplib.SMTPResponse]:
        """Write the commands at once and read their replies in order."""
        if self._command_lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        async with self._command_lock:
            self._group_open = True
            try:
                self._response_pending = True
                self.write(b"".join(commands))
                replies = [await self.read_response(timeout=timeout)]
                while len(replies) < len(commands):
                    r = self._read_response_from_buffer()
                    replies.append(r if r is not None else await self.read_response(timeout=timeout))
            finally:
                self._group_open = False
        return replies

    async def execute_message(self, wire: bytes, timeout: float | None) -> aiosmtplib.SMTPResponse:
        """The mail after a 354, as DATA carries it (data_wire), and its reply."""
        if self._command_lock is None:
            raise aiosmtplib.SMTPServerDisconnected("Server not connected")
        async with self._command_lock:
            self._response_pending = True
            self.write(wire)
            return await self.read_response(timeout=timeout)


_LONE_CR = re.compile(rb"\r(?!\n)")


def data_wire(message: bytes) -> bytes:
    """A mail as DATA carries it, byte for byte what aiosmtplib sends: every line end CRLF (a bare CR or
    LF made one), a CRLF at the end, a dot doubled at the start of each line, then ".CRLF". When every
    line end is a CRLF already (our mails), with bytes operations instead of aiosmtplib's two regular
    expressions (about 110 us per 13 kB ebXML mail)."""
    # every line end a CRLF: no CR without an LF after it, and as many LFs as CRs
    if _LONE_CR.search(message) or message.count(b"\n") != message.count(b"\r"):
        message = normalize_message_line_endings(message)
    elif not message.endswith(b"\r\n"):
        message += b"\r\n"
    message = message.replace(b"\r\n.", b"\r\n..")
    return (b"." if message.startswith(b".") else b"") + message + b".\r\n"


class _PipeliningSMTP(aiosmtplib.SMTP):
    """aiosmtplib's client, sending a mail's MAIL, RCPT and DATA as one group when the server offers
    PIPELINING (one write and one wait instead of three), else one command at a time as before."""

    async def _create_connection(self, timeout: float | None) -> aiosmtplib.SMTPResponse:
        response = await super()._create_connection(timeout)
        # aiosmtplib makes its protocol itself; ours only adds methods, so the instance can be switched.
        # It relies on aiosmtplib's reply state (5.x); a version without it sends unpipelined instead
        p = self.protocol
        if type(p) is SMTPProtocol and all(hasattr(p, a) for a in _GROUP_STATE):
            p.__class__ = _GroupProtocol
        return response

    async def send_one(self, mail_from: str, rcpt: str, data: bytes) -> None:
        """One mail to one recipient; aiosmtplib's exceptions for refusals (their code decides retry).
        Raises _Unsent when the session was found dead before the server answered the MAIL command."""
        try:
            await self._ehlo_or_helo_if_needed()
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError, aiosmtplib.SMTPTimeoutError) as e:
            raise _Unsent(e) from e
        proto = self.protocol
        if not isinstance(proto, _GroupProtocol) or not self.supports_extension("pipelining"):
            try:
                await self.mail(mail_from)
            except (aiosmtplib.SMTPServerDisconnected, ConnectionError, aiosmtplib.SMTPTimeoutError) as e:
                raise _Unsent(e) from e
            await self.rcpt(rcpt)
            await self.data(data)
            return
        commands = [b"MAIL FROM:" + _quoted(mail_from), b"RCPT TO:" + _quoted(rcpt), b"DATA"]
        try:
            mail, to, start = await proto.execute_group([c + b"\r\n" for c in commands], self.timeout)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError, aiosmtplib.SMTPTimeoutError) as e:
            self.close()
            raise _Unsent(e) from e
        refused = mail.code != 250 or to.code not in (250, 251)
        if start.code == aiosmtplib.SMTPStatus.start_input and refused:
            # RFC 2920 3.1: a server that took DATA after refusing the envelope gets an empty mail
            await proto.execute_message(b".\r\n", self.timeout)
        if mail.code != aiosmtplib.SMTPStatus.completed:
            raise aiosmtplib.SMTPSenderRefused(mail.code, mail.message, mail_from)
        if to.code not in (aiosmtplib.SMTPStatus.completed, aiosmtplib.SMTPStatus.will_forward):
            raise aiosmtplib.SMTPRecipientRefused(to.code, to.message, rcpt)
        if start.code != aiosmtplib.SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(start.code, start.message)
        try:
            done = await proto.execute_message(data_wire(data), self.timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            self.close()
            raise
        if done.code != aiosmtplib.SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(done.code, done.message)


_QUOTED: dict[str, bytes] = {}


def _quoted(address: str) -> bytes:
    """`<address>` as aiosmtplib's MAIL/RCPT write it (its parser and injection checks; email.utils takes
    about 20 us an address), remembered: a relay sends from one address to a few."""
    q = _QUOTED.get(address)
    if q is None:
        q = quote_address(address).encode("ascii")
        if len(_QUOTED) < 1024:
            _QUOTED[address] = q
    return q


def looks_like_ebxml(data: bytes) -> str | None:
    """None when the mail can be ebXML; else why not (SMTP 554 text). Full checks are the Msh's."""
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0].lower()
    if b"content-type:" not in head:
        return "no Content-Type: not an ebXML message"
    ctype = head.split(b"content-type:", 1)[1].split(b";", 1)[0].strip().split()[0]
    if ctype not in (b"multipart/related", b"text/xml"):
        return f"Content-Type {ctype.decode(errors='replace')} is not an ebXML message"
    return None


Received = Callable[[bytes, str, list[str]], Awaitable[None]]
DEFAULT_TIMEOUT_S = 300.0  # postfix's smtpd_timeout
DEFAULT_MAX_SESSIONS = 100  # postfix's default_process_limit: smtpd processes at once
STARTTLS = ("off", "offered", "required")


@dataclass(frozen=True)
class SmtpSettings:
    """hub.toml [smtp] beyond addresses: `starttls` for the listener (off | offered | required; offered
    needs a [tls] certificate), `relay_starttls` for mail we send (opportunistic | required),
    `max_bytes` per mail, `timeout_s` per idle session and `max_sessions` open at once."""

    starttls: str = "offered"
    relay_starttls: str = "opportunistic"
    max_bytes: int = DEFAULT_MAX_BYTES
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_sessions: int = DEFAULT_MAX_SESSIONS

    @classmethod
    def from_section(cls, s: object) -> SmtpSettings:
        """From hub.config's validated [smtp] section."""
        keys = ("starttls", "relay_starttls", "max_bytes", "timeout_s", "max_sessions")
        return cls.from_dict({k: getattr(s, k) for k in keys})

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> SmtpSettings:
        s = cls(str(d.get("starttls", "offered")), str(d.get("relay_starttls", "opportunistic")),
                int(d.get("max_bytes", DEFAULT_MAX_BYTES)), float(d.get("timeout_s", DEFAULT_TIMEOUT_S)),  # type: ignore[arg-type]
                int(d.get("max_sessions", DEFAULT_MAX_SESSIONS)))  # type: ignore[arg-type]
        if s.starttls not in STARTTLS:
            raise ValueError(f"smtp.starttls: one of {', '.join(STARTTLS)}, not {s.starttls!r}")
        if s.max_sessions < 1:
            raise ValueError(f"smtp.max_sessions: at least 1, not {s.max_sessions}")
        if s.relay_starttls not in ("opportunistic", "required"):
            raise ValueError(f"smtp.relay_starttls: opportunistic or required, not {s.relay_starttls!r}")
        return s


class _LimitedSMTP(SMTP):
    """An aiosmtpd session that counts itself against its listener's `max_sessions`: one too many is
    answered 421 and closed before any SMTP dialogue (no greeting, no handler, no timeout)."""

    listener: SmtpListener
    _counted = False
    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # called again after STARTTLS on the same session: count the session once
        if not self._counted:
            li = self.listener
            if li.active >= li.max_sessions:
                self._refused = True
                li.refused += 1
                log.warning("SMTP connection from %s refused: %d sessions open (smtp.max_sessions)",
                            transport.get_extra_info("peername"), li.active)
                transport.write(b"421 4.7.0 hub.local too many connections, try again later\r\n")  # type: ignore[attr-defined]
                transport.close()
                return
            self._counted = True
            li.active += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._counted:
            self._counted = False
            self.listener.active -= 1
        super().connection_lost(error)

    def eof_received(self) -> bool | None:
        return False if self._refused else super().eof_received()

    _deadline = 0.0  # loop.time() at which the session, idle since its last command, is closed

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd's idle timeout, kept with one timer per session that, when it fires before the
        session's deadline (a command came since), waits out the rest: not a timer cancelled and made
        anew for every command (three per mail)."""
        self._deadline = self.loop.time() + (duration or self._timeout_duration)
        h = self._timeout_handle
        if h is None or h.cancelled() or h.when() > self._deadline:
            if h is not None:
                h.cancel()
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)

    def _timeout_cb(self) -> None:
        if self.loop.time() < self._deadline - 0.001:  # the session was active since it was set
            self._timeout_handle = self.loop.call_at(self._deadline, self._timeout_cb)
            return
        super()._timeout_cb()

    def data_received(self, data: bytes) -> None:
        if not self._refused:  # bytes a refused client sent before the close are dropped
            super().data_received(data)

    _grouped = False  # handling MAIL, RCPT or RSET: commands a client may group with more (RFC 2920)
    _held: bytes = b""  # replies not sent yet

    async def push(self, status: str | bytes) -> None:
        """Replies to a pipelined group in one write (RFC 2920 3.2: a server SHOULD): the reply to a MAIL,
        RCPT or RSET is held while the next command is already read (a whole line in the reader), and so
        are the lines of a multi-line reply (EHLO) but its last; held replies go out with the next one.
        Every command read gets a reply, so nothing stays held when the session waits for input; replies
        to EHLO, DATA, NOOP, QUIT and unknown commands are never held."""
        line = status.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") if isinstance(status, str) \
            else status
        if line[3:4] == b"-" or (self._grouped and b"\n" in self._reader._buffer):  # type: ignore[attr-defined]
            self._held += line + b"\r\n"
            return
        held, self._held = self._held, b""
        await super().push(held + line)

    async def _in_group(self, command: Callable[[str], Awaitable[None]], arg: str) -> None:
        self._grouped = True
        try:
            await command(arg)
        finally:
            self._grouped = False

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command method name
        await self._in_group(super().smtp_MAIL, arg)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command method name
        await self._in_group(super().smtp_RCPT, arg)

    @syntax("RSET")
    async def smtp_RSET(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command method name
        await self._in_group(super().smtp_RSET, arg)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """MAIL FROM / RCPT TO's address: `<local@domain>` with dot-atoms read by one regex (aiosmtpd's
        email header parser took about 60 us per command); anything else (quoted local parts, source
        routes, address literals, no angle brackets, <>) by aiosmtpd, as before."""
        m = _PLAIN_ADDRESS.match(arg)
        rest = arg[m.end():].lstrip(" \t") if m is not None else ""
        if m is None or rest.startswith("("):  # a comment after the address: aiosmtpd's parser drops it
            return super()._getaddr(arg)
        addr = m.group(1)
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802 - aiosmtpd's command method name
        """DATA read to its end marker in a few large reads instead of aiosmtpd's one read per line
        (140-186 per ebXML mail in profiles); the same replies, dot-unstuffing and size limit (on the
        bytes actually read; once over it the rest is read and dropped, keeping 4 bytes), the session
        timeout of aiosmtpd's command loop, and what follows the end marker left for the next command."""
        if self._decode_data:  # not ours (decode_data=False): aiosmtpd's own
            return await super().smtp_DATA(arg)
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            data = await _read_data(self._reader, self.data_size_limit)
        except asyncio.CancelledError:  # the connection went away during DATA (eof_received)
            self._writer.close()
            raise
        except asyncio.IncompleteReadError:
            self._writer.close()
            return
        if data is None:
            await self.push(f"552 5.3.4 message exceeds the limit of {self.data_size_limit} bytes")
            self._set_post_data_state()
            return
        self.envelope.content = self.envelope.original_content = data
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()
        await self.push("250 OK" if status is MISSING else status)


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"[ \t]*<({_ATOM}(?:\.{_ATOM})*@{_ATOM}(?:\.{_ATOM})*)>")
_END = b"\r\n.\r\n"  # CRLF, a line holding one dot, CRLF: the end of DATA (RFC 5321 4.1.1.4)


def _open_end(buf: bytes | bytearray) -> int:
    """How many of the last bytes of `buf` begin the end marker (0-4): that many are already read."""
    for k in (4, 3, 2, 1):
        if buf.endswith(_END[:k]):
            return k
    return 0


async def _read_data(reader: asyncio.StreamReader, limit: int | None) -> bytes | None:
    """The mail after DATA up to its end marker, dot-unstuffed; None when it is larger than `limit` bytes
    (as sent: with stuffed dots and CRLFs; then it is read to its end and dropped). At most `limit` plus
    one reader buffer is held.

    The data starts at a line start, as if a CRLF came before it (an empty mail is ".\r\n" alone). While
    the bytes read so far end with the first k bytes of the marker, the next 5-k bytes are read exactly
    (the sender owes at least those before its marker can be complete); otherwise readuntil finds the
    marker in one call however many lines come before it, and leaves what follows it in the reader."""
    buf = bytearray(b"\r\n")
    size = 0  # bytes of the mail as sent, read so far
    over = False
    while not buf.endswith(_END):
        k = _open_end(buf)
        if k:
            chunk = await reader.readexactly(5 - k)
        else:
            try:
                chunk = await reader.readuntil(_END)
            except asyncio.LimitOverrunError as e:
                chunk = await reader.readexactly(e.consumed)
        size += len(chunk)
        buf += chunk
        if limit and size - 3 > limit:  # past the limit even without the marker's ".\r\n"
            over = True
        if over:
            del buf[:-5]  # only what may end with the marker is kept
    if over:
        return None
    return bytes(buf[:-3]).replace(b"\r\n.", b"\r\n")[2:]


class _Handler:
    def __init__(self, listener: SmtpListener) -> None:
        self.l = listener

    async def handle_EHLO(self, server: SMTP, session: Session, envelope: Envelope,  # noqa: N802
                          hostname: str, responses: list[str]) -> list[str]:
        """aiosmtpd's EHLO reply, offering PIPELINING too (RFC 2920): its command reader takes grouped
        commands in order as they are, and _LimitedSMTP.push answers a group in one write."""
        session.host_name = hostname  # what aiosmtpd does itself when no handler takes EHLO
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,  # noqa: N802
                          address: str, rcpt_options: list[str]) -> str:
        if address.lower() not in self.l.recipients:
            return f"550 5.1.1 <{address}>: no ebXML mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        data = envelope.original_content or b""
        if len(data) > self.l.max_bytes:
            return f"552 5.3.4 message exceeds the limit of {self.l.max_bytes} bytes"
        if self.l.store is None and (why := looks_like_ebxml(data)):
            return f"554 5.6.0 {why}"
        if self.l.store is not None:
            # durable before 250: once we say "accepted", the sender may forget the mail
            try:
                await self.l.store(data, str(envelope.mail_from or ""), list(envelope.rcpt_tos))
            except Exception:  # noqa: BLE001 - not stored: the sending server keeps it and retries
                log.exception("could not store a mail from %s", envelope.mail_from)
                return "451 4.3.0 not stored; try again later"
        self.l.accepted += 1
        if self.l.keep:
            self.l.received.append(data)
            self.l.tls_used.append(bool(session.ssl))
        task = asyncio.get_running_loop().create_task(
            self.l.on_message(data, str(envelope.mail_from or ""), list(envelope.rcpt_tos)))
        self.l.tasks.add(task)
        task.add_done_callback(self.l.tasks.discard)
        return "250 2.0.0 accepted for processing"


@dataclass
class SmtpListener:
    """An aiosmtpd server on `host` (port 0: any free port; see `.port` once started)."""

    recipients: set[str]
    on_message: Received
    host: str = "127.0.0.1"
    port: int = 0
    max_bytes: int = DEFAULT_MAX_BYTES
    tls_context: ssl.SSLContext | None = None  # offer STARTTLS
    require_starttls: bool = False  # with a tls_context: nothing but EHLO/STARTTLS/QUIT before TLS
    timeout: float = DEFAULT_TIMEOUT_S  # a session idle (or in one DATA) this long is closed
    keep: int = 0  # keep the last `keep` mails in `received` (tests); a relay keeps none
    tasks: set[asyncio.Task] = field(default_factory=set)
    # awaited before the 250 reply (a relay stores the mail there); raising answers 451
    store: Received | None = None
    accepted: int = 0  # mails answered 250 so far
    received: deque[bytes] = field(init=False)
    tls_used: deque[bool] = field(init=False)  # per kept mail: did it come over STARTTLS
    _server: asyncio.base_events.Server | None = None
    # open sessions: senders keep theirs open between mails, so stop() closes them itself
    _sessions: weakref.WeakSet[SMTP] = field(default_factory=weakref.WeakSet)
    sessions: int = 0  # SMTP sessions opened to us so far
    max_sessions: int = DEFAULT_MAX_SESSIONS  # open at once; one more is answered 421 and closed
    active: int = 0  # sessions open now
    refused: int = 0  # connections refused with 421 so far

    def __post_init__(self) -> None:
        self.recipients = {mail_address(r).lower() for r in self.recipients}
        self.received = deque(maxlen=self.keep)
        self.tls_used = deque(maxlen=self.keep)

    async def start(self) -> SmtpListener:
        handler = _Handler(self)
        loop = asyncio.get_running_loop()
        # aiosmtpd limits its reader (and so every line) by the class's `line_length_limit`: a line may
        # be as long as the mail may be; commands keep their own 512-byte limit
        smtp_class = type("LongLineSMTP", (_LimitedSMTP,), {"line_length_limit": self.max_bytes,
                                                             "listener": self})

        def session() -> SMTP:
            s = smtp_class(handler, hostname="hub.local", data_size_limit=self.max_bytes,
                           tls_context=self.tls_context, require_starttls=self.require_starttls,
                           timeout=self.timeout,
                           # the size check is ours too, with our reply text; keep the raw bytes
                           decode_data=False)
            self._sessions.add(s)
            self.sessions += 1
            return s

        self._server = await loop.create_server(session, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def drain(self) -> None:
        """Wait for the callbacks of mail accepted so far (tests, orderly shutdown)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    async def stop(self) -> None:
        await self.drain()
        if self._server is not None:
            self._server.close()
            for sess in list(self._sessions):
                if sess.transport is not None:
                    sess.transport.close()
            await self._server.wait_closed()
