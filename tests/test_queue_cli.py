"""`hub queue ...` against a real store (SQLite file, and PostgreSQL in a throwaway schema when reachable).

The store is filled with fixture messages driven through the store's own lifecycle API (intake,
claim, failure, ack, AppRec), then the CLI is run as an operator would and its JSON and human output
checked. Route resolution (`hub.relay.route`) is tested here too, with a real register file, a real
certificate and a CPA file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import secrets
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from hub.cli.main import app
from hub.ebxml.cpa import CpaRepository
from hub.fixtures import GP_FASTLEGE, HOSP_POLIKLINIKK, NURSING_TILDELING, build
from hub.fixtures.people import Person, random_person
from hub.relay.lifecycle import Event, State
from hub.relay.register import load_toml
from hub.relay.route import CpaSummary, cert_summary, cpa_lookup, resolve_now
from hub.store import ErrorInfo, MessageMeta, Store, open_store

PG_ADMIN = os.environ.get("HUB_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=5)
RECENT = NOW - timedelta(hours=1)
NODE = "node-t"


# --- the store, on both backends -------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg_admin() -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN} ({exc.__class__.__name__})")
    yield conn
    conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hub.sqlite'}"
        return
    admin: psycopg.Connection = request.getfixturevalue("pg_admin")
    schema = f"q_{secrets.token_hex(4)}"
    try:
        yield f"{PG_ADMIN}?schema={schema}"
    finally:
        admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # no settings or register of the machine leak in; wide tables so cells do not wrap
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("HUB_STORE", raising=False)
    monkeypatch.setenv("COLUMNS", "250")


@dataclass
class World:
    url: str
    ids: dict[str, str]  # role -> short id
    patient: Person
    dnr_patient: Person
    originals: dict[str, bytes]


def _meta(data: bytes, sender: int, receiver: int, msg_type: str, family: str, gen: datetime) -> MessageMeta:
    return MessageMeta(direction="out", channel="folder", kith_msg_id=f"kith-{secrets.token_hex(5)}",
                       msg_type=msg_type, family=family, version="1.1", sender_her=str(sender),
                       receiver_her=str(receiver), gen_date=gen)


def _queued(st: Store, data: bytes, meta: MessageMeta, at: datetime) -> str:
    m = st.put_received(data, meta, actor="folder", now=at)
    st.transition(m.id, Event.VALIDATED, actor=NODE, reason="valid; routed", now=at)
    return m.id


def _claim(st: Store, mid: str, at: datetime) -> None:
    got = st.claim_due(NODE, 1, now=at)
    assert [m.id for m in got] == [mid]  # only the message just queued is due


def populate(url: str) -> World:
    patient = random_person(random.Random(11))
    dnr_patient = random_person(random.Random(12), d_number=True)
    assert patient.ident and dnr_patient.ident and dnr_patient.ident[0] in "4567"
    ids: dict[str, str] = {}
    originals: dict[str, bytes] = {}
    gp, hosp, nurse = GP_FASTLEGE.her_id, HOSP_POLIKLINIKK.her_id, NURSING_TILDELING.her_id
    with open_store(url) as st:
        def add(role: str, data: bytes, meta: MessageMeta, at: datetime) -> str:
            mid = _queued(st, data, meta, at)
            originals[role] = data
            return mid

        # undelivered: the hospital's mailbox refused it (permanent), error text names the patient
        d = build("Dialogmelding", "1.1", seed=1, sender=GP_FASTLEGE, receiver=HOSP_POLIKLINIKK,
                  patient=patient)
        mid = add("undelivered", d, _meta(d, gp, hosp, "DIALOG_NOTAT", "Dialogmelding", OLD), OLD)
        _claim(st, mid, OLD)
        st.record_failure(mid, ErrorInfo("smtp.550", f"mailbox unavailable (patient {patient.ident})", True),
                          actor=NODE, lease_owner=NODE, now=OLD)
        ids["undelivered"] = mid
        # retrying: connection refused (transient), recent
        d = build("Dialogmelding", "1.1", seed=2, sender=GP_FASTLEGE, receiver=HOSP_POLIKLINIKK,
                  patient=dnr_patient)
        mid = add("retrying", d, _meta(d, gp, hosp, "DIALOG_NOTAT", "Dialogmelding", RECENT), RECENT)
        _claim(st, mid, RECENT)
        st.record_failure(mid, ErrorInfo("connection", "connection refused", False), actor=NODE,
                          lease_owner=NODE, now=RECENT)
        ids["retrying"] = mid
        # completed long ago: delivered, AppRec came back
        d = build("Epikrise", "1.2", seed=3, sender=HOSP_POLIKLINIKK, receiver=GP_FASTLEGE)
        mid = add("completed", d, _meta(d, hosp, gp, "EPIKRISE", "Epikrise", OLD), OLD)
        _claim(st, mid, OLD)
        st.transition(mid, Event.ACK, actor=NODE, lease_owner=NODE, now=OLD, reason="written")
        st.transition(mid, Event.AWAIT_APPREC, actor=NODE, now=OLD)
        st.transition(mid, Event.APPREC, actor=NODE, now=OLD, updates={"apprec_status": "1"})
        ids["completed"] = mid
        # delivered 5 days ago to the nursing home, no AppRec since: overdue
        d = build("Dialogmelding", "1.1", seed=4, sender=GP_FASTLEGE, receiver=NURSING_TILDELING)
        mid = add("waiting", d, _meta(d, gp, nurse, "DIALOG_FORESPORSEL", "Dialogmelding", OLD), OLD)
        _claim(st, mid, OLD)
        st.transition(mid, Event.ACK, actor=NODE, lease_owner=NODE, now=OLD, reason="written")
        st.transition(mid, Event.AWAIT_APPREC, actor=NODE, now=OLD,
                      updates={"apprec_due_at": NOW + timedelta(days=30)})
        ids["waiting"] = mid
        # failed at intake: a poison message
        d = build("Dialogmelding", "1.1", seed=5, sender=GP_FASTLEGE, receiver=HOSP_POLIKLINIKK)
        m = st.put_received(d, _meta(d, gp, hosp, "DIALOG_NOTAT", "Dialogmelding", OLD), actor="folder",
                            now=OLD)
        st.transition(m.id, Event.FAIL, actor=NODE, now=OLD, reason="crash: KeyError 'x'",
                      error=ErrorInfo("crash", "KeyError 'x'", True))
        originals["failed"] = d
        ids["failed"] = m.id
        # queued just now, to the nursing home
        d = build("Dialogmelding", "1.1", seed=6, sender=GP_FASTLEGE, receiver=NURSING_TILDELING)
        ids["queued"] = add("queued", d, _meta(d, gp, nurse, "DIALOG_NOTAT", "Dialogmelding", NOW), NOW)
        short = {role: st.require(mid).short_id for role, mid in ids.items()}
    return World(url, short, patient, dnr_patient, originals)


@pytest.fixture
def world(store_url: str) -> World:
    return populate(store_url)


runner = CliRunner()


def run(world: World, *args: str, code: int = 0, input: str | None = None) -> str:
    r = runner.invoke(app, ["queue", *args, "--store", world.url], input=input)
    assert r.exit_code == code, f"exit {r.exit_code}: {r.stdout}\n{r.stderr}\n{r.exception!r}"
    return r.stdout


def run_json(world: World, *args: str, code: int = 0) -> Any:  # noqa: ANN401
    got = json.loads(run(world, *args, "--json", code=code))
    assert got["source"]["store"] == world.url  # it says which store it read
    return got


def listed(world: World, *args: str) -> list[dict[str, Any]]:
    """The messages of a listing's JSON (which also says which config and store it read)."""
    return run_json(world, *args)["messages"]


