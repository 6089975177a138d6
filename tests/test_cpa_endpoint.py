"""The relay delivers to the endpoint of the receiver's channel in the CPA that binds the action; the
address register's endpoint is only the fallback. Two relays over real SMTP on 127.0.0.1: A's register
names a mailbox B does not have, A's CPA names the right one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
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
    record_mails,
    register_a,
    register_b,
)

from hub.ebxml.corpus import CpaParty, build_cpa
from hub.ebxml.envelope import parse_envelope
from hub.ebxml.mime import parse_package
from hub.relay.ebms_delivery import ENDPOINT, OUT
from hub.relay.lifecycle import State
from hub.relay.server import Relay
from hub.security.pki import load_identity
from hub.security.testing import shared_test_pki

pytestmark = pytest.mark.timeout(60)
WRONG = "old-mailbox@relay-b.test"  # B's listener has no such mailbox: it refuses the recipient
CPA_ID = "hub:test:endpoint"


def _cpa(home: Path, receiver_endpoint: str) -> Path:
    pki = shared_test_pki().dir
    gp, lab = load_identity(pki, "hub"), load_identity(pki, "lab")
    now = datetime.now(UTC)
    cpa = build_cpa(CPA_ID, [
        CpaParty("82002", "Kari Fjeld", gp.sign_cert, gp.enc_cert, f"mailto:{A_ADDR}",
                 [("DIALOG_NOTATsender", "S-DIALOG_NOTAT", ["DIALOG_NOTAT"], ["APPREC"])]),
        CpaParty("81002", "Medisinsk poliklinikk", lab.sign_cert, lab.enc_cert, receiver_endpoint,
                 [("DIALOG_NOTATreceiver", "S-DIALOG_NOTAT", ["APPREC"], ["DIALOG_NOTAT"])]),
    ], now - timedelta(days=1), now + timedelta(days=30))
    folder = home / "cpa"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpa.xml").write_bytes(cpa)
    return folder


def _relays(tmp_path: Path, *, with_cpa: bool) -> tuple[Relay, Relay]:
    pki = shared_test_pki().dir
    pa, pb = free_port(), free_port()
    worker = {"network_retries": 0}
    ca = config(tmp_path / "a", 80000, "hub", register_a(pki, f"mailto:{WRONG}"), pa, pb, A_ADDR, worker)
    cb = config(tmp_path / "b", 81000, "lab", register_b(pki), pb, pa, B_ADDR, worker)
    if with_cpa:
        ca.cpa_dir = _cpa(tmp_path / "a", f"mailto:{B_ADDR}")
        cb.cpa_dir = _cpa(tmp_path / "b", f"mailto:{B_ADDR}")
    return Relay(ca), Relay(cb)


@pytest.fixture
def relays(tmp_path: Path, request: pytest.FixtureRequest):
    a, b = _relays(tmp_path, with_cpa=request.param)
    record_mails(a)
    record_mails(b)
    a.start()
    b.start()
    yield a, b
    for r in (a, b):
        if not r.stopped.is_set():
            r.stop()


@pytest.mark.parametrize("relays", [True], indirect=True)
def test_the_cpa_endpoint_overrides_a_wrong_register_endpoint(relays):  # noqa: ANN001
    a, b = relays
    mid = str(uuid.uuid4())
    doc = dialog(msg_id=mid)
    drop(a.cfg.spool_root / "82001", "notat.xml", doc)
    sent = wait_for(one(a, mid, State.AWAITING_APPREC), 20, "A: acknowledged by B")
    assert a.store.blob(sent.id, ENDPOINT) == f"mailto:{B_ADDR}".encode()
    env = parse_envelope(parse_package(a.store.blob(sent.id, OUT) or b"").soap)
    assert env.header.cpa_id == CPA_ID
    delivered = wait_for(lambda: files(b.cfg.spool_root / "81001" / "in"), what="the hospital's in/")
    assert delivered[0].read_bytes() == doc
    head = mails(b)[0].split(b"\r\n\r\n", 1)[0]
    assert f"To: {B_ADDR}".encode() in head and WRONG.encode() not in head


@pytest.mark.parametrize("relays", [False], indirect=True)
def test_without_a_cpa_the_register_endpoint_is_used(relays):  # noqa: ANN001
    """The control: the same relays without CPAs send to the register's (wrong) mailbox, which B refuses."""
    a, b = relays
    mid = str(uuid.uuid4())
    drop(a.cfg.spool_root / "82001", "notat.xml", dialog(msg_id=mid))
    failed = wait_for(one(a, mid, State.UNDELIVERED), 20, "A: B refused the register's mailbox")
    assert a.store.blob(failed.id, ENDPOINT) == f"mailto:{WRONG}".encode()
    assert failed.last_error_code == "smtp.550" and WRONG in (failed.last_error_text or "")
    assert not files(b.cfg.spool_root / "81001" / "in")


def test_the_dry_run_route_names_the_cpa_endpoint(tmp_path: Path) -> None:
    """`hub queue resend --dry-run` explains the same hop: the CPA's endpoint, the register's overridden."""
    from hub.ebxml.cpa import CpaRepository
    from hub.relay.register import load_toml
    from hub.relay.route import cpa_lookup, resolve_now

    pki = shared_test_pki().dir
    reg_file = tmp_path / "register.toml"
    reg_file.write_text(register_a(pki, f"mailto:{WRONG}").replace(f'endpoint = "mailto:{WRONG}"',
                                                 f'endpoint = "mailto:{WRONG}"\ncpa = "{CPA_ID}"'),
                        encoding="utf-8")
    register = load_toml(reg_file)
    cpas = cpa_lookup(CpaRepository.load_dir(_cpa(tmp_path, f"mailto:{B_ADDR}")))
    r = resolve_now(81002, register, tmp_path / "spool", now=datetime.now(UTC), cpas=cpas)
    assert r.ok, r.problems
    assert r.kind == "smtp" and r.endpoint == f"mailto:{B_ADDR}" and r.cpa_id == CPA_ID
    assert any(WRONG in n and "not to the register's" in n for n in r.notes)
    http = resolve_now(81002, register, tmp_path / "spool", now=datetime.now(UTC),
                       cpas=cpa_lookup(CpaRepository.load_dir(_cpa(tmp_path / "h", "https://b.test/ebxml"))))
    assert http.kind == "http" and http.endpoint == "https://b.test/ebxml"
