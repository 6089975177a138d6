"""The relay's SMTP edge over real sockets on loopback (issue 14): long lines, memory, STARTTLS with the
test PKI, malformed ebXML answered and recorded, identities from PKCS#12 files, file modes.

Relay B (HER 81000) listens; "the sender's mail server" is a plain aiosmtpd listener standing in for
where relay B's answers go (relay B's SMTP relay host), so what B mails back can be read.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import stat
import subprocess
import sys
import tracemalloc
import uuid
from pathlib import Path

import aiosmtplib
import pytest
from relay_helpers import drop, wait_for
from test_relay_network import (
    A_ADDR,
    B_ADDR,
    Pair,
    config,
    dialog,
    free_port,
    one,
    register_b,
    retrying_while_b_is_down,
)

from hub.ebxml.envelope import parse_envelope
from hub.ebxml.mime import build_package, parse_package
from hub.relay.lifecycle import State
from hub.relay.network import _after_mail
from hub.relay.server import Relay
from hub.security.pki import export_pkcs12, load_identity
from hub.security.testing import shared_test_pki
from hub.security.tls import issue_tls_certificate
from hub.transport.smtp import SmtpListener, SmtpSender

pytestmark = pytest.mark.timeout(90)


class Mta:
    """The sender's mail server: keeps what relay B mails back (on its own loop thread)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        import threading

        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def noop(data: bytes, mail_from: str, rcpts: list[str]) -> None:
            return None

        self.listener = SmtpListener({A_ADDR}, noop, keep=50)
        asyncio.run_coroutine_threadsafe(self.listener.start(), self.loop).result(10)

    @property
    def port(self) -> int:
        return self.listener.port

    def mails(self) -> list[bytes]:
        return list(self.listener.received)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def relay_b(tmp: Path, mta: Mta, **extra: object) -> Relay:
    pki = shared_test_pki().dir
    cfg = config(tmp / "b", 81000, "lab", register_b(pki), free_port(), mta.port, B_ADDR)
    if extra:
        from hub.relay.server import RelayConfig

        base = {
            "store": "sqlite:///hub.sqlite", "her_id": 81000, "node": "node-81000",
            "register": ["register.toml"],
            "smtp": {"listen": f"127.0.0.1:{cfg.smtp_listen[1]}",  # type: ignore[index]
                     "relay": f"127.0.0.1:{mta.port}", "addresses": [B_ADDR]},
            "folders": {"root": "spool", "poll": 0.05}, "worker": {"threads": 2, "poll_s": 0.05},
        }
        for k, v in extra.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                base[k] = {**base[k], **v}  # type: ignore[dict-item]
            else:
                base[k] = v
        if "pki" not in base and "identities" not in base:
            base["pki"], base["identity"] = str(pki), "lab"
        cfg = RelayConfig.from_dict(base, tmp / "b")
    r = Relay(cfg)
    r.start()
    return r


@pytest.fixture
def mta():
    m = Mta()
    yield m
    m.close()


def send(port: int, data: bytes, *, mail_from: str = A_ADDR, tls: ssl.SSLContext | None = None,
         start_tls: bool | None = False) -> None:
    async def run() -> None:
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=start_tls, tls_context=tls,
                                   timeout=20) as c:
            await c.sendmail(mail_from, [B_ADDR], data)

    asyncio.run(run())


def stored_in(r: Relay) -> list:
    return [m for m in r.store.list_messages() if m.direction == "in"]


# --- long lines ------------------------------------------------------------------------------------

def test_a_nav_mail_with_a_3858_character_line_is_accepted(tmp_path: Path, mta: Mta, reference: Path):
    mail = (reference / "ebxml" / "navikt-smtp_testmail_ebxml_no_cpaid.eml").read_bytes()
    assert max(len(x) for x in mail.splitlines()) == 3858  # the real line, not one we made
    r = relay_b(tmp_path, mta)
    try:
        send(r.network.smtp_port, mail)  # type: ignore[union-attr, arg-type]  # 250, not "500 Line too long"
        wait_for(lambda: stored_in(r), 10, "the NAV mail stored")
        got = r.store.blob(stored_in(r)[0].id) or b""
        # the bytes as received (SMTP moves lines as CRLF)
        assert got.replace(b"\r\n", b"\n").rstrip(b"\n") == mail.replace(b"\r\n", b"\n").rstrip(b"\n")
    finally:
        r.stop()


# --- memory: nothing of a mail is kept once it is stored ---------------------------------------------

