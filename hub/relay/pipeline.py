"""The relay's stages as pure decisions: (message facts, context) -> what to do next.

Nothing here touches a socket, a file or the store. The worker (hub.relay.worker) gathers the facts,
asks these functions, and applies the answers through the store's transition API; the lifecycle
(hub.relay.lifecycle) alone decides which state an event leads to.

Who a message is from, as far as the transport knows, is recorded at intake in the message's
`sender_her` (the authenticated local system, or the ebXML From party) and `receiver_her` (the ebXML
To party; none for local submissions). The checks below compare those with what the document itself
says; after the `validated` event the two columns hold the document's own (deepest) parties.
"""

from __future__ import annotations

import errno
import socket
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from hub.relay.lifecycle import Event, RetryPolicy
from hub.relay.register import DEPT_ID_TYPES, Party, Register


class Channel(StrEnum):
    FOLDER = "folder"  # a local system's watched folder
    SUBMIT = "submit"  # a local system's HTTP submit API call
    SMTP = "smtp"  # ebXML over SMTP from a network peer
    HTTP = "http"  # ebXML over HTTP from a network peer
    HUB = "hub"  # composed by the hub itself (answers)


LOCAL_CHANNELS = frozenset({Channel.FOLDER, Channel.SUBMIT})
NETWORK_CHANNELS = frozenset({Channel.SMTP, Channel.HTTP})

APPREC_TYPE = "APPREC"


# --- facts ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One problem found in a document: AppRec error code (8221), our rule id and a text."""

    code: str
    rule: str
    text: str
    # the check could not be made now (e.g. the CRL is unreachable): not a verdict on the document
    transient: bool = False


@dataclass(frozen=True)
class Org:
    """A party as an organisation number plus department identifiers, for the register's by_org()."""

    org_no: str
    dept_ids: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return " + ".join([f"ENH {self.org_no}", *(f"{t} {v}" for t, v in self.dept_ids)])


@dataclass(frozen=True)
class Facts:
    """What the relay needs to know about one KITH document (from validation and AppRec parsing)."""

    family: str | None = None
    version: str | None = None
    msg_type: str | None = None
    msg_id: str | None = None
    gen_date: datetime | None = None
    sender_her: int | None = None  # deepest level of the sending communication party
    receiver_her: int | None = None  # deepest level of the receiving communication party
    # a party named without a HER-id (own-root families: Svarrapport, Rekvisisjon, ...): its
    # organisation number (ENH) and its department's identifiers ((type, id): RSH, LAV, ...)
    sender_org: Org | None = None
    receiver_org: Org | None = None
    # how the receiver was found when the document names no HER-id for it (resolve_parties)
    receiver_via: str | None = None
    errors: tuple[Finding, ...] = ()
    # checks that could not be made now (revocation status unknown): decided later, never answered
    pending: tuple[Finding, ...] = ()
    # an AppRec only:
    original_msg_id: str | None = None
    apprec_status: str | None = None  # 8258: 1 OK, 2 Avvist, 3 OK with errors in part
    # the validation result these facts came from (what an answering AppRec is built from)
    source: object | None = field(default=None, compare=False, repr=False)

    @property
    def is_apprec(self) -> bool:
        return (self.msg_type or "").upper() == APPREC_TYPE or self.family == "AppRec"

    @property
    def valid(self) -> bool:
        return not self.errors


class _ResultLike(Protocol):
    family: str | None
    version: str | None
    type: str | None
    sender: str | None
    receiver: str | None
    msg_id: str | None
    gen_date: str | None

    @property
    def errors(self) -> Sequence[object]: ...


def _int(v: object) -> int | None:
    try:
        return int(str(v).strip()) if v is not None and str(v).strip() else None
    except ValueError:
        return None


def parse_kith_time(text: str | None) -> datetime | None:
    """GenDate as KITH writes it (local time without zone, or with Z/offset); naive means UTC here."""
    if not text:
        return None
    from datetime import UTC

    t = text.strip()
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _org(party: object) -> Org | None:
    """The organisation number and department ids of a hub.messages.info.Party (duck-typed)."""
    org_no = getattr(party, "org_no", None)
    if not org_no:
        return None
    depts = tuple((t, v) for t, v in getattr(party, "dept_ids", ()) if t in DEPT_ID_TYPES and v)
    return Org(str(org_no), depts)


