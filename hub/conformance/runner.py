"""The conformance runner: executes a cell's cases against a system's endpoint and keeps the evidence.

One engine: what a system sends is judged by hub.validation's Validator (schema + business rules)
and, when those parts are present, hub.security and hub.ebxml; AppRecs are read with
hub.messages.apprec. A cell passes when every case that could run passed; cases needing a part
the hub does not have yet are recorded as `skip` and do not count.
"""

from __future__ import annotations

import hashlib
import importlib.util
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from lxml import etree

from hub.config import home
from hub.conformance import exchange as ex
from hub.conformance.catalogue import (
    MANUAL,
    Case,
    Expect,
    MessageType,
    action_of,
    cases_for,
    content_for,
    matrix_row,
)
from hub.conformance.evidence import CaseRecord, Evidence
from hub.conformance.grading import (
    SCHEMA_CHECKS,
    Answer,
    grade_apprec,
    grade_fasit,
    grade_order,
    grade_receivers,
    read_document,
)
from hub.conformance.profiles import Profile, slugify
from hub.conformance.simulated import (
    PARTIES,
    TEST_CENTRE,
    TEST_CENTRE_SERVICE,
    person_to_json,
    register_parties,
    system_parties,
)
from hub.conformance.trust import TEST_CENTRE as TEST_CENTRE_PARTY
from hub.conformance.trust import (
    NetworkPki,
    SignatureCheck,
    check_signature,
    is_signed,
    network_pki,
    strip_signature,
    tamper,
)
from hub.fixtures import people
from hub.fixtures.people import Party
from hub.paths import SCHEMAS_DIR
from hub.validation.validate import Validator

Progress = Callable[[str], None]

# Problems of the Validator sorted into the S checks (by rule id prefix, then by AppRec code).
_RULE_CHECK = (("msgid.", "msgid"), ("patient.", "patient"), ("receiver.", "addressing"),
               ("sender.", "addressing"), ("ident.her", "addressing"), ("xsd", "schema"), ("ns.", "schema"),
               ("type.namespace", "schema"))


# Battery variants that cannot carry a signature (not XML), and those signed with a special certificate.
UNSIGNABLE = frozenset({"not-well-formed", "hostile-dtd"})
# Battery variants sent twice, and the message sent: a rejected message twice (AppRec sheet #41).
DUPLICATE_OF = {"duplicate-rejected": "schema-invalid"}
SPECIAL_CERT = {"expired-certificate": "expired", "revoked-certificate": "revoked",
                "unknown-ca": "unknown-ca"}


def check_of(problem: object) -> str:
    rule = str(getattr(problem, "rule", ""))
    code = str(getattr(problem, "code", ""))
    if code == "T01":
        return "wellformed"
    for prefix, check in _RULE_CHECK:
        if rule.startswith(prefix):
            return check
    return "rules"


def available_parts() -> frozenset[str]:
    """The optional hub parts present in this tree: security (XMLDSig + certificate validation) and
    ebxml (the Msh). ebXML cases also need an ebXML transport: over the folder they are skipped."""
    parts = set()
    if importlib.util.find_spec("hub.security.xmldsig") and importlib.util.find_spec("hub.security.certs"):
        parts.add("security")
    if importlib.util.find_spec("hub.ebxml.msh"):
        parts.add("ebxml")
    return frozenset(parts)


def default_pki_dir() -> Path:
    return home() / "conformance" / "pki"


def ruleset_fingerprint() -> str:
    """Changes whenever a rule is added or changes code/severity: approvals then need re-testing."""
    from hub.validation.catalog import RULES

    text = "\n".join(f"{r.id}|{r.code}|{r.severity}" for r in sorted(RULES.values(), key=lambda r: r.id))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def message_fingerprint(mt: MessageType) -> str:
    """The definition of the message version: its schema file (ours) and its matrix mapping."""
    from hub.messages.families import by_key

    h = hashlib.sha256(f"{mt.key}|{mt.family}|{mt.family_version}".encode())
    fam = by_key(mt.family, mt.family_version)
    if fam and fam.own_xsd and (SCHEMAS_DIR / fam.own_xsd).exists():
        h.update((SCHEMAS_DIR / fam.own_xsd).read_bytes())
    return h.hexdigest()[:12]


