"""Transports on loopback: two hub MSHs over real SMTP (aiosmtpd + aiosmtplib), independent SMTP clients
(smtplib, swaks), SMTP refusals, STARTTLS, and HTTP POST with a synchronous acknowledgment."""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hub.ebxml.corpus import World, build_message, world
from hub.ebxml.envelope import parse_envelope
from hub.ebxml.mime import parse_package
from hub.ebxml.msh import Delivery, Msh, Peers
from hub.ebxml.signals import parse_soap_fault
from hub.transport import Gateway
from hub.transport.http import post
from hub.transport.http_server import HttpListener
from hub.transport.loops import new_event_loop
from hub.transport.smtp import SmtpListener, SmtpSender, wrap_mail

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def w() -> World:
    return world(datetime.now(UTC))


async def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Pair:
    """gp and lab, each a Msh behind its own SMTP listener; each one's relay host is the other's listener."""

    def __init__(self, w: World, *, tls: ssl.SSLContext | None = None,
                 client_tls: ssl.SSLContext | None = None) -> None:
        self.delivered: list[Delivery] = []
        self.gp = Gateway(Msh([w.gp], cpas=w.repository(), peers=Peers({w.lab.her_id: w.peer_of("lab")})))
        self.lab = Gateway(Msh([w.lab], cpas=w.repository(), peers=Peers({w.gp.her_id: w.peer_of("gp")}),
                               handoff=self.delivered.append))
        self.gp_in = SmtpListener({"gp@edi.test"}, self.gp.on_mail, tls_context=tls, keep=10)
        self.lab_in = SmtpListener({"lab@edi.test"}, self.lab.on_mail, max_bytes=256 * 1024, tls_context=tls,
                                   keep=10)
        self.client_tls = client_tls

    async def __aenter__(self) -> Pair:
        await self.gp_in.start()
        await self.lab_in.start()
        self.gp.smtp = SmtpSender("127.0.0.1", self.lab_in.port, "gp@edi.test", tls_context=self.client_tls)
        self.lab.smtp = SmtpSender("127.0.0.1", self.gp_in.port, "lab@edi.test", tls_context=self.client_tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.lab_in.stop()
        await self.gp_in.stop()


def test_two_hubs_exchange_over_smtp_with_acknowledgment(w: World):
    async def run() -> None:
        async with Pair(w) as p:
            out = p.gp.msh.send(from_her=w.gp.her_id, to_her=w.lab.her_id, message_type="DIALOG_NOTAT",
                                payload=b"<MsgHead>over smtp</MsgHead>", now=datetime.now(UTC))
            assert out.endpoints == ["mailto:lab@edi.test"]
            await p.gp.send(out)
            sent = p.gp.msh.sent[out.message_id]
            await until(lambda: sent.acked_at is not None)
            cid = out.references[1].uri[4:]
            assert [d.payloads for d in p.delivered] == [{cid: b"<MsgHead>over smtp</MsgHead>"}]
            # what travelled: an encrypted payload part (no plain text), a signed envelope
            mail = p.lab_in.received[0]
            assert b"over smtp" not in mail and b"application/pkcs7-mime" in mail
            ack_mail = p.gp_in.received[0]
            assert b"Subject: ebXML acknowledgment" in ack_mail
            ack = parse_envelope(parse_package(ack_mail).soap)
            assert ack.header.ref_to_message_id == out.message_id and ack.signed
            # the peer resends (lost ack): the same ack comes back byte for byte, nothing delivered again
            await p.gp.send(out)
            await until(lambda: len(p.gp_in.received) == 2)
            assert parse_package(p.gp_in.received[1]).soap == parse_package(ack_mail).soap
            assert len(p.delivered) == 1 and p.lab.outcomes[-1].status == "duplicate"

    asyncio.run(run())


def test_independent_smtp_clients_are_processed(w: World, tmp_path: Path):
    async def run() -> None:
        async with Pair(w) as p:
            entity = build_message(w.gp, w.lab.her_id, w.lab_enc, datetime.now(UTC))
            mail = wrap_mail(entity, mail_from="gp@edi.test", rcpt_to="lab@edi.test")

            def with_smtplib() -> None:
                with smtplib.SMTP("127.0.0.1", p.lab_in.port, timeout=10) as s:
                    s.sendmail("gp@edi.test", ["lab@edi.test"], mail)

            await asyncio.to_thread(with_smtplib)
            await until(lambda: len(p.delivered) == 1 and len(p.gp_in.received) == 1)
            assert p.lab.outcomes[0].status == "delivered"
            if shutil.which("swaks"):
                second = build_message(w.gp, w.lab.her_id, w.lab_enc, datetime.now(UTC), payload=b"<swaks/>")
                m = wrap_mail(second, mail_from="gp@edi.test", rcpt_to="lab@edi.test")
                (tmp_path / "m.eml").write_bytes(m)
                r = await asyncio.to_thread(subprocess.run, [
                    "swaks", "--server", "127.0.0.1", "--port", str(p.lab_in.port), "--from", "gp@edi.test",
                    "--to", "lab@edi.test", "--data", "@" + str(tmp_path / "m.eml"), "--silent", "2"],
                    capture_output=True, text=True, timeout=30)
                assert r.returncode == 0, r.stdout + r.stderr
                await until(lambda: len(p.delivered) == 2)
                assert list(p.delivered[1].payloads.values()) == [b"<swaks/>"]

    asyncio.run(run())


def test_listener_refuses_with_proper_smtp_replies(w: World):
    async def run() -> None:
        async with Pair(w) as p:
            port = p.lab_in.port

            def attempts() -> list[tuple[int, str]]:
                out = []
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:
                    s.ehlo()
                    s.mail("gp@edi.test")
                    code, msg = s.rcpt("someone-else@edi.test")
                    out.append((code, msg.decode()))
                    s.rset()
                    try:  # not an ebXML mail
                        s.sendmail("gp@edi.test", ["lab@edi.test"], b"Subject: hello\r\n\r\njust text\r\n")
                    except smtplib.SMTPDataError as e:
                        out.append((e.smtp_code, e.smtp_error.decode()))
                    try:  # larger than the listener's limit (256 KiB)
                        big = wrap_mail(b"Content-Type: text/xml\r\n\r\n" + b"x" * 300_000,
                                        mail_from="gp@edi.test", rcpt_to="lab@edi.test")
                        s.sendmail("gp@edi.test", ["lab@edi.test"], big)
                    except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as e:
                        out.append((e.smtp_code, e.smtp_error.decode()))
                return out

            rcpt, not_ebxml, too_big = await asyncio.to_thread(attempts)
            assert rcpt[0] == 550 and "no ebXML mailbox" in rcpt[1]
            assert not_ebxml[0] == 554 and "not an ebXML message" in not_ebxml[1]
            assert too_big[0] == 552
            assert p.lab.outcomes == [] and list(p.lab_in.received) == []

    asyncio.run(run())


def _tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(UTC)
    import ipaddress
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           False)
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    client = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    return server, client


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_smtp_uses_starttls_when_offered(w: World, tmp_path: Path, event_loop: str):
    """aiosmtpd's STARTTLS (asyncio.sslproto under its own transport) and aiosmtplib's, on either loop
    the relay may run its edge on (hub.toml event_loop)."""
    server_ctx, client_ctx = _tls_contexts(tmp_path)

    async def run() -> None:
        async with Pair(w, tls=server_ctx, client_tls=client_ctx) as p:
            out = p.gp.msh.send(from_her=w.gp.her_id, to_her=w.lab.her_id, message_type="DIALOG_NOTAT",
                                payload=b"<tls/>", now=datetime.now(UTC))
            await p.gp.send(out)
            await until(lambda: p.gp.msh.sent[out.message_id].acked_at is not None)
            assert list(p.lab_in.tls_used) == [True] and list(p.gp_in.tls_used) == [True]
            assert (type(asyncio.get_running_loop()).__module__ == "uvloop") == (event_loop == "uvloop")

    with asyncio.Runner(loop_factory=lambda: new_event_loop(event_loop)) as runner:
        runner.run(run())


