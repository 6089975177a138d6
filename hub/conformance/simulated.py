"""Simulated vendor systems: real endpoints whose behaviour is their own profile, defects included.

A simulated system watches its exchange folder (hub.conformance.exchange) in a thread. What it does
right it does with the hub's own parts — the Validator judges what it receives, the fixture builder
writes what it sends — and what it does wrong comes only from the `[[defect]]` tables of its profile
that are active in the release being tested (the campaign month). Nothing here reads a matrix.

Defect kinds (the vocabulary profiles may use):
  Mottak (how it answers what it receives)
    accepts           codes=[...]  answers OK where it should reject with one of these codes
    wrong-code        code=, answers=  rejects with `answers` where `code` is right
    silent            codes=[...]  sends no AppRec where it should reject with one of these codes
    no-patient-check               accepts patients it does not know (should be E35)
    ignores           codes=[...]  does not make these checks at all (e.g. E30/E31/E36: takes a named
                                   patient without a usable FNR); other problems are still answered
    answers-duplicates             answers a duplicate MsgId again instead of ignoring it
    not-supported                  cannot receive this message type (answers T10 to everything)
    slow              seconds=     answers only after this delay
  AppRec writing (how its AppRecs look)
    apprec-original-id             OriginalMsgId/Id is its own internal id, not the original's MsgId
    apprec-issue-date              OriginalMsgId/IssueDate is the time of receipt, not the GenDate
    apprec-no-error-oid            error codes without the 8221 code system
  Sending (what it produces)
    not-produced                   cannot produce this message type
    omit-content      content=     leaves out a required content element (catalogue CONTENT id)
    msgid-not-uuid                 MsgId is a running number, not a UUID
    fnr-invalid                    writes the patient's FNR with wrong check digits
    schema-error                   adds an element the schema does not allow
  Signing (S: what it sends; M: its AppRecs)
    unsigned                       signs nothing
    bad-signature                  the document changes after it was signed
    signs-with        cert=        signs with a test-PKI special certificate (expired | revoked | unknown-ca)
  Signature checks on receipt are not a defect kind of their own: `accepts codes=["S01"]` etc.
  ebXML (its message service, hub.conformance.ebms.SystemGateway; http/smtp only)
    no-ebms-ack                    takes messages in but never sends an Acknowledgment back
"""


from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from hub.ascii import is_ascii_digits
from hub.conformance import exchange as ex
from hub.conformance.catalogue import CONTENT, MessageType, action_of, message_types
from hub.conformance.profiles import Defect, Profile
from hub.conformance.trust import NetworkPki, check_signature, is_signed, strip_signature, tamper
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.fixtures.people import Party, Person

DEFECT_KINDS = frozenset({
    "accepts", "wrong-code", "silent", "no-patient-check", "ignores", "answers-duplicates", "not-supported",
    "slow",
    "apprec-original-id", "apprec-issue-date", "apprec-no-error-oid",
    "not-produced", "omit-content", "msgid-not-uuid", "fnr-invalid", "schema-error",
    "unsigned", "bad-signature", "signs-with", "no-ebms-ack",
})

# The runner's own communication party in the test network (the test centre).
TEST_CENTRE = Party(86001, "Testsenteret for meldingsutveksling", None, "national")
TEST_CENTRE_SERVICE = Party(86002, "Samsvarstest", None, "national", parent_her_id=86001)


def system_parties(profile: Profile) -> list[Party]:
    """The system's communication parties: its organisation and its level-2 services."""
    kind = {"gp": "gp", "hospital": "hospital", "lab": "lab", "nursing": "nursing"}[profile.category]
    org = Party(profile.her_id, profile.name, None, kind)
    return [org] + [Party(h, f"{profile.name} tjeneste {i + 1}", None, kind, parent_her_id=profile.her_id)
                    for i, h in enumerate(profile.services)]


# The test network's parties (the demo ones, the test centre, the systems): the fixture builder
# resolves parents here (build(directory=PARTIES)); people.DIRECTORY itself is never changed.
PARTIES: dict[int, Party] = dict(people.DIRECTORY)


