"""The relay's SMTP listener keeps at most `smtp.max_sessions` sessions open: one more connection is
answered 421 and closed, and a freed slot is taken again. Over real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio

import aiosmtplib
import pytest

from hub import config
from hub.config import ConfigError
from hub.transport.smtp import DEFAULT_MAX_SESSIONS, SmtpListener, SmtpSettings

pytestmark = pytest.mark.timeout(30)
ADDR = "edi@relay.test"


async def _ignore(data: bytes, mail_from: str, rcpts: list[str]) -> None:
    return None


async def _greeting(port: int) -> tuple[bytes, bytes]:
    """What a raw client reads: the first line, then what follows until the server closes (or 2 s)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        first = await asyncio.wait_for(reader.readline(), 5)
        try:
            rest = await asyncio.wait_for(reader.read(), 2)
        except TimeoutError:
            rest = b"<still open>"
        return first, rest
    finally:
        writer.close()


def test_connections_beyond_the_limit_get_421_and_are_closed() -> None:
    async def run() -> None:
        li = await SmtpListener({ADDR}, _ignore, max_sessions=2).start()
        clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=li.port, start_tls=False) for _ in range(2)]
        try:
            for c in clients:
                await c.connect()
                await c.ehlo()
            assert li.active == 2
            first, rest = await _greeting(li.port)
            assert first.startswith(b"421 ") and b"too many connections" in first
            assert rest == b""  # closed by the server, nothing more said
            assert li.refused == 1 and li.active == 2
            # aiosmtplib's own view of a refused connection: a 421 on connect
            with pytest.raises(aiosmtplib.SMTPConnectError) as exc:
                extra = aiosmtplib.SMTP(hostname="127.0.0.1", port=li.port, start_tls=False)
                await extra.connect()
            assert "421" in str(exc.value)
            # the sessions held are unaffected
            assert (await clients[0].noop()).code == 250 and li.refused == 2
            await clients[1].quit()
            for _ in range(100):  # the server sees the QUIT's close a moment later
                if li.active < 2:
                    break
                await asyncio.sleep(0.02)
            assert li.active == 1
            first, rest = await _greeting(li.port)  # a slot is free again
            assert first.startswith(b"220 ") and rest == b"<still open>"
        finally:
            for c in clients:
                if c.is_connected:
                    c.close()
            await li.stop()

    asyncio.run(run())


def test_max_sessions_is_a_setting_with_a_default() -> None:
    assert SmtpSettings().max_sessions == DEFAULT_MAX_SESSIONS == 100
    assert SmtpSettings.from_dict({"max_sessions": 7}).max_sessions == 7
    with pytest.raises(ValueError, match="max_sessions"):
        SmtpSettings.from_dict({"max_sessions": 0})
    assert SmtpSettings.from_section(config.validate({"smtp": {"max_sessions": 3}}).smtp).max_sessions == 3
    with pytest.raises(ConfigError, match="max_sessions"):
        config.validate({"smtp": {"max_sessions": -1}})
