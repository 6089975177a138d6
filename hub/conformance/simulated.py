"""Simulated vendor systems: real endpoints whose behaviour is their own profile, defects included.

A simulated system watches its exchange folder (hub.conformance.exchange) in a thread. It judges what it
receives with its own code (hub.conformance.simkit: xmlschema against the schemas, its own fødselsnummer
and patient checks, signatures made and verified with signxml, its own AppRec), never with hub.validation: a
bug in the hub's rules then shows as a disagreement between the hub and the system instead of both
agreeing. The fixture builder writes what it sends. What it does wrong comes only from the
`[[defect]]` tables of its profile that are active in the release being tested (the campaign month).
Nothing here reads a matrix.

Defect kinds (the vocabulary profiles may use):
  Mottak (how it answers what it receives)
    accepts           codes=[...]  answers OK where it should reject with one of these codes
    wrong-code        code=, answers=  rejects with `answers` where `code` is right
    silent            codes=[...]  sends no AppRec where it should reject with one of these codes
    no-patient-check               accepts patients it does not know (should be E35)
    ignores           codes=[...]  does not make these checks at all (e.g. E30/E31/E36: takes a named
                                   patient without a usable FNR); other problems are still answered
    answers-duplicates             answers a duplicate MsgId again instead of ignoring it
    copy-as-primary                answers as the primary receiver (mirrors it, Role REQ/SPR) where it
                                   is the copy receiver
    one-apprec                     one AppRec per message, as its first receiver, where two of its
                                   receivers are addressed (primary and copy in one organisation)
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

from hub.conformance import exchange as ex
from hub.conformance import simkit
from hub.conformance.catalogue import CONTENT, MessageType, action_of, message_types
from hub.conformance.profiles import Defect, Profile
from hub.conformance.trust import NetworkPki, tamper
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.fixtures.people import Party, Person

DEFECT_KINDS = frozenset({
    "accepts", "wrong-code", "silent", "no-patient-check", "ignores", "answers-duplicates", "not-supported",
    "slow", "copy-as-primary", "one-apprec",
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


def patient_ids(data: bytes) -> set[str]:
    """The patient identity numbers a message carries (own-root OffId or MsgHead Ident/Id)."""
    return simkit.patient_idents(data)


@dataclass
class Decision:
    status: str | None  # None: no AppRec
    errors: list[tuple[str, str]] = field(default_factory=list)
    # The receiver of the message it answers as (primary or copy receiver, as written), None: the
    # message's receiver, or the envelope's where the message cannot be read.
    party: simkit.Party | None = None
    copy: bool = False


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

    def _message_type(self, doc: simkit.Doc) -> MessageType | None:
        """Which of the types this system claims to receive the message is (matrix row if several)."""
        from hub.messages.families import ELIN_K_MESSAGES

        fam = doc.family
        if fam is None:
            return None
        hits = [mt for mt in message_types() if mt.family == fam.name and mt.family_version == fam.version]
        if len(hits) > 1:
            hits = [mt for mt in hits if (mt.name, mt.version) not in ELIN_K_MESSAGES
                    or ELIN_K_MESSAGES[(mt.name, mt.version)].matches(doc.root)] or hits
        claimed = [mt for mt in hits if self.profile.claims_cell(mt.key, "M")]
        return (claimed or hits or [None])[0]

    # --- Mottak ------------------------------------------------------------------------------------

    def decide(self, data: bytes, env: ex.Envelope
               ) -> tuple[list[Decision], simkit.Doc | None, MessageType | None]:
        """What a correct receiver answers, one AppRec per receiver of ours the message names (primary,
        copy: AppRec sheet #7-#11), then bent by this release's defects. [] : no AppRec."""
        try:
            doc: simkit.Doc | None = simkit.read(simkit.without_signature(simkit.parse(data)))
        except simkit.Unreadable:
            doc = None
        # Its own signature check (signxml), not the hub's: content signed by nobody we trust, or
        # changed after signing, is not read further.
        sig = simkit.signature_code(data, self.pki.dir) if self.pki and doc is not None \
            and simkit.is_signed(data) else None
        if doc is not None and doc.carrier == "apprec":
            return [], doc, None  # AppRecs are consumed, never answered
        mt = self._message_type(doc) if doc is not None else None
        if mt is None:  # unreadable: the envelope still says which service the message was sent to
            mt = self._message_type_of_action(env.action)
        key = mt.key if mt else None
        # A repeated MsgId is the duplicate the sheet (#12) says to ignore, not an E10 error.
        if doc is not None and doc.msg_id and doc.msg_id in self._seen_msg_ids \
                and not self._has("answers-duplicates", key, "M"):
            return [], doc, mt
        checked = self._check(doc, env, mt)
        if checked is None:
            return [], doc, mt  # unknown on both levels: not ours to answer
        out = []
        for party, copy, codes in checked:
            for d in self.defects(key, "M"):
                if d.kind == "ignores":
                    codes = [c for c in codes if c not in d.params.get("codes", [])]
            if sig:
                codes = [sig]
            decision = Decision("2", [(c, simkit.ERROR_TEXTS.get(c, c)) for c in codes]) if codes \
                else Decision("1")
            for d in self.defects(key, "M"):
                if d.kind == "accepts" and set(codes) & set(d.params.get("codes", [])):
                    decision = Decision("1")
                elif d.kind == "wrong-code" and d.params.get("code") in codes:
                    wrong = str(d.params["answers"])
                    decision = Decision("2", [(wrong, simkit.ERROR_TEXTS.get(wrong, wrong))])
                elif d.kind == "silent" and set(codes) & set(d.params.get("codes", [])):
                    decision = Decision(None)
            decision.party, decision.copy = party, copy
            if copy and self._has("copy-as-primary", key, "M"):
                decision.party, decision.copy = doc.receiver if doc else None, False
            if decision.status is not None:
                out.append(decision)
        if len(out) > 1 and self._has("one-apprec", key, "M"):
            out = out[:1]
        if out and doc is not None and doc.msg_id:  # a repeat is a duplicate (#41)
            self._seen_msg_ids.add(doc.msg_id)
        return out, doc, mt

    def _check(self, doc: simkit.Doc | None, env: ex.Envelope, mt: MessageType | None
               ) -> list[tuple[simkit.Party | None, bool, list[str]]] | None:
        """The receiver's own checks, in the order it reads a message: (the receiver answering, whether
        it is a copy receiver, its codes) for each receiver of ours; None: not for us, no answer."""
        if doc is None:
            return [(None, False, ["T01"])]
        key = mt.key if mt else None
        if doc.family is None:
            return [(doc.receiver, False, ["T10"])]  # a namespace (standard or version) it does not know
        if mt is None or not self.profile.claims_cell(mt.key, "M") or self._has("not-supported", key, "M"):
            return [(doc.receiver, False, ["T10"])]
        # A readable message that breaks its schema is still read for the rest: one code per error found
        # (the FNR a schema requires is missing: T02 for the schema, E30 for the patient).
        common = ["T02"] if simkit.schema_errors(doc) else []
        if not simkit.msgid_ok(doc.msg_id):
            common.append("E10")
        if doc.sender is None or not doc.sender.her_ids:
            common.append("X99")  # nobody to answer to: the sender is not identified
        mine = {str(h) for h in self.profile.her_ids}
        # The receivers the message names in our organisation (its level-1 HER-id is ours): each one
        # answers for itself; one we do not have there is E21 (sheet #20, #35-#40).
        named = [(p, copy) for p, copy in [(doc.receiver, False), *((c, True) for c in doc.copies)]
                 if p is not None and p.her in mine]
        if not named:
            if env.receiver not in self.profile.her_ids:
                return None
            named = [(doc.receiver, False)]  # sent to us, addressed to nobody we are
        out = []
        for party, copy in named:
            codes = list(common)
            if party is None or not party.her_ids or not set(party.her_ids) <= mine:
                codes.append("E21")
            check_known = not codes and not self._has("no-patient-check", key, "M")
            codes += simkit.patient_codes(doc.patient, self._patients() if check_known else None)
            out.append((party, copy, codes))
        return out

    def _message_type_of_action(self, action: str | None) -> MessageType | None:
        if not action:
            return None
        hits = [mt for mt in message_types() if action_of(mt) == action]
        claimed = [mt for mt in hits if self.profile.claims_cell(mt.key, "M")]
        return (claimed or hits or [None])[0]

    def receive(self, t: ex.Transfer) -> None:
        decisions, doc, mt = self.decide(t.data, t.envelope)
        if not decisions:
            return
        key = mt.key if mt else None
        slow = self._has("slow", key, "M")
        if slow:
            time.sleep(float(slow.params.get("seconds", 1)))
        for decision in decisions:
            self._answer(t, decision, doc, key)

    def _answer(self, t: ex.Transfer, decision: Decision, doc: simkit.Doc | None, key: str | None) -> None:
        now = dt.datetime.now().replace(microsecond=0)
        original_id = (doc.msg_id if doc else "") or t.envelope.id
        issue = (doc.gen_date if doc else "") or now.isoformat()
        if self._has("apprec-original-id", key, "M"):
            self._counter += 1
            original_id = f"INT-{self._counter:06d}"
        if self._has("apprec-issue-date", key, "M"):
            issue = now.isoformat()
        # Addresses mirrored: we answer as the receiver of ours the message named (primary or copy), to
        # its sender, with every identifier they were written with; from the envelope when unreadable.
        me = decision.party if decision.party is not None and decision.party.her_ids else \
            self._written(t.envelope.receiver if t.envelope.receiver in self.profile.her_ids
                          else self.profile.her_id)
        them = doc.sender if doc and doc.sender and doc.sender.her_ids else self._written(t.envelope.sender)
        role = "COP" if decision.copy else (doc.receiver_role if doc else "SPR")
        apprec = simkit.apprec(
            sender=me, receiver=them, status=decision.status or "1", errors=[c for c, _ in decision.errors],
            original_type=(doc.msg_type if doc else "") or (t.envelope.action or ""),
            original_type_dn=doc.msg_type_dn if doc else "", issue_date=issue, original_id=original_id,
            error_oid=not self._has("apprec-no-error-oid", key, "M"), gen_date=now, roles=(role, "RECEIVER"))
        apprec = self._sign(apprec, key, "M")
        env = ex.Envelope(ex.new_id(), self.profile.her_id, t.envelope.sender, ref=t.envelope.id,
                          action="APPREC")
        ex.put(self.root / ex.FROM_SYSTEM, env, apprec)

    def _written(self, her: int | None) -> simkit.Party:
        """A party as the test network's directory names it (organisation, and service if `her` is one)."""
        p = self._party(her)
        if p.parent_her_id is not None:
            org = self._party(p.parent_her_id)
            return simkit.Party(org.name, str(org.her_id), p.name, str(p.her_id))
        return simkit.Party(p.name, str(p.her_id) if p.her_id else "")

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
        if with_cert:
            cert, private = self.pki.special(str(with_cert.params.get("cert", "expired")))
        else:
            me = self.pki.identity(self.profile.slug)
            cert, private = me.sign_cert, me.sign_key
        signed = simkit.sign(data, private, cert)  # signxml: not the hub's signing code
        return tamper(signed) if self._has("bad-signature", key, direction) else signed

    def _bend(self, data: bytes, key: str) -> bytes:
        """Apply the S defects that change the document itself."""
        bends = [d for d in self.defects(key, "S") if d.kind in ("omit-content", "schema-error")]
        if not bends:
            return data
        root = simkit.parse(data)
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
