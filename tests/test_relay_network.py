"""Two relays over real SMTP on 127.0.0.1: signed+encrypted ebXML with acks, AppRecs back, duplicates,
a receiver that is down and comes back, a forged envelope, and KITH document signatures.

Relay A (HER 80000, test-PKI identity "hub") serves the GP office 82001 and the nursing home 84001;
relay B (HER 81000, identity "lab") serves the hospital 81001. Each has its own SQLite store, register
and spool; each register names the other relay's certificates for the parties behind it.
"""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from relay_helpers import drop, files, wait_for

from hub.ebxml.envelope import parse_envelope
from hub.ebxml.mime import build_package, parse_package
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.relay.ebms_delivery import OUT
from hub.relay.lifecycle import State
from hub.relay.server import Relay, RelayConfig, default_inspector
from hub.security.certs import CertificateValidator
from hub.security.pki import load_identity
from hub.security.testing import shared_test_pki
from hub.security.xmldsig import sign_enveloped
from hub.store import PAYLOAD
from hub.transport.smtp import SmtpSender

pytestmark = pytest.mark.timeout(60)

A_ADDR, B_ADDR = "edi@relay-a.test", "edi@relay-b.test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def now_local() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def dialog(sender: people.Party = people.GP_FASTLEGE, receiver: people.Party = people.HOSP_POLIKLINIKK,
           msg_id: str | None = None) -> bytes:
    return build("Dialogmelding", "1.0", sender=sender, receiver=receiver, msg_type="DIALOG_NOTAT",
                 gen_date=now_local(), msg_id=msg_id or str(uuid.uuid4()))


def party(her: int, name: str, *, parent: int | None = None, local: bool = False, endpoint: str = "",
          pki_party: str = "", pki: Path | None = None, extra: str = "") -> str:
    lines = ["[[party]]", f"her_id = {her}", f'name = "{name}"']
    if parent:
        lines.append(f"parent = {parent}")
    if local:
        lines.append("local = true")
    if endpoint:
        lines.append(f'endpoint = "{endpoint}"')
    if pki_party and pki is not None:
        lines += [f'sign_cert = "{pki / "parties" / pki_party / "sign.pem"}"',
                  f'enc_cert = "{pki / "parties" / pki_party / "enc.pem"}"']
    return "\n".join(lines) + "\n" + extra + "\n"


def register_a(pki: Path, b_endpoint: str = f"mailto:{B_ADDR}") -> str:
    b = {"endpoint": b_endpoint, "pki_party": "lab", "pki": pki}
    return "".join([
        party(80000, "Relay A", local=True),
        # the GP's own KITH signatures are made with the test PKI's "gp" certificate
        party(82001, "Legekontoret Fjordbyen", local=True, pki_party="gp", pki=pki),
        party(82002, "Kari Fjeld", parent=82001),
        party(84001, "Fjordbyen sykehjem", local=True),
        party(84002, "Tildelingskontoret", parent=84001),
        party(81000, "Relay B", **b),
        party(81001, "Fjordbyen sykehus HF", **b),
        party(81002, "Medisinsk poliklinikk", parent=81001),
    ])


def register_b(pki: Path) -> str:
    a = {"endpoint": f"mailto:{A_ADDR}", "pki_party": "hub", "pki": pki}
    return "".join([
        party(81000, "Relay B", local=True),
        party(81001, "Fjordbyen sykehus HF", local=True),
        party(81002, "Medisinsk poliklinikk", parent=81001),
        party(80000, "Relay A", **a),
        party(82001, "Legekontoret Fjordbyen", **a),
        party(82002, "Kari Fjeld", parent=82001),
    ])


