"""The HTTP edge over real sockets on loopback: limits on the bytes actually read (chunked, negative and
malformed lengths), stalled connections closed by the timeouts, the connection limit, TLS with client
certificates mapped to register parties, ebXML answers a peer can parse (base64 SOAP parts keep their
label), malformed ebXML answered with a SOAP Fault and kept as a rejected message.

Clients here are raw sockets, httpx and the hub's own Msh: what a peer really sends, not our server's
view of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from relay_helpers import GP_TOKEN, files, make_config, wait_for

from hub.ebxml.envelope import parse_envelope
from hub.ebxml.mime import parse_package
from hub.ebxml.msh import LocalParty, Msh, Peer, Peers
from hub.ebxml.signals import parse_soap_fault
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.relay import register as regmod
from hub.relay.lifecycle import State
from hub.relay.server import ConfigError, Relay, RelayConfig
from hub.security.pki import load_identity
from hub.security.testing import shared_test_pki
from hub.security.tls import issue_tls_certificate
from hub.transport.http import HttpClient, HttpReply, wire
from hub.transport.http_server import HttpRequest, HttpServer, HttpSettings

pytestmark = pytest.mark.timeout(90)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def read_status(sock: socket.socket, timeout: float = 10.0) -> tuple[int | None, bytes]:
    """The status code of what the server answered (None: closed without an answer), and the bytes."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    if not data.startswith(b"HTTP/1."):
        return None, data
    return int(data.split()[1]), data


class Echo:
    """A bare HttpServer whose route tells how many body bytes it got."""

    def __init__(self, **settings: Any) -> None:  # noqa: ANN401
        self.bodies: list[int] = []
        self.server = HttpServer(HttpSettings(listen=("127.0.0.1", 0), **settings))

        def take(req: HttpRequest) -> HttpReply:
            self.bodies.append(len(req.body))
            return HttpReply.json(200, {"got": len(req.body)})

        self.server.add_route("POST", "/in", take)
        self.server.start()

    def connect(self) -> socket.socket:
        return socket.create_connection(self.server.address, timeout=10)

    def __enter__(self) -> Echo:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


# --- size limit --------------------------------------------------------------------------------------

def test_negative_and_malformed_lengths_are_400_and_the_declared_oversize_413_unread():
    with Echo(max_body=1000) as e:
        for length in (b"-1", b"abc", b"1\xb2", b"12 34", b"+5"):
            with e.connect() as s:
                s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: " + length + b"\r\n\r\nxxxx")
                assert read_status(s)[0] == 400, length
        with e.connect() as s:
            s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 60000000\r\n\r\n")
            status, data = read_status(s)
            assert status == 413 and b"over the limit" in data
        with e.connect() as s:  # the listener lives on, and a body within the limit is taken
            s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello")
            assert read_status(s)[0] == 200
        assert e.bodies == [5]


def test_chunked_body_over_the_limit_is_413_and_memory_does_not_grow():
    """A 40 MB chunked upload to a 1 MB limit: refused after about 1 MB read, the server's memory flat."""
    with Echo(max_body=1024 * 1024) as e:
        chunk = b"x" * 65536
        frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
        before = rss_bytes()
        with e.connect() as s:
            s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            sent = 0
            try:
                for _ in range(40 * 16):  # 40 MB, never all in memory on this side either
                    s.sendall(frame)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server stopped reading: what we want
            status, data = read_status(s)
        grown = rss_bytes() - before
        assert status == 413, data[:200]
        assert e.bodies == []  # never handed on
        assert grown < 25 * 1024 * 1024, f"RSS grew by {grown / 1e6:.1f} MB"
        # chunked within the limit is read in full
        with e.connect() as s:
            s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                      b"Connection: close\r\n\r\n" + frame * 3 + b"0\r\n\r\n")
            assert read_status(s)[0] == 200
        assert e.bodies == [3 * 65536]