# --- list ------------------------------------------------------------------------------------------

def test_list_filters_select_the_right_messages(world: World) -> None:
    every = listed(world, "list")
    assert {m["short_id"] for m in every} == set(world.ids.values())
    assert [m["created_at"] for m in every] == sorted((m["created_at"] for m in every), reverse=True)

    undelivered = listed(world, "list", "--state", "undelivered")
    assert [m["short_id"] for m in undelivered] == [world.ids["undelivered"]]
    assert undelivered[0]["last_error_code"] == "smtp.550"

    two = listed(world, "list", "--state", "undelivered,failed")
    assert {m["short_id"] for m in two} == {world.ids["undelivered"], world.ids["failed"]}

    to_nursing = listed(world, "list", "--receiver", str(NURSING_TILDELING.her_id))
    assert {m["short_id"] for m in to_nursing} == {world.ids["waiting"], world.ids["queued"]}

    from_hosp = listed(world, "list", "--sender", str(HOSP_POLIKLINIKK.her_id))
    assert [m["short_id"] for m in from_hosp] == [world.ids["completed"]]

    asks = listed(world, "list", "--type", "DIALOG_FORESPORSEL")
    assert [m["short_id"] for m in asks] == [world.ids["waiting"]]

    recent = listed(world, "list", "--since", "2h")
    assert {m["short_id"] for m in recent} == {world.ids["retrying"], world.ids["queued"]}
    since_iso = listed(world, "list", "--since", (NOW - timedelta(days=1)).isoformat())
    assert {m["short_id"] for m in since_iso} == {world.ids["retrying"], world.ids["queued"]}

    assert len(listed(world, "list", "--limit", "2")) == 2