def config(home: Path, her: int, identity: str, register: str, listen: int, relay: int, addr: str,
           worker: dict[str, Any] | None = None, http: int | None = None) -> RelayConfig:
    home.mkdir(parents=True, exist_ok=True)
    (home / "register.toml").write_text(register, encoding="utf-8")
    return RelayConfig.from_dict({
        "store": "sqlite:///hub.sqlite", "her_id": her, "node": f"node-{her}", "register": ["register.toml"],
        "pki": str(shared_test_pki().dir), "identity": identity,
        "smtp": {"listen": f"127.0.0.1:{listen}", "relay": f"127.0.0.1:{relay}", "addresses": [addr]},
        "folders": {"root": "spool", "poll": 0.05},
        **({"http": {"listen": f"127.0.0.1:{http}"}} if http else {}),
        "worker": {"threads": 4, "poll_s": 0.05, "network_retries": 5, "network_retry_interval_s": 2,
                   "apprec_limit_s": 3600, "defer_s": 0.5, **(worker or {})},
    }, home)


class Pair:
    def __init__(self, tmp: Path, *, http: bool = False, **worker: Any) -> None:  # noqa: ANN401
        pki = shared_test_pki().dir
        self.pa, self.pb, hp = free_port(), free_port(), free_port()
        b_ep = f"http://127.0.0.1:{hp}/ebxml" if http else f"mailto:{B_ADDR}"
        self.a = Relay(config(tmp / "a", 80000, "hub", register_a(pki, b_ep), self.pa, self.pb, A_ADDR,
                              worker))
        self.b = Relay(config(tmp / "b", 81000, "lab", register_b(pki), self.pb, self.pa, B_ADDR, worker,
                              http=hp if http else None))
        record_mails(self.a)
        record_mails(self.b)

    def spool(self, r: Relay, her: int) -> Path:
        return r.cfg.spool_root / str(her)

    def stop(self) -> None:
        for r in (self.a, self.b):
            if not r.stopped.is_set():
                r.stop()


@pytest.fixture
def pair(tmp_path: Path):
    p = Pair(tmp_path)
    p.a.start()
    p.b.start()
    yield p
    p.stop()


def one(r: Relay, kith_id: str, state: State | None = None, direction: str | None = None):
    def look():
        for m in r.store.find_by_kith_msg_id(kith_id):
            if m.msg_type != "APPREC" and (state is None or m.state is state) and \
                    (direction is None or m.direction == direction):
                return m
        return None
    return look


_MAILS: dict[int, list[bytes]] = {}


def record_mails(r: Relay) -> None:
    """The relay's listener keeps no mail: the tests note each one through its on_message callback."""
    assert r.network is not None and r.network.listener is not None
    got = _MAILS[id(r)] = []

    async def on(data: bytes, mail_from: str, rcpts: list[str]) -> None:
        got.append(data)

    r.network.listener.on_message = on


def mails(r: Relay) -> list[bytes]:
    return list(_MAILS[id(r)])


def smtp_to(port: int, entity: bytes, to: str, mail_from: str = A_ADDR) -> None:
    asyncio.run(SmtpSender("127.0.0.1", port, mail_from).send(entity, to))