def test_relay_submit_refuses_a_chunked_body_over_max_body_and_stores_nothing(tmp_path: Path):
    cfg = make_config(tmp_path / "hub", http=True)
    cfg.http = replace(cfg.http, max_body=200_000)  # type: ignore[arg-type]
    r = Relay(cfg)
    r.start()
    try:
        def body():  # noqa: ANN202 - a generator makes httpx send chunked
            for _ in range(50):
                yield b"<x>" + b"y" * 9997
        with httpx.Client() as c:
            resp = c.post(r.http.url("/submit"), content=body(),  # type: ignore[union-attr]
                          headers={"Authorization": f"Bearer {GP_TOKEN}"})
        assert resp.status_code == 413 and "200000" in resp.json()["error"]
        # the measured defect: Content-Length -1 with a body behind it was read to the end and stored
        host, port = r.http.address  # type: ignore[union-attr]
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"POST /submit HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + GP_TOKEN.encode()
                      + b"\r\nContent-Length: -1\r\n\r\n" + b"<x>" * 100_000)
            assert read_status(s)[0] == 400
        assert r.store.list_messages() == []
    finally:
        r.stop()


# --- timeouts and the connection limit --------------------------------------------------------------

def test_fifty_stalled_uploads_are_closed_by_the_timeouts_and_the_server_still_answers():
    """50 uploads that declare 1000 bytes and send 4, and 10 heads never finished: all closed within
    about the configured timeouts; a normal request is served meanwhile and after."""
    with Echo(header_timeout=1.0, body_timeout=1.0) as e:
        socks = []
        for _ in range(50):
            s = e.connect()
            s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabcd")
            socks.append(s)
        heads = []
        for _ in range(10):
            s = e.connect()
            s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Le")
            heads.append(s)
        t0 = time.monotonic()
        with e.connect() as s:  # not starved by the stalled ones
            s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            assert read_status(s)[0] == 200
        statuses = [read_status(s, 10)[0] for s in socks]
        assert statuses == [408] * 50
        for s in heads:
            s.settimeout(10)
            assert s.recv(100) == b""  # closed, nothing to answer to half a head
        assert time.monotonic() - t0 < 8
        for s in socks + heads:
            s.close()
        assert e.bodies == [2]


def test_connection_limit_answers_503_to_one_over():
    with Echo(max_connections=5, header_timeout=30.0) as e:
        idle = [e.connect() for _ in range(5)]
        time.sleep(0.2)
        with e.connect() as s:
            status, data = read_status(s)
            assert status == 503 and b"too many connections" in data
        for s in idle:
            s.close()
        ok = None
        for _ in range(50):  # the server notices the closed ones shortly
            with e.connect() as s:
                s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nConnection: close\r\n\r\nz")
                ok = read_status(s)[0]
            if ok == 200:
                break
            time.sleep(0.05)
        assert ok == 200