def register_parties(parties: list[Party]) -> None:
    """Make parties known to the test network's directory the fixture builder is given."""
    for p in parties:
        PARTIES.setdefault(p.her_id, p)


register_parties([TEST_CENTRE, TEST_CENTRE_SERVICE])


def person_to_json(p: Person) -> dict:
    return {"given_name": p.given_name, "family_name": p.family_name, "birth_date": p.birth_date.isoformat(),
            "sex": p.sex, "ident": p.ident, "ident_type": p.ident_type}


def person_from_json(d: dict) -> Person:
    return Person(d["given_name"], d["family_name"], dt.date.fromisoformat(d["birth_date"]), d["sex"],
                  ident=d.get("ident"), ident_type=d.get("ident_type", "FNR"))


_PATIENT_IDS = ("//*[local-name()='Patient']/*[local-name()='OffId']"
                " | //*[local-name()='Patient']/*[local-name()='Ident']/*[local-name()='Id']")


def patient_ids(data: bytes) -> set[str]:
    """The patient identity numbers a message carries (own-root OffId or MsgHead Ident/Id)."""
    from hub.xmlsafe import parse_bytes

    try:
        root = parse_bytes(data).getroot()
    except Exception:  # noqa: BLE001 - an unreadable message has no patient
        return set()
    return {(e.text or "").strip() for e in root.xpath(_PATIENT_IDS) if (e.text or "").strip()}


@dataclass
class Decision:
    status: str | None  # None: no AppRec
    errors: list[tuple[str, str]] = field(default_factory=list)