def test_signed_encrypted_exchange_with_ack_apprec_and_duplicate(pair: Pair):
    mid = str(uuid.uuid4())
    drop(pair.spool(pair.a, 82001), "notat.xml", dialog(msg_id=mid))
    sent = wait_for(one(pair.a, mid, State.AWAITING_APPREC), 20, "A: acknowledged by B")
    assert sent.direction == "out" and sent.out_message_id
    got = wait_for(one(pair.b, mid, State.AWAITING_APPREC), 10, "B: delivered to the hospital")
    assert got.direction == "in" and got.channel == "smtp" and got.ebxml_message_id == sent.out_message_id
    delivered = wait_for(lambda: files(pair.spool(pair.b, 81001) / "in"), what="the hospital's in/")
    assert len(delivered) == 1 and f"<MsgId>{mid}</MsgId>".encode() in delivered[0].read_bytes()
    # what travelled: the KITH document only encrypted, the envelope signed with relay A's key
    mail = mails(pair.b)[0]
    assert mid.encode() not in mail and b"application/pkcs7-mime" in mail
    env = parse_envelope(parse_package(mail).soap)
    assert env.signed and env.header.message_id == sent.out_message_id
    assert (env.header.from_party.her_id, env.header.to_party.her_id) == ("82002", "81002")
    assert pair.b.store.blob(got.id) == mail  # stored exactly as received
    ack = parse_envelope(parse_package(mails(pair.a)[0]).soap)
    assert ack.acknowledgment is not None and ack.header.ref_to_message_id == sent.out_message_id
    assert [e.event for e in pair.a.store.timeline(sent.id)] == [
        "accept", "validated", "claim", "sent", "ack", "await_apprec"]

    # the hospital answers; the AppRec travels back over SMTP and completes the original at A
    f = default_inspector()(delivered[0].read_bytes(), "x")
    assert f.gen_date is not None and f.msg_type
    apprec = build("AppRec", "1.0", sender=people.HOSP_POLIKLINIKK, receiver=people.GP_FASTLEGE, status="1",
                   original=(f.msg_type, f.gen_date.replace(tzinfo=None).isoformat(), mid),
                   gen_date=now_local(), msg_id=str(uuid.uuid4()))
    drop(pair.spool(pair.b, 81001), "apprec.xml", apprec)
    done = wait_for(one(pair.a, mid, State.COMPLETED, "out"), 20, "A: original completed by the AppRec")
    assert done.apprec_status == "1"
    back = wait_for(lambda: files(pair.spool(pair.a, 82001) / "in"), what="the AppRec in the GP's in/")
    assert b"OriginalMsgId" in back[0].read_bytes()
    wait_for(one(pair.b, mid, State.COMPLETED, "in"), 10, "B: the incoming message completed too")
    wait_for(lambda: [m for m in pair.b.store.list_messages(msg_type="APPREC") if m.state is State.COMPLETED],
             10, "B: its AppRec acknowledged by A")

    # relay A's retry (a lost ack): the same bytes again -> the same signal, nothing delivered twice
    before = len(mails(pair.a))
    smtp_to(pair.pb, pair.a.store.blob(sent.id, OUT) or b"", B_ADDR)
    wait_for(lambda: len(mails(pair.a)) > before, 10, "the replayed signal")
    rec = pair.b.store.seen_get(sent.out_message_id)
    assert rec is not None and rec.response
    acks = [m for m in mails(pair.a)
            if parse_envelope(parse_package(m).soap).header.ref_to_message_id == sent.out_message_id]
    assert len(acks) == 2 and all(rec.response in m for m in acks)  # the same signal, byte for byte
    assert len(files(pair.spool(pair.b, 81001) / "in")) == 1
    assert len([m for m in pair.b.store.list_messages(limit=100) if m.kith_msg_id == mid]) == 1
    assert pair.a.store.require(sent.id).state is State.COMPLETED


def retrying_while_b_is_down(p: Pair) -> tuple[str, Any]:
    """A dialogue from the GP, sent by relay A while B's listener is not started: (KITH MsgId, message)."""
    mid = str(uuid.uuid4())
    drop(p.spool(p.a, 82001), "notat.xml", dialog(msg_id=mid))
    return mid, wait_for(one(p.a, mid, State.RETRYING), 15, "A: retrying while B's SMTP is down")


def test_receiver_down_then_back_same_message_id(tmp_path: Path):
    p = Pair(tmp_path)
    p.a.start()
    try:
        mid, m = retrying_while_b_is_down(p)
        assert m.last_error_permanent is False and m.attempts >= 1
        first = p.a.store.blob(m.id, OUT)
        assert first is not None
        p.b.start()
        sent = wait_for(one(p.a, mid, State.AWAITING_APPREC), 20, "A: delivered once B is back")
        assert sent.attempts >= 2 and p.a.store.blob(sent.id, OUT) == first  # the very same bytes
        got = wait_for(one(p.b, mid, State.AWAITING_APPREC), 10, "B: delivered")
        assert got.ebxml_message_id == sent.out_message_id == m.out_message_id
        assert len(files(p.spool(p.b, 81001) / "in")) == 1
        claims = [e for e in p.a.store.timeline(sent.id) if e.event == "claim"]
        assert len(claims) == sent.attempts
    finally:
        p.stop()