def facts_from_result(
    result: _ResultLike, *, original_msg_id: str | None = None, apprec_status: str | None = None
) -> Facts:
    """Facts from a hub.validation ValidationResult (duck-typed) and, for an AppRec, its parsed parts."""
    errors = tuple(
        Finding(str(getattr(p, "code", "X99")), str(getattr(p, "rule", "")), str(getattr(p, "text", "")))
        for p in result.errors
    )
    info = getattr(result, "info", None)
    return Facts(
        family=result.family,
        version=result.version,
        msg_type=result.type,
        msg_id=result.msg_id,
        gen_date=parse_kith_time(result.gen_date),
        sender_her=_int(result.sender),
        receiver_her=_int(result.receiver),
        sender_org=_org(getattr(info, "sender", None)),
        receiver_org=_org(getattr(info, "receiver", None)),
        errors=errors,
        original_msg_id=original_msg_id,
        apprec_status=apprec_status,
        source=result,
    )


# --- where a message goes ---------------------------------------------------------------------------

class RouteKind(StrEnum):
    FOLDER = "folder"  # a local system: written into its folder
    SMTP = "smtp"  # a network peer over ebXML/SMTP
    HTTP = "http"  # a network peer over ebXML/HTTP


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    her_id: int  # the receiving communication party (deepest level)
    endpoint: str  # folder path, mailto: address or https URL
    party: Party
    cpa_id: str | None = None

    @property
    def local(self) -> bool:
        return self.kind is RouteKind.FOLDER


def route_for(register: Register, her_id: int, spool_root: Path) -> Route | None:
    """How to reach `her_id`, or None when the register cannot say (unknown, inactive, no endpoint)."""
    party = register.resolve(her_id)
    if party is None or not party.active:
        return None
    ep = party.endpoint or ""
    if party.local or ep.startswith("folder:"):
        org = register.organisation_of(her_id) or party
        folder = ep[len("folder:"):] if ep.startswith("folder:") else str(spool_root / str(org.her_id))
        return Route(RouteKind.FOLDER, her_id, folder, party, party.cpa_id)
    if ep.startswith("mailto:"):
        return Route(RouteKind.SMTP, her_id, ep, party, party.cpa_id)
    if ep.startswith(("http://", "https://")):
        return Route(RouteKind.HTTP, her_id, ep, party, party.cpa_id)
    return None


def belongs_to(register: Register, her_id: int | None, party_her: int | None) -> bool:
    """Whether `her_id` is `party_her` or a service/person under it (the register's hierarchy)."""
    if her_id is None or party_her is None:
        return False
    return party_her in {p.her_id for p in register.chain(her_id)}


# --- intake decision ---------------------------------------------------------------------------------

class Answer(StrEnum):
    APPREC = "apprec"  # a negative AppRec to the document's sender
    MESSAGE_ERROR = "message_error"  # an ebMS MessageError to the network peer that sent it
    NONE = "none"  # nobody to answer (unreadable from an unknown sender); kept for the operator


@dataclass(frozen=True)
class Accept:
    route: Route
    direction: str  # in (network -> local), out (local -> network), local (both ends local)
    reason: str
    closes: str | None = None  # an AppRec: the KITH MsgId of the message it answers


@dataclass(frozen=True)
class Reject:
    code: str  # AppRec 8221 code (T01, T02, E21, S01, ...) or ebMS errorCode
    text: str
    answer: Answer
    ebms_code: str = "ValueNotRecognized"
    findings: tuple[Finding, ...] = ()

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.text} (answered with {self.answer.value})"


@dataclass(frozen=True)
class Defer:
    """A check could not be made now (issue #3: CRL unreachable): the message stays `received` and is
    checked again later; the sender is told nothing yet, since no verdict has been reached."""

    reason: str
    findings: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class Duplicate:
    """The sender's MsgId again with the same content: recorded on the original, not delivered again.
    The sender hears nothing new (a network peer gets its ebMS Acknowledgment: the envelope was fine)."""

    original_id: str
    reason: str


Decision = Accept | Reject | Defer | Duplicate


@dataclass(frozen=True)
class Submitted:
    """What the transport authenticated when the message came in (recorded at intake)."""

    channel: Channel
    party_her: int | None  # local system, or ebXML From PartyId
    to_her: int | None = None  # ebXML To PartyId (network intake only)

    @property
    def network(self) -> bool:
        return self.channel in NETWORK_CHANNELS


# personal (KITH document) signature problems: S01 signature, S02 certificate, S03 revoked
SIGNATURE_CODES = frozenset({"S01", "S02", "S03"})
# refusals of a network document whose envelope was fine, answered with an AppRec: the signature codes,
# and E10 (a MsgId the sender used before for other content)
APPREC_CODES = SIGNATURE_CODES | {"E10"}