def test_http_post_gets_the_sync_acknowledgment(w: World):
    async def run() -> None:
        delivered: list[Delivery] = []
        lab = Gateway(Msh([w.lab], cpas=w.repository(), peers=Peers({w.gp.her_id: w.peer_of("gp")}),
                          handoff=delivered.append))
        listener = await HttpListener(lab.on_http).start()
        try:
            gp = Gateway(Msh([w.gp], peers=Peers({w.lab.her_id: w.peer_of("lab", listener.url)})))
            out = gp.msh.send(from_her=w.gp.her_id, to_her=w.lab.her_id, message_type="DIALOG_NOTAT",
                              payload=b"<http/>", now=datetime.now(UTC), sync_reply=True, soap_base64=False)
            assert out.endpoints == [listener.url]
            reply = await gp.send(out)
            assert reply is not None and reply.status == 200 and reply.entity
            ack = parse_envelope(parse_package(reply.entity).soap)
            assert ack.acknowledgment is not None and ack.header.ref_to_message_id == out.message_id
            assert gp.msh.sent[out.message_id].acked_at is not None  # the sync reply was processed
            assert [list(d.payloads.values()) for d in delivered] == [[b"<http/>"]]
            # a package that is not MIME: a SOAP Fault with status 500
            bad = await post(listener.url, b"Content-Type: application/octet-stream\r\n\r\nxx")
            assert bad.status == 500 and bad.entity
            assert [e.code for e in parse_soap_fault(parse_package(bad.entity).soap)] == ["MimeProblem"]
        finally:
            await listener.stop()

    asyncio.run(run())


def test_http_listener_refuses_a_content_length_that_is_not_ascii_digits():
    """'²' (Latin-1 0xB2) passes str.isdigit() but not int(): the peer gets 400, the listener lives on."""

    async def run() -> None:
        async def never(entity: bytes) -> object:
            raise AssertionError("no request may reach the handler")

        listener = await HttpListener(never).start()  # type: ignore[arg-type]
        try:
            for length in (b"\xb2", b"1\xb2", b"-1", b"abc"):
                reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
                writer.write(b"POST /ebxml HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\n")
                await writer.drain()
                status = await asyncio.wait_for(reader.readline(), 10)
                writer.close()
                assert status.split()[1:2] == [b"400"], (length, status)
        finally:
            await listener.stop()

    asyncio.run(run())