def parse_endpoint(text: str) -> tuple[str, str | None]:
    """`folder:DIR` -> ("folder", DIR); `http(s)://...` -> ("http", url); `mailto:x` -> ("smtp", x)."""
    if text.startswith("folder:") and text[len("folder:"):].strip():
        return "folder", text[len("folder:"):].strip()
    if text.startswith(("http://", "https://")):
        return "http", text
    if text.startswith("mailto:"):
        return "smtp", text[len("mailto:"):]
    if text in ("folder", "http", "smtp"):
        return text, None
    raise ValueError(f"endpoint {text!r} is not folder:DIR, http(s)://... or mailto:...")


def this_month() -> str:
    d = date.today()
    return f"{d.month:02d}.{d.year % 100:02d}"


@dataclass
class CellResult:
    system: str
    message: str
    direction: str
    month: str
    run_id: int
    verdict: str  # pass | fail | incomplete
    cases: list[CaseRecord] = field(default_factory=list)

    @property
    def failed(self) -> list[CaseRecord]:
        return [c for c in self.cases if c.verdict in ("fail", "blocked")]


def _problems(result: object) -> list[dict]:
    return [p.to_dict() for p in getattr(result, "errors", [])]


class Runner:
    def __init__(self, evidence: Evidence, *, month: str | None = None, campaign: str | None = None,
                 timeout: float = 5.0, official: bool = False, seed: int = 1,
                 progress: Progress | None = None, pki: NetworkPki | None = None,
                 validator: Validator | None = None, quiet: float = 0.15, person: bool = False) -> None:
        self.evidence = evidence
        self.quiet = quiet  # how long silence is listened to (a vendor's system polls slower than ours)
        self.person = person  # a tester runs a vendor's own system: manual criteria are listed
        self.month = month or this_month()
        self.campaign = campaign
        self.timeout = timeout
        self.official = official
        self.seed = seed
        self.progress = progress or (lambda _label: None)
        # A Validator remembers MsgIds (msgid.unique): one per runner, i.e. per session.
        self.validator = validator or Validator()
        self.available = available_parts()
        self.parts = self.available  # of the cell being run (see run_cell)
        self._pki = pki
        self.ruleset = ruleset_fingerprint()
        self._rng = random.Random(seed)
        self.patient = people.random_person(random.Random(f"conformance|{seed}"), min_age=18)
        self.stranger = people.random_person(random.Random(f"stranger|{seed}"), min_age=18)

    @property
    def pki(self) -> NetworkPki:
        """The test network's PKI (created under HUB_HOME on first use when none was given)."""
        if self._pki is None:
            from hub.conformance.profiles import load_profiles

            self._pki = network_pki(default_pki_dir(), load_profiles())
        return self._pki

    # --- public ------------------------------------------------------------------------------------

    def cases(self, mt: MessageType, direction: str) -> list[Case]:
        """The cell's cases; the criteria only a person can judge where a person tests (a vendor's own
        system), not in a replay against simulated systems that have no screen."""
        out = cases_for(mt, direction, parts=self.parts, official=self.official)
        # an answer-key case needs a person entering the pack's case description
        return out if self.person else [c for c in out if c not in MANUAL and c.check != "fasit"]

    def run_cell(self, profile: Profile, exchange: ex.Exchange, mt: MessageType,
                 direction: str) -> CellResult:
        # A system whose profile names no signing certificate neither signs nor checks signatures: its
        # messages are sent unsigned and its security cases are skipped (said so in the evidence).
        self.parts = self.available - ({"security"} if not profile.certificate else set())
        run_id = self.evidence.start_run(
            system=profile.name, system_version=profile.version, category=profile.category,
            message=mt.key, direction=direction, month=self.month, transport=exchange.transport,
            ruleset=self.ruleset, message_fp=message_fingerprint(mt), campaign=self.campaign)
        cases = self.cases(mt, direction)
        patients = [person_to_json(self.patient)]
        if direction == "M" and any(c.file for c in cases):
            from hub.conformance.official import registered_patients

            patients += registered_patients(cases)  # as a tester registers a pack's patients first
        exchange.register_patients(patients)
        if direction == "S" and mt.is_apprec:
            records = self._apprec_s(run_id, profile, exchange, cases)
        elif direction == "S":
            records = self._sending(run_id, profile, exchange, mt, cases)
        else:
            records = self._mottak(run_id, profile, exchange, mt, cases)
        counted = [r for r in records if r.verdict not in ("skip", "manual")]
        verdict = "pass" if counted and all(r.verdict == "pass" for r in counted) else "fail"
        self.evidence.add_cases(run_id, records)
        self.evidence.finish_run(run_id, verdict)
        return CellResult(profile.name, mt.key, direction, self.month, run_id, verdict, records)

    # --- S -----------------------------------------------------------------------------------------

    def order_of(self, profile: Profile, mt: MessageType) -> dict:
        """What the tester must make the system send in a Sending cell (DIR/orders/<case>.json)."""
        p = self.patient
        return {"case": f"S.{slugify(mt.name)}-{mt.version}", "message": mt.name, "version": mt.version,
                "sender_her": profile.her_id, "receiver_her": TEST_CENTRE_SERVICE.her_id,
                "receiver_org_her": TEST_CENTRE.her_id,
                "receiver_name": f"{TEST_CENTRE.name} / {TEST_CENTRE_SERVICE.name}",
                "patient": {"fnr": p.ident, "name": f"{p.given_name} {p.family_name}"},
                # for the simulated systems: the catalogue key, the whole test person, the seed
                "key": mt.key, "person": person_to_json(p), "seed": self.seed}

    def _order(self, profile: Profile, exchange: ex.Exchange, mt: MessageType
               ) -> tuple[str, ex.Transfer | None, float]:
        oid = exchange.order(self.order_of(profile, mt))
        t0 = time.monotonic()
        got = exchange.wait({oid}, timeout=self.timeout)
        return oid, (got[0] if got else None), (time.monotonic() - t0) * 1000

    def _sending(self, run_id: int, profile: Profile, exchange: ex.Exchange, mt: MessageType,
                 cases: list[Case]) -> list[CaseRecord]:
        fasit = [c for c in cases if c.check == "fasit"]
        cases = [c for c in cases if c.check != "fasit"]
        _oid, got, ms = self._order(profile, exchange, mt)
        records = self._sending_cell(run_id, profile, exchange, mt, cases, got, ms)
        return records + [self._fasit(run_id, profile, exchange, mt, c) for c in fasit]

    def _fasit(self, run_id: int, profile: Profile, exchange: ex.Exchange, mt: MessageType,
               c: Case) -> CaseRecord:
        """One answer-key case: the tester enters the pack's case, the message is compared with its Fasit."""
        key = c.file.read_bytes() if c.file else b""
        facts = read_document(key).info
        patient = facts.patient if facts else None
        order = self.order_of(profile, mt) | {
            "case": c.id, "enter": f"case {c.id.rsplit('-', 1)[-1]} of the acceptance test description"
                                   f" (answer key {c.source})",
            "patient": {"fnr": next((i for _t, i in (patient.ids if patient else ())), None),
                        "name": patient.name if patient else None}}
        oid = exchange.order(order)
        got = exchange.wait({oid}, timeout=self.timeout)
        if not got:
            return CaseRecord(c.id, c.title, c.source, "fail", "the entered case's message",
                              f"nothing arrived within {self.timeout:g} s",
                              [{"code": "X99", "rule": "fasit.delivered", "criterion": c.source,
                                "text": "no message"}])
        self.evidence.add_exchange(run_id, c.id, "from-system", got[0].path.name, got[0].data)
        findings = grade_fasit(strip_signature(got[0].data), key)
        self.progress(c.id)
        return CaseRecord(c.id, c.title, c.source, "fail" if findings else "pass", "what the answer key has",
                          "; ".join(f.text for f in findings) or "as the answer key",
                          [f.to_dict() | {"criterion": c.source} for f in findings])

    def _sending_cell(self, run_id: int, profile: Profile, exchange: ex.Exchange, mt: MessageType,
                      cases: list[Case], got: ex.Transfer | None, ms: float) -> list[CaseRecord]:
        from hub.xmlsafe import parse_bytes

        records: list[CaseRecord] = []
        if got is None:
            for c in cases:
                skipped = self._skipped(c, exchange)
                verdict = "fail" if c.check == "delivered" else ("skip" if skipped else "blocked")
                verdict = "manual" if c.manual else verdict
                observed = {"fail": "nothing arrived", "blocked": "not judged: nothing arrived",
                            "skip": self._needs(c)}.get(verdict)
                expected = f"a message within {self.timeout:g} s" if c.check == "delivered" else None
                records.append(CaseRecord(c.id, c.title, c.source, verdict, expected, observed))
                self.progress(c.id)
            return records
        self.evidence.add_exchange(run_id, "S.delivered", "from-system", got.path.name, got.data)
        security = None
        if "security" in self.parts:
            security = check_signature(got.data, self.pki, [self.pki.identity(profile.slug).sign_cert])
        data = strip_signature(got.data)  # judged as the standard defines it, signature apart
        result = self.validator.validate_bytes(data, got.path.name)
        by_check: dict[str, list[dict]] = {}
        for p in getattr(result, "errors", []):
            by_check.setdefault(check_of(p), []).append(p.to_dict())
        try:
            root = parse_bytes(data).getroot()
        except Exception:  # noqa: BLE001 - not XML: the wellformed check says so
            root = None
        if exchange.transport != "folder":
            signer = getattr(exchange, "signers", {}).get(got.envelope.id)
            if got.envelope.action != action_of(mt):
                by_check.setdefault("ebxml", []).append(
                    {"code": "X99", "rule": "ebxml.action",
                     "text": f"Action {got.envelope.action!r}, expected {action_of(mt)!r}"})
            if not signer:
                by_check.setdefault("ebxml", []).append(
                    {"code": "X99", "rule": "ebxml.signature", "text": "the ebXML envelope is not signed"})
        if root is not None:
            order = grade_order(data, family=(mt.family, mt.family_version), fnr=self.patient.ident,
                                receiver_her=TEST_CENTRE_SERVICE.her_id)
            if order:
                by_check["order"] = [f.to_dict() for f in order]
        row = matrix_row(mt)
        if root is not None and row is not None and not result.errors and not row.matches(root):
            by_check.setdefault("row", []).append(
                {"code": "T10", "rule": "matrix.row", "text": f"not a {mt.name} message ({row.note[:80]})"})
        for c in cases:
            t0 = time.monotonic()
            if self._skipped(c, exchange) or c.manual:
                records.append(CaseRecord(c.id, c.title, c.source, "manual" if c.manual else "skip",
                                          observed="manual case" if c.manual else self._needs(c)))
                continue
            if c.check == "apprec-twice":
                rec = self._apprec_twice(run_id, c, profile, exchange, got)
            elif c.check == "delivered":
                rec = CaseRecord(c.id, c.title, c.source, "pass", f"within {self.timeout:g} s",
                                 f"{got.path.name} after {ms:.0f} ms", elapsed_ms=int(ms))
            elif c.check and c.check.startswith("content."):
                rec = self._content(c, mt, root, "wellformed" in by_check)
            elif c.check in ("signature", "certificate") and security is not None:
                rec = self._security_case(c, security)
            else:
                errs = by_check.get(c.check or "", [])
                if c.check != "wellformed" and "wellformed" in by_check:
                    rec = CaseRecord(c.id, c.title, c.source, "blocked", observed="not well-formed")
                else:
                    rec = CaseRecord(c.id, c.title, c.source, "fail" if errs else "pass", "no errors",
                                     "; ".join(f"{e['code']} {e['rule']}" for e in errs) or "no errors", errs)
            rec.elapsed_ms = rec.elapsed_ms or int((time.monotonic() - t0) * 1000)
            records.append(rec)
            self.progress(c.id)
        return records

    def _apprec_twice(self, run_id: int, c: Case, profile: Profile, exchange: ex.Exchange,
                      got: ex.Transfer) -> CaseRecord:
        """Sheet #13: two AppRecs (OK) on the system's message, different MsgIds, one OriginalMsgId. An
        AppRec is never answered; whether the second one is ignored on screen is the manual part."""
        from hub.fixtures.builder import build

        info = read_document(got.data).info
        if info is None or not info.msg_id:
            return CaseRecord(c.id, c.title, c.source, "blocked", observed="no readable MsgId in the message")
        original = (info.type or "UKJENT", info.gen_date or "", info.msg_id)
        sent = []
        for _ in range(2):
            data = build("AppRec", "1.0", sender=TEST_CENTRE_SERVICE, receiver=self._system_party(profile),
                         status="1", errors=[], original=original, msg_id=ex.new_id(), directory=PARTIES)
            if "security" in self.parts:
                data = self.pki.sign(data, TEST_CENTRE_PARTY)
            tid = exchange.send(data, sender=TEST_CENTRE.her_id, receiver=profile.her_id,
                                ref=got.envelope.id, action="APPREC")
            self.evidence.add_exchange(run_id, c.id, "to-system", f"{tid}.xml", data)
            sent.append(tid)
        answers = exchange.wait(set(sent), timeout=0.0, quiet=self.quiet)
        for t in answers:
            self.evidence.add_exchange(run_id, c.id, "from-system", t.path.name, t.data)
        if answers:
            return CaseRecord(c.id, c.title, c.source, "fail", "no answer", f"{len(answers)} answer(s)",
                              [{"code": "X99", "rule": "apprec.answered", "criterion": c.source,
                                "text": "an AppRec was answered (AppRecs are final)"}])
        return CaseRecord(c.id, c.title, c.source, "pass", "no answer", "no answer to either AppRec")

    @staticmethod
    def _security_case(c: Case, sc: SignatureCheck) -> CaseRecord:
        """S01 problems judge the signature case, S02/S03 the certificate case."""
        if c.check == "certificate" and sc.signer is None:
            return CaseRecord(c.id, c.title, c.source, "blocked", "a verified signature",
                              "no verified signature")
        exc = sc.signature if c.check == "signature" else sc.certificate
        if exc is None:
            who = sc.signer.subject.rfc4514_string() if sc.signer is not None else ""
            want = "verifies" if c.check == "signature" else "valid, unrevoked, registered for the sender"
            return CaseRecord(c.id, c.title, c.source, "pass", want, who)
        err = {"code": exc.apprec_code, "rule": f"security.{exc.kind}", "text": exc.message}
        return CaseRecord(c.id, c.title, c.source, "fail", "no errors", f"{exc.apprec_code} {exc.kind}",
                          [err])

    def _content(self, c: Case, mt: MessageType, root: etree._Element | None, broken: bool) -> CaseRecord:
        if broken or root is None:
            return CaseRecord(c.id, c.title, c.source, "blocked", observed="not well-formed")
        req = next(x for x in content_for(mt) if c.check == f"content.{x.id}")
        found = [e for e in root.xpath(req.xpath) if (e.text or "").strip() or len(e) or e.attrib]
        if found:
            return CaseRecord(c.id, c.title, c.source, "pass", req.xpath, f"{len(found)} found")
        err = {"code": "X99", "rule": f"content.{req.id}", "text": f"{req.title} is missing",
               "xpath": req.xpath}
        return CaseRecord(c.id, c.title, c.source, "fail", req.xpath, "missing", [err])

    # --- AppRec S: the system's AppRecs on a valid and a broken message ------------------------------

    def _apprec_s(self, run_id: int, profile: Profile, exchange: ex.Exchange,
                  cases: list[Case]) -> list[CaseRecord]:
        from hub.conformance.catalogue import message_types
        from hub.messages.apprec import parse_apprec

        receivable = [m for m in message_types() if profile.claims_cell(m.key, "M") and not m.is_apprec]
        mt = receivable[0] if receivable else next(m for m in message_types() if m.key == "Epikrise:1.0")
        target = self._system_party(profile)
        valid = self._variant(mt, "valid", target)
        broken = self._variant(mt, "schema-invalid", target)
        sent = {}
        for label, data in (("valid", valid), ("broken", broken)):
            tid = exchange.send(data, sender=TEST_CENTRE.her_id, receiver=profile.her_id,
                                action=action_of(mt))
            self.evidence.add_exchange(run_id, f"S.apprec.{label}", "to-system", f"{tid}.xml", data)
            sent[tid] = (label, data)
        got = exchange.wait(set(sent), timeout=self.timeout)
        answers = {t.envelope.ref: t for t in got}
        info = {}
        for tid, t in answers.items():
            self.evidence.add_exchange(run_id, f"S.apprec.{sent[tid][0]}", "from-system", t.path.name, t.data)
            info[sent[tid][0]] = (t, parse_apprec(t.data),
                                  self.validator.validate_bytes(strip_signature(t.data), t.path.name))
        originals = {label: self.validator.validate_bytes(strip_signature(data), "original.xml")
                     for label, data in sent.values()}
        records = []
        for c in cases:
            verdict, observed, errs = "pass", "", []
            if c.check == "apprec.delivered":
                missing = [lb for lb, _ in sent.values() if lb not in info]
                verdict, observed = ("fail", f"no AppRec for {', '.join(missing)}") if missing \
                    else ("pass", "2/2")
            elif not info:
                verdict, observed = "blocked", "no AppRec"
            else:
                for label, (_t, ar, vr) in info.items():
                    bad = self._apprec_check(c.check or "", label, ar, vr, originals[label])
                    if bad:
                        errs.append({"code": "X99", "rule": c.check, "text": f"{label}: {bad}"})
                verdict = "fail" if errs else "pass"
                observed = "; ".join(e["text"] for e in errs) or "as required"
            records.append(CaseRecord(c.id, c.title, c.source, verdict, None, observed, errs))
            self.progress(c.id)
        return records

    @staticmethod
    def _apprec_check(check: str, label: str, ar: object, vr: object, orig: object) -> str | None:
        g = getattr
        if check == "apprec.valid":
            errs = g(vr, "errors", [])
            return "; ".join(f"{p.code} {p.rule}" for p in errs) or None
        if check == "apprec.original-id":
            return None if g(ar, "original_msg_id", None) == g(orig, "msg_id", None) else \
                f"OriginalMsgId/Id {g(ar, 'original_msg_id', None)!r} != MsgId {g(orig, 'msg_id', None)!r}"
        if check == "apprec.msgtype":
            return None if g(ar, "original_msg_type", None) == g(orig, "type", None) else \
                f"OriginalMsgId/MsgType {g(ar, 'original_msg_type', None)!r} != {g(orig, 'type', None)!r}"
        if check == "apprec.issue-date":
            have, want = str(g(ar, "original_issue_date", "")), str(g(orig, "gen_date", ""))
            return None if have[:19] == want[:19] else f"IssueDate {have!r} != GenDate {want!r}"
        if check == "apprec.status":
            want = "1" if label == "valid" else "2"
            return None if str(g(ar, "status", "")) == want else f"status {g(ar, 'status', None)} != {want}"
        if check == "apprec.error":
            if label == "valid":
                return None
            errors = g(ar, "errors", [])
            if not errors:
                return "no error code"
            oids = {str(g(e, "system", g(e, "s", "2.16.578.1.12.4.1.1.8221"))) for e in errors}
            return None if oids == {"2.16.578.1.12.4.1.1.8221"} else f"error code system {sorted(oids)}"
        return None

    # --- M -----------------------------------------------------------------------------------------

    def _system_party(self, profile: Profile) -> Party:
        """The party messages to the system are addressed to: its first service, else its organisation.
        Registered here too, so that a system nobody simulates (a vendor's own) is in the directory."""
        register_parties(system_parties(profile))
        her = profile.services[0] if profile.services else profile.her_id
        return PARTIES[her]

    def _variant(self, mt: MessageType, variant: str, target: Party,
                 hosted: list[Party] | None = None) -> bytes:
        """The message a battery case sends: built by the fixture builder, then broken on purpose."""
        from hub.conformance.variants import make_variant

        data = make_variant(mt, variant, target, patient=self.patient, stranger=self.stranger,
                            seed=self._rng.randint(1, 10**6), hosted=hosted)
        if "security" not in self.parts or variant in UNSIGNABLE:
            return data
        # Signed as sent: the test centre signs the final bytes, so a broken message is broken
        # content with a good signature; the security variants sign wrongly on purpose.
        if variant in SPECIAL_CERT:
            return self.pki.sign_with(data, SPECIAL_CERT[variant])
        signed = self.pki.sign(data, TEST_CENTRE_PARTY)
        return tamper(signed) if variant == "bad-signature" else signed

    def _official(self, path: Path, profile: Profile) -> bytes:
        """A pack message re-addressed from the test centre to the system (fresh MsgId, defect kept);
        signed like every message the test centre sends, unless it cannot be read."""
        from hub.conformance.official import prepare

        hosted = [*profile.services, profile.her_id]  # a copy receiver in its organisation: the second
        data = prepare(path.read_bytes(), sender=(TEST_CENTRE.her_id, TEST_CENTRE_SERVICE.her_id),
                       receiver=(profile.her_id, hosted[0]), copy_in_org=hosted[min(1, len(hosted) - 1)])
        if "security" not in self.parts or data == path.read_bytes():
            return data
        return self.pki.sign(data, TEST_CENTRE_PARTY)

    def _mottak(self, run_id: int, profile: Profile, exchange: ex.Exchange, mt: MessageType,
                cases: list[Case]) -> list[CaseRecord]:
        from hub.conformance.variants import UNKNOWN_ORG

        target = self._system_party(profile)
        hosted = [PARTIES[h] for h in (*profile.services, profile.her_id)]
        plan: dict[str, list[str]] = {}  # case id -> transfer ids
        sent: dict[str, bytes] = {}  # case id -> the message sent
        runnable = []
        records: dict[str, CaseRecord] = {}
        for c in cases:
            if self._skipped(c, exchange) or c.manual:
                records[c.id] = CaseRecord(c.id, c.title, c.source, "skip" if not c.manual else "manual",
                                           c.expect.describe() if c.expect else None,
                                           self._needs(c) if c.requires else "manual case")
                continue
            variant = DUPLICATE_OF.get(c.variant or "", c.variant or "valid")
            data = self._official(c.file, profile) if c.file else self._variant(mt, variant, target, hosted)
            to = UNKNOWN_ORG.her_id if c.variant == "unknown-receiver" else profile.her_id
            copies = 2 if c.variant in DUPLICATE_OF or c.variant == "duplicate" else 1
            # A message to two receivers of the system's organisation arrives once for each (#11, #40).
            copies = len(c.receivers) or copies
            ids = []
            for _ in range(copies):
                tid = exchange.send(data, sender=TEST_CENTRE.her_id, receiver=to, action=action_of(mt))
                self.evidence.add_exchange(run_id, c.id, "to-system", f"{tid}.xml", data)
                ids.append(tid)
            plan[c.id], sent[c.id] = ids, data
            runnable.append(c)
        want = {tid for ids in plan.values() for tid in ids}
        # Cases that expect silence can only be judged by waiting: listen a moment longer.
        silent = any(c.expect and (c.expect.status is None or len(plan[c.id]) > 1 or c.receivers)
                     for c in runnable)
        expected_answers = {tid for c in runnable for tid in plan[c.id][:1]
                            if c.expect and c.expect.status is not None}
        got = exchange.wait(expected_answers, timeout=self.timeout, quiet=self.quiet if silent else 0.0)
        extra = exchange.wait(want - expected_answers, timeout=0.0)
        by_ref: dict[str, list[ex.Transfer]] = {}
        for t in got + extra:
            by_ref.setdefault(t.envelope.ref or "", []).append(t)
        strays = list(getattr(exchange, "strays", []))
        for t in strays:
            self.evidence.add_exchange(run_id, "unmatched", "from-system", t.path.name, t.data)
        for c in runnable:
            answers = [t for tid in plan[c.id] for t in by_ref.get(tid, [])]
            for t in answers:
                self.evidence.add_exchange(run_id, c.id, "from-system", t.path.name, t.data)
            rec = self._judge_receivers(c, answers, sent[c.id]) if c.receivers else \
                self._judge(c, c.expect or Expect("1"), answers, sent[c.id], exchange, strays)
            if c.requires == "ebxml" and rec.verdict == "pass":
                acked = getattr(exchange, "acknowledged_transfer", lambda _t: False)
                if not all(acked(t) for t in plan[c.id]):
                    rec = CaseRecord(c.id, c.title, c.source, "fail", "an ebMS Acknowledgment",
                                     "not acknowledged", [{"code": "X99", "rule": "ebxml.acknowledgment",
                                                           "text": "no valid ebMS Acknowledgment"}])
                else:
                    rec.observed = f"{rec.observed}; ebMS Acknowledgment"
            records[c.id] = rec
            self.progress(c.id)
        from hub.conformance.vendor_ebms import VendorEbmsExchange, run_ebms_cases

        extra = run_ebms_cases(self, run_id, profile, exchange, mt) \
            if isinstance(exchange, VendorEbmsExchange) else []
        return [records[c.id] for c in cases] + extra

    def _judge(self, c: Case, expect: Expect, answers: list[ex.Transfer], original: bytes,
               exchange: ex.Exchange, strays: list[ex.Transfer]) -> CaseRecord:
        """The case's AppRec(s) graded as an approval does (hub.conformance.grading)."""
        want = expect.describe()
        if expect.status is None:
            if answers:
                err = {"code": "X99", "rule": "apprec.unexpected", "criterion": c.source,
                       "text": "an AppRec was sent"}
                return CaseRecord(c.id, c.title, c.source, "fail", want, f"{len(answers)} AppRec(s)", [err])
            return CaseRecord(c.id, c.title, c.source, "pass", want, "no AppRec")
        if not answers:
            if not getattr(exchange, "envelope", True) and c.variant in UNSIGNABLE:
                # No envelope says who sent an unreadable file: it cannot be answered (sheet #34: KAN).
                return CaseRecord(c.id, c.title, c.source, "pass", f"{want}, or none",
                                  "no AppRec (without an envelope an unreadable file has no known sender)")
            observed = f"no AppRec within {self.timeout:g} s"
            errs = [{"code": "X99", "rule": "apprec.missing", "criterion": c.source,
                     "text": "no AppRec in time"}]
            docs = [read_document(t.data) for t in strays]
            ids = sorted({str(d.original_msg_id) for d in docs if d.is_apprec})
            if len(ids) < len(docs):
                observed += f"; {len(docs) - len(ids)} other file(s) from the system (not an AppRec)"
            if ids:
                observed += f"; AppRec(s) answering no message sent ({', '.join(ids)})"
                errs.append({"code": "X99", "rule": "apprec.original-id", "criterion": "apprec-sheet#2",
                             "text": "the OriginalMsgId/Id of AppRecs received is the MsgId of no message"
                                     f" sent: {', '.join(ids)}"})
            return CaseRecord(c.id, c.title, c.source, "fail", want, observed, errs)
        if len(answers) > 1:
            crit = "apprec-sheet#41" if expect.status == "2" else "apprec-sheet#12"
            return CaseRecord(c.id, c.title, c.source, "fail", want, f"{len(answers)} AppRecs",
                              [{"code": "X99", "rule": "apprec.final", "criterion": crit,
                                "text": "more than one AppRec (an AppRec is final; duplicates are ignored)"}])
        data = answers[0].data
        plain = strip_signature(data)
        schema = [p.to_dict() for p in self.validator.validate_bytes(plain, answers[0].path.name).errors
                  if check_of(p) in SCHEMA_CHECKS]
        sig = None
        if "security" in self.parts and is_signed(data):
            check = check_signature(data, self.pki)
            sig = check.signature.message if check.signature else None
        grade = grade_apprec(data, original, expect, schema_problems=schema, signature_problem=sig,
                             also=self._also(expect, original), criterion=c.source)
        errs = [f.to_dict() for f in grade.findings]
        observed = grade.observed + "".join(f"; {f.text}" for f in grade.findings
                                            if f.rule != "apprec.answer")
        return CaseRecord(c.id, c.title, c.source, "pass" if grade.passed else "fail", want, observed, errs)

    def _answer(self, t: ex.Transfer) -> Answer:
        """An AppRec with its schema and signature problems (the hub's Validator and hub.security)."""
        plain = strip_signature(t.data)
        schema = [p.to_dict() for p in self.validator.validate_bytes(plain, t.path.name).errors
                  if check_of(p) in SCHEMA_CHECKS]
        sig = None
        if "security" in self.parts and is_signed(t.data):
            check = check_signature(t.data, self.pki)
            sig = check.signature.message if check.signature else None
        return Answer(t.data, schema, sig)

    def _judge_receivers(self, c: Case, answers: list[ex.Transfer], original: bytes) -> CaseRecord:
        """A copy-receiver case: one AppRec per receiver the system hosts (grading.grade_receivers)."""
        expect = c.expect or Expect("1")
        hosted = " and ".join(c.receivers)
        want = f"{expect.describe()} from the {hosted} receiver" + ("s" if len(c.receivers) > 1 else "")
        grade = grade_receivers([self._answer(t) for t in answers], original, expect, c.receivers,
                                also=self._also(expect, original), criterion=c.source)
        observed = grade.observed if answers else f"no AppRec within {self.timeout:g} s"
        return CaseRecord(c.id, c.title, c.source, "pass" if grade.passed else "fail", want, observed,
                          [f.to_dict() for f in grade.findings])

    def _also(self, expect: Expect, original: bytes) -> tuple[str, ...]:
        """T02 when the message sent breaks its schema although the case is about something else."""
        if not expect.codes or {"T01", "T02"} & set(expect.codes):
            return ()
        problems = Validator().validate_bytes(strip_signature(original), "original.xml").errors
        return ("T02",) if any(check_of(p) == "schema" for p in problems) else ()

    def _skipped(self, c: Case, exchange: ex.Exchange) -> bool:
        if c.requires == "ebxml" and exchange.transport == "folder":
            return True  # the folder has no ebXML envelope to judge
        return bool(c.requires and c.requires not in self.parts)

    def _needs(self, c: Case) -> str:
        if c.requires == "ebxml":
            return "needs an ebXML transport (http/smtp)"
        if c.requires == "security" and "security" in self.available:
            return "the profile names no signing certificate"
        return f"needs hub.{c.requires}"
