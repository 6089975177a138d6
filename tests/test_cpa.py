"""CPAs: the real NAV and Helsenorge documents (and CPPs) load, repository lookups, checks, the CLI."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli.main import app
from hub.codes import EbmsError
from hub.ebxml.corpus import world
from hub.ebxml.cpa import CpaRepository, check_against_cpa, load_cpa, load_cpa_file, parse_duration, plan_send
from hub.ebxml.envelope import MessageHeader, Party, build_envelope, new_id, read_envelope
from hub.ebxml.errors import LOC

NAV = "navikt_nav-qass-31162.xml"
HN = "helsenorge_CPA_93252.xml"
IN_NAV_WINDOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


def test_durations():
    assert parse_duration("PT240M") == timedelta(hours=4)
    assert parse_duration("P2D") == timedelta(days=2)
    assert parse_duration("P1DT2H30M") == timedelta(days=1, hours=2, minutes=30)
    with pytest.raises(ValueError):
        parse_duration("4 hours")


def test_nav_cpa(reference: Path):
    cpa = load_cpa_file(reference / "cpa" / NAV)
    assert (cpa.kind, cpa.cpa_id, cpa.status) == ("CPA", "nav:qass:31162", "proposed")
    assert cpa.start == datetime(2025, 9, 3, 12, 9, 25, 178000, tzinfo=UTC)
    assert cpa.end == datetime(2026, 8, 28, 21, 59, tzinfo=UTC)
    assert cpa.her_ids == ["8090595", "79768"]
    partner, nav = cpa.party("8090595"), cpa.party("79768")
    assert partner.name == "TEST A1 Haugerud" and ("ENH", "984886136") in partner.party_ids
    assert {r.role for r in nav.roles} == {"KontrollUtbetaler", "Frikortregister"}
    r, b = partner.binding("OppgjorsKontroll", "Oppgjorskrav", "send")
    assert r.role == "Utleverer" and b.channel_ids == ["Partner_channelSMTP0_partner"]
    assert partner.binding("OppgjorsKontroll", "Oppgjorskrav", "receive") is None
    smtp = partner.channel("Partner_channelSMTP0_partner")
    assert (smtp.ack_requested, smtp.duplicate_elimination, smtp.sync_reply_mode) == (
        "always", "always", "none")
    assert partner.transport_of(smtp).endpoints == [("mailto://TEST_A1_Haugerud_t1@edi.nhn.no", "allPurpose")]
    de = partner.doc_exchange_of(smtp)
    assert (de.sender.retries, de.sender.retry_interval, de.sender.persist_duration) == (
        4, timedelta(minutes=240), timedelta(days=2))
    assert de.signature_algorithm == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    http = partner.channel("Partner_channelHTTP1_partner")
    assert http.sync_reply_mode == "signalsAndResponse"
    assert partner.transport_of(http).receiver_protocol == "HTTP"
    sign, enc = partner.signing_certificate(), partner.encryption_certificate()
    assert sign is not None and enc is not None and sign != enc
    assert "TEST A1 Haugerud" in sign.subject.rfc4514_string()


def test_helsenorge_cpa_with_reused_ids_and_amqp(reference: Path):
    data = (reference / "cpa" / HN).read_bytes()
    assert data.count(b'certId="sign"') >= 2  # the same xs:ID in both parties
    cpa = load_cpa(data)
    assert cpa.cpa_id == "49391409-e528-4919-b4a3-9ccdab72c8c1" and cpa.her_ids == ["93238", "93252"]
    p = cpa.party("93252")
    assert p.transport_of(p.channel(None)).receiver_protocol == "AMQP"
    assert p.transport_of(p.channel(None)).endpoints[0][0] == "sb.test.nhn.no/DigitalDialog/93252_async"
    assert "S-DIALOG_INNBYGGER_EKONTAKT" in {r.service for r in p.roles}
    assert p.encryption_certificate() is not None and p.signing_certificate() is not None
    assert p.doc_exchange_of(p.channel(None)).sender.retries == 0  # NHN AMQP CPAs: Retries 0


@pytest.mark.parametrize("name", ["helsenorge_CPP_93252.xml", "sarepta_nav_cpp.046.xml",
                                  "sarepta_CppTemplate.xml",
                                  "sarepta_CPP-NHN-PartyA-Rubbelogbit_v6.xml", "sarepta_AMQP-mal-sender.xml"])
def test_cpps_load(reference: Path, name: str):
    cpp = load_cpa_file(reference / "cpa" / name)
    assert cpp.kind == "CPP" and len(cpp.parties) == 1
    p = cpp.parties[0]
    assert p.roles and p.channels and all(r.service for r in p.roles)
    assert any(t.endpoints for t in p.transports.values())


def test_repository_lookups(reference: Path, tmp_path: Path):
    for name in (NAV, HN, "sarepta_nav_cpp.046.xml"):
        shutil.copy(reference / "cpa" / name, tmp_path / name)
    (tmp_path / "broken.xml").write_bytes(b"<not-a-cpa/>")
    repo = CpaRepository.load_dir(tmp_path)
    assert len(repo) == 2 and len(repo.problems) == 1 and "broken.xml" in repo.problems[0]  # CPPs not indexed
    assert repo.get("nav:qass:31162").party("79768") is not None
    assert repo.between("79768", "8090595", IN_NAV_WINDOW).cpa_id == "nav:qass:31162"
    assert repo.between("79768", "8090595", datetime(2027, 1, 1, tzinfo=UTC)) is None  # expired then
    assert repo.between("93252", "93238").cpa_id.startswith("49391409")
    plan = plan_send(repo, "8090595", "79768", IN_NAV_WINDOW, "OppgjorsKontroll", "Oppgjorskrav")
    assert plan.endpoints == ["mailto://mottak-qass@test-es.nav.no"] and plan.reliability.retries == 4
    assert plan.encryption_certificate is not None and plan.ack_requested
    d = plan_send(repo, "8090595", "12345", IN_NAV_WINDOW)
    assert (d.cpa_id, d.cpa, d.reliability.retries, d.reliability.retry_interval) == (
        "12345_8090595", None, 5, timedelta(hours=12))


def _nav_env(service: str, action: str, from_role: str, to_role: str, at: datetime):
    h = MessageHeader(Party.her("8090595", from_role), Party.her("79768", to_role), "nav:qass:31162",
                      new_id(),
                      service, action, new_id(), at)
    return read_envelope(build_envelope(h))


def test_messages_checked_against_the_nav_cpa_at_their_timestamp(reference: Path):
    repo = CpaRepository([load_cpa_file(reference / "cpa" / NAV)])
    ok = _nav_env("OppgjorsKontroll", "Oppgjorskrav", "Utleverer", "KontrollUtbetaler", IN_NAV_WINDOW)
    assert check_against_cpa(ok, repo, None)[1] == []
    cases = [
        (_nav_env("OppgjorsKontroll", "Oppgjorskrav", "Utleverer", "KontrollUtbetaler",
                  datetime(2026, 9, 1, tzinfo=UTC)), EbmsError.INCONSISTENT, LOC["cpa_id"]),
        (_nav_env("OppgjorsKontroll", "Utbetaling", "Utleverer", "KontrollUtbetaler", IN_NAV_WINDOW),
         EbmsError.VALUE_NOT_RECOGNIZED, LOC["action"]),
        (_nav_env("OppgjorsKontroll", "Oppgjorskrav", "Frikortregister", "KontrollUtbetaler", IN_NAV_WINDOW),
         EbmsError.VALUE_NOT_RECOGNIZED, LOC["from_role"]),
        (_nav_env("Sykmelding", "Registrering", "Utleverer", "KontrollUtbetaler", IN_NAV_WINDOW),
         EbmsError.VALUE_NOT_RECOGNIZED, LOC["service"]),
    ]
    for env, code, loc in cases:
        found = [(e.code, e.location) for e in check_against_cpa(env, repo, None)[1]]
        assert (code, loc) in found, (env.header.action, found)
    # the signer must hold the CPA's signing certificate
    w = world()
    errs = check_against_cpa(ok, repo, w.gp.sign_cert)[1]
    assert [(e.code, e.location) for e in errs] == [(EbmsError.SECURITY_FAILURE, LOC["key_info"])]


def test_cli_show_and_check(reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runner = CliRunner()
    r = runner.invoke(app, ["cpa", "show", str(reference / "cpa" / NAV), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["cpa_id"] == "nav:qass:31162" and [p["her_id"] for p in d["parties"]] == ["8090595", "79768"]
    ch = d["parties"][0]["channels"][0]
    assert (ch["protocol"], ch["retries"], ch["endpoints"]) == ("SMTP", 4, ["mailto://TEST_A1_Haugerud_t1@edi.nhn.no"])
    shutil.copy(reference / "cpa" / NAV, tmp_path / NAV)
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "settings.json").write_text(json.dumps({"cpa_dir": str(tmp_path)}))
    r = runner.invoke(app, ["cpa", "show", "nav:qass:31162"])
    assert r.exit_code == 0 and "TEST A1 Haugerud" in r.output and "KontrollUtbetaler" in r.output
    r = runner.invoke(app, ["cpa", "check", "79768", "--at", "2026-01-15T12:00:00Z", "--json"])
    assert r.exit_code == 0, r.output
    c = json.loads(r.output)
    assert (c["from"], c["cpa_id"], c["endpoints"], c["retries"]) == (
        "8090595", "nav:qass:31162", ["mailto://mottak-qass@test-es.nav.no"], 4)
    assert "ARBEIDS- OG VELFERDSETATEN" in c["encryption_certificate"]["subject"]
    r = runner.invoke(app, ["cpa", "check", "79768", "--from", "8090595",
                            "--at", "2027-01-01T00:00:00Z", "--json"])
    c = json.loads(r.output)
    assert (c["cpa_id"], c["retries"], c["retry_interval"]) == ("79768_8090595", 5, "12:00:00")
    r = runner.invoke(app, ["cpa", "show", "nav:qass:99999"])
    assert r.exit_code == 2
