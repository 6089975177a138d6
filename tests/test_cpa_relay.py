"""Two relays over real SMTP on 127.0.0.1: a peer that wants gzip gets the KITH document gzipped inside
the CMS envelope and the receiving relay unpacks it by its content; a reused MessageId from an unknown
sender is answered to that sender's MAIL FROM, not to whoever first used the MessageId."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from relay_helpers import drop, files, wait_for
from test_relay_network import (
    A_ADDR,
    B_ADDR,
    config,
    dialog,
    free_port,
    mails,
    one,
    party,
    record_mails,
    register_b,
    smtp_to,
)

from hub.ebxml import compression
from hub.ebxml.corpus import build_message
from hub.ebxml.envelope import parse_envelope
from hub.ebxml.mime import parse_package
from hub.ebxml.msh import LocalParty
from hub.relay.ebms_delivery import OUT
from hub.relay.lifecycle import State
from hub.relay.server import Relay, RelayConfig
from hub.security import cms
from hub.security.pki import load_identity
from hub.security.testing import shared_test_pki

pytestmark = pytest.mark.timeout(60)
OTHER = "other-sender@relay-a.test"


def register_a_gzip(pki: Path) -> str:
    b = {"endpoint": f"mailto:{B_ADDR}", "pki_party": "lab", "pki": pki, "extra": "compress = true"}
    return "".join([
        party(80000, "Relay A", local=True),
        party(82001, "Legekontoret Fjordbyen", local=True, pki_party="gp", pki=pki),
        party(82002, "Kari Fjeld", parent=82001),
        party(81000, "Relay B", **b),
        party(81001, "Fjordbyen sykehus HF", **b),
        party(81002, "Medisinsk poliklinikk", parent=81001),
    ])


@pytest.fixture
def pair(tmp_path: Path):
    pki = shared_test_pki().dir
    pa, pb = free_port(), free_port()
    ca = config(tmp_path / "a", 80000, "hub", register_a_gzip(pki), pa, pb, A_ADDR)
    ca.smtp_addresses.append(OTHER)  # a second mailbox behind A's listener, to see where answers go
    a = Relay(ca)
    b = Relay(config(tmp_path / "b", 81000, "lab", register_b(pki), pb, pa, B_ADDR))
    record_mails(a)
    record_mails(b)
    a.start()
    b.start()
    yield a, b, pa, pb
    for r in (a, b):
        if not r.stopped.is_set():
            r.stop()


def test_gzip_payload_round_trips_between_two_relays(pair):  # noqa: ANN001
    a, b, _, _ = pair
    mid = str(uuid.uuid4())
    doc = dialog(msg_id=mid)
    drop(a.cfg.spool_root / "82001", "notat.xml", doc)
    sent = wait_for(one(a, mid, State.AWAITING_APPREC), 20, "A: acknowledged by B")
    delivered = wait_for(lambda: files(b.cfg.spool_root / "81001" / "in"), what="the hospital's in/")
    assert delivered[0].read_bytes() == doc  # unpacked by content: the same bytes as dropped at A
    # what travelled: CMS for B's key, holding gzip (no header says so)
    (part,) = parse_package(a.store.blob(sent.id, OUT) or b"").parts.values()
    inner = cms.decrypt(part, load_identity(shared_test_pki().dir, "lab").decryption_keys)
    assert compression.is_gzip(inner) and compression.decompress(inner) == doc
    assert len(inner) < len(doc)


def test_a_reused_message_id_is_answered_to_its_own_sender(pair):  # noqa: ANN001
    a, b, _, pb = pair
    mid = str(uuid.uuid4())
    drop(a.cfg.spool_root / "82001", "notat.xml", dialog(msg_id=mid))
    sent = wait_for(one(a, mid, State.AWAITING_APPREC), 20, "A: acknowledged by B")
    # someone else (a HER B's register does not know) reuses that MessageId with other content
    pki = shared_test_pki().dir
    gp, lab = load_identity(pki, "gp"), load_identity(pki, "lab")
    stranger = LocalParty("99999", gp.sign_cert, gp.sign_key, [])

    def same_id(h) -> None:  # noqa: ANN001
        h.message_id = sent.out_message_id

    entity = build_message(stranger, "81001", lab.enc_cert, datetime.now(UTC), header_edit=same_id,
                           payload=b"<other/>")
    before = len(mails(a))
    smtp_to(pb, entity, B_ADDR, mail_from=OTHER)
    wait_for(lambda: len(mails(a)) > before, 15, "B's answer to the reused MessageId")
    answer = mails(a)[-1]
    env = parse_envelope(parse_package(answer).soap)
    assert env.error_list is not None and env.header.ref_to_message_id == sent.out_message_id
    assert env.error_list.errors[0].code == "Inconsistent"
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert f"To: {OTHER}".encode() in head and f"To: {A_ADDR}".encode() not in head


def _plain_sync_request(sender: LocalParty, doc: bytes, cpa_id: str) -> bytes:
    """A DIALOG_NOTAT the way NAV's HTTP senders build theirs: SyncReply, the document plain (not CMS)."""
    from hub.ebxml.envelope import ManifestRef, MessageHeader, Party, build_envelope, new_id, serialize
    from hub.ebxml.mime import PLAIN_TYPE, build_package, new_cid
    from hub.ebxml.signature import sign_envelope

    h = MessageHeader(Party.her("82002", "DIALOG_NOTATsender"), Party.her("81002", "DIALOG_NOTATreceiver"),
                      cpa_id, new_id(), "S-DIALOG_NOTAT", "DIALOG_NOTAT", new_id(), datetime.now(UTC))
    cid = new_cid("sender")
    root = build_envelope(h, sync_reply=True, manifest=[ManifestRef("cid:" + cid)])
    sign_envelope(root, sender.sign_key, sender.sign_cert, {cid: doc})  # type: ignore[arg-type]
    return build_package(serialize(root), [(cid, doc)], soap_base64=False, payload_type=PLAIN_TYPE)


