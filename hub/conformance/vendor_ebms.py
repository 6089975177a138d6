"""A vendor's own message service under test over ebXML (endpoint `http(s)://…` or `mailto:…`).

The runner is the test centre's MSH (hub.conformance.ebms.EbmsExchange, the same one the simulated
systems are reached with), bound to the vendor by a CPA: one made from the vendor's CPP (its PartyInfo
as it wrote it), or from its profile and the certificate the test PKI issued to it, or one given whole.
The CPA decides channel, signing and encryption (hub.ebxml.cpa.plan_send); it is written to
`DIR/cpa.xml` for the vendor to install.

Besides the cell's own cases (AppRecs graded as always, and M.ebms-ack), the vendor's message service is
graded at the ebMS level: a message sent twice with one MessageId must be acknowledged twice and
delivered once (one AppRec), and an envelope altered after signing must get a MessageError with
SecurityFailure and not be delivered. Those verdicts are pure functions of what was observed
(`grade_duplicate`, `grade_tampered`); the exchange only transmits and records.
"""

from __future__ import annotations

import ssl
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosmtplib
from lxml import etree

from hub.codes import EbmsError
from hub.conformance import exchange as ex
from hub.conformance.catalogue import Case, MessageType, action_of
from hub.conformance.ebms import EbmsExchange
from hub.conformance.evidence import CaseRecord
from hub.conformance.plain_folder import ORDER_FIELDS, Announce
from hub.conformance.profiles import Profile
from hub.conformance.trust import NetworkPki
from hub.ebxml.corpus import CpaParty, Role, build_cpa, cpa_from_cpp
from hub.ebxml.cpa import CPPA_NS, DELIVERY_TYPES, Cpa, CpaRepository, PartyInfo, load_cpa
from hub.ebxml.msh import Outcome, Outgoing, Peer, Peers
from hub.ebxml.naming import APPREC, naming
from hub.security.pki import Identity
from hub.transport import NoChannel
from hub.transport.smtp import SmtpSender, mail_address
from hub.xmlsafe import parse_bytes

SECURITY_FAILURE = str(EbmsError.SECURITY_FAILURE.value)

EBMS_CASES = (
    Case("M.ebms-duplicate", "M", "The same ebXML message (one MessageId) twice: acknowledged both times,"
         " delivered once (one AppRec)", source="ebMS 2.0 §6.4.1 duplicate elimination", variant="valid",
         requires="ebxml"),
    Case("M.ebms-tampered", "M", "An envelope altered after signing: MessageError SecurityFailure, not"
         " delivered", source="ebMS 2.0 §4.1.5, HITS 1172 §5.9", variant="valid", requires="ebxml"),
)


# --- the agreement (pure) -------------------------------------------------------------------------


def counter_role(role: str) -> str:
    """HISD 1209 roles come in pairs: EPIKRISEsender / EPIKRISEreceiver."""
    if role.endswith("sender"):
        return role[: -len("sender")] + "receiver"
    if role.endswith("receiver"):
        return role[: -len("receiver")] + "sender"
    raise ValueError(f"role {role!r} is not a HISD 1209 …sender/…receiver role")


def roles_of_claims(profile: Profile, message_types: dict[str, MessageType]
                    ) -> list[tuple[str, str, list[str], list[str]]]:
    """The vendor's roles for its claimed cells: (role, service, can send, can receive)."""
    roles = []
    for c in profile.claims:
        mt = message_types.get(c.message)
        if mt is None or mt.is_apprec:
            continue
        n = naming(action_of(mt))
        if c.direction == "M":
            roles.append((n.to_role, n.service, [APPREC], [n.action]))
        else:
            roles.append((n.from_role, n.service, [n.action], [APPREC]))
    return [r for i, r in enumerate(roles) if r not in roles[:i]]


def mirrored_roles(vendor: PartyInfo) -> list[Role]:
    """The test centre's side of every role in the vendor's profile: what it sends, we receive, in the
    process the vendor's role cites (a CPA's two parties play one process), the Role's href naming the
    counter role where the vendor's names its own (`…#DIALOG_FORESPORSELreceiver` -> `…#…sender`)."""
    roles = []
    for r in vendor.roles:
        counter = counter_role(r.role)
        href = r.role_href[: -len(r.role)] + counter if r.role_href and r.role_href.endswith(r.role) else None
        roles.append(Role(counter, r.service, r.actions("receive"), r.actions("send"), r.process_spec, href))
    return roles