def _answer_for(sub: Submitted, facts: Facts, register: Register | None = None,
                code: str | None = None) -> Answer:
    if sub.network:
        # STANDARDS.md §2: a document whose personal signature fails MUST be rejected with an AppRec
        # S01/S02/S03 - a business-level answer. The ebMS layer carried the envelope fine (it gets its
        # Acknowledgment), so the AppRec goes back to the sender over the network like any message; only
        # when the document's sender is the authenticated ebXML From party (or part of it), so that
        # nobody is sent an AppRec about a document it never sent.
        if code in APPREC_CODES and register is not None and not facts.is_apprec and facts.msg_id \
                and facts.sender_her is not None and sub.party_her is not None \
                and belongs_to(register, facts.sender_her, sub.party_her):
            return Answer.APPREC
        return Answer.MESSAGE_ERROR
    if facts.is_apprec:
        return Answer.NONE  # an AppRec is never answered with an AppRec
    if facts.sender_her is not None and facts.msg_id:
        return Answer.APPREC
    return Answer.NONE


# validation rules about a party without a HER-id: routing's to decide (resolve_parties)
PARTY_RULES = frozenset({"receiver.missing", "sender.missing"})


def resolve_parties(facts: Facts, sub: Submitted, register: Register) -> Facts:
    """The document's parties as HER-ids, also where it names none (issue 12).

    The receiver: its HER-id (deepest level); else its organisation number plus department ids through
    the address register (`Register.by_org`); else, on network intake, the ebXML To PartyId. The sender
    likewise by organisation number. What nothing resolves stays None: decide_intake answers it (E21).
    Validation's "names no HER-id" findings give way to this: who the parties are is decided here, at
    routing time, with the register at hand.
    """
    changes: dict[str, object] = {}
    if any(e.rule in PARTY_RULES for e in facts.errors):
        changes["errors"] = tuple(e for e in facts.errors if e.rule not in PARTY_RULES)
    if facts.sender_her is None and facts.sender_org is not None:
        p = register.by_org(facts.sender_org.org_no, facts.sender_org.dept_ids)
        if p is not None:
            changes["sender_her"] = p.her_id
    if facts.receiver_her is None:
        p = register.by_org(facts.receiver_org.org_no, facts.receiver_org.dept_ids) \
            if facts.receiver_org is not None else None
        if p is not None:
            changes.update(receiver_her=p.her_id,
                           receiver_via=f"{facts.receiver_org} in the address register")
        elif sub.network and sub.to_her is not None:
            changes.update(receiver_her=sub.to_her, receiver_via=f"the ebXML To PartyId {sub.to_her}")
    return replace(facts, **changes) if changes else facts  # type: ignore[arg-type]


def _no_receiver(facts: Facts) -> str:
    named = f" (it names {facts.receiver_org})" if facts.receiver_org is not None else ""
    return ("Mottaker finnes ikke: the document names no receiving HER-id, and the address register "
            f"finds no single party by organisation number and department{named}")


def decide_intake(facts: Facts, sub: Submitted, register: Register, spool_root: Path) -> Decision:
    """Checked, who from, who to: accept with a route, or reject with the answer the sender gets."""
    facts = resolve_parties(facts, sub, register)
    if facts.errors:
        first = facts.errors[0]
        ebms = "SecurityFailure" if first.code.startswith("S") else "OtherXml"
        return Reject(first.code, first.text, _answer_for(sub, facts, register, first.code), ebms,
                      facts.errors)
    if facts.pending:
        # after the permanent findings: a document refused for its content anyway is refused now
        why = "; ".join(f"{f.rule}: {f.text}" for f in facts.pending)
        return Defer(f"checked again later: {why}", facts.pending)
    if facts.sender_her is None:
        named = f" (it names {facts.sender_org}, which the address register does not resolve)" \
            if facts.sender_org is not None else ""
        return Reject("X99", f"the message names no sending communication party{named}",
                      _answer_for(sub, facts))
    if sub.party_her is None or not belongs_to(register, facts.sender_her, sub.party_her):
        who = "the submitting local system" if not sub.network else "the ebXML From party"
        return Reject(
            "X99",
            f"sender HER-id {facts.sender_her} is not {who} ({sub.party_her}) or part of it",
            Answer.MESSAGE_ERROR if sub.network else Answer.NONE,  # never answer an impostor's claim
            "SecurityFailure",
        )
    if facts.receiver_her is None:
        return Reject("E21", _no_receiver(facts), _answer_for(sub, facts), "DeliveryFailure")
    if facts.receiver_via is not None and sub.network and sub.to_her is not None and \
            not belongs_to(register, facts.receiver_her, sub.to_her):
        return Reject(
            "E21", f"receiver {facts.receiver_her} ({facts.receiver_via}) is not the ebXML To party "
            f"{sub.to_her} or part of it", Answer.MESSAGE_ERROR, "Inconsistent",
        )
    if facts.receiver_via is None and sub.network and sub.to_her is not None and \
            facts.receiver_her != sub.to_her:
        return Reject(
            "E21", f"receiver HER-id {facts.receiver_her} differs from the ebXML To party {sub.to_her}",
            Answer.MESSAGE_ERROR, "Inconsistent",
        )
    route = route_for(register, facts.receiver_her, spool_root)
    if route is None:
        return Reject("E21", f"Mottaker finnes ikke: HER-id {facts.receiver_her} is not in the address "
                      "register (or inactive, or has no endpoint)", _answer_for(sub, facts),
                      "DeliveryFailure")
    if sub.network and not route.local:
        return Reject("E21", f"HER-id {facts.receiver_her} is not served by this relay",
                      Answer.MESSAGE_ERROR, "DeliveryFailure")
    if facts.family and facts.version and not facts.is_apprec and \
            not route.party.accepts_message(facts.family, facts.version):
        return Reject("T10", f"{route.party.name} does not accept {facts.family} {facts.version}",
                      _answer_for(sub, facts), "NotSupported")
    direction = "in" if sub.network else ("local" if route.local else "out")
    what = f"{facts.msg_type or facts.family} {facts.msg_id or ''}".strip()
    via = f" (found by {facts.receiver_via})" if facts.receiver_via else ""
    reason = (f"{what} from {facts.sender_her} to {facts.receiver_her}{via} via {route.kind.value} "
              f"{route.endpoint}")
    return Accept(route, direction, reason, facts.original_msg_id if facts.is_apprec else None)


