"""SMTP PIPELINING (RFC 2920) on both sides of the relay's SMTP edge, over real sockets on 127.0.0.1.

The listener (aiosmtpd) offers PIPELINING and answers a group of MAIL/RCPT/DATA in one write, but never
holds a reply while the next command has not fully arrived (it would wait for input with a reply owed).
The sender (aiosmtplib) sends MAIL, RCPT and DATA as one group when offered, reads the replies however
the server splits them, and keeps aiosmtplib's exceptions and its DATA encoding byte for byte; without
PIPELINING it sends one command at a time. Scripted servers below are plain sockets that play a server's
part exactly as written (they would hang a client that waits for replies they do not send yet)."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings

from hub.security.testing import shared_test_pki
from hub.security.tls import issue_tls_certificate
from hub.transport.smtp import SmtpListener, SmtpSender, _GroupProtocol, data_wire

pytestmark = pytest.mark.timeout(60)
ADDR = "edi@b.test"
MAIL = b"Content-Type: text/xml\r\n\r\n<x/>\r\n.leading dot\r\n"


async def _ignore(data: bytes, mail_from: str, rcpts: list[str]) -> None:
    return None


async def _reply(reader: asyncio.StreamReader) -> bytes:
    """One whole reply (its continuation lines too)."""
    out = b""
    while True:
        line = await asyncio.wait_for(reader.readline(), 5)
        out += line
        if line[3:4] != b"-":
            return out


def test_listener_offers_pipelining_and_answers_a_group_in_one_write() -> None:
    async def run() -> None:
        li = await SmtpListener({ADDR}, _ignore, keep=5, store=_ignore).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", li.port)
            await _reply(reader)
            writer.write(b"EHLO a.test\r\n")
            ehlo = await _reply(reader)
            assert b"250-PIPELINING\r\n" in ehlo and ehlo.endswith(b"250 HELP\r\n"), ehlo
            writer.write(b"MAIL FROM:<edi@a.test>\r\nRCPT TO:<" + ADDR.encode() + b">\r\nDATA\r\n")
            # the three replies come in one write: one read returns all of them
            got = await asyncio.wait_for(reader.read(4096), 5)
            assert [ln[:3] for ln in got.split(b"\r\n") if ln] == [b"250", b"250", b"354"], got
            writer.write(data_wire(MAIL))
            assert (await _reply(reader))[:3] == b"250"
            # a refused recipient in a group: 550, then DATA refused; the session goes on
            writer.write(b"MAIL FROM:<edi@a.test>\r\nRCPT TO:<nobody@b.test>\r\nDATA\r\nRSET\r\nNOOP\r\n")
            codes = [(await _reply(reader))[:3] for _ in range(5)]
            assert codes == [b"250", b"550", b"503", b"250", b"250"], codes
            writer.write(b"QUIT\r\n")
            assert (await _reply(reader))[:3] == b"221"
            writer.close()
            assert list(li.received) == [MAIL]
        finally:
            await li.stop()

    asyncio.run(run())


def test_listener_holds_no_reply_while_the_next_command_is_incomplete() -> None:
    """RFC 2920 3.2 (7): the replies owed go out whenever the input is used up, here mid-command."""
    async def run() -> None:
        li = await SmtpListener({ADDR}, _ignore, store=_ignore).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", li.port)
            await _reply(reader)
            writer.write(b"EHLO a.test\r\n")
            await _reply(reader)
            writer.write(b"MAIL FROM:<edi@a.test>\r\nRCPT TO:<" + ADDR.encode())  # RCPT not finished
            assert (await _reply(reader))[:3] == b"250"  # MAIL's reply did not wait for it
            writer.write(b">\r\n")
            assert (await _reply(reader))[:3] == b"250"
            writer.write(b"QUIT\r\n")
            assert (await _reply(reader))[:3] == b"221"
            writer.close()
        finally:
            await li.stop()

    asyncio.run(run())


def test_help_for_the_grouped_commands_is_aiosmtpd_s() -> None:
    async def helps(port: int) -> list[bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await _reply(reader)
        out = []
        for cmd in (b"HELP MAIL", b"HELP RCPT", b"HELP RSET", b"EHLO a.test", b"HELP MAIL", b"HELP RCPT"):
            writer.write(cmd + b"\r\n")
            out.append(await _reply(reader))
        writer.close()
        return [r for r in out if not r.startswith(b"250-")]  # EHLO's lines differ (the hostname, ours)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stock = await loop.create_server(lambda: SMTP(object(), hostname="x", decode_data=False),
                                         "127.0.0.1", 0)
        ours = await SmtpListener({ADDR}, _ignore).start()
        try:
            assert await helps(ours.port) == await helps(stock.sockets[0].getsockname()[1])
        finally:
            await ours.stop()
            stock.close()
            await stock.wait_closed()

    asyncio.run(run())


# --- the sender --------------------------------------------------------------------------------------

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _scripted(script: Script, *, pipelining: bool = True) -> tuple[asyncio.Server, list[bytes]]:
    """A server that greets, answers EHLO (offering PIPELINING or not), then runs `script`; every byte
    it reads after EHLO is kept in the list returned."""
    seen: list[bytes] = []

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted\r\n")
        await reader.readline()
        offer = b"250-PIPELINING\r\n" if pipelining else b""
        writer.write(b"250-scripted\r\n" + offer + b"250 8BITMIME\r\n")

        until_of = reader.readuntil

        async def readuntil(sep: bytes = b"\n") -> bytes:  # readline reads with it too
            data = await until_of(sep)
            seen.append(data)
            return data

        reader.readuntil = readuntil  # type: ignore[method-assign]
        try:
            await script(reader, writer)
        finally:
            writer.close()

    srv = await asyncio.start_server(session, "127.0.0.1", 0)
    return srv, seen


async def _group(reader: asyncio.StreamReader) -> list[bytes]:
    """MAIL, RCPT and DATA, all read before anything is answered (a client that waits would hang here)."""
    return [await reader.readline() for _ in range(3)]


def _send(port: int, data: bytes = MAIL, **kw: object) -> None:
    async def run() -> None:
        await SmtpSender("127.0.0.1", port, "edi@a.test", timeout=5, **kw).send(data, ADDR)  # type: ignore[arg-type]

    asyncio.run(run())


def _serve(script: Script, *, pipelining: bool = True) -> tuple[list[bytes], Callable[[], None]]:
    """The scripted server on a loop thread of its own (the sender runs on the test's)."""
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    srv, seen = asyncio.run_coroutine_threadsafe(_scripted(script, pipelining=pipelining), loop).result(5)

    async def close() -> None:
        srv.close()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:  # sessions still in their script
            task.cancel()

    def stop() -> None:  # on the server's own loop: asyncio's objects are not thread-safe
        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()

    seen.append(str(srv.sockets[0].getsockname()[1]).encode())  # the port, taken off by the caller
    return seen, stop


@pytest.mark.parametrize("split", [False, True])
def test_sender_pipelines_and_reads_replies_however_they_come(split: bool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _group(reader)
        replies = b"250 2.1.0 ok\r\n250-2.1.5 ok\r\n250 2.1.5 still ok\r\n354 go on\r\n"
        for i in range(len(replies)) if split else [0]:
            writer.write(replies[i:i + 1] if split else replies)
            await writer.drain()
            if split:
                await asyncio.sleep(0.001)
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 2.0.0 taken\r\n")
        await reader.readline()  # QUIT
        writer.write(b"221 bye\r\n")

    seen, stop = _serve(script)
    try:
        _send(int(seen.pop()))
    finally:
        stop()
    assert seen[0].startswith(b"MAIL FROM:<edi@a.test>") and seen[1] == b"RCPT TO:<edi@b.test>\r\n"
    assert seen[2] == b"DATA\r\n" and seen[3].endswith(b"<x/>\r\n..leading dot\r\n.\r\n")


def test_sender_keeps_replies_that_arrive_before_they_are_read() -> None:
    """Replies of a group that arrive one after another before the sending task has taken the first
    (aiosmtplib alone drops bytes that come while its reply is not picked up yet): the transport's
    callbacks in that order, on a connected socket, none of the replies lost."""
    import socket

    async def run() -> list[int]:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        with theirs:
            _, proto = await loop.create_connection(lambda: _GroupProtocol(loop=loop), sock=ours)
            task = asyncio.create_task(proto.execute_group([b"MAIL\r\n", b"RCPT\r\n", b"DATA\r\n"], 5))
            await asyncio.sleep(0)  # the group is written; its first reply awaited
            proto.data_received(b"250 ok\r\n")
            proto.data_received(b"250-o")  # the task has not run since: the first reply is not taken
            proto.data_received(b"k\r\n250 ok\r\n354 go on\r\n")
            replies = await task
            assert theirs.recv(100) == b"MAIL\r\nRCPT\r\nDATA\r\n"
            proto.transport.close()  # type: ignore[union-attr]
        return [r.code for r in replies]

    assert asyncio.run(run()) == [250, 250, 354]


@pytest.mark.parametrize("codes, raised", [
    ((b"550 5.1.1 no", b"503 need RCPT"), aiosmtplib.SMTPRecipientRefused),
    ((b"450 4.2.0 later", b"503 need RCPT"), aiosmtplib.SMTPRecipientRefused),
    ((b"550 5.1.1 no", b"354 go on anyway"), aiosmtplib.SMTPRecipientRefused),  # RFC 2920 3.1
    ((b"250 ok", b"451 4.3.0 not now"), aiosmtplib.SMTPDataError),
])
def test_sender_refusals_in_a_group_raise_aiosmtplib_s_exceptions(codes: tuple[bytes, bytes],
                                                                  raised: type[Exception]) -> None:
    after: list[bytes] = []

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _group(reader)
        writer.write(b"250 ok\r\n" + codes[0] + b"\r\n" + codes[1] + b"\r\n")
        if codes[1].startswith(b"354"):
            after.append(await reader.readline())  # the empty mail the client owes: one dot
            writer.write(b"554 no valid recipients\r\n")
        after.append(await reader.readline())  # QUIT
        writer.write(b"221 bye\r\n")

    seen, stop = _serve(script)
    try:
        with pytest.raises(raised) as e:
            _send(int(seen.pop()))
    finally:
        stop()
    bad = codes[0] if not codes[0].startswith(b"250") else codes[1]
    assert e.value.code == int(bad[:3])  # type: ignore[attr-defined]  # 4xx transient, 5xx permanent
    assert after == ([b".\r\n"] if codes[1].startswith(b"354") else []) + [b"QUIT\r\n"]


def test_sender_without_pipelining_offered_waits_for_each_reply() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in (b"250 ok", b"250 ok", b"354 go on"):
            line = await reader.readline()
            # nothing more was sent before this reply
            assert not reader._buffer, (line, bytes(reader._buffer))  # type: ignore[attr-defined]
            writer.write(reply + b"\r\n")
        await reader.readuntil(b"\r\n.\r\n")
        writer.write(b"250 taken\r\n")
        await reader.readline()
        writer.write(b"221 bye\r\n")

    seen, stop = _serve(script, pipelining=False)
    try:
        _send(int(seen.pop()))
    finally:
        stop()
    assert [s[:4] for s in seen[:3]] == [b"MAIL", b"RCPT", b"DATA"]


def test_pooled_sender_over_starttls_pipelines_mail_after_mail(tmp_path: Path) -> None:
    pki = shared_test_pki()
    cert, key = issue_tls_certificate(pki.dir, tmp_path / "tls", "relay-b", ["127.0.0.1", "localhost"])
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(pki.layout.anchors))

    async def run() -> SmtpListener:
        li = await SmtpListener({ADDR}, _ignore, keep=10, store=_ignore, tls_context=server,
                                require_starttls=True).start()
        sender = SmtpSender("127.0.0.1", li.port, "edi@a.test", tls_context=client, pool=1,
                            require_tls=True)
        for i in range(5):
            await sender.send(MAIL + b"%d\r\n" % i, ADDR)
        await sender.close()
        await li.stop()
        return li

    li = asyncio.run(run())
    assert (li.accepted, li.sessions) == (5, 1)
    assert list(li.tls_used) == [True] * 5
    assert [m.endswith(b"%d\r\n" % i) for i, m in enumerate(li.received)] == [True] * 5


def test_data_wire_is_what_aiosmtplib_sends() -> None:
    def theirs(m: bytes) -> bytes:
        return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(m)) + b".\r\n"

    rnd = random.Random(7)
    samples = [b"", b".", b"\r\n", b".\r\n.\r\n", b"a\nb\rc\r\n.d", b"x\r", b"\r\r\n\n.", MAIL,
               b"..\r\n.. x\r\n"]
    samples += [bytes(rnd.choice(b"ab.\r\n") for _ in range(rnd.randint(0, 30))) for _ in range(3000)]
    for m in samples:
        assert data_wire(m) == theirs(m), m


def test_listener_times_out_an_idle_session_not_an_active_one() -> None:
    """The idle timeout counts from the last command (one timer per session, moved on lazily): a
    session that sends a command every 0.1 s outlives a 0.3 s timeout; once quiet it is closed."""

    async def run() -> tuple[list[bytes], float]:
        li = await SmtpListener({ADDR}, _ignore, timeout=0.3).start()
        reader, writer = await asyncio.open_connection("127.0.0.1", li.port)
        loop = asyncio.get_running_loop()
        try:
            await _reply(reader)
            replies = []
            for _ in range(8):  # 0.8 s in all, never 0.3 s quiet
                writer.write(b"NOOP\r\n")
                replies.append(await _reply(reader))
                await asyncio.sleep(0.1)
            quiet = loop.time()
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the listener
            return replies, loop.time() - quiet
        finally:
            writer.close()
            await li.stop()

    replies, took = asyncio.run(run())
    assert all(r.startswith(b"250") for r in replies), replies
    assert 0.15 < took < 2, took