def agreement(cpa_id: str, test_centre: CpaParty, vendor_info: bytes | CpaParty, start: datetime,
              end: datetime) -> bytes:
    """A CPA between the test centre and the vendor. `vendor_info`: the vendor's CPP (its PartyInfo,
    SimpleParts and Packagings are taken as written; the test centre's roles mirror it) or a CpaParty made
    from its profile."""
    if isinstance(vendor_info, CpaParty):
        return http_sync(build_cpa(cpa_id, [test_centre, vendor_info], start, end))
    cpp = load_cpa(vendor_info, "the vendor's CPP")
    if len(cpp.parties) != 1 or not cpp.parties[0].her_id:
        raise ValueError("the vendor's CPP must have exactly one PartyInfo with a HER PartyId")
    test_centre.roles = [*mirrored_roles(cpp.parties[0])]
    return http_sync(cpa_from_cpp(cpa_id, test_centre, vendor_info, start, end))


def http_sync(cpa: bytes) -> bytes:
    """Channels over HTTP answer signals on the same exchange (syncReplyMode mshSignalsOnly), as the
    runner asks with SyncReply; channels over SMTP keep theirs."""
    root = parse_bytes(cpa).getroot()
    c = f"{{{CPPA_NS}}}"
    for pi in root.iter(f"{c}PartyInfo"):
        http = {t.get(f"{c}transportId") for t in pi.iter(f"{c}Transport")
                if (t.findtext(f"{c}TransportReceiver/{c}TransportProtocol") or "").upper() == "HTTP"}
        for dc in pi.iter(f"{c}DeliveryChannel"):
            mc = dc.find(f"{c}MessagingCharacteristics")
            if dc.get(f"{c}transportId") in http and mc is not None:
                mc.set(f"{c}syncReplyMode", "mshSignalsOnly")
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


# --- grading the ebMS cases (pure) ----------------------------------------------------------------


@dataclass
class Signal:
    """What came back for one transmission: an Acknowledgment, a MessageError (its codes), or nothing."""

    kind: str  # ack | error | none | invalid
    codes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # our Msh's findings on the signal itself

    def describe(self) -> str:
        if self.kind == "error":
            return f"MessageError {'/'.join(self.codes)}"
        if self.kind == "ack" and not self.problems:
            return "Acknowledgment"
        return self.kind if not self.problems else f"{self.kind} ({'; '.join(self.problems)})"


def grade_duplicate(signals: list[Signal], apprecs: int) -> list[str]:
    """Two transmissions of one message: each acknowledged (a valid, verified Acknowledgment), and the
    message delivered once, i.e. one AppRec."""
    found = [f"transmission {i}: {s.describe()}, not an Acknowledgment"
             for i, s in enumerate(signals, 1) if s.kind != "ack" or s.problems]
    if apprecs != 1:
        found.append(f"{apprecs} AppRecs: the message was delivered {apprecs} times, expected once")
    return found


def grade_tampered(signal: Signal, apprecs: int) -> list[str]:
    found = []
    if signal.kind != "error" or SECURITY_FAILURE not in signal.codes:
        found.append(f"{signal.describe()}, expected a MessageError with {SECURITY_FAILURE}")
    if apprecs:
        found.append(f"{apprecs} AppRec(s): the altered message was delivered")
    return found


def tamper_envelope(entity: bytes, conversation_id: str, replacement: str | None = None) -> bytes:
    """The package with its signed ConversationId changed to `replacement` (default: a new one; the SOAP
    part sent as plain text)."""
    old = conversation_id.encode()
    if entity.count(old) != 1:
        raise ValueError("the ConversationId is not in the SOAP part as plain text")
    return entity.replace(old, (replacement or str(uuid.uuid4())).encode())


# --- the runner's side (I/O) ----------------------------------------------------------------------


def test_centre_party(identity: Identity, her_id: int, url: str, roles: list | None = None) -> CpaParty:
    return CpaParty(str(her_id), "Testsenteret for meldingsutveksling", identity.sign_cert, identity.enc_cert,
                    url, roles or [])


def party_endpoint(party: PartyInfo) -> str | None:
    """Where a party of a CPA takes messages: the delivery endpoint of its default channel (else of any
    of its transports)."""
    tr = party.transport_of(party.channel(None))
    for t in [tr] if tr is not None else list(party.transports.values()):
        for uri, kind in t.endpoints:
            if kind in DELIVERY_TYPES and uri:
                return uri
    return None


def kind_of(endpoint: str) -> str:
    """http | smtp for an ebXML endpoint; anything else is a usage error."""
    if endpoint.lower().startswith(("http://", "https://")):
        return "http"
    if endpoint.lower().startswith("mailto:") and mail_address(endpoint).count("@") == 1:
        return "smtp"
    raise ValueError(f"endpoint {endpoint!r}: a vendor's ebXML endpoint is http(s)://… or mailto:ADDRESS")