def test_forged_envelope_gets_security_failure_and_nothing_is_delivered(pair: Pair):
    assert pair.a.network is not None
    out = pair.a.network.msh.send(from_her="82002", to_her="81002", payload=dialog(), now=datetime.now(UTC),
                                  message_type="DIALOG_NOTAT")
    pkg = parse_package(out.data)
    (cid, part), = pkg.parts.items()
    forged = build_package(pkg.soap, [(cid, part[:-8] + bytes(b ^ 0x55 for b in part[-8:]))])
    smtp_to(pair.pb, forged, B_ADDR)
    m = wait_for(lambda: next(iter(pair.b.store.list_messages(state=State.REJECTED)), None), 10,
                 "B: the forged envelope refused")
    assert m.last_error_code == "SecurityFailure" and m.ebxml_message_id == out.message_id
    def errors() -> list[tuple[bytes, Any]]:
        envs = [(x, parse_envelope(parse_package(x).soap)) for x in mails(pair.a)]
        return [(x, e) for x, e in envs if e.error_list is not None]

    err_mail, env = wait_for(errors, 10, "the MessageError")[0]
    assert env.header.ref_to_message_id == out.message_id
    assert [e.code for e in env.error_list.errors] == ["SecurityFailure"]
    assert pair.b.store.blob(m.id, PAYLOAD) is None
    assert files(pair.spool(pair.b, 81001) / "in") == []
    # recorded: the sender's resend is answered with the same MessageError
    assert (rec := pair.b.store.seen_get(out.message_id)) is not None and rec.response in err_mail


def test_kith_signatures_are_checked_against_the_register(pair: Pair):
    pki = shared_test_pki().dir
    gp, lab = load_identity(pki, "gp"), load_identity(pki, "lab")
    good_id, bad_id, other_id = (str(uuid.uuid4()) for _ in range(3))
    nh = people.NURSING_TILDELING
    good = sign_enveloped(dialog(receiver=nh, msg_id=good_id), gp.sign_key, gp.sign_cert)
    tampered = sign_enveloped(dialog(receiver=nh, msg_id=bad_id), gp.sign_key, gp.sign_cert) \
        .replace(b"Kari", b"Karl", 1)
    stranger = sign_enveloped(dialog(receiver=nh, msg_id=other_id), lab.sign_key, lab.sign_cert)
    for name, data in (("good.xml", good), ("tampered.xml", tampered), ("stranger.xml", stranger)):
        drop(pair.spool(pair.a, 82001), name, data)
    wait_for(one(pair.a, good_id, State.AWAITING_APPREC), 10, "the correctly signed one delivered")
    assert len(files(pair.spool(pair.a, 84001) / "in")) == 1
    bad = wait_for(one(pair.a, bad_id, State.REJECTED), 10, "tampered: refused")
    other = wait_for(one(pair.a, other_id, State.REJECTED), 10, "wrong signer: refused")
    assert (bad.last_error_code, other.last_error_code) == ("S01", "S02")
    answers = wait_for(lambda: len(files(pair.spool(pair.a, 82001) / "in")) == 2 and
                       files(pair.spool(pair.a, 82001) / "in"), 10, "two AppRecs to the GP")
    codes = sorted(next(c for c in ("S01", "S02") if f'V="{c}"'.encode() in p.read_bytes()) for p in answers)
    assert codes == ["S01", "S02"]