def msg_id_key(register: Register, facts: Facts, digest: str) -> tuple[str, str, str] | None:
    """Whose MsgId this is: (sending organisation's HER-id, MsgId, sha256 of the KITH document).

    MsgIds are made by the sending system, so the key is the organisation (a GP office's system
    numbers the messages of all its doctors). None when the document names no MsgId or sender."""
    if not facts.msg_id or facts.sender_her is None:
        return None
    org = register.organisation_of(facts.sender_her)
    return str(org.her_id if org is not None else facts.sender_her), facts.msg_id, digest


def reused_msg_id(facts: Facts, sub: Submitted, register: Register, *, same_content: bool,
                  original_id: str, original_ref: str) -> Duplicate | Reject:
    """The sender's MsgId belongs to an earlier message (`original_ref` names it for people): the same
    content is a duplicate, delivered once; other content is refused with E10, answered to the sender."""
    if same_content:
        return Duplicate(original_id, f"duplicate of {original_ref}: MsgId {facts.msg_id} from "
                                      f"{facts.sender_her} with identical content")
    return Reject("E10", f"MsgId {facts.msg_id} was used before by sender {facts.sender_her} for another "
                  f"message ({original_ref}); a new message needs a new MsgId",
                  _answer_for(sub, facts, register, "E10"), "OtherXml")


def apprec_author(register: Register, facts: Facts, own_her: int, spool_root: Path) -> int:
    """Who writes the relay's negative AppRec for a refused message: the receiver it was addressed to
    when this relay serves that party (STANDARDS.md §2: the AppRec comes from the original's receiver;
    the relay speaks for it, and the sending side correlates the AppRec by who the original went to),
    else the relay itself (an unknown or remote receiver never saw the message)."""
    her = facts.receiver_her
    if her is None:
        return own_her
    route = route_for(register, her, spool_root)
    return her if route is not None and route.local else own_her


# --- AppRec correlation ------------------------------------------------------------------------------

class _Candidate(Protocol):
    id: str
    kith_msg_id: str | None
    sender_her: str | None
    receiver_her: str | None
    msg_type: str | None
    state: str


@dataclass(frozen=True)
class Correlation:
    original_id: str | None  # the store id of the message this AppRec closes
    reason: str