def test_list_for_people_shows_ids_states_and_masked_errors(world: World) -> None:
    out = run(world, "list")
    for sid in world.ids.values():
        assert sid in out
    assert "undelivered" in out and "smtp.550" in out and "1/6" in out
    assert f"{GP_FASTLEGE.her_id} -> {HOSP_POLIKLINIKK.her_id}" in out
    assert world.patient.ident not in out  # the error text names the patient: masked
    assert world.patient.ident[:6] + "*****" in out


def test_bad_filter_and_unknown_id_are_clear_errors(world: World) -> None:
    r = runner.invoke(app, ["queue", "list", "--state", "lost", "--store", world.url])
    assert r.exit_code == 2 and "unknown state lost" in r.stderr
    for cmd in ("show", "why", "export"):
        r = runner.invoke(app, ["queue", cmd, "zzzzzzzzzz", "--store", world.url])
        assert r.exit_code == 1, cmd
        assert "no message 'zzzzzzzzzz'" in r.stderr


# --- show ------------------------------------------------------------------------------------------

def test_show_masks_identity_numbers_and_reveal_is_audited(world: World) -> None:
    sid = world.ids["undelivered"]
    fnr = world.patient.ident
    assert fnr is not None and fnr.encode() in world.originals["undelivered"]
    shown = run_json(world, "show", sid)
    assert shown["masked"] is True
    assert shown["message"]["short_id"] == sid and shown["message"]["state"] == "undelivered"
    assert fnr not in json.dumps(shown, ensure_ascii=False)
    assert fnr[:6] + "*****" in shown["payload"]
    assert [e["event"] for e in shown["timeline"]] == ["accept", "validated", "claim", "nack_permanent"]
    assert "MsgHead" in shown["payload"]

    human = run(world, "show", sid)
    assert fnr not in human and fnr[:6] + "*****" in human and "smtp.550" in human
    assert "nack_permanent" in human and "MsgHead" not in human  # the payload only when asked for
    assert human.count("smtp.550") == 2  # the last error, and its step in the timeline
    assert "MsgHead" in run(world, "show", sid, "--payload")

    with open_store(world.url) as st:
        assert st.audit_log(target=st.require(sid).id) == []  # masked views are not audited

    revealed = run_json(world, "show", sid, "--reveal", "--actor", "ops-anna")
    assert revealed["masked"] is False
    assert fnr in revealed["payload"] and fnr in revealed["message"]["last_error_text"]
    with open_store(world.url) as st:
        log = st.audit_log(target=st.require(sid).id)
    assert [(a.actor, a.action) for a in log] == [("ops-anna", "reveal")]
    assert abs((log[0].at - datetime.now(UTC)).total_seconds()) < 120


def test_show_masks_d_numbers_and_defaults_actor_to_os_user(world: World) -> None:
    sid = world.ids["retrying"]
    dnr = world.dnr_patient.ident
    assert dnr is not None
    human = run(world, "show", sid, "--payload")
    assert dnr not in human and dnr[:6] + "*****" in human
    out = run(world, "show", sid, "--reveal", "--payload")
    assert dnr in out and "REVEALED" in out
    with open_store(world.url) as st:
        log = st.audit_log(target=st.require(sid).id)
    assert len(log) == 1 and log[0].action == "reveal" and log[0].actor


# --- why -------------------------------------------------------------------------------------------