def test_mails_are_not_kept_after_they_are_stored(tmp_path: Path):
    """Relay A sends 30 messages to relay B; afterwards neither relay holds a mail, an envelope, an
    Acknowledgment or a sent record in memory, and B's Python heap did not grow with the mails."""
    p = Pair(tmp_path)
    for r in (p.a, p.b):  # the test Pair notes every mail; here nothing may
        assert r.network is not None and r.network.listener is not None
        r.network.listener.on_message = _after_mail
    p.a.start()
    p.b.start()
    try:
        assert p.a.network is not None and p.b.network is not None
        tracemalloc.start()
        ids = []
        for i in range(30):
            mid = str(uuid.uuid4())
            ids.append(mid)
            # a 100 kB comment makes each mail ~140 kB (encrypted, base64): big enough to see if kept
            doc = dialog(msg_id=mid).replace(b"?>", b"?><!--" + b"x" * 100_000 + b"-->", 1)
            drop(p.spool(p.a, 82001), f"n{i}.xml", doc)
            if i == 4:
                wait_for(one(p.a, ids[0], State.AWAITING_APPREC, "out"), 20, "the first ones through")
                warm = tracemalloc.take_snapshot()
        for mid in ids:
            wait_for(one(p.a, mid, State.AWAITING_APPREC, "out"), 30, f"{mid} acknowledged")
        assert p.b.network.listener.accepted >= 30
        # the snapshot once nothing is in flight: a mail still between B's steps is not a kept one
        wait_for(lambda: p.b.network.unwrapper.held == 0, 10, "B's hand-over between steps empty")
        assert p.a.network.unwrapper.held == 0
        end = tracemalloc.take_snapshot()
        tracemalloc.stop()
        growth = sum(s.size_diff for s in end.compare_to(warm, "filename"))
        # 25 mails of ~140 kB went through after the warm-up: kept, they alone would be 3.5 MB (the rest
        # is warm caches: compiled regexes, SQL statements, asyncio handles in flight)
        assert growth < 1_500_000, f"heap grew {growth} bytes over 25 mails"
        assert p.b.network.listener is not None and len(p.b.network.listener.received) == 0
    finally:
        tracemalloc.stop()
        p.stop()


def test_rejected_content_leaves_nothing_behind(tmp_path: Path):
    """A message refused on its content (the KITH document is invalid) gets its MessageError/AppRec and
    leaves nothing in the hand-over between steps (Network._acks grew with every one of these)."""
    p = Pair(tmp_path)
    p.a.start()
    p.b.start()
    try:
        assert p.a.network is not None and p.b.network is not None
        now = __import__("datetime").datetime.now(__import__("datetime").UTC)
        for _ in range(5):
            out = p.a.network.msh.send(from_her="82002", to_her="81002", payload=b"<not-kith/>", now=now,
                                       message_type="DIALOG_NOTAT")
            asyncio.run(SmtpSender("127.0.0.1", p.pb, A_ADDR).send(out.data, B_ADDR))
        wait_for(lambda: len([m for m in stored_in(p.b) if m.state is State.REJECTED]) == 5, 20,
                 "five refused")
        wait_for(lambda: p.b.network.unwrapper.held == 0, 10, "nothing held")
    finally:
        p.stop()


# --- STARTTLS with the test PKI --------------------------------------------------------------------

def _tls(tmp_path: Path) -> tuple[Path, Path, ssl.SSLContext]:
    pki = shared_test_pki()
    cert, key = issue_tls_certificate(pki.dir, tmp_path / "tls", "relay-b", ["127.0.0.1", "localhost"])
    client = ssl.create_default_context(cafile=str(pki.layout.anchors))
    return cert, key, client


@pytest.mark.parametrize("event_loop", ["uvloop", "asyncio"])
def test_starttls_required_refuses_clear_text_and_takes_tls(tmp_path: Path, mta: Mta, event_loop: str):
    cert, key, client = _tls(tmp_path)
    r = relay_b(tmp_path, mta, tls={"cert": str(cert), "key": str(key)}, smtp={"starttls": "required"},
                event_loop=event_loop)
    try:
        # the listener runs on the relay's network loop, of the configured kind
        loop = r.network.outbound.loop  # type: ignore[union-attr]
        assert (type(loop).__module__ == "uvloop") == (event_loop == "uvloop")
        port = r.network.smtp_port  # type: ignore[union-attr]
        entity = build_package(b"<not-xml", [])
        with pytest.raises(aiosmtplib.SMTPResponseException) as no:
            send(port, entity, start_tls=False)  # type: ignore[arg-type]
        assert no.value.code == 530  # "Must issue a STARTTLS command first"
        assert stored_in(r) == []
        send(port, entity, tls=client, start_tls=True)  # type: ignore[arg-type]  # verified against the test root
        wait_for(lambda: stored_in(r), 10, "stored after STARTTLS")
    finally:
        r.stop()