def test_unknown_paths_are_404_and_config_errors_name_the_key(tmp_path: Path):
    with Echo() as e:
        with e.connect() as s:
            s.sendall(b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_status(s)[0] == 404
    for table, word in (({"listen": "1:2", "tls": True}, "http: tls = true needs cert and key there, or a "
                                                         r"\[tls\] section"),
                        ({"tls": True, "cert": "c"}, "cert and key go together"),
                        ({"listen": "127.0.0.1:0", "max_body": -1}, "http.max_body: .*greater than 0"),
                        ({"max_bodies": 1}, "http.max_bodies: unknown key; did you mean max_body"),
                        ({"tls": True, "cert": "c", "key": "k", "require_client_cert": True},
                         "require_client_cert needs tls = true and client_ca"),
                        ({"listen": "nowhere"}, "http.listen: .*host:port")):
        with pytest.raises(ConfigError, match=word):
            RelayConfig.from_dict({"her_id": 1, "http": table}, tmp_path)


# --- TLS, client certificates, ebXML answers ---------------------------------------------------------

def now_local() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def dialog(msg_id: str) -> bytes:
    return build("Dialogmelding", "1.0", sender=people.GP_FASTLEGE, receiver=people.HOSP_POLIKLINIKK,
                 msg_type="DIALOG_NOTAT", gen_date=now_local(), msg_id=msg_id)


def party(her: int, name: str, *, parent: int | None = None, local: bool = False, endpoint: str = "",
          certs: str = "") -> str:
    pki = shared_test_pki().dir
    lines = ["[[party]]", f"her_id = {her}", f'name = "{name}"']
    lines += [f"parent = {parent}"] if parent else []
    lines += ["local = true"] if local else []
    lines += [f'endpoint = "{endpoint}"'] if endpoint else []
    if certs:
        lines += [f'sign_cert = "{pki / "parties" / certs / "sign.pem"}"',
                  f'enc_cert = "{pki / "parties" / certs / "enc.pem"}"']
    return "\n".join(lines) + "\n"


class Tls:
    """Server certificates for 127.0.0.1 from the test PKI, and client contexts for its parties."""

    def __init__(self, d: Path) -> None:
        self.pki = shared_test_pki().dir
        self.cert, self.key = issue_tls_certificate(self.pki, d, "relay", ["127.0.0.1", "localhost"])
        self.anchors = self.pki / "trust" / "anchors.pem"
        self.client_ca = [str(self.pki / "trust" / "anchors.pem"), str(self.pki / "ca" / "issuing.pem")]

    def client(self, party: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.anchors))
        if party is not None:
            d = self.pki / "parties" / party
            ctx.load_cert_chain(d / "sign.pem", d / "sign.key.pem")
        return ctx

    def table(self, listen: str = "127.0.0.1:0", **kw: Any) -> dict[str, Any]:  # noqa: ANN401
        return {"listen": listen, "tls": True, "cert": str(self.cert), "key": str(self.key),
                "client_ca": self.client_ca, "anchors": [str(self.anchors)], **kw}


def relay_config(home: Path, her: int, identity: str, register: str, http: dict[str, Any]) -> RelayConfig:
    home.mkdir(parents=True, exist_ok=True)
    (home / "register.toml").write_text(register, encoding="utf-8")
    return RelayConfig.from_dict({
        "store": "sqlite:///hub.sqlite", "her_id": her, "node": f"node-{her}", "register": ["register.toml"],
        "pki": str(shared_test_pki().dir), "identity": identity, "http": http,
        "folders": {"root": "spool", "poll": 0.05},
        "worker": {"threads": 2, "poll_s": 0.05, "network_retries": 3, "network_retry_interval_s": 1,
                   "apprec_limit_s": 3600},
    }, home)


@pytest.fixture
def hospital(tmp_path: Path):
    """Relay B (81000, identity "lab") with tls = true and require_client_cert: the GP office's parties
    (82001 and below) are registered with the test PKI's "hub" certificates; "lab" is its own."""
    tls = Tls(tmp_path / "tls")
    reg = "".join([
        party(81000, "Relay B", local=True),
        party(81001, "Fjordbyen sykehus HF", local=True),
        party(81002, "Medisinsk poliklinikk", parent=81001),
        party(80000, "Relay A", certs="hub"),
        party(82001, "Legekontoret Fjordbyen", certs="hub"),
        party(82002, "Kari Fjeld", parent=82001),
        # a party whose registered certificate has since been revoked (the test PKI's CRL says so)
        f'[[party]]\nher_id = 90003\nname = "Revoked AS"\n'
        f'sign_cert = "{tls.pki / "special" / "revoked.pem"}"\n',
    ])
    r = Relay(relay_config(tmp_path / "b", 81000, "lab", reg, tls.table(require_client_cert=True)))
    r.start()
    yield r, tls
    r.stop()


def gp_msh(relay_url: str) -> Msh:
    """The GP office's own message service (82001, test PKI "hub" keys): a peer of the relay."""
    pki = shared_test_pki().dir
    me, lab = load_identity(pki, "hub"), load_identity(pki, "lab")
    return Msh([LocalParty("82001", me.sign_cert, me.sign_key, me.decryption_keys)],
               peers=Peers({"81002": Peer("81002", lab.sign_cert, lab.enc_cert, relay_url)}))