def signal_of(outcome: Outcome) -> Signal:
    """A received answer, as our Msh saw it (verified, matched with what we sent)."""
    env = outcome.envelope
    problems = [f"{e.code} {e.description}" for e in outcome.errors]
    if env is None or not env.is_signal:
        return Signal("invalid", problems=problems or ["not an ebMS signal"])
    if env.error_list is not None:
        return Signal("error", [str(e.code) for e in env.error_list.errors], problems)
    return Signal("ack", problems=problems)


@dataclass(frozen=True)
class MailRelay:
    """Where the runner submits its mail (the vendor's SMTP server or a smarthost). STARTTLS whenever the
    server offers it; with `tls` (trust anchors) STARTTLS is required and the server's certificate checked."""

    host: str
    port: int = 25
    tls: ssl.SSLContext | None = None

    @classmethod
    def parse(cls, text: str, ca: Path | None = None) -> MailRelay:
        host, _, port = text.strip().rpartition(":") if ":" in text else (text.strip(), "", "25")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--smtp {text!r}: HOST or HOST:PORT (the SMTP server that takes the runner's"
                             " mail)")
        try:
            ctx = ssl.create_default_context(cafile=str(ca)) if ca is not None else None
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"--smtp-ca {ca}: no trust anchors to read ({exc})") from exc
        return cls(host.strip("[]"), int(port), ctx)