def test_sender_with_required_starttls_does_not_send_in_clear(mta: Mta):
    sender = SmtpSender("127.0.0.1", mta.port, B_ADDR, require_tls=True)
    with pytest.raises(aiosmtplib.SMTPException):
        asyncio.run(sender.send(b"Content-Type: text/xml\r\n\r\n<x/>", A_ADDR))
    assert mta.mails() == []


# --- malformed ebXML: a MessageError to the sender and a rejected record ------------------------------

def _soap(body: bytes) -> bytes:
    return build_package(body, [], soap_base64=False)


MALFORMED = {
    "not-xml": (_soap(b"this is not XML at all"), "not acceptable XML"),
    "dtd-xxe": (_soap(b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                      b'<SOAP:Envelope xmlns:SOAP="http://schemas.xmlsoap.org/soap/envelope/">&x;</SOAP:Envelope>'),
                "DTD"),
    # a mail cut off in the middle of its SOAP part (no closing boundary)
    "truncated-mime": (_soap(b'<SOAP:Envelope xmlns:SOAP="http://schemas.xmlsoap.org/soap/envelope/">'
                             b'<SOAP:Header><eb:MessageHeader xmlns:eb="http://www.oasis-open.org/committees/'
                             b'ebxml-msg/schema/msg-header-2_0.xsd"><eb:From><eb:PartyId>81000</eb:PartyId>'
                             b'</eb:From></eb:MessageHeader></SOAP:Header></SOAP:Envelope>')[:-120], "XML"),
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_malformed_ebxml_over_smtp_is_answered_and_recorded(tmp_path: Path, mta: Mta, kind: str):
    data, why = MALFORMED[kind]
    r = relay_b(tmp_path, mta)
    try:
        send(r.network.smtp_port, data)  # type: ignore[union-attr, arg-type]
        wait_for(lambda: mta.mails(), 10, "a MessageError mailed to the sender")
        env = parse_envelope(parse_package(mta.mails()[0]).soap)
        assert env.header.action == "MessageError" and env.error_list is not None
        assert env.signed  # signed by relay B like any signal
        assert why.lower() in " ".join(e.description or "" for e in env.error_list.errors).lower()
        # the record an operator finds, with its reason and the original bytes
        out = subprocess.run([sys.executable, "-m", "hub", "queue", "list", "--state", "rejected", "--json",
                              "--store", r.cfg.store], capture_output=True, text=True, check=True)
        rows = json.loads(out.stdout)["messages"]
        assert len(rows) == 1 and why.lower() in json.dumps(rows).lower()
        m = r.store.require(rows[0]["id"])
        assert m.state is State.REJECTED and m.last_error is not None
        as_sent = data.replace(b"\r\n", b"\n").rstrip(b"\n")  # SMTP ends the mail with a line break
        assert (r.store.blob(m.id) or b"").replace(b"\r\n", b"\n").rstrip(b"\n") == as_sent
    finally:
        r.stop()


# --- identities from PKCS#12 files named in hub.toml -------------------------------------------------

def test_relay_with_identities_from_pkcs12_files_exchanges_with_a_peer(tmp_path: Path):
    """Relay B's keys come from PKCS#12 files (as a CA issues them) and its trust from an anchors file:
    no test-PKI layout. Relay A's message to it is verified, decrypted, delivered and acknowledged."""
    pki = shared_test_pki().dir
    keys = tmp_path / "keys"
    export_pkcs12(pki, "lab", "sign", keys / "sign.p12", b"secret")
    export_pkcs12(pki, "lab", "enc", keys / "enc.p12", b"secret")
    (keys / "pass").write_text("secret\n")
    p = Pair(tmp_path)
    cfg = p.b.cfg
    from hub.relay.identities import Security

    sec = Security.from_dict({
        "identities": [{"her_id": 81000, "sign": str(keys / "sign.p12"), "enc": str(keys / "enc.p12"),
                        "password_file": str(keys / "pass")}],
        "trust": {"anchors": [str(pki / "trust" / "anchors.pem")],
                  "intermediates": [str(pki / "ca" / "issuing.pem")]},
    }, tmp_path)
    cfg.pki, cfg.security = None, sec
    p.b = Relay(cfg)
    from test_relay_network import record_mails

    record_mails(p.b)
    p.a.start()
    p.b.start()
    try:
        assert p.b.network is not None
        lab = load_identity(pki, "lab")
        assert p.b.network.msh.parties["81000"].sign_cert == lab.sign_cert
        mid = str(uuid.uuid4())
        drop(p.spool(p.a, 82001), "n.xml", dialog(msg_id=mid))
        wait_for(one(p.a, mid, State.AWAITING_APPREC, "out"), 30, "delivered to the PKCS#12 relay and acked")
    finally:
        p.stop()


# --- file modes ----------------------------------------------------------------------------------

def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_folders_the_hub_makes_are_0700_and_its_files_0600(tmp_path: Path):
    old = os.umask(0o022)  # a usual umask: what the hub makes must not depend on it
    try:
        from hub.security.pki import init_pki

        pki = init_pki(tmp_path / "pki", key_size=1024).dir
        for p in [pki, *pki.rglob("*")]:
            assert _mode(p) == (0o700 if p.is_dir() else 0o600), p
        p2 = Pair(tmp_path)
        p2.a.start()
        try:
            spool = p2.spool(p2.a, 82001)
            for d in (p2.a.cfg.spool_root, spool, *(spool / x for x in ("out", "in", "archive", "error"))):
                assert _mode(d) == 0o700, d
            tmp = spool / "out" / ".n.xml"  # dot files are not taken
            tmp.write_bytes(dialog())
            os.chmod(tmp, 0o644)  # as a local system leaves it
            os.replace(tmp, spool / "out" / "n.xml")
            wait_for(lambda: list((spool / "archive").iterdir()), 10, "archived")
            archived = next((spool / "archive").iterdir())
            assert _mode(archived) == 0o600
            db = Path(p2.a.cfg.store.removeprefix("sqlite:///"))
            assert _mode(db) == 0o600
        finally:
            p2.stop()
    finally:
        os.umask(old)


# --- a stalled session is closed -------------------------------------------------------------------

def test_a_stalled_smtp_session_is_closed_by_the_timeout(tmp_path: Path, mta: Mta):
    r = relay_b(tmp_path, mta, smtp={"timeout_s": 1})
    try:
        import socket as so
        import time

        with so.create_connection(("127.0.0.1", r.network.smtp_port), timeout=10) as s:  # type: ignore[union-attr, arg-type]
            f = s.makefile("rb")
            assert f.readline().startswith(b"220")
            s.sendall(b"EHLO stalled.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<" + B_ADDR.encode()
                      + b">\r\nDATA\r\nContent-Type: text/xml\r\n\r\n<x")  # and then nothing more
            start = time.monotonic()
            rest = f.read()  # until the server closes the connection
            took = time.monotonic() - start
        assert b"354" in rest and took < 8, (rest[-200:], took)  # closed, mid-DATA, after ~1 s
        assert stored_in(r) == []
    finally:
        r.stop()


# --- what the Msh sent is in the store: an Acknowledgment is checked after a restart -----------------

def test_after_a_restart_an_acknowledgment_with_other_digests_is_refused(tmp_path: Path):
    """Relay A sends while B is down, then restarts (nothing of what it sent is in memory). An
    Acknowledgment signed with B's key but naming other reference digests is refused; B's real one,
    after A's retry, is taken: the digests come from the package A stored."""
    from datetime import UTC, datetime

    from hub.ebxml.envelope import RefDigest
    from hub.ebxml.msh import LocalParty, Msh
    from hub.ebxml.signals import build_acknowledgment
    from hub.relay.ebms_delivery import OUT

    p = Pair(tmp_path)
    p.a.start()
    try:
        mid, m = retrying_while_b_is_down(p)
        out = p.a.store.blob(m.id, OUT) or b""
        p.a.stop()
        p.a = Relay(p.a.cfg)  # a restart: a new process would know only the store
        p.a.start()
        assert p.a.network is not None
        lab = load_identity(shared_test_pki().dir, "lab")
        b_msh = Msh([LocalParty("81002", lab.sign_cert, lab.sign_key, lab.decryption_keys)])
        env = parse_envelope(parse_package(out).soap)
        root = build_acknowledgment(env, datetime.now(UTC), [RefDigest("", "sha256", "AAAA")])
        signed, _ = b_msh._signed(b_msh.parties["81002"], root, {})
        outcome = p.a.network.delivery.on_signal(build_package(signed), "smtp")
        assert outcome.errors and "reference digests" in str(outcome.errors[0])
        assert p.a.store.require(m.id).state is State.RETRYING
        p.b.start()  # B's genuine Acknowledgment of A's retry is taken
        wait_for(one(p.a, mid, State.AWAITING_APPREC), 30, "A: acknowledged by B after the restart")
    finally:
        p.stop()
