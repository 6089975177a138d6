"""The relay's pure decisions: routing, who-may-send, rejection answers, AppRec correlation, failures."""

from __future__ import annotations

import errno
import smtplib
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub.relay import pipeline as pl
from hub.relay.lifecycle import Event
from hub.relay.register import Party, Register
from hub.security.errors import SecurityError

SPOOL = Path("spool")


def register() -> Register:
    return Register([
        Party(82001, "Legekontoret", kind="gp", local=True),
        Party(82002, "Kari Fjeld", kind="gp", parent_her_id=82001, level="person"),
        Party(84001, "Sykehjemmet", kind="nursing", local=True, endpoint="folder:/srv/nh"),
        Party(84002, "Tildeling", parent_her_id=84001, level="service"),
        Party(81001, "Sykehuset", kind="hospital", endpoint="mailto:edi@hosp.example", cpa_id="cpa-81"),
        Party(81002, "Poliklinikk", parent_her_id=81001, level="service"),
        Party(83001, "Laben", kind="lab", endpoint="https://lab.example/ebxml"),
        Party(83002, "Biokjemi", parent_her_id=83001, accepts=("Rekvisisjon:1.6",)),
        Party(85001, "Nedlagt", endpoint="mailto:x@y.example", active=False),
    ])


def facts(**kw) -> pl.Facts:
    base = dict(family="Dialogmelding", version="1.1", msg_type="DIALOG_NOTAT",
                msg_id="3f2b1c0e-1111-4222-8333-444455556666", sender_her=82002, receiver_her=81002)
    base.update(kw)
    return pl.Facts(**base)


LOCAL_GP = pl.Submitted(pl.Channel.FOLDER, 82001)


def test_routes_follow_the_register_hierarchy():
    reg = register()
    r = pl.route_for(reg, 81002, SPOOL)
    assert r is not None and r.kind is pl.RouteKind.SMTP and r.endpoint == "mailto:edi@hosp.example"
    assert r.cpa_id == "cpa-81" and not r.local
    assert pl.route_for(reg, 83002, SPOOL).kind is pl.RouteKind.HTTP
    gp = pl.route_for(reg, 82002, SPOOL)
    assert gp.local and gp.endpoint == str(SPOOL / "82001")  # the organisation's spool folder
    assert pl.route_for(reg, 84002, SPOOL).endpoint == "/srv/nh"
    assert pl.route_for(reg, 85001, SPOOL) is None  # inactive
    assert pl.route_for(reg, 99999, SPOOL) is None


def test_accepts_a_local_message_for_a_network_party():
    d = pl.decide_intake(facts(), LOCAL_GP, register(), SPOOL)
    assert isinstance(d, pl.Accept)
    assert d.direction == "out" and d.route.her_id == 81002 and d.closes is None
    assert "82002" in d.reason and "81002" in d.reason


def test_local_to_local_and_network_to_local_directions():
    reg = register()
    d = pl.decide_intake(facts(receiver_her=84002), LOCAL_GP, reg, SPOOL)
    assert isinstance(d, pl.Accept) and d.direction == "local"
    net = pl.Submitted(pl.Channel.SMTP, 81002, to_her=82002)
    d = pl.decide_intake(facts(sender_her=81002, receiver_her=82002), net, reg, SPOOL)
    assert isinstance(d, pl.Accept) and d.direction == "in"


def test_unknown_receiver_is_refused_with_e21_and_an_apprec_to_a_local_sender():
    d = pl.decide_intake(facts(receiver_her=99999), LOCAL_GP, register(), SPOOL)
    assert isinstance(d, pl.Reject)
    assert (d.code, d.answer, d.ebms_code) == ("E21", pl.Answer.APPREC, "DeliveryFailure")
    assert "99999" in d.text


def test_a_sender_that_is_not_the_submitter_is_refused_and_not_answered():
    # the GP's folder carries a message claiming to be from the hospital
    d = pl.decide_intake(facts(sender_her=81002, receiver_her=84002), LOCAL_GP, register(), SPOOL)
    assert isinstance(d, pl.Reject) and d.answer is pl.Answer.NONE and d.ebms_code == "SecurityFailure"
    # a network peer claiming another party's messages gets a MessageError
    net = pl.Submitted(pl.Channel.HTTP, 83001, to_her=82002)
    d = pl.decide_intake(facts(sender_her=81002, receiver_her=82002), net, register(), SPOOL)
    assert isinstance(d, pl.Reject) and d.answer is pl.Answer.MESSAGE_ERROR


def test_network_receiver_must_equal_ebxml_to_and_be_ours():
    reg = register()
    net = pl.Submitted(pl.Channel.SMTP, 81002, to_her=82002)
    d = pl.decide_intake(facts(sender_her=81002, receiver_her=84002), net, reg, SPOOL)
    assert isinstance(d, pl.Reject) and d.ebms_code == "Inconsistent"
    net2 = pl.Submitted(pl.Channel.SMTP, 81002, to_her=83002)
    d = pl.decide_intake(facts(sender_her=81002, receiver_her=83002), net2, reg, SPOOL)
    assert isinstance(d, pl.Reject) and "not served by this relay" in d.text