def post(url: str, entity: bytes, ctx: ssl.SSLContext) -> HttpReply:
    async def run() -> HttpReply:
        async with HttpClient(verify=ctx, timeout=30) as c:
            return await c.post(url, entity)
    return asyncio.run(run())


def test_tls_relay_refuses_a_client_without_a_registered_certificate_and_accepts_one_with_it(hospital):
    relay, tls = hospital
    url = relay.http.url("/ebxml")
    assert url.startswith("https://")
    junk = b"Content-Type: text/xml\r\n\r\n<not-ebxml/>"
    with pytest.raises(aiohttp.ClientError):  # no certificate: the handshake fails
        post(url, junk, tls.client(None))
    refused = post(url, junk, tls.client("lab"))  # chains to the CA, but no party registered it
    assert refused.status == 403 and b"not registered" in (refused.entity or b"")
    revoked = ssl.create_default_context(cafile=str(tls.anchors))  # registered, but revoked since
    revoked.load_cert_chain(tls.pki / "special" / "revoked.pem", tls.pki / "special" / "revoked.key.pem")
    assert post(url, junk, revoked).status == 403
    # plain http to the TLS port is no way round it
    with pytest.raises(httpx.HTTPError):
        httpx.post(url.replace("https", "http"), content=b"x", timeout=5)
    accepted = post(url, junk, tls.client("hub"))  # 82001's registered certificate
    assert accepted.status == 400  # past the TLS edge: the ebXML itself is refused, with a Fault
    # the submit API on the same server: the GP's token is not enough without a registered certificate
    with httpx.Client(verify=tls.client("lab")) as c:
        r = c.post(relay.http.url("/submit"), content=b"<x/>",
                   headers={"Authorization": f"Bearer {GP_TOKEN}"})
    assert r.status_code == 403


def test_sync_reply_and_a_duplicates_recorded_answer_are_parsed_by_the_peer(hospital):
    """The Acknowledgment comes back in the HTTP response as XML: HTTP has no Content-Transfer-Encoding
    (RFC 2616 §19.4.5), so the base64 the signal is stored with is undone on the wire, and no such header
    is sent; the GP's own Msh (a peer) takes it, and takes the duplicate's recorded answer the same way."""
    relay, tls = hospital
    msh = gp_msh(relay.http.url("/ebxml"))
    mid = str(uuid.uuid4())
    out = msh.send(from_her="82001", to_her="81002", payload=dialog(mid), now=datetime.now(UTC),
                   message_type="DIALOG_NOTAT", sync_reply=True)
    ctx = tls.client("hub")
    reply = post(relay.http.url("/ebxml"), out.data, ctx)
    assert reply.status == 200 and reply.entity
    head, body = reply.entity.split(b"\r\n\r\n", 1)
    assert b"content-transfer-encoding" not in head.lower() and body.startswith(b"<?xml")
    got = msh.receive(reply.entity, datetime.now(UTC), transport="http")
    assert got.status == "signal" and got.envelope is not None
    assert got.envelope.acknowledgment is not None and got.envelope.header.ref_to_message_id == out.message_id
    wait_for(lambda: files(relay.cfg.spool_root / "81001" / "in"), what="delivery to the hospital's folder")
    again = post(relay.http.url("/ebxml"), out.data, ctx)
    assert again.status == 200 and again.entity == reply.entity  # byte for byte
    env = parse_envelope(parse_package(again.entity).soap)
    assert env.acknowledgment is not None and env.header.ref_to_message_id == out.message_id
    assert len(relay.store.find_by_kith_msg_id(mid)) == 1