def test_unreachable_crl_defers_then_delivers(pair: Pair):
    """Revocation status unknown (the CRL server refuses connections): not refused, checked again later."""
    from hub.security.certs import _http_fetch
    from hub.security.pki import load_intermediates, load_trust_anchors

    assert pair.b.network is not None
    pki, closed = shared_test_pki().dir, free_port()
    working = pair.b.network.validator
    pair.b.network.validator = CertificateValidator(
        load_trust_anchors(pki), load_intermediates(pki),
        fetch=lambda url, timeout: _http_fetch(f"http://127.0.0.1:{closed}/crl", timeout))
    deferred: list[str] = []
    pair.b.tap.listeners.append(lambda what, m, detail: deferred.append(m.id) if what == "deferred" else None)
    mid = str(uuid.uuid4())
    drop(pair.spool(pair.a, 82001), "notat.xml", dialog(msg_id=mid))
    wait_for(lambda: len(deferred) >= 2, 10, "B: deferred at least twice")
    held = pair.b.store.require(deferred[0])
    assert held.state is State.RECEIVED and pair.b.store.seen_get(held.ebxml_message_id or "") is None
    sent = pair.a.store.get(held.ebxml_message_id or "")
    assert sent is not None and sent.state in (State.AWAITING_ACK, State.RETRYING, State.SENDING)
    pair.b.network.validator = working  # the CRL is reachable again
    wait_for(one(pair.b, mid, State.AWAITING_APPREC), 10, "B: delivered after the deferral")
    wait_for(one(pair.a, mid, State.AWAITING_APPREC), 15, "A: acknowledged")
    assert [e.event for e in pair.b.store.timeline(held.id)][:2] == ["accept", "validated"]


def test_over_http_post_with_the_ack_back_by_mail(tmp_path: Path):
    """B's register endpoint is https-style POST /ebxml: stored before 202, the ack goes to A's mailbox."""
    p = Pair(tmp_path, http=True)
    p.a.start()
    p.b.start()
    try:
        mid = str(uuid.uuid4())
        drop(p.spool(p.a, 82001), "notat.xml", dialog(msg_id=mid))
        got = wait_for(one(p.b, mid, State.AWAITING_APPREC), 15, "B: delivered from an HTTP POST")
        assert got.channel == "http" and mails(p.b) == []
        sent = wait_for(one(p.a, mid, State.AWAITING_APPREC), 15, "A: acknowledged")
        assert sent.out_message_id == got.ebxml_message_id
        assert [e.event for e in p.a.store.timeline(sent.id)] == [
            "accept", "validated", "claim", "sent", "ack", "await_apprec"]
        assert len(files(p.spool(p.b, 81001) / "in")) == 1
    finally:
        p.stop()


def test_pooled_sender_reuses_its_session_and_survives_a_dropped_one():
    """Mail after mail over one kept session; a session the server dropped while idle is replaced
    before the mail starts (each mail arrives exactly once)."""
    from hub.transport.smtp import SmtpListener

    entity = b"Content-Type: text/xml\r\n\r\n<x/>"

    async def run() -> tuple[SmtpListener, SmtpListener]:
        async def ignore(data: bytes, mail_from: str, rcpts: list[str]) -> None:
            return None

        first = await SmtpListener({B_ADDR}, ignore).start()
        sender = SmtpSender("127.0.0.1", first.port, A_ADDR, pool=2)
        for _ in range(3):
            await sender.send(entity, f"mailto:{B_ADDR}")
        await first.stop()  # drops the kept session
        second = await SmtpListener({B_ADDR}, ignore, port=first.port).start()
        await sender.send(entity, B_ADDR)
        await sender.close()
        await second.stop()
        return first, second

    first, second = asyncio.run(run())
    assert (first.accepted, first.sessions) == (3, 1)
    assert (second.accepted, second.sessions) == (1, 1)