class VendorEbmsExchange(EbmsExchange):
    """EbmsExchange bound to a vendor's endpoint by a CPA (no peer register: the CPA decides).

    Over HTTP the vendor's signal comes back on the same exchange (SyncReply). Over SMTP (`mailto:`) the
    runner mails each package through `smtp` and asks for the Acknowledgment (AckRequested); the vendor
    mails its signals to the test centre's mailbox, where the runner's SMTP listener takes them."""

    def __init__(self, root: Path, pki: NetworkPki, profile: Profile, endpoint: str | None, *,
                 cpp: bytes | None = None, cpa: bytes | None = None, port: int = 0,
                 announce: Announce | None = None, smtp: MailRelay | None = None,
                 mailbox: str | None = None) -> None:
        from hub.conformance.catalogue import message_types
        from hub.conformance.simulated import TEST_CENTRE, TEST_CENTRE_SERVICE
        from hub.conformance.variants import UNKNOWN_ORG

        binds = (f"HER {TEST_CENTRE.her_id} (the test centre) and HER {profile.her_id} ({profile.name})")
        given = load_cpa(cpa, "the CPA given with --cpa") if cpa is not None else None
        if given is not None:
            # a CPA given whole decides both endpoints: the vendor's, and where the runner listens
            vendor_party, ours_party = given.party(str(profile.her_id)), given.party(str(TEST_CENTRE.her_id))
            if vendor_party is None or ours_party is None:
                raise ValueError(f"CPA {given.cpa_id} does not bind {binds}: it is not an agreement between"
                                 " the test centre and this system")
            theirs, ours = party_endpoint(vendor_party), party_endpoint(ours_party)
            if not theirs or not ours:
                raise ValueError(f"CPA {given.cpa_id} names no delivery endpoint for"
                                 f" HER {profile.her_id if not theirs else TEST_CENTRE.her_id}")
            if endpoint and endpoint != theirs:
                raise ValueError(f"--endpoint {endpoint} is not the system's endpoint in CPA {given.cpa_id}"
                                 f" ({theirs}); the CPA decides: leave --endpoint out or make them agree")
            endpoint = theirs
            listen = kind_of(ours)
            if listen == "smtp":
                if mailbox and mail_address(mailbox).lower() != mail_address(ours).lower():
                    raise ValueError(f"--mailbox {mailbox} is not the test centre's endpoint in CPA"
                                     f" {given.cpa_id} ({ours})")
                mailbox = mail_address(ours)
        if given is None and cpp is not None and not endpoint:
            written = load_cpa(cpp, "the vendor's CPP")
            endpoint = party_endpoint(written.parties[0]) if written.parties else None
        if not endpoint:
            raise ValueError(f"{profile.name}: no ebXML endpoint (--endpoint http(s)://… or mailto:…, or a"
                             " CPA with --cpa)")
        sends = kind_of(endpoint)
        if given is None:
            listen = sends
        elif listen != sends:
            raise ValueError(f"CPA {given.cpa_id}: the system takes messages over {sends.upper()} but the"
                             f" test centre's endpoint is {listen.upper()}: the runner speaks one transport"
                             " with a system (both endpoints mailto:, or both http(s)://)")
        if sends == "smtp" and smtp is None:
            raise ValueError(f"endpoint {endpoint}: name the SMTP server that takes the runner's mail for it"
                             " (--smtp HOST:PORT, the system's mail server or a smarthost)")
        # `port`: where the test centre's MSH listens (0: any; a made CPA then changes every run over HTTP)
        super().__init__(root, pki, [TEST_CENTRE.her_id, TEST_CENTRE_SERVICE.her_id], listen, port,
                         mail_address(mailbox) if mailbox else None)
        # from here on `transport` is how we send: signals come synchronously over HTTP, by mail over SMTP
        self.transport = sends
        self._signals: dict[str, list[Signal]] = {}  # MessageId of ours -> signals received for it
        if smtp is not None:
            self.gateway.smtp = SmtpSender(smtp.host, smtp.port, self.mailbox, tls_context=smtp.tls,
                                           require_tls=smtp.tls is not None)
        try:  # the listener is up: a bad agreement must not leave it behind
            root.mkdir(parents=True, exist_ok=True)
            self.profile = profile
            now = datetime.now(UTC)
            if cpa is None:
                ours_cpa = test_centre_party(self.identity, TEST_CENTRE.her_id, self.url)
                if cpp is not None:
                    vendor: bytes | CpaParty = cpp
                else:
                    if not profile.certificate:
                        raise ValueError(f"{profile.name}: without a CPP the profile must name a certificate")
                    vid = pki.identity(profile.slug)
                    vroles = roles_of_claims(profile, {m.key: m for m in message_types()})
                    vendor = CpaParty(str(profile.her_id), profile.name, vid.sign_cert, vid.enc_cert,
                                      endpoint, vroles)
                    ours_cpa.roles = [(counter_role(r), s, rec, snd) for r, s, snd, rec in vroles]
                cpa = agreement(f"conformance_{TEST_CENTRE.her_id}_{profile.her_id}", ours_cpa, vendor,
                                now - timedelta(days=1), now + timedelta(days=30))
            self.cpa: Cpa = given or load_cpa(cpa, "the conformance CPA")
            v = self.cpa.party(str(profile.her_id))
            if v is None or self.cpa.party(str(TEST_CENTRE.her_id)) is None:
                raise ValueError(f"CPA {self.cpa.cpa_id} does not bind {binds}")
            if given is None and cpp is not None and (theirs := party_endpoint(v)) and theirs != endpoint:
                raise ValueError(f"--endpoint {endpoint} is not the endpoint in the system's CPP ({theirs}):"
                                 " the CPA made from it would send elsewhere; make them agree")
            ex.atomic_write(root / "cpa.xml", cpa)
            self.msh.cpas = CpaRepository([self.cpa])
            sign, enc = v.signing_certificate(), v.encryption_certificate()
            # the battery's unknown receiver travels to the vendor's endpoint, outside any CPA
            if sign is not None and enc is not None:
                unknown = str(UNKNOWN_ORG.her_id)
                self.msh.peers = Peers({unknown: Peer(unknown, sign, enc, endpoint)})
        except BaseException:
            self.close()
            raise
        self.endpoint = endpoint
        self.announce = announce or (lambda _order, _path: None)

    def order(self, order: dict) -> str:
        """The order for the system (test setup on the folder), and told to the person at the system."""
        oid = super().order(order)
        shown = {k: order[k] for k in ORDER_FIELDS if k in order}
        self.announce(shown | {"send_to": f"{self.url} (ebXML, CPA {self.cpa.cpa_id})"},
                      self.root / ex.ORDERS / f"{oid}.json")
        return oid

    def _record(self, outcome: Outcome) -> None:
        env = outcome.envelope
        if env is not None and env.is_signal:
            with self._lock:
                self._signals.setdefault(env.header.ref_to_message_id or "", []).append(signal_of(outcome))

    async def on_mail(self, data: bytes, mail_from: str, rcpts: list[str]) -> None:
        self._record(await self.gateway.on_mail(data, mail_from, rcpts))

    def _mailed(self, exc: Exception) -> NoChannel:
        relay = self.gateway.smtp
        where = f"{relay.host}:{relay.port}" if relay else "no SMTP server"
        return NoChannel(f"the mail to {self.endpoint} could not be submitted to {where}: {exc}"
                         f" ({type(exc).__name__}; check --smtp and --smtp-ca)")

    def post(self, data: bytes, **kw: Any) -> str:
        """As EbmsExchange.post; a mail server that refuses the runner's mail ends the run (exit 2)."""
        try:
            return super().post(data, **kw)
        except (aiosmtplib.SMTPException, OSError) as exc:
            if self.transport != "smtp":
                raise
            raise self._mailed(exc) from exc

    def _transmit(self, entity: bytes, message_id: str) -> Signal:
        """Send once; the signal for it (handed to our Msh: verified, matched), or none in time. Over
        HTTP it is the synchronous reply; over SMTP the next signal mailed back for `message_id`."""
        from hub.transport import transmit

        with self._lock:
            before = len(self._signals.get(message_id, []))
        try:
            reply = self.loop.run(transmit(entity, self.endpoint, smtp=self.gateway.smtp))
        except (aiosmtplib.SMTPException, OSError) as exc:
            if self.transport != "smtp":
                raise
            raise self._mailed(exc) from exc
        if self.transport == "http":
            if reply is None or not reply.entity:
                return Signal("none")
            return signal_of(self.msh.receive(reply.entity, datetime.now(UTC), transport="http"))
        deadline = time.monotonic() + self.ack_wait
        while time.monotonic() < deadline:
            with self._lock:
                got = self._signals.get(message_id, [])
                if len(got) > before:
                    return got[before]
            time.sleep(0.01)
        return Signal("none")

    def prepare(self, data: bytes, sender: int, receiver: int, action: str) -> tuple[str, Outgoing]:
        tid = ex.new_id()
        out = self.msh.send(from_her=str(sender), to_her=str(receiver), payload=data, now=datetime.now(UTC),
                            message_type=action, conversation_id=tid, sync_reply=self.transport == "http",
                            soap_base64=False)
        self.message_ids[tid] = out.message_id
        return tid, out

    def send_twice(self, data: bytes, *, sender: int, receiver: int, action: str) -> tuple[str, list[Signal]]:
        """One package twice, the second once the first is answered (or its wait is over), as a sender's
        retry comes."""
        tid, out = self.prepare(data, sender, receiver, action)
        return tid, [self._transmit(out.data, out.message_id) for _ in range(2)]

    def send_tampered(self, data: bytes, *, sender: int, receiver: int, action: str
                      ) -> tuple[set[str], Signal]:
        """The package with its ConversationId altered after signing. Returns both conversations: a
        system that delivers the altered message anyway answers in the altered one."""
        tid, out = self.prepare(data, sender, receiver, action)
        altered = ex.new_id()
        return {tid, altered}, self._transmit(tamper_envelope(out.data, out.conversation_id, altered),
                                              out.message_id)