class SimulatedSystem:
    """One release of a simulated vendor system, listening on its exchange folder."""

    def __init__(self, profile: Profile, root: Path, *, month: str | None = None,
                 poll: float = 0.005, pki: NetworkPki | None = None) -> None:
        self.profile = profile
        self.pki = pki  # None: signs nothing and checks no signatures (a system without certificates)
        self.root = root
        self.month = month
        self.poll_interval = poll
        self.parties = system_parties(profile)
        register_parties(self.parties)
        self._seen_msg_ids: set[str] = set()
        self._counter = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors: list[str] = []  # crashes while handling a message (would be a bug here)
        from hub.validation.validate import Validator

        self.validator = Validator()
        for sub in (ex.TO_SYSTEM, ex.FROM_SYSTEM, ex.ORDERS):
            (root / sub).mkdir(parents=True, exist_ok=True)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> SimulatedSystem:
        self._thread = threading.Thread(target=self._loop, name=f"sim-{self.profile.slug}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def __enter__(self) -> SimulatedSystem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - keep serving; the runner sees the missing answer
                self.errors.append(repr(exc))
            time.sleep(self.poll_interval)

    def step(self) -> None:
        for order in sorted((self.root / ex.ORDERS).glob("*.json")):
            data = json.loads(order.read_text(encoding="utf-8"))
            order.unlink()
            self.produce(data)
        for t in ex.take(self.root / ex.TO_SYSTEM):
            self.receive(t)

    # --- helpers -----------------------------------------------------------------------------------

    def defects(self, message: str | None, direction: str) -> list[Defect]:
        return self.profile.active_defects(self.month, message, direction)

    def _has(self, kind: str, message: str | None, direction: str) -> Defect | None:
        return next((d for d in self.defects(message, direction) if d.kind == kind), None)

    def _patients(self) -> set[str]:
        path = self.root / "patients.json"
        if not path.exists():
            return set()
        return {p["ident"] for p in json.loads(path.read_text(encoding="utf-8")) if p.get("ident")}

    def _party(self, her: int | None) -> Party:
        if her is not None and her in PARTIES:
            return PARTIES[her]
        return Party(int(her or 0), "Ukjent kommunikasjonspart", None, "other")

    def _message_type(self, family: str | None, version: str | None, data: bytes) -> MessageType | None:
        """Which of the types this system claims to receive the message is (matrix row if several)."""
        from hub.messages.families import ELIN_K_MESSAGES
        from hub.xmlsafe import parse_bytes

        hits = [mt for mt in message_types() if mt.family == family and mt.family_version == version]
        if len(hits) > 1:
            try:
                root = parse_bytes(data).getroot()
            except Exception:  # noqa: BLE001 - unreadable (DTD, not XML): any row will do, T01 follows
                root = None
            if root is not None:
                hits = [mt for mt in hits if (mt.name, mt.version) not in ELIN_K_MESSAGES
                        or ELIN_K_MESSAGES[(mt.name, mt.version)].matches(root)] or hits
        claimed = [mt for mt in hits if self.profile.claims_cell(mt.key, "M")]
        return (claimed or hits or [None])[0]

    # --- Mottak ------------------------------------------------------------------------------------

    def decide(self, data: bytes, env: ex.Envelope) -> tuple[Decision, object, MessageType | None]:
        """What a correct receiver answers, then bent by this release's defects."""
        from hub.codes import APPREC_ERRORS

        security = check_signature(data, self.pki) if self.pki and is_signed(data) else None
        result = self.validator.validate_bytes(strip_signature(data), f"{env.id}.xml")
        if result.family == "AppRec":
            return Decision(None), result, None  # AppRecs are consumed, never answered
        mt = self._message_type(result.family, result.version, data) if result.family else None
        if mt is None:  # unreadable: the envelope still says which service the message was sent to
            mt = self._message_type_of_action(env.action)
        key = mt.key if mt else None
        # A repeated MsgId is the duplicate the sheet (#12) says to ignore, not an E10 error: the
        # Validator flags it as msgid.unique, the system's own duplicate check decides.
        duplicate = bool(result.msg_id) and result.msg_id in self._seen_msg_ids
        if duplicate and not self._has("answers-duplicates", key, "M"):
            return Decision(None), result, mt
        codes = list(dict.fromkeys(p.code for p in result.errors if p.rule != "msgid.unique"))
        for d in self.defects(key, "M"):
            if d.kind == "ignores":
                codes = [c for c in codes if c not in d.params.get("codes", [])]
        if security and security.error and "T01" not in codes:
            codes = [security.error.apprec_code]  # content signed by nobody we trust is not read further
        receiver = int(result.receiver) if result.receiver and is_ascii_digits(str(result.receiver)) else None
        if receiver is not None and receiver not in self.profile.her_ids:
            if env.receiver not in self.profile.her_ids:
                return Decision(None), result, mt  # unknown on both levels: not ours to answer
            codes.append("E21")
        if mt is None or not self.profile.claims_cell(mt.key, "M") or self._has("not-supported", key, "M"):
            if result.family and "T01" not in codes:
                codes = ["T10"]
        if not codes and not self._has("no-patient-check", key, "M"):
            ids = patient_ids(data)
            if ids and not ids & self._patients():
                codes.append("E35")
        decision = Decision("2", [(c, APPREC_ERRORS.get(c, c)) for c in codes]) if codes else Decision("1")
        for d in self.defects(key, "M"):
            if d.kind == "accepts" and set(codes) & set(d.params.get("codes", [])):
                decision = Decision("1")
            elif d.kind == "wrong-code" and d.params.get("code") in codes:
                wrong = str(d.params["answers"])
                decision = Decision("2", [(wrong, APPREC_ERRORS.get(wrong, wrong))])
            elif d.kind == "silent" and set(codes) & set(d.params.get("codes", [])):
                decision = Decision(None)
        if decision.status == "1" and result.msg_id:
            self._seen_msg_ids.add(result.msg_id)
        return decision, result, mt

    def _message_type_of_action(self, action: str | None) -> MessageType | None:
        if not action:
            return None
        hits = [mt for mt in message_types() if action_of(mt) == action]
        claimed = [mt for mt in hits if self.profile.claims_cell(mt.key, "M")]
        return (claimed or hits or [None])[0]

    def receive(self, t: ex.Transfer) -> None:
        decision, result, mt = self.decide(t.data, t.envelope)
        if decision.status is None:
            return
        key = mt.key if mt else None
        slow = self._has("slow", key, "M")
        if slow:
            time.sleep(float(slow.params.get("seconds", 1)))
        now = dt.datetime.now().replace(microsecond=0)
        original_id = getattr(result, "msg_id", None) or t.envelope.id
        issue = getattr(result, "gen_date", None) or now.isoformat()
        if self._has("apprec-original-id", key, "M"):
            self._counter += 1
            original_id = f"INT-{self._counter:06d}"
        if self._has("apprec-issue-date", key, "M"):
            issue = now.isoformat()
        receiver_her = int(result.receiver) if is_ascii_digits(str(getattr(result, "receiver", ""))) else None
        me = self._party(receiver_her if receiver_her in self.profile.her_ids else self.profile.her_id)
        them = self._party(int(result.sender) if is_ascii_digits(str(getattr(result, "sender", "")))
                           else t.envelope.sender)
        apprec = build("AppRec", "1.0", sender=me, receiver=them, status=decision.status,
                       errors=decision.errors, original=(getattr(result, "type", None) or "UKJENT", issue,
                                                         original_id),
                       msg_id=ex.new_id(), gen_date=now, directory=PARTIES)
        if self._has("apprec-no-error-oid", key, "M"):
            apprec = apprec.replace(b' S="2.16.578.1.12.4.1.1.8221"', b"")
        apprec = self._sign(apprec, key, "M")
        env = ex.Envelope(ex.new_id(), self.profile.her_id, t.envelope.sender, ref=t.envelope.id,
                          action="APPREC")
        ex.put(self.root / ex.FROM_SYSTEM, env, apprec)

    # --- Sending -----------------------------------------------------------------------------------

    def produce(self, order: dict) -> None:
        key = order["message"]
        if not self.profile.claims_cell(key, "S") or self._has("not-produced", key, "S"):
            return  # the tester cannot make the system write this message: nothing arrives
        mt = next(m for m in message_types() if m.key == key)
        patient = person_from_json(order["patient"])
        if self._has("fnr-invalid", key, "S") and patient.ident:
            patient = people.patient_with(patient, ident=people.with_wrong_check_digits(patient.ident))
        kwargs = dict(mt.build_args)
        self._counter += 1
        if self._has("msgid-not-uuid", key, "S"):
            kwargs["msg_id"] = f"{self.profile.slug.upper()}-{self._counter:06d}"
        else:
            kwargs["msg_id"] = ex.new_id()
        sender = self._party(self.profile.services[0] if self.profile.services else self.profile.her_id)
        data = build(mt.family, mt.family_version, seed=int(order.get("seed", 1)), sender=sender,
                     receiver=self._party(int(order["receiver"])), patient=patient, directory=PARTIES,
                     **kwargs)
        data = self._sign(self._bend(data, key), key, "S")
        env = ex.Envelope(ex.new_id(), self.profile.her_id, int(order["receiver"]), ref=order["id"],
                          action=action_of(mt))
        ex.put(self.root / ex.FROM_SYSTEM, env, data)

    def _sign(self, data: bytes, key: str | None, direction: str) -> bytes:
        """Sign with the system's own certificate, unless a defect signs wrongly (or the system has none)."""
        if self.pki is None or self._has("unsigned", key, direction):
            return data
        with_cert = self._has("signs-with", key, direction)
        signed = (self.pki.sign_with(data, str(with_cert.params.get("cert", "expired"))) if with_cert
                  else self.pki.sign(data, self.profile.slug))
        return tamper(signed) if self._has("bad-signature", key, direction) else signed

    def _bend(self, data: bytes, key: str) -> bytes:
        """Apply the S defects that change the document itself."""
        from hub.xmlsafe import parse_bytes

        bends = [d for d in self.defects(key, "S") if d.kind in ("omit-content", "schema-error")]
        if not bends:
            return data
        root = parse_bytes(data).getroot()
        for d in bends:
            if d.kind == "omit-content":
                wanted = str(d.params.get("content"))
                for contents in CONTENT.values():
                    for c in contents:
                        if c.id == wanted:
                            for el in root.xpath(f"//*[local-name()='{c.element}']"):
                                el.getparent().remove(el)
            else:
                ns = etree.QName(root).namespace
                root.insert(0, etree.Element(f"{{{ns}}}Ukjent" if ns else "Ukjent"))
        return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