@pytest.mark.parametrize("confidential", ["none", "persistent"])
def test_relay_takes_a_plain_http_payload_only_where_its_cpa_says_so(tmp_path: Path, confidential: str):
    """The relay's own HTTP edge and Msh: NAV's plain sync request is accepted under isConfidential="none"
    (it used to fail with "not DER CMS") and refused where the CPA requires encryption."""
    import asyncio

    from lxml import etree

    from hub.ebxml.corpus import CpaParty, build_cpa
    from hub.ebxml.cpa import CPPA_NS
    from hub.transport.http import HttpClient

    pki = shared_test_pki().dir
    hub_, lab = load_identity(pki, "hub"), load_identity(pki, "lab")
    start, end = datetime(2025, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)
    roles_a = [("DIALOG_NOTATsender", "S-DIALOG_NOTAT", ["DIALOG_NOTAT"], [])]
    roles_b = [("DIALOG_NOTATreceiver", "S-DIALOG_NOTAT", [], ["DIALOG_NOTAT"])]
    cpa = etree.fromstring(build_cpa("hub:test:1", [
        CpaParty("82002", "Kari Fjeld", hub_.sign_cert, hub_.enc_cert, "https://gp.test/ebxml", roles_a),
        CpaParty("81002", "Medisinsk poliklinikk", lab.sign_cert, lab.enc_cert, "https://b.test/ebxml",
                 roles_b),
    ], start, end))
    for tb in cpa.iter(f"{{{CPPA_NS}}}ThisPartyActionBinding"):
        btc = etree.Element(f"{{{CPPA_NS}}}BusinessTransactionCharacteristics")
        btc.set(f"{{{CPPA_NS}}}isConfidential", confidential)
        btc.set(f"{{{CPPA_NS}}}isNonRepudiationRequired", "true")
        tb.insert(0, btc)
    for mc in cpa.iter(f"{{{CPPA_NS}}}MessagingCharacteristics"):  # an HTTP sync channel, as NAV's
        mc.set(f"{{{CPPA_NS}}}syncReplyMode", "signalsAndResponse")
    home = tmp_path / "b"
    (home / "cpa").mkdir(parents=True)
    (home / "cpa" / "cpa.xml").write_bytes(etree.tostring(cpa, xml_declaration=True, encoding="UTF-8"))
    (home / "register.toml").write_text(register_b(pki), encoding="utf-8")
    cfg = RelayConfig.from_dict({
        "store": "sqlite:///hub.sqlite", "her_id": 81000, "node": "node-b", "register": ["register.toml"],
        "pki": str(pki), "identity": "lab", "cpa_dir": "cpa", "http": {"listen": "127.0.0.1:0"},
        "folders": {"root": "spool", "poll": 0.05},
        "worker": {"threads": 2, "poll_s": 0.05, "network_retries": 1, "network_retry_interval_s": 1,
                   "apprec_limit_s": 3600, "defer_s": 0.5},
    }, home)
    b = Relay(cfg)
    b.start()
    try:
        sender = LocalParty("82002", hub_.sign_cert, hub_.sign_key, [])
        mid = str(uuid.uuid4())
        doc = dialog(msg_id=mid)

        async def send() -> object:
            async with HttpClient(timeout=30) as c:
                return await c.post(b.http.url("/ebxml"), _plain_sync_request(sender, doc, "hub:test:1"))

        reply = asyncio.run(send())
        env = parse_envelope(parse_package(reply.entity or b"").soap)
        if confidential == "none":
            assert env.acknowledgment is not None, env.error_list
            got = wait_for(lambda: files(b.cfg.spool_root / "81001" / "in"), what="the hospital's in/")
            assert got[0].read_bytes() == doc
        else:
            assert env.error_list is not None
            (e,) = env.error_list.errors
            assert e.code == "SecurityFailure" and "not encrypted" in (e.description or "")
            assert "hub:test:1" in (e.description or "")
    finally:
        b.stop()
