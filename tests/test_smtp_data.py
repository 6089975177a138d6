"""The listener reads DATA in large reads (hub.transport.smtp._read_data) and must take exactly what
aiosmtpd's line-by-line reader takes: the end marker found wherever the reads split it, dots unstuffed,
what follows the marker left for the next command, the size limit on the bytes as sent. Compared with
stock aiosmtpd over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random

import pytest
from aiosmtpd.smtp import SMTP

from hub.transport.smtp import SmtpListener, _LimitedSMTP, _read_data

pytestmark = pytest.mark.timeout(60)
ADDR = "edi@relay.test"

BODIES = [
    b"",
    b"one line\r\n",
    b".\r\n.\r\n",  # two stuffed lines that are a dot each (sent as ".." lines)
    b"Subject: x\r\n\r\n.leading dot\r\n..two\r\nend\r\n",
    b"bare\nlf and bare\r cr\r\n.\n\r\n",
    b"\r\n\r\n\r\n",
    b"x" * 70_000 + b"\r\n" + b".y" * 10 + b"\r\n",
]


def stuffed(body: bytes) -> bytes:
    """As a client sends it: each line starting with a dot gets one more (RFC 5321 4.5.2), then the marker."""
    lines = body.split(b"\r\n")
    assert lines[-1] == b""
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + b"\r\n" for ln in lines[:-1]) + b".\r\n"


async def _read(chunks: list[bytes], limit: int | None,
                reader_limit: int = 2**16) -> tuple[bytes | None, bytes]:
    r = asyncio.StreamReader(limit=reader_limit)
    for c in chunks:
        r.feed_data(c)
    r.feed_data(b"QUIT\r\n")
    r.feed_eof()
    data = await _read_data(r, limit)
    return data, await r.read()


@pytest.mark.parametrize("body", BODIES[:-1])
def test_every_split_of_the_stream_gives_the_same_mail(body: bytes) -> None:
    wire = stuffed(body)
    for i in range(len(wire) + 1):
        for j in range(i, len(wire) + 1):
            data, rest = asyncio.run(_read([wire[:i], wire[i:j], wire[j:]], None))
            assert (data, rest) == (body, b"QUIT\r\n"), (i, j)


def test_a_mail_over_the_limit_is_read_to_its_end_and_dropped() -> None:
    body = b"".join(b"line %d\r\n" % i for i in range(5000))
    wire = stuffed(body)
    assert asyncio.run(_read([wire], len(body))) == (body, b"QUIT\r\n")  # exactly at the limit
    # one byte over; the reader's buffer limit far below the mail: bounded memory, the rest still found
    assert asyncio.run(_read([wire[k:k + 700] for k in range(0, len(wire), 700)], len(body) - 1, 1024)) \
        == (None, b"QUIT\r\n")
    one_line = b"y" * 300_000 + b"\r\n"
    assert asyncio.run(_read([stuffed(one_line)], 256 * 1024, 256 * 1024)) == (None, b"QUIT\r\n")


class _Keep:
    def __init__(self) -> None:
        self.got: list[bytes] = []

    async def handle_DATA(self, server: SMTP, session: object, envelope: object) -> str:  # noqa: N802
        self.got.append(envelope.original_content)  # type: ignore[attr-defined]
        return "250 OK"


async def _send_raw(port: int, wire: bytes, pieces: int, seed: int) -> list[bytes]:
    """One SMTP session by hand: the DATA part written in `pieces` random pieces with pauses between."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await reader.readline()]
    for cmd in (b"HELO a.test", b"MAIL FROM:<a@a.test>", f"RCPT TO:<{ADDR}>".encode(), b"DATA"):
        writer.write(cmd + b"\r\n")
        replies.append(await reader.readline())
    rnd = random.Random(seed)
    cuts = sorted(rnd.sample(range(1, len(wire)), min(pieces, len(wire) - 1))) if len(wire) > 1 else []
    for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True):
        writer.write(wire[a:b])
        await writer.drain()
        await asyncio.sleep(0.001)
    replies.append(await reader.readline())
    for cmd in (b"HELP", b"HELP DATA"):  # the DATA command aiosmtpd documents is still ours to document
        writer.write(cmd + b"\r\n")
        replies.append(await reader.readline())
    writer.write(b"QUIT\r\n")
    replies.append(await reader.readline())
    writer.close()
    return [r.split(b" ")[0] for r in replies[:-3]] + replies[-3:-1] + [replies[-1].split(b" ")[0]]


def test_the_same_mail_as_stock_aiosmtpd_over_sockets() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        stock = _Keep()
        long_lines = type("LongLines", (SMTP,), {"line_length_limit": 1 << 20})  # as our listener's
        srv = await loop.create_server(lambda: long_lines(stock, hostname="stock", decode_data=False,
                                                          data_size_limit=1 << 20), "127.0.0.1", 0)

        async def nothing(data: bytes, mail_from: str, rcpts: list[str]) -> None:
            return None

        ours = await SmtpListener({ADDR}, nothing, keep=100, store=nothing).start()
        try:
            for n, body in enumerate(BODIES):
                wire = stuffed(body)
                for pieces in (1, 7, 40):
                    a = await _send_raw(srv.sockets[0].getsockname()[1], wire, pieces, n * 100 + pieces)
                    b = await _send_raw(ours.port, wire, pieces, n * 100 + pieces)
                    assert a == b, (a, b)
                    assert [r.split(b" ")[0] for r in a] == [b"220", b"250", b"250", b"250", b"354", b"250",
                                                             b"250", b"250", b"221"], a
                    assert ours.received[-1] == stock.got[-1] == body
        finally:
            await ours.stop()
            srv.close()
            await srv.wait_closed()

    asyncio.run(run())


class _NoHandler:
    pass


ADDRESSES = ["<a@b.test>", "<a@b.test> SIZE=100 BODY=8BITMIME", " <edi@relay.test>", "<A.B+c@X-y.Test>",
             "<a@b.test>\t", "<a@b.test> (comment) SIZE=1", "<a@b.test>(c)", "<>", "a@b.test",
             '<"q x"@b.test>', "<@r.test:a@b.test>", "<a@[127.0.0.1]>", "<a..b@c>", "<a@b.>", "<a@b>x",
             "<a b@c>", "<æ@b.test>", "< a@b.test >", "<a(c)@b>", "", "<" + "x" * 70 + "@b.test>"]


def _read_address(server: SMTP, arg: str) -> object:
    try:
        return server._getaddr(arg)
    except Exception as e:  # noqa: BLE001 - aiosmtpd's parser fails on some input; ours must fail alike
        return type(e).__name__


def test_mail_and_rcpt_addresses_read_as_aiosmtpd_reads_them() -> None:
    stock, ours = SMTP(_NoHandler()), _LimitedSMTP(_NoHandler())
    rnd = random.Random(5)
    fuzz = ["<" + "".join(rnd.choice("ab.@<> ()\t\"-+[]:") for _ in range(rnd.randint(1, 12))) + ">"
            + rnd.choice(["", " SIZE=5", "x", " (c)"]) for _ in range(2000)]
    for arg in ADDRESSES + fuzz:
        assert _read_address(ours, arg) == _read_address(stock, arg), arg
    stock.local_part_limit = ours.local_part_limit = 64
    for arg in ADDRESSES:
        assert _read_address(ours, arg) == _read_address(stock, arg), arg
