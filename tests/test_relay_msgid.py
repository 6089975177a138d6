"""Issue 12: a KITH MsgId is unique per sender, whatever the intake.

The same sender's MsgId again with identical content is a duplicate (delivered once, recorded on the
original's timeline); with other content it is refused with E10 and the sender gets a negative AppRec.
On SQLite and on a real PostgreSQL (skipped when none answers), through the store and the whole relay:
two files in a watched folder, two `/submit` calls without an Idempotency-Key, two ebXML envelopes.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from relay_helpers import GP_TOKEN, drop, files, make_config, wait_for
from test_relay import by_msg_id, dialog, post, spool
from test_relay_network import Pair, mails, one, pair, smtp_to  # noqa: F401 - pair: a fixture
from test_store import pg_database, store_url  # noqa: F401 - fixtures: SQLite and PostgreSQL

from hub.ebxml.envelope import parse_envelope
from hub.ebxml.mime import parse_package
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.messages.apprec import parse_apprec
from hub.relay.lifecycle import Event, State
from hub.relay.server import Relay
from hub.store import ErrorInfo, MessageMeta, MsgIdTaken, Store, open_store

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:  # noqa: F811 - the imported fixture
    s = open_store(store_url)
    yield s
    s.close()


def _received(store: Store, data: bytes = b"<Message/>") -> str:
    return store.put_received(data, MessageMeta(direction="local", channel="folder", sender_her="82001"),
                              actor="test", now=T0).id


def _key(data: bytes, sender: str = "82001", msg_id: str = "m-1") -> tuple[str, str, str]:
    return sender, msg_id, hashlib.sha256(data).hexdigest()


# --- the store -------------------------------------------------------------------------------------

def test_the_first_accepted_message_owns_the_msgid_and_a_second_writes_nothing(store: Store) -> None:
    a, b = _received(store, b"<a/>"), _received(store, b"<b/>")
    store.advance(a, [_step(Event.VALIDATED)], actor="n", now=T0, msg_id=_key(b"<a/>"))
    owner = store.msg_id_owner("82001", "m-1")
    assert owner is not None and owner[0].id == a and owner[1] == hashlib.sha256(b"<a/>").hexdigest()
    with pytest.raises(MsgIdTaken) as exc:
        store.advance(b, [_step(Event.VALIDATED)], actor="n", now=T0, msg_id=_key(b"<b/>"))
    assert exc.value.message_id == a and exc.value.sha256 == owner[1]
    # nothing of b's refused commit was written
    assert store.require(b).state is State.RECEIVED
    assert [e.event for e in store.timeline(b)] == ["accept"]
    # the owner itself may go on under its key; another sender's same MsgId is another key
    store.advance(a, [_step(Event.CLAIM, claim=True)], actor="n", now=T0, msg_id=_key(b"<a/>"))
    store.advance(b, [_step(Event.VALIDATED)], actor="n", now=T0, msg_id=_key(b"<b/>", sender="84001"))
    assert store.msg_id_owner("84001", "m-1")[0].id == b  # type: ignore[index]
    assert store.msg_id_owner("82001", "m-2") is None


def _step(event: Event, *, claim: bool = False):  # noqa: ANN202 - a hub.store.Step
    from hub.store import Step

    return Step(event, claim=timedelta(minutes=5) if claim else None)


def test_a_duplicate_ends_duplicate_and_the_original_records_it(store: Store) -> None:
    a, b = _received(store), _received(store)
    store.advance(a, [_step(Event.VALIDATED)], actor="n", now=T0, msg_id=_key(b"<Message/>"))
    copy, orig = store.mark_duplicate(b, a, reason="same MsgId, same content", actor="n",
                                      updates={"kith_msg_id": "m-1"}, now=T0)
    assert copy.state is State.DUPLICATE and orig.state is State.QUEUED
    assert copy.kith_msg_id == "m-1"
    assert [e.event for e in store.timeline(b)] == ["accept", "duplicate"]
    last = store.timeline(a)[-1]
    assert (last.event, last.from_state, last.to_state) == ("duplicate_received", "queued", "queued")
    assert copy.short_id in last.reason and orig.short_id in store.timeline(b)[-1].reason
    # a duplicate is final: nothing more may happen to it, and it is no one's work
    with pytest.raises(Exception, match="not allowed"):
        store.transition(b, Event.VALIDATED, actor="n")
    assert [m.id for m in store.claim_due("n", 10, now=T0)] == [a]


def test_purge_forgets_the_msgids_of_purged_messages(store: Store) -> None:
    a = _received(store)
    store.advance(a, [_step(Event.VALIDATED)], actor="n", now=T0, msg_id=_key(b"<Message/>"))
    store.transition(a, Event.FAIL, actor="n", now=T0, error=ErrorInfo("crash", "x", True))
    assert store.purge(T0 + timedelta(days=1), actor="ops", force=True) == 1
    assert store.msg_id_owner("82001", "m-1") is None
    b = _received(store)
    store.advance(b, [_step(Event.VALIDATED)], actor="n", now=T0, msg_id=_key(b"<Message/>"))
    assert store.msg_id_owner("82001", "m-1")[0].id == b  # type: ignore[index]


def test_concurrent_claims_of_one_msgid_have_one_winner(store: Store, store_url: str) -> None:  # noqa: F811
    ids = [_received(store, f"<m{i}/>".encode()) for i in range(6)]
    start = threading.Barrier(len(ids))
    won: list[str] = []
    lost: list[str] = []

    def claim(mid: str) -> None:
        s = open_store(store_url)  # each node its own connection (SQLite: its own writer)
        try:
            start.wait()
            s.advance(mid, [_step(Event.VALIDATED)], actor="n", msg_id=_key(mid.encode()))
            won.append(mid)
        except MsgIdTaken as exc:
            lost.append(exc.message_id)
        finally:
            s.close()

    threads = [threading.Thread(target=claim, args=(m,)) for m in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1 and len(lost) == len(ids) - 1 and set(lost) == set(won)
    assert store.stats()["queued"] == 1 and store.stats()["received"] == len(ids) - 1


# --- the relay: watched folder and submit API ------------------------------------------------------

@pytest.fixture
def relay(tmp_path: Path, store_url: str) -> Iterator[Relay]:  # noqa: F811
    r = Relay(make_config(tmp_path / "hub", store=store_url, http=True, worker={"apprec_limit_s": 3600}))
    r.start()
    yield r
    r.stop()


def _states(r: Relay, mid: str) -> list[State]:
    return sorted((m.state for m in r.store.find_by_kith_msg_id(mid) if m.msg_type != "APPREC"), key=str)


def test_two_files_with_one_msgid_and_content_are_delivered_once(relay: Relay) -> None:
    mid = str(uuid.uuid4())
    doc = dialog(msg_id=mid)
    drop(spool(relay, 82001), "a.xml", doc)
    drop(spool(relay, 82001), "b.xml", doc)  # the journal system wrote it twice
    wait_for(lambda: _states(relay, mid) == [State.AWAITING_APPREC, State.DUPLICATE], what="one of each")
    orig = next(m for m in relay.store.find_by_kith_msg_id(mid) if m.state is State.AWAITING_APPREC)
    dup = next(m for m in relay.store.find_by_kith_msg_id(mid) if m.state is State.DUPLICATE)
    assert [e.event for e in relay.store.timeline(dup.id)] == ["accept", "duplicate"]
    assert dup.sender_her == "82002" and dup.receiver_her == "81002"
    rec = [e for e in relay.store.timeline(orig.id) if e.event == "duplicate_received"]
    assert len(rec) == 1 and dup.short_id in rec[0].reason and rec[0].from_state == rec[0].to_state
    assert len(files(spool(relay, 81001) / "in")) == 1
    assert len(files(spool(relay, 82001) / "archive")) == 2  # both kept, as received
    assert files(spool(relay, 82001) / "in") == []  # no answer: the sender did nothing wrong


def test_a_reused_msgid_with_other_content_is_refused_with_e10(relay: Relay) -> None:
    mid = str(uuid.uuid4())
    drop(spool(relay, 82001), "first.xml", dialog(msg_id=mid))
    first = wait_for(by_msg_id(relay, mid, State.AWAITING_APPREC), what="the first delivered")
    # another document under the same MsgId, from the same sender, over the other intake
    other = dialog(receiver=people.NURSING_TILDELING, msg_id=mid)
    assert post(relay, "/submit", other, GP_TOKEN)[0] == 202
    refused = wait_for(by_msg_id(relay, mid, State.REJECTED), what="the reuse refused")
    assert refused.last_error_code == "E10" and first.short_id in (refused.last_error_text or "")
    back = wait_for(lambda: files(spool(relay, 82001) / "in"), what="the negative AppRec")
    ar = parse_apprec(back[0].read_bytes())
    assert ar.status == "2" and ar.original_msg_id == mid and [e.code for e in ar.errors] == ["E10"]
    assert files(spool(relay, 84001) / "in") == []
    assert len(files(spool(relay, 81001) / "in")) == 1
    assert relay.store.msg_id_owner("82001", mid)[0].id == first.id  # type: ignore[index]


def test_two_submits_without_idempotency_key_deliver_once(relay: Relay) -> None:
    mid = str(uuid.uuid4())
    doc = dialog(msg_id=mid)
    s1, b1 = post(relay, "/submit", doc, GP_TOKEN)
    s2, b2 = post(relay, "/submit", doc, GP_TOKEN)
    assert s1 == s2 == 202 and b1["id"] != b2["id"]  # both stored: the check is the relay's, after
    wait_for(lambda: _states(relay, mid) == [State.AWAITING_APPREC, State.DUPLICATE], what="one of each")
    assert len(files(spool(relay, 81001) / "in")) == 1


# --- network intake --------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_network_copies_in_new_envelopes_are_one_delivery_and_a_reuse_is_e10(
        pair: Pair,  # noqa: F811 - the imported fixture
) -> None:
    assert pair.a.network is not None
    mid = str(uuid.uuid4())
    doc = dialog(msg_id=mid)
    sent = []
    for _ in range(2):  # the sender's system sent it twice: two ebXML MessageIds, one KITH document
        out = pair.a.network.msh.send(from_her="82002", to_her="81002", payload=doc, now=datetime.now(UTC),
                                      message_type="DIALOG_NOTAT")
        smtp_to(pair.pb, out.data, "edi@relay-b.test")
        sent.append(out.message_id)
    wait_for(lambda: _states(pair.b, mid) == [State.AWAITING_APPREC, State.DUPLICATE], 15, "B: one of each")
    assert len(files(pair.spool(pair.b, 81001) / "in")) == 1
    # both envelopes were fine: each got its Acknowledgment, none a MessageError

    def signals() -> dict[str | None, Any]:
        envs = [parse_envelope(parse_package(x).soap) for x in mails(pair.a)]
        return {e.header.ref_to_message_id: e for e in envs if e.header.ref_to_message_id in sent}

    got = wait_for(lambda: len(signals()) == 2, 10, "two signals") and signals()
    assert all(e.acknowledgment is not None and e.error_list is None for e in got.values())

    # other content under the same MsgId: E10, answered with a negative AppRec that travels back to A
    other = build("Dialogmelding", "1.0", seed=2, sender=people.GP_FASTLEGE, receiver=people.HOSP_POLIKLINIKK,
                  msg_type="DIALOG_NOTAT", msg_id=mid)
    assert other != doc
    out = pair.a.network.msh.send(from_her="82002", to_her="81002", payload=other, now=datetime.now(UTC),
                                  message_type="DIALOG_NOTAT")
    smtp_to(pair.pb, out.data, "edi@relay-b.test")
    refused = wait_for(one(pair.b, mid, State.REJECTED), 15, "B: the reuse refused")
    assert refused.last_error_code == "E10"
    back = wait_for(lambda: files(pair.spool(pair.a, 82001) / "in"), 15, "the AppRec at the GP")
    ar = parse_apprec(back[0].read_bytes())
    assert ar.original_msg_id == mid and [e.code for e in ar.errors] == ["E10"]
    assert len(files(pair.spool(pair.b, 81001) / "in")) == 1