def test_network_sender_with_a_broken_kith_signature_gets_an_apprec(pair: Pair):
    """The envelope is fine (ebMS Acknowledgment), the document's personal signature is not: the answer
    is a negative AppRec S01 to the sender, over the network like any message, not a MessageError."""
    assert pair.a.network is not None
    # signed with the certificate B's register names for the GP office (relay A's), then altered
    signer = load_identity(shared_test_pki().dir, "hub")
    mid = str(uuid.uuid4())
    tampered = sign_enveloped(dialog(msg_id=mid), signer.sign_key, signer.sign_cert) \
        .replace(b"Kari", b"Karl", 1)
    out = pair.a.network.msh.send(from_her="82002", to_her="81002", payload=tampered,
                                  now=datetime.now(UTC), message_type="DIALOG_NOTAT")
    smtp_to(pair.pb, out.data, B_ADDR)
    refused = wait_for(one(pair.b, mid, State.REJECTED), 10, "B: the document refused")
    assert refused.last_error_code == "S01"
    assert files(pair.spool(pair.b, 81001) / "in") == []
    # the ebMS layer acknowledged the envelope, and that is what B recorded for a resend
    rec = wait_for(lambda: pair.b.store.seen_get(out.message_id), 10, "B: the answer recorded")
    signal = parse_envelope(parse_package(bytes(rec.response)).soap)
    assert signal.acknowledgment is not None and signal.error_list is None
    # the AppRec: generated by B, sent over SMTP to A, written to the GP's in/ folder
    apprec = wait_for(lambda: next((m for m in pair.b.store.list_messages(limit=100)
                                    if m.msg_type == "APPREC"), None), 10, "B: the AppRec generated")
    assert apprec.direction == "out" and apprec.out_message_id
    got = wait_for(lambda: files(pair.spool(pair.a, 82001) / "in"), 15, "the AppRec at the GP")
    body = got[0].read_bytes()
    assert b'V="S01"' in body and mid.encode() in body
    # no MessageError went back to A for this envelope
    envs = [parse_envelope(parse_package(x).soap) for x in mails(pair.a)]
    assert not [e for e in envs if e.error_list is not None and e.header.ref_to_message_id == out.message_id]


def test_apprec_the_peer_relay_writes_for_a_refused_document_closes_the_original(pair: Pair):
    """The GP's document passes relay A (its register names the GP's certificate) but not relay B (its
    register names relay A's): B refuses it with S02 and answers in the name of the addressed receiver
    (81002, which B serves), so A correlates the AppRec and closes its original."""
    gp = load_identity(shared_test_pki().dir, "gp")
    mid = str(uuid.uuid4())
    signed = sign_enveloped(dialog(msg_id=mid), gp.sign_key, gp.sign_cert)
    drop(pair.spool(pair.a, 82001), "notat.xml", signed)
    refused = wait_for(one(pair.b, mid, State.REJECTED), 15, "B: the document refused")
    assert refused.last_error_code == "S02"
    apprec = wait_for(lambda: next((m for m in pair.b.store.list_messages(limit=100)
                                    if m.msg_type == "APPREC"), None), 10, "B: the AppRec generated")
    assert apprec.sender_her == "81002"  # the addressed receiver, not relay B's own 81000
    done = wait_for(one(pair.a, mid, State.COMPLETED, "out"), 20, "A: the original closed by the AppRec")
    assert done.apprec_status == "2"
    assert any(e.event == "apprec" for e in pair.a.store.timeline(done.id))
    got = wait_for(lambda: files(pair.spool(pair.a, 82001) / "in"), 10, "the AppRec at the GP")
    assert b'V="S02"' in got[0].read_bytes()


def test_apprec_sent_by_the_peer_relay_itself_closes_what_we_sent_to_it(pair: Pair):
    """An AppRec from relay B's own HER-id (81000: a relay speaking for a receiver it does not know)
    closes the message A sent to a party reached through B; one from a party A never sent it to does
    not."""
    mid = str(uuid.uuid4())
    drop(pair.spool(pair.a, 82001), "notat.xml", dialog(msg_id=mid))
    wait_for(one(pair.b, mid, State.AWAITING_APPREC), 20, "B: delivered")
    sent = wait_for(one(pair.a, mid, State.AWAITING_APPREC, "out"), 10, "A: acknowledged")
    relay_b = people.Party(81000, "Relay B", None, "other")
    f = default_inspector()(pair.a.store.blob(sent.id) or b"", "x")
    assert f.gen_date is not None and f.msg_type
    apprec = build("AppRec", "1.0", sender=relay_b, receiver=people.GP_FASTLEGE, status="2",
                   errors=[("E21", "Mottaker finnes ikke")],
                   original=(f.msg_type, f.gen_date.replace(tzinfo=None).isoformat(), mid),
                   gen_date=now_local(), msg_id=str(uuid.uuid4()))
    drop(pair.spool(pair.b, 81000), "apprec.xml", apprec)  # relay B's own system writes it
    done = wait_for(one(pair.a, mid, State.COMPLETED, "out"), 20, "A: closed by the relay's AppRec")
    assert done.apprec_status == "2"