def test_why_explains_an_undelivered_message_with_its_last_error(world: World) -> None:
    sid = world.ids["undelivered"]
    got = run_json(world, "why", sid)
    text = got["explanation"]
    assert got["state"] == "undelivered" and got["last_error"]["code"] == "smtp.550"
    assert "could not be delivered" in text and "smtp.550" in text and "permanent" in text
    assert "1 of 6 attempts" in text and "told the sender" in text and f"hub queue resend {sid}" in text
    assert world.patient.ident not in text and world.patient.ident[:6] + "*****" in text
    assert "\n" not in text  # one paragraph
    human = run(world, "why", world.ids["retrying"])
    assert "connection refused" in human and "Next attempt" in human


# --- resend ----------------------------------------------------------------------------------------

def test_resend_creates_a_child_with_lineage_on_both(world: World) -> None:
    sid = world.ids["undelivered"]
    got = run_json(world, "resend", sid, "--actor", "ops-bo", "--reason", "mailbox fixed")
    assert got["actor"] == "ops-bo" and got["skipped"] == []
    [r] = got["resent"]
    assert r["parent"] == sid and r["state"] == "queued"
    with open_store(world.url) as st:
        parent = st.require(sid)
        child = st.require(r["id"])
        assert child.parent_id == parent.id and child.state is State.QUEUED
        assert st.blob(child.id) == st.blob(parent.id)
        ptl, ctl = st.timeline(parent.id), st.timeline(child.id)
        audit = st.audit_log(target=parent.id)
    assert parent.state is State.UNDELIVERED  # the original keeps its state
    assert ptl[-1].event == "resent" and ptl[-1].actor == "ops-bo" and child.short_id in ptl[-1].reason
    assert ctl[0].event == "resend" and ctl[0].actor == "ops-bo" and ctl[0].from_state is None
    assert [(a.actor, a.action) for a in audit] == [("ops-bo", "resend")]
    # lineage is visible both ways
    assert run_json(world, "show", sid)["children"] == [child.short_id]
    assert run_json(world, "show", child.short_id)["parent"] == sid
    assert f"resend of {sid}" in run_json(world, "why", child.short_id)["explanation"]


def test_resend_refuses_a_message_still_in_progress(world: World) -> None:
    r = runner.invoke(app, ["queue", "resend", world.ids["queued"], "--store", world.url])
    assert r.exit_code == 1 and "cannot be resent" in r.stdout
    with open_store(world.url) as st:
        assert sum(st.stats().values()) == len(world.ids)


def _write_cpa(path: Path, start: str, end: str, status: str = "agreed") -> None:
    ns = "http://www.oasis-open.org/committees/ebxml-cppa/schema/cpp-cpa-2_0.xsd"
    path.write_text(
        f'<tp:CollaborationProtocolAgreement xmlns:tp="{ns}" tp:cpaid="cpa-hosp-1">'
        f'<tp:Status tp:value="{status}"/><tp:Start>{start}</tp:Start>'
        f"<tp:End>{end}</tp:End><tp:PartyInfo><tp:PartyId tp:type=\"HER\">80000</tp:PartyId></tp:PartyInfo>"
        f'<tp:PartyInfo><tp:PartyId tp:type="HER">81001</tp:PartyId></tp:PartyInfo>'
        "</tp:CollaborationProtocolAgreement>", encoding="utf-8")


def _register_world(
    tmp_path: Path, *, cert_days: int = 365, cpa_end: datetime | None = None
) -> tuple[Path, Path]:
    """A register where the hospital is a network peer (SMTP, CPA, certificate) and the nursing home local."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Fjordbyen sykehus HF enc")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(0x5EED).not_valid_before(NOW - timedelta(days=400))
            .not_valid_after(NOW + timedelta(days=cert_days)).sign(key, hashes.SHA256()))
    (tmp_path / "hosp-enc.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    reg = tmp_path / "register.toml"
    reg.write_text(f"""
[[party]]
her_id = 81001
name = "Fjordbyen sykehus HF"
kind = "hospital"
endpoint = "mailto:edi@sykehus.example"
cpa = "cpa-hosp-1"
enc_cert = "hosp-enc.pem"
sign_cert = "missing-sign.pem"

[[party]]
her_id = {HOSP_POLIKLINIKK.her_id}
name = "Medisinsk poliklinikk"
parent = 81001

[[party]]
her_id = 84001
name = "Fjordbyen sykehjem"
kind = "nursing"
local = true