MALFORMED = {
    "text/plain": (b"Content-Type: text/plain\r\n\r\nhello, hospital?", "MimeProblem", "text/plain"),
    "not XML": (b"Content-Type: text/xml\r\n\r\nthis is not < xml", "OtherXml", "not XML"),
    "DTD/XXE": (b'Content-Type: text/xml\r\n\r\n<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM '
                b'"file:///etc/passwd">]><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">'
                b"<soap:Body>&e;</soap:Body></soap:Envelope>", "OtherXml", "DTD"),
    "truncated MIME": (b'Content-Type: multipart/related; type="text/xml"; boundary="b1"; start="<s>"\r\n\r\n'
                       b"--b1\r\nContent-Type: text/xml\r\nContent-ID: <s>\r\n\r\n"
                       b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Hea',
                       "MimeProblem", "multipart"),
}


@pytest.mark.parametrize("kind", list(MALFORMED))
def test_malformed_ebxml_gets_a_soap_fault_and_is_kept_as_rejected(hospital, kind: str):
    relay, tls = hospital
    entity, code, words = MALFORMED[kind]
    reply = post(relay.http.url("/ebxml"), entity, tls.client("hub"))
    assert reply.status == 400 and reply.entity
    faults = parse_soap_fault(parse_package(reply.entity).soap)
    assert faults and faults[0].code == code and words.lower() in (faults[0].description or "").lower()
    rejected = relay.store.list_messages(state=State.REJECTED)
    assert len(rejected) == 1
    m = rejected[0]
    assert m.channel == "http" and m.last_error is not None and m.last_error.code == code
    assert relay.store.blob(m.id) == entity  # the original bytes, as received
    # what an operator sees
    from typer.testing import CliRunner

    from hub.cli.main import app
    out = CliRunner().invoke(app, ["queue", "list", "--state", "rejected", "--store", relay.cfg.store])
    assert out.exit_code == 0 and m.short_id in out.output and code in out.output, out.output


def test_two_relays_over_https_both_ways(tmp_path: Path):
    """Relay A delivers to relay B over https (B's certificate verified against A's configured anchors;
    A presents its registered certificate as `client_cert`); B's Acknowledgment comes back over https."""
    tls = Tls(tmp_path / "tls")
    pki = shared_test_pki().dir
    a_reg = "".join([party(80000, "Relay A", local=True), party(82001, "Legekontoret Fjordbyen", local=True),
                     party(82002, "Kari Fjeld", parent=82001)])
    b_reg = "".join([party(81000, "Relay B", local=True), party(81001, "Fjordbyen sykehus HF", local=True),
                     party(81002, "Medisinsk poliklinikk", parent=81001)])
    client = {"client_cert": str(pki / "parties" / "hub" / "sign.pem"),
              "client_key": str(pki / "parties" / "hub" / "sign.key.pem")}
    a = Relay(relay_config(tmp_path / "a", 80000, "hub", a_reg, tls.table(**client)))
    b = Relay(relay_config(tmp_path / "b", 81000, "lab", b_reg, tls.table(require_client_cert=True)))
    # each one's endpoint is known once its server is bound (port 0): registered now, as a register
    # update would be
    a_url, b_url = a.http.url("/ebxml"), b.http.url("/ebxml")  # type: ignore[union-attr]
    extra = tmp_path / "peers.toml"
    extra.write_text("".join([party(81000, "Relay B", certs="lab", endpoint=b_url),
                              party(81001, "Fjordbyen sykehus HF", certs="lab", endpoint=b_url),
                              party(81002, "Medisinsk poliklinikk", parent=81001)]))
    a.register.merge(regmod.load_toml(extra))
    extra.write_text("".join([party(80000, "Relay A", certs="hub", endpoint=a_url),
                              party(82001, "Legekontoret Fjordbyen", certs="hub", endpoint=a_url),
                              party(82002, "Kari Fjeld", parent=82001)]))
    b.register.merge(regmod.load_toml(extra))
    a.start()
    b.start()
    try:
        mid = str(uuid.uuid4())
        (a.cfg.spool_root / "82001" / "out" / "notat.xml").write_bytes(dialog(mid))

        def state(r: Relay, st: State) -> Any:  # noqa: ANN401
            return lambda: next((m for m in r.store.find_by_kith_msg_id(mid) if m.state is st), None)

        got = wait_for(state(b, State.AWAITING_APPREC), 20, "B: delivered from an https POST")
        assert got.channel == "http"
        sent = wait_for(state(a, State.AWAITING_APPREC), 20, "A: acknowledged over https")
        assert sent.out_message_id == got.ebxml_message_id
        assert "ack" in [e.event for e in a.store.timeline(sent.id)]
    finally:
        a.stop()
        b.stop()


