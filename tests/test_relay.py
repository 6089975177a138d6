"""The relay end to end between local systems: folders and the submit API over a real SQLite store."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from relay_helpers import GP_TOKEN, NH_TOKEN, drop, files, make_config, wait_for

from hub.fixtures import people
from hub.fixtures.builder import build
from hub.messages.apprec import parse_apprec
from hub.relay.lifecycle import State
from hub.relay.server import Relay, default_inspector
from hub.store import open_store


def now_local() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def dialog(sender=people.GP_FASTLEGE, receiver=people.HOSP_POLIKLINIKK, msg_id: str | None = None) -> bytes:
    return build("Dialogmelding", "1.0", sender=sender, receiver=receiver, msg_type="DIALOG_NOTAT",
                 gen_date=now_local(), msg_id=msg_id or str(uuid.uuid4()))


@pytest.fixture
def relay(tmp_path):
    cfg = make_config(tmp_path / "hub", http=True, worker={"apprec_limit_s": 3600})
    r = Relay(cfg)
    r.start()
    yield r
    r.stop()


def spool(r: Relay, her: int) -> Path:
    return r.cfg.spool_root / str(her)


def by_msg_id(r: Relay, msg_id: str, state: State | None = None):
    def look():
        for m in r.store.find_by_kith_msg_id(msg_id):
            if m.msg_type != "APPREC" and (state is None or m.state is state):
                return m
        return None
    return look


def test_folder_to_folder_with_apprec_back(relay):
    mid = str(uuid.uuid4())
    drop(spool(relay, 82001), "notat.xml", dialog(msg_id=mid))
    m = wait_for(by_msg_id(relay, mid, State.AWAITING_APPREC), what="delivery to the hospital")
    delivered = wait_for(lambda: files(spool(relay, 81001) / "in"), what="the file in the hospital's in/")
    assert len(delivered) == 1
    assert f"<MsgId>{mid}</MsgId>".encode() in delivered[0].read_bytes()
    # stored before it was taken away: the original is in archive/, the bytes are kept unchanged
    assert len(files(spool(relay, 82001) / "archive")) == 1
    assert relay.store.blob(m.id) == (spool(relay, 82001) / "archive").iterdir().__next__().read_bytes()
    assert m.sender_her == "82002" and m.receiver_her == "81002" and m.direction == "local"
    events = [e.event for e in relay.store.timeline(m.id)]
    assert events == ["accept", "validated", "claim", "ack", "await_apprec"]

    # the hospital answers; the AppRec goes back to the GP and completes the original
    f = default_inspector()(delivered[0].read_bytes(), "x")
    apprec = build("AppRec", "1.0", sender=people.HOSP_POLIKLINIKK, receiver=people.GP_FASTLEGE, status="1",
                   original=(f.msg_type, f.gen_date.replace(tzinfo=None).isoformat(), mid),
                   gen_date=now_local(), msg_id=str(uuid.uuid4()))
    drop(spool(relay, 81001), "apprec.xml", apprec)
    done = wait_for(by_msg_id(relay, mid, State.COMPLETED), what="the original to complete")
    assert done.apprec_status == "1"
    back = wait_for(lambda: files(spool(relay, 82001) / "in"), what="the AppRec in the GP's in/")
    assert b"OriginalMsgId" in back[0].read_bytes()
    ar = [x for x in relay.store.list_messages(msg_type="APPREC")]
    assert len(ar) == 1
    wait_for(lambda: relay.store.require(ar[0].id).state is State.COMPLETED, what="the AppRec to close")


def test_unknown_receiver_is_rejected_with_the_reason(relay):
    mid = str(uuid.uuid4())
    drop(spool(relay, 82001), "x.xml", dialog(receiver=people.Party(89999, "Ukjent", None, "gp"), msg_id=mid))
    m = wait_for(by_msg_id(relay, mid, State.REJECTED), what="rejection")
    assert m.last_error.code == "E21" and m.last_error.permanent and "89999" in m.last_error.text
    tl = relay.store.timeline(m.id)
    assert tl[-1].event == "reject" and "E21" in tl[-1].reason
    assert files(spool(relay, 81001) / "in") == []
    # the GP's system gets a negative AppRec from the relay, pointing at its message
    back = wait_for(lambda: files(spool(relay, 82001) / "in"), what="the relay's AppRec")
    ar = parse_apprec(back[0].read_bytes())
    assert ar.status == "2" and ar.original_msg_id == mid and [e.code for e in ar.errors] == ["E21"]
    assert ar.sender.her_id == "80000" and ar.receiver.communication_her_id == "82002"


def test_a_sender_who_is_not_the_folder_owner_is_refused(relay):
    # the nursing home's folder carries a message in the GP's name
    mid = str(uuid.uuid4())
    drop(spool(relay, 84001), "forged.xml", dialog(msg_id=mid))
    m = wait_for(by_msg_id(relay, mid, State.REJECTED), what="rejection")
    assert "not the submitting local system" in m.last_error.text
    assert files(spool(relay, 81001) / "in") == []
    note = wait_for(lambda: files(spool(relay, 84001) / "error"), what="a note in the submitter's error/")
    assert m.short_id in note[0].read_text()


def post(relay: Relay, path: str, body: bytes, token: str | None, **headers: str):
    host, port = relay.http.address
    req = urllib.request.Request(f"http://{host}:{port}{path}", data=body, method="POST")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in headers.items():
        req.add_header(k.replace("_", "-"), v)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def test_submit_api_authenticates_stores_and_is_idempotent(relay):
    mid = str(uuid.uuid4())
    assert post(relay, "/submit", dialog(msg_id=mid), None)[0] == 401
    assert post(relay, "/submit", dialog(msg_id=mid), "wrong-token")[0] == 401
    status, body = post(relay, "/submit", dialog(msg_id=mid), GP_TOKEN, Idempotency_Key="k1")
    assert status == 202 and body["duplicate"] is False
    again, body2 = post(relay, "/submit", dialog(msg_id=mid), GP_TOKEN, Idempotency_Key="k1")
    assert again == 200 and body2["id"] == body["id"] and body2["duplicate"] is True
    wait_for(by_msg_id(relay, mid, State.AWAITING_APPREC), what="delivery")
    assert len(relay.store.find_by_kith_msg_id(mid)) == 1
    # the submitter may read its message's timeline; another local system may not
    host, port = relay.http.address
    req = urllib.request.Request(f"http://{host}:{port}/messages/{body['id']}",
                                 headers={"Authorization": f"Bearer {GP_TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        status = json.loads(resp.read())
    assert [e["event"] for e in status["timeline"]][:2] == ["accept", "validated"]
    req = urllib.request.Request(f"http://{host}:{port}/messages/{body['id']}",
                                 headers={"Authorization": f"Bearer {NH_TOKEN}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 404


def test_receiver_down_then_back_is_delivered(tmp_path):
    cfg = make_config(tmp_path / "hub", worker={"local_retries": 20, "local_retry_interval_s": 1})
    r = Relay(cfg)
    r.start()
    try:
        inbox = spool(r, 81001) / "in"
        wait_for(inbox.is_dir, what="spool folders")
        inbox.rmdir()  # the hospital's share is gone
        mid = str(uuid.uuid4())
        drop(spool(r, 82001), "n.xml", dialog(msg_id=mid))
        m = wait_for(by_msg_id(r, mid, State.RETRYING), what="a transient failure")
        assert m.last_error.code == "folder.missing" and not m.last_error.permanent
        inbox.mkdir()
        m = wait_for(by_msg_id(r, mid, State.AWAITING_APPREC), what="delivery after the receiver is back")
        assert m.attempts >= 2 and len(files(inbox)) == 1
    finally:
        r.stop()


def test_retries_exhausted_undelivered_and_the_sender_is_told(tmp_path):
    cfg = make_config(tmp_path / "hub", worker={"local_retries": 1, "local_retry_interval_s": 1})
    r = Relay(cfg)
    r.start()
    try:
        inbox = spool(r, 81001) / "in"
        wait_for(inbox.is_dir, what="spool folders")
        inbox.rmdir()
        mid = str(uuid.uuid4())
        drop(spool(r, 82001), "n.xml", dialog(msg_id=mid))
        m = wait_for(by_msg_id(r, mid, State.UNDELIVERED), what="undelivered")
        assert m.attempts == 2
        note = wait_for(lambda: files(spool(r, 82001) / "error"), what="the note to the sender")
        assert "undelivered" in note[0].read_text() and m.short_id in note[0].name
    finally:
        r.stop()


def test_a_poison_message_fails_alone(tmp_path):
    real = default_inspector()

    def inspector(data: bytes, name: str):
        if b"POISON" in data:
            raise RecursionError("the parser blew up")
        return real(data, name)

    r = Relay(make_config(tmp_path / "hub"), inspector=inspector)
    r.start()
    try:
        drop(spool(r, 82001), "a-poison.xml", b"<x>POISON</x>")
        mids = [str(uuid.uuid4()) for _ in range(3)]
        for i, mid in enumerate(mids):
            drop(spool(r, 82001), f"b{i}.xml", dialog(msg_id=mid))
        for mid in mids:
            wait_for(by_msg_id(r, mid, State.AWAITING_APPREC), what="the healthy messages")
        failed = wait_for(lambda: r.store.list_messages(state="failed"), what="the poison message failed")
        assert "RecursionError" in failed[0].last_error.text
    finally:
        r.stop()


def test_apprec_overdue_is_flagged_and_listed(tmp_path):
    r = Relay(make_config(tmp_path / "hub", worker={"apprec_limit_s": 0.3}))
    r.start()
    try:
        mid = str(uuid.uuid4())
        drop(spool(r, 82001), "n.xml", dialog(msg_id=mid))
        m = wait_for(by_msg_id(r, mid, State.APPREC_OVERDUE), what="the AppRec to be overdue")
        assert r.store.timeline(m.id)[-1].event == "apprec_timeout"
        assert m.id in [x.id for x in r.store.list_messages(state="apprec_overdue")]
    finally:
        r.stop()


def test_restart_picks_up_where_it_stopped(tmp_path):
    cfg = make_config(tmp_path / "hub")
    mid = str(uuid.uuid4())
    drop(cfg.spool_root / "82001", "n.xml", dialog(msg_id=mid))  # before the relay runs
    with open_store(cfg.store) as s:
        assert s.stats()["received"] == 0
    r = Relay(cfg)
    r.start()
    try:
        wait_for(by_msg_id(r, mid, State.AWAITING_APPREC), what="delivery of a file left while down")
    finally:
        r.stop()