[[party]]
her_id = {NURSING_TILDELING.her_id}
name = "Tildelingskontoret"
parent = 84001
""", encoding="utf-8")
    cpa_dir = tmp_path / "cpa"
    cpa_dir.mkdir()
    _write_cpa(cpa_dir / "hosp.xml", "2020-01-01T00:00:00.1234567+01:00",
               (cpa_end or NOW + timedelta(days=200)).isoformat())
    (cpa_dir / "not-a-cpa.xml").write_text("<x/>", encoding="utf-8")
    return reg, cpa_dir


def test_bulk_resend_dry_run_changes_nothing_and_shows_route_cpa_cert(world: World, tmp_path: Path) -> None:
    reg, cpa_dir = _register_world(tmp_path)
    with open_store(world.url) as st:
        before = (st.stats(), [(m.id, m.state, m.updated_at) for m in st.list_messages()])
    args = ("resend", "--state", "undelivered,failed", "--receiver", str(HOSP_POLIKLINIKK.her_id),
            "--dry-run", "--register", str(reg), "--cpa-dir", str(cpa_dir))
    r = runner.invoke(app, ["queue", *args, "--store", world.url, "--json"])
    # no relay config here: no SMTP relay to hand the copies to, so none would be delivered now
    assert r.exit_code == 1, r.stdout
    got = json.loads(r.stdout)["messages"]
    assert {g["id"] for g in got} == {world.ids["undelivered"], world.ids["failed"]}
    assert all(not g["would_deliver_now"] for g in got)
    assert all("smtp relay: none configured (smtp.relay)" in g["hop"]["problems"] for g in got)
    for g in got:
        r = g["route"]
        assert g["would_resend"] is True
        assert r["kind"] == "smtp" and r["endpoint"] == "mailto:edi@sykehus.example"
        assert r["cpa_id"] == "cpa-hosp-1" and r["cpa"]["status"] == "agreed"
        assert r["cpa"]["end"].startswith((NOW + timedelta(days=200)).date().isoformat())
        assert r["enc_cert"]["subject"] == "CN=Fjordbyen sykehus HF enc" and r["enc_cert"]["serial"] == "5eed"
        assert r["ok"] is True and any("signing certificate" in n for n in r["notes"])
    human = run(world, *args, code=1)
    assert "0 of 2 would be resent and delivered now; 2 would not (exit 1)" in human
    assert "nothing changed" in human and "mailto:edi@sykehus.example" in human and "cpa-hosp-1" in human
    assert "CN=Fjordbyen sykehus HF enc" in human
    with open_store(world.url) as st:
        after = (st.stats(), [(m.id, m.state, m.updated_at) for m in st.list_messages()])
        assert st.audit_log() == []
    assert after == before


def test_bulk_resend_asks_then_resends_the_selection(world: World, tmp_path: Path) -> None:
    reg, cpa_dir = _register_world(tmp_path)
    base = ["resend", "--state", "undelivered", "--receiver", str(HOSP_POLIKLINIKK.her_id),
            "--register", str(reg), "--cpa-dir", str(cpa_dir), "--actor", "ops-cy"]
    out = run(world, *base, input="n\n", code=1)
    assert "About to resend 1 message(s) (1 undelivered)" in out
    assert "1 of them would not be deliverable now" in out  # no SMTP relay configured here
    with open_store(world.url) as st:
        assert st.stats()["queued"] == 1  # declined: nothing changed
    out = run(world, *base, input="y\n")
    assert "1 resent, 0 skipped" in out and "mailto:edi@sykehus.example" in out
    with open_store(world.url) as st:
        queued = st.list_messages(state="queued")
        parent = st.require(world.ids["undelivered"])
    assert len(queued) == 2 and [m.parent_id for m in queued if m.parent_id] == [parent.id]


# --- route resolution (pure) ------------------------------------------------------------------------

def test_resolve_now_reports_what_blocks_a_delivery(tmp_path: Path) -> None:
    reg_path, cpa_dir = _register_world(tmp_path, cert_days=-1, cpa_end=NOW - timedelta(days=1))
    reg = load_toml(reg_path)
    repo = CpaRepository.load_dir(cpa_dir)
    cpas = cpa_lookup(repo)
    assert len(repo) == 1 and cpas("cpa-hosp-1", NOW).party_ids == ("80000", "81001")
    spool = tmp_path / "spool"
    r = resolve_now(HOSP_POLIKLINIKK.her_id, reg, spool, now=NOW, cpas=cpas, certs=cert_summary,
                    recorded_cpa_id="cpa-old")
    assert not r.ok
    assert any("CPA cpa-hosp-1 ended" in p for p in r.problems)
    assert any(p.startswith("encryption certificate CN=Fjordbyen sykehus HF enc expired") for p in r.problems)
    assert any("cpa-old" in n for n in r.notes)
    assert not any("names parties" in n for n in r.notes)  # the service is covered by its organisation's CPA
    other = CpaSummary("cpa-hosp-1", "agreed", None, NOW + timedelta(days=1), ("80000", "99999"))
    r2 = resolve_now(HOSP_POLIKLINIKK.her_id, reg, spool, now=NOW, cpas=lambda _id, _at: other)
    assert any("names parties 80000, 99999, not 81002" in n for n in r2.notes)
    local = resolve_now(NURSING_TILDELING.her_id, reg, spool, now=NOW, cpas=cpas, certs=cert_summary)
    assert local.ok and local.kind == "folder" and local.endpoint == str(spool / "84001")
    unknown = resolve_now(99999, reg, spool, now=NOW)
    assert not unknown.ok and "not in the address register" in unknown.problems[0]
    assert "names no receiver" in resolve_now(None, reg, spool, now=NOW).problems[0]
    gone = resolve_now(HOSP_POLIKLINIKK.her_id, reg, spool, now=NOW,
                       cpas=lambda _id, _at: None, certs=lambda p: cert_summary(str(tmp_path / "nope.pem")))
    assert any("not in the CPA repository" in p for p in gone.problems)
    assert any("cannot read" in p for p in gone.problems)
    unchecked = resolve_now(HOSP_POLIKLINIKK.her_id, reg, spool, now=NOW)  # no repository, no cert reading
    assert unchecked.ok and unchecked.cpa is None and unchecked.enc_cert is not None


def test_the_cpa_version_valid_now_is_the_one_shown(world: World, tmp_path: Path) -> None:
    """Three files with one CPA id: the expired one sorts last and a proposed one is valid now too; the
    agreed version valid now is what the dry run shows and checks, whichever file sorts where."""
    reg, cpa_dir = _register_world(tmp_path)
    (cpa_dir / "hosp.xml").unlink()
    renewed_end = NOW + timedelta(days=300)
    _write_cpa(cpa_dir / "a-renewed.xml", (NOW - timedelta(days=1)).isoformat(), renewed_end.isoformat())
    _write_cpa(cpa_dir / "b-draft.xml", (NOW - timedelta(hours=1)).isoformat(),
               (NOW + timedelta(days=900)).isoformat(), status="proposed")
    _write_cpa(cpa_dir / "z-old.xml", "2020-01-01T00:00:00Z", (NOW - timedelta(days=1)).isoformat())
    cpas = cpa_lookup(CpaRepository.load_dir(cpa_dir))
    now = cpas("cpa-hosp-1", NOW)
    assert now is not None and now.valid and now.versions == 3 and now.end == renewed_end
    assert Path(now.path or "").name == "a-renewed.xml"
    then = cpas("cpa-hosp-1", datetime(2024, 6, 1, tzinfo=UTC))
    assert then is not None and Path(then.path or "").name == "z-old.xml"
    later = cpas("cpa-hosp-1", NOW + timedelta(days=500))  # only the proposed one is valid then
    assert later is not None and later.status == "proposed"
    assert cpas("cpa-hosp-1", NOW + timedelta(days=1000)) is not None  # none valid: the latest, flagged
    assert not cpas("cpa-hosp-1", NOW + timedelta(days=1000)).valid  # type: ignore[union-attr]

    register = load_toml(reg)
    r = resolve_now(HOSP_POLIKLINIKK.her_id, register, tmp_path / "spool", now=NOW, cpas=cpas)
    assert not any("CPA" in p for p in r.problems), r.problems
    assert any("3 versions" in n and "a-renewed.xml" in n for n in r.notes)
    gone = resolve_now(HOSP_POLIKLINIKK.her_id, register, tmp_path / "spool", now=NOW + timedelta(days=1000),
                       cpas=cpas)
    assert any("CPA cpa-hosp-1 ended" in p for p in gone.problems)
    assert any("none is valid now" in n for n in gone.notes)

    got = json.loads(runner.invoke(app, [
        "queue", "resend", world.ids["undelivered"], "--dry-run", "--register", str(reg),
        "--cpa-dir", str(cpa_dir), "--store", world.url, "--json"]).stdout)["messages"][0]["route"]
    assert got["cpa"]["status"] == "agreed" and Path(got["cpa"]["path"]).name == "a-renewed.xml"
    assert got["cpa"]["end"].startswith(renewed_end.date().isoformat())
    assert not any("CPA" in p for p in got["problems"])


# --- export ----------------------------------------------------------------------------------------

def test_export_returns_the_exact_original_bytes(world: World, tmp_path: Path) -> None:
    sid = world.ids["undelivered"]
    original = world.originals["undelivered"]
    r = runner.invoke(app, ["queue", "export", sid, "--store", world.url, "--actor", "ops-di"])
    assert r.exit_code == 0 and r.stdout_bytes == original
    out = tmp_path / "x.xml"
    got = run_json(world, "export", sid, "--out", str(out))
    assert out.read_bytes() == original and got["sha256"] == hashlib.sha256(original).hexdigest()
    z = tmp_path / "all.zip"
    got = run_json(world, "export", sid, "--all", "--out", str(z))
    with zipfile.ZipFile(z) as zf:
        assert zf.read(f"{sid}/original.xml") == original
        tl = json.loads(zf.read(f"{sid}/timeline.json"))
        meta = json.loads(zf.read(f"{sid}/message.json"))
    assert [e["event"] for e in tl] == ["accept", "validated", "claim", "nack_permanent"]
    assert meta["short_id"] == sid and meta["state"] == "undelivered"
    folder = tmp_path / "all"
    run(world, "export", sid, "--all", "--out", str(folder))
    assert (folder / "original.xml").read_bytes() == original and (folder / "timeline.json").exists()
    with open_store(world.url) as st:
        log = st.audit_log(target=st.require(sid).id)
    assert [a.action for a in log] == ["export"] * 4 and log[-1].actor == "ops-di"


# --- purge, stats, overdue --------------------------------------------------------------------------

def test_purge_keeps_undelivered_and_failed_unless_forced(world: World) -> None:
    dry = run_json(world, "purge", "--before", "1d", "--dry-run")
    assert dry["purged"] == 0 and dry["would_purge"] == {"completed": 1}
    assert "would purge 1 message(s)" in run(world, "purge", "--before", "1d", "--dry-run")
    out = run(world, "purge", "--before", "1d", input="n\n", code=1)  # it asks; no: nothing deleted
    assert "About to delete 1 message(s)" in out and "1 completed" in out
    with open_store(world.url) as st:
        assert st.get(world.ids["completed"]) is not None
    r = runner.invoke(app, ["queue", "purge", "--before", "1d", "--json", "--store", world.url])
    assert r.exit_code == 2 and "add --yes" in r.stderr
    got = run_json(world, "purge", "--before", "1d", "--actor", "ops-ed", "--yes")
    assert got["purged"] == 1  # only the old completed one
    assert got["kept"]["needs_attention"] == {"undelivered": 1, "failed": 1}
    assert got["kept"]["in_progress"] == {"awaiting_apprec": 1}
    with open_store(world.url) as st:
        assert st.get(world.ids["completed"]) is None
        for role in ("undelivered", "failed", "waiting", "retrying", "queued"):
            assert st.get(world.ids[role]) is not None, role
        assert st.audit_log()[0].actor == "ops-ed"
    human = run(world, "purge", "--before", "1d")
    assert "purged 0" in human and "1 failed, 1 undelivered" in human and "--force" in human
    got = run_json(world, "purge", "--before", "1d", "--force", "--yes")
    assert got["purged"] == 2 and got["kept"]["needs_attention"] == {}
    with open_store(world.url) as st:
        assert st.get(world.ids["undelivered"]) is None and st.get(world.ids["failed"]) is None
        assert st.get(world.ids["waiting"]) is not None  # in progress: never purged


def test_stats_and_overdue(world: World) -> None:
    got = run_json(world, "stats")
    assert got["total"] == len(world.ids) and got["needs_attention"] == 2
    assert got["states"]["undelivered"] == 1 and got["states"]["retrying"] == 1
    assert "6 message(s), 2 needing attention" in run(world, "stats")
    late = listed(world, "overdue")  # 96 h after GenDate
    assert [m["short_id"] for m in late] == [world.ids["waiting"]] and late[0]["overdue_s"] > 0
    assert listed(world, "overdue", "--after", "6d") == []
    out = run(world, "overdue", "--after", "1d")
    assert world.ids["waiting"] in out and "DIALOG_FORESPORSEL" in out


def test_store_comes_from_the_group_option_or_the_config(world: World, tmp_path: Path) -> None:
    r = runner.invoke(app, ["queue", "--store", world.url, "stats", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["total"] == len(world.ids)
    home = Path(os.environ["HUB_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "hub.toml").write_text(f'store = "{world.url}"\nher_id = 80000\n', encoding="utf-8")
    r = runner.invoke(app, ["queue", "list", "--state", "failed", "--json"])
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert [m["short_id"] for m in got["messages"]] == [world.ids["failed"]]
    assert got["source"]["config"] == str(home / "hub.toml")
    assert f"config: {home / 'hub.toml'}" in r.stderr


def test_show_masks_hyphenated_and_dotted_numbers_everywhere(world: World) -> None:
    hyphen, dotted = "070599-43124", "07.05.99 43124"
    with open_store(world.url) as st:
        m = st.put_received(f"<Notat>Pasient {hyphen}, også skrevet {dotted}</Notat>".encode(),
                            _meta(b"", 82001, 81002, "DIALOG_NOTAT", "Dialogmelding", RECENT), actor="t")
        st.transition(m.id, Event.REJECT, actor=NODE, reason=f"refused: patient {hyphen} unknown",
                      error=ErrorInfo("E21", f"no patient {hyphen}", True))
    for args in (("show", m.short_id, "--payload"), ("show", m.short_id, "--json"), ("why", m.short_id),
                 ("list", "--json"), ("list",)):
        out = run(world, *args)
        assert "43124" not in out, args
    shown = run(world, "show", m.short_id, "--payload")
    assert "070599-*****" in shown and "07.05.99 *****" in shown
    assert "43124" in run(world, "show", m.short_id, "--reveal", "--payload")  # audited, tested above


def test_tables_read_at_80_columns_and_any_unique_start_of_an_id_is_taken(world: World) -> None:
    import subprocess
    import sys

    env = {**os.environ, "COLUMNS": "80"}
    out = subprocess.run([sys.executable, "-m", "hub", "queue", "list", "--store", world.url], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), out
    for sid in world.ids.values():  # whole ids, each message on one line
        assert sum(sid in line for line in lines) == 1, (sid, out)
    sid = world.ids["undelivered"]
    with open_store(world.url) as st:
        full = st.require(sid).id
    for ref in (sid[:4], sid[:7] + "…", full[:15], full.upper()[:20]):
        got = run_json(world, "why", ref)
        assert got["short_id"] == sid, ref
    shared = os.path.commonprefix([m.id for m in st_all(world)])  # time-ordered ids share their start
    assert len(shared) >= 3
    r = runner.invoke(app, ["queue", "why", shared, "--store", world.url])
    assert r.exit_code == 1 and "start of several messages" in r.stderr


def st_all(world: World) -> list:
    with open_store(world.url) as st:
        return st.list_messages(limit=100)


def test_audit_list_says_who_revealed_and_resent_what(world: World) -> None:
    sid = world.ids["undelivered"]
    run(world, "show", sid, "--reveal", "--actor", "ops-anna")
    run(world, "resend", sid, "--actor", "ops-bo", "--json")
    r = runner.invoke(app, ["audit", "list", "--store", world.url, "--json"])
    assert r.exit_code == 0, r.stderr
    got = json.loads(r.stdout)
    assert [(e["actor"], e["action"], e["message"]) for e in got["entries"]] == [
        ("ops-bo", "resend", sid), ("ops-anna", "reveal", sid)]
    assert got["source"]["store"] == world.url
    only = json.loads(runner.invoke(app, ["audit", "list", "--store", world.url, "--json", "--actor",
                                          "ops-anna"]).stdout)["entries"]
    assert [e["action"] for e in only] == ["reveal"]
    human = runner.invoke(app, ["audit", "list", "--store", world.url, "--message", sid[:5]]).stdout
    assert "ops-anna" in human and "reveal" in human and sid in human