def test_http_server_stops_while_a_client_is_stalled():
    e = Echo(header_timeout=30.0, body_timeout=30.0)
    s = e.connect()
    s.sendall(b"POST /in HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
    time.sleep(0.1)
    done = threading.Event()
    t = threading.Thread(target=lambda: (e.server.stop(), done.set()))
    t.start()
    assert done.wait(15), "stop() hung on a stalled upload"
    s.close()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_reaches_health_only_with_a_registered_certificate(hospital):
    """An HTTP client we did not write: curl with the test PKI's anchors and the GP office's registered
    certificate gets /health; without a certificate the handshake fails."""
    relay, tls = hospital
    d = shared_test_pki().dir / "parties" / "hub"
    base = ["curl", "-sS", "--max-time", "10", "--cacert", str(tls.anchors)]
    ok = subprocess.run([*base, "--cert", str(d / "sign.pem"), "--key", str(d / "sign.key.pem"),
                         relay.http.url("/health")], capture_output=True, text=True)
    assert ok.returncode == 0 and "ok" in json.loads(ok.stdout), ok.stderr  # the health report
    refused = subprocess.run([*base, relay.http.url("/health")], capture_output=True, text=True)
    assert refused.returncode != 0 and refused.stdout == ""


def test_https_with_the_listeners_tls_section_when_http_names_no_certificate(tmp_path: Path):
    """[http] tls = true without cert/key serves the [tls] certificate, the one SMTP's STARTTLS uses."""
    tls = Tls(tmp_path / "tls")
    cfg = make_config(tmp_path / "hub", http=True)
    cfg = RelayConfig.from_dict({"her_id": 80000, "register": [str(cfg.register[0])],
                                 "tls": {"cert": str(tls.cert), "key": str(tls.key)},
                                 "http": {"listen": "127.0.0.1:0", "tls": True}}, tmp_path / "hub")
    r = Relay(cfg)
    r.start()
    try:
        url = r.http.url("/messages/x")  # type: ignore[union-attr]
        assert url.startswith("https://")
        with httpx.Client(verify=tls.client(None)) as c:
            assert c.get(url, headers={"Authorization": f"Bearer {GP_TOKEN}"}).status_code == 404
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the test PKI
            httpx.get(url, verify=ssl.create_default_context(), timeout=5)
    finally:
        r.stop()


def test_an_entity_encoded_as_a_whole_goes_over_http_decoded():
    """HTTP has no Content-Transfer-Encoding: the header is not sent and the body goes as its bytes;
    a multipart body keeps its parts' encodings (MIME's own), and what is not base64 goes as labelled."""
    xml = b"<?xml version='1.0'?><SOAP:Envelope xmlns:SOAP='urn:x'/>"
    b64 = base64.encodebytes(xml)
    headers, body = wire(b"Content-Type: text/xml\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64)
    assert body == xml and [k for k, _ in headers] == ["Content-Type"]
    qp = b"Content-Type: text/xml\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3Db=\r\nc"
    _h, body = wire(qp)
    assert body == b"a=bc"
    multipart = (b'Content-Type: multipart/related; boundary="b"\r\n\r\n--b\r\n'
                 b"Content-Transfer-Encoding: base64\r\n\r\n" + b64 + b"--b--\r\n")
    assert wire(multipart)[1] == multipart.split(b"\r\n\r\n", 1)[1]
    headers, body = wire(b"Content-Type: text/xml\r\nContent-Transfer-Encoding: base64\r\n\r\n!x")
    assert body == b"!x" and ("Content-Transfer-Encoding", "base64") in headers