def run_ebms_cases(runner: object, run_id: int, profile: Profile, exchange: VendorEbmsExchange,
                   mt: MessageType) -> list[CaseRecord]:
    """The ebMS-level cases of a Mottak cell against a vendor's message service."""
    from hub.conformance.simulated import TEST_CENTRE

    r = runner
    target = r._system_party(profile)  # type: ignore[attr-defined]
    action = action_of(mt)
    records = []
    to = {"sender": TEST_CENTRE.her_id, "receiver": profile.her_id, "action": action}
    dup_tid, signals = exchange.send_twice(r._variant(mt, "valid", target), **to)  # type: ignore[attr-defined]
    bad_tids, signal = exchange.send_tampered(r._variant(mt, "valid", target), **to)  # type: ignore[attr-defined]
    got = exchange.wait({dup_tid}, timeout=r.timeout, quiet=r.quiet)  # type: ignore[attr-defined]
    got += exchange.wait(bad_tids, timeout=0.0)
    by_ref: dict[str, int] = {}
    for t in got:
        by_ref[t.envelope.ref or ""] = by_ref.get(t.envelope.ref or "", 0) + 1
        r.evidence.add_exchange(run_id, "M.ebms", "from-system", t.path.name, t.data)  # type: ignore[attr-defined]
    bad = sum(by_ref.get(t, 0) for t in bad_tids)  # in the conversation sent, or in the altered one
    for case, findings, expected, observed in (
        (EBMS_CASES[0], grade_duplicate(signals, by_ref.get(dup_tid, 0)), "2 Acknowledgments, 1 AppRec",
         f"{', '.join(s.describe() for s in signals)}; {by_ref.get(dup_tid, 0)} AppRec(s)"),
        (EBMS_CASES[1], grade_tampered(signal, bad), f"MessageError {SECURITY_FAILURE}",
         f"{signal.describe()}; {bad} AppRec(s)"),
    ):
        errs = [{"code": "X99", "rule": case.id.replace("M.", "ebxml."), "criterion": case.source, "text": f}
                for f in findings]
        records.append(CaseRecord(case.id, case.title, case.source, "fail" if findings else "pass", expected,
                                  observed, errs))
        r.progress(case.id)  # type: ignore[attr-defined]
    return records