def correlate_apprec(facts: Facts, candidates: Iterable[_Candidate], register: Register) -> Correlation:
    """Which relayed message an AppRec answers: same MsgId, sent by the AppRec's receiver to its sender.

    Candidates are the stored messages whose KITH MsgId is the AppRec's OriginalMsgId (newest first;
    a resend shares its original's MsgId, and the newest copy is the one the receiver saw last).
    """
    if not facts.original_msg_id:
        return Correlation(None, "the AppRec has no OriginalMsgId")
    seen = 0
    for c in candidates:
        seen += 1
        if (c.msg_type or "").upper() == APPREC_TYPE:
            continue
        to_ok = belongs_to(register, _int(c.receiver_her), facts.sender_her) or \
            belongs_to(register, facts.sender_her, _int(c.receiver_her)) or \
            _relay_for(register, facts.sender_her, c)
        from_ok = belongs_to(register, _int(c.sender_her), facts.receiver_her) or \
            belongs_to(register, facts.receiver_her, _int(c.sender_her))
        if to_ok and from_ok:
            return Correlation(c.id, f"AppRec status {facts.apprec_status} for MsgId {facts.original_msg_id}")
    if seen:
        return Correlation(None, f"MsgId {facts.original_msg_id} was relayed, but not between "
                                 f"{facts.receiver_her} and {facts.sender_her}")
    return Correlation(None, f"no relayed message has MsgId {facts.original_msg_id}")


def _relay_for(register: Register, relay_her: int | None, c: _Candidate) -> bool:
    """Whether `relay_her` is the network relay our message `c` was sent to: a relay that refused it
    answers with an AppRec from its own HER-id when it does not know the addressed receiver (E21).
    Both are network parties of our register reached at the same endpoint; only a message we sent
    out qualifies (a local one never went to a relay)."""
    if relay_her is None or getattr(c, "direction", "out") != "out":
        return False
    relay = register.resolve(relay_her)
    receiver = register.resolve(_int(c.receiver_her) or 0)
    if relay is None or receiver is None or relay.local or receiver.local:
        return False
    return bool(relay.endpoint) and relay.endpoint == receiver.endpoint


def after_delivery(msg_type: str | None, family: str | None) -> Event:
    """Delivered: wait for the receiver's AppRec, unless the message is itself an AppRec (final)."""
    if (msg_type or "").upper() == APPREC_TYPE or family == "AppRec":
        return Event.CLOSE
    return Event.AWAIT_APPREC


# --- failures: transient or permanent ---------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    code: str  # short stable code an operator can search for
    text: str
    permanent: bool


class DeliveryError(Exception):
    """A delivery attempt failed in a way the transport understood (it knows if it is worth retrying)."""

    def __init__(self, code: str, text: str, *, permanent: bool) -> None:
        super().__init__(f"{code}: {text}")
        self.code, self.text, self.permanent = code, text, permanent


_TRANSIENT_ERRNO = {
    errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.EPIPE, errno.EAGAIN, errno.ENOSPC, errno.EIO,
}


def classify(exc: BaseException) -> Failure:
    """Transient (connection refused, timeout, 4xx SMTP, 5xx HTTP, CRL unreachable) or permanent."""
    if isinstance(exc, DeliveryError):
        return Failure(exc.code, exc.text, exc.permanent)
    text = str(exc) or type(exc).__name__
    smtp_code = getattr(exc, "smtp_code", None) or getattr(exc, "code", None)
    name = type(exc).__name__
    if name.startswith("SMTP") and isinstance(smtp_code, int):
        return Failure(f"smtp.{smtp_code}", text, permanent=500 <= smtp_code < 600)
    status = getattr(exc, "status", None) or (smtp_code if name == "HTTPError" else None)
    if isinstance(status, int) and 400 <= status < 600:
        return Failure(f"http.{status}", text, permanent=status < 500 and status not in (408, 429))
    if name == "SecurityError":
        # hub.security: `permanent` is False when e.g. the CRL is unreachable (status unknown now)
        permanent = bool(getattr(exc, "permanent", not getattr(exc, "transient", False)))
        code = getattr(exc, "kind", None) or getattr(exc, "apprec_code", None) or "other"
        return Failure(f"security.{code}", text, permanent=permanent)
    if isinstance(exc, TimeoutError | socket.timeout):
        return Failure("timeout", text, permanent=False)
    if isinstance(exc, ssl.SSLError):
        return Failure("tls", text, permanent=False)
    if isinstance(exc, ConnectionError):
        return Failure("connection", text, permanent=False)
    if isinstance(exc, OSError):
        return Failure(f"os.{errno.errorcode.get(exc.errno or 0, 'error')}", text,
                       permanent=exc.errno not in _TRANSIENT_ERRNO)
    if name.startswith("SMTP"):  # aiosmtplib connect/timeout errors without a reply code
        return Failure("smtp", text, permanent=False)
    return Failure(f"crash.{name}", text, permanent=True)


# --- policy ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeliveryPolicy:
    """Retries and TimeToLive for a route: a CPA's ReliableMessaging or the relay's defaults."""

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    ttl: timedelta | None = None

    def expires_at(self, now: datetime) -> datetime | None:
        return None if self.ttl is None else now + self.ttl