def test_correlation_accepts_a_relay_only_for_what_went_to_it(tmp_path: Path):
    from types import SimpleNamespace

    from hub.relay import pipeline as pl
    from hub.relay.register import load_toml

    pki = shared_test_pki().dir
    f = tmp_path / "register.toml"
    f.write_text(register_a(pki) + party(85000, "Relay C", endpoint="mailto:edi@relay-c.test",
                                         pki_party="lab", pki=pki), encoding="utf-8")
    reg = load_toml(f)

    def cand(receiver: str, direction: str = "out") -> SimpleNamespace:
        return SimpleNamespace(id="m1", kith_msg_id="k", sender_her="82002", receiver_her=receiver,
                               msg_type="DIALOG_NOTAT", state="awaiting_apprec", direction=direction)

    def facts(sender: int) -> pl.Facts:
        return pl.Facts(msg_type="APPREC", family="AppRec", sender_her=sender, receiver_her=82002,
                        original_msg_id="k", apprec_status="2")

    assert pl.correlate_apprec(facts(81000), [cand("81002")], reg).original_id == "m1"  # relay B
    assert pl.correlate_apprec(facts(81002), [cand("81002")], reg).original_id == "m1"  # the receiver
    assert pl.correlate_apprec(facts(85000), [cand("81002")], reg).original_id is None  # another relay
    assert pl.correlate_apprec(facts(81000), [cand("84002", "local")], reg).original_id is None


def test_unreachable_crl_for_a_kith_signature_defers_never_answers_s0x(pair: Pair):
    """Issue #3: the CRL server is down while the GP's signed document is checked: no verdict, no AppRec;
    the message waits in `received` and goes through once the CRL server is up."""
    from hub.security.certs import _http_fetch
    from hub.security.pki import load_intermediates, load_trust_anchors, serve_crl

    assert pair.a.network is not None
    pki, port = shared_test_pki().dir, free_port()
    # relay A fetches its CRLs from a server on `port` (the same files the certificates point at)
    pair.a.network.validator = CertificateValidator(
        load_trust_anchors(pki), load_intermediates(pki),
        fetch=lambda url, timeout: _http_fetch(f"http://127.0.0.1:{port}/crl/{url.rsplit('/', 1)[-1]}",
                                               timeout))
    deferred: list[str] = []
    pair.a.tap.listeners.append(lambda what, m, detail: deferred.append(m.id) if what == "deferred" else None)
    gp = load_identity(pki, "gp")
    mid = str(uuid.uuid4())
    signed = sign_enveloped(dialog(receiver=people.NURSING_TILDELING, msg_id=mid), gp.sign_key, gp.sign_cert)
    drop(pair.spool(pair.a, 82001), "notat.xml", signed)
    wait_for(lambda: len(deferred) >= 2, 10, "A: deferred at least twice")
    held = pair.a.store.require(deferred[0])
    assert held.state is State.RECEIVED and held.last_error_code is None
    assert files(pair.spool(pair.a, 82001) / "in") == []  # no S-code AppRec to the GP
    assert files(pair.spool(pair.a, 84001) / "in") == []
    with serve_crl(pki, port=port) as srv:
        done = wait_for(one(pair.a, mid, State.AWAITING_APPREC), 10, "A: delivered once the CRL is up")
        assert srv.requests  # it really asked the server
    assert done.id == held.id and len(files(pair.spool(pair.a, 84001) / "in")) == 1
    assert files(pair.spool(pair.a, 82001) / "in") == []
    assert "reject" not in [e.event for e in pair.a.store.timeline(done.id)]