def test_schema_errors_are_answered_with_their_own_code():
    f = facts(errors=(pl.Finding("T02", "xsd", "element X not expected"),))
    d = pl.decide_intake(f, LOCAL_GP, register(), SPOOL)
    assert isinstance(d, pl.Reject) and d.code == "T02" and d.answer is pl.Answer.APPREC
    # unreadable: no sender known, nobody to send an AppRec to
    d = pl.decide_intake(pl.Facts(errors=(pl.Finding("T01", "xml.not-xml", "not XML"),)), LOCAL_GP,
                         register(), SPOOL)
    assert isinstance(d, pl.Reject) and d.answer is pl.Answer.NONE and d.code == "T01"
    # a bad AppRec is never answered with another AppRec
    d = pl.decide_intake(facts(msg_type="APPREC", family="AppRec",
                               errors=(pl.Finding("T02", "xsd", "x"),)), LOCAL_GP, register(), SPOOL)
    assert isinstance(d, pl.Reject) and d.answer is pl.Answer.NONE


def test_a_receiver_that_does_not_accept_the_family_is_refused_with_t10():
    d = pl.decide_intake(facts(receiver_her=83002), LOCAL_GP, register(), SPOOL)
    assert isinstance(d, pl.Reject) and d.code == "T10"
    ok = pl.decide_intake(facts(receiver_her=83002, family="Rekvisisjon", version="1.6"), LOCAL_GP,
                          register(), SPOOL)
    assert isinstance(ok, pl.Accept)


@dataclass
class Cand:
    id: str
    kith_msg_id: str | None
    sender_her: str | None
    receiver_her: str | None
    msg_type: str | None = "DIALOG_NOTAT"
    state: str = "awaiting_apprec"


def test_apprec_correlates_with_the_message_sent_between_the_same_parties():
    reg = register()
    ar = facts(msg_type="APPREC", family="AppRec", sender_her=81002, receiver_her=82002,
               original_msg_id="m-1", apprec_status="1")
    other = Cand("x", "m-1", "84002", "81002")  # same MsgId, another sender: not ours
    mine = Cand("y", "m-1", "82002", "81002")
    c = pl.correlate_apprec(ar, [other, mine], reg)
    assert c.original_id == "y"
    assert pl.correlate_apprec(ar, [other], reg).original_id is None
    assert "no relayed message" in pl.correlate_apprec(ar, [], reg).reason
    # the AppRec of an AppRec does not exist: an AppRec never closes another AppRec
    assert pl.correlate_apprec(ar, [Cand("z", "m-1", "82002", "81002", "APPREC")], reg).original_id is None
    # the receiver may answer from its organisation level
    ar_org = facts(msg_type="APPREC", family="AppRec", sender_her=81001, receiver_her=82002,
                   original_msg_id="m-1")
    assert pl.correlate_apprec(ar_org, [mine], reg).original_id == "y"
    d = pl.decide_intake(ar, pl.Submitted(pl.Channel.SMTP, 81002, to_her=82002), reg, SPOOL)
    assert isinstance(d, pl.Accept) and d.closes == "m-1"


def test_after_delivery_waits_for_an_apprec_except_for_apprecs():
    assert pl.after_delivery("DIALOG_NOTAT", "Dialogmelding") is Event.AWAIT_APPREC
    assert pl.after_delivery("APPREC", "AppRec") is Event.CLOSE


def _smtp(code: int) -> smtplib.SMTPResponseException:
    return smtplib.SMTPResponseException(code, b"busy")


@pytest.mark.parametrize(("exc", "permanent", "code"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), False, "connection"),
    (TimeoutError("timed out"), False, "timeout"),
    (_smtp(451), False, "smtp.451"),
    (_smtp(550), True, "smtp.550"),
    (OSError(errno.ENOSPC, "disk full"), False, "os.ENOSPC"),
    (OSError(errno.EACCES, "denied"), True, "os.EACCES"),
    (SecurityError.of("crl-unavailable", "crl.example unreachable"), False, "security.crl-unavailable"),
    (SecurityError.of("signature-invalid", "digest mismatch"), True, "security.signature-invalid"),
    (pl.DeliveryError("route.unknown", "no route", permanent=True), True, "route.unknown"),
    (KeyError("boom"), True, "crash.KeyError"),
])
def test_failures_are_sorted_into_transient_and_permanent(exc, permanent, code):
    f = pl.classify(exc)
    assert (f.permanent, f.code) == (permanent, code)
    assert f.text


def test_http_status_codes():
    class HTTPError(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"HTTP {status}")
            self.status = status

    assert pl.classify(HTTPError(503)).permanent is False
    assert pl.classify(HTTPError(429)).permanent is False
    assert pl.classify(HTTPError(400)).permanent is True


def test_kith_times():
    assert pl.parse_kith_time("2024-05-24T15:02:07").tzinfo is not None
    assert pl.parse_kith_time("2024-05-24T15:02:07+02:00").utcoffset().total_seconds() == 7200
    assert pl.parse_kith_time("yesterday") is None and pl.parse_kith_time(None) is None
