"""The message service handler: bytes in, decisions and bytes out. No sockets, no clocks of its own.

    msh = Msh([LocalParty.of(identity)], cpas=repo, peers=directory, seen=store, handoff=pipeline.accept)
    outcome = msh.receive(raw_mime, now, transport="smtp")   # what to answer, what was delivered
    out = msh.send(from_her="80001", to_her="82001", message_type="DIALOG_NOTAT", payload=xml, now=now)

Transports only move `out.data` / `outcome.response` (MIME entities). The application handoff is a
callable taking a `Delivery`; if it raises, the message is answered with DeliveryFailure and not
remembered as seen, so the sender's retry can succeed later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from hub.codes import EbmsError
from hub.ebxml import compression, naming
from hub.ebxml.cpa import (
    DELIVERY_TYPES,
    Cpa,
    CpaRepository,
    ReceivePolicy,
    SendPlan,
    check_against_cpa,
    plan_send,
)
from hub.ebxml.dedup import MemorySeen, SeenMessages, decide, envelope_digest
from hub.ebxml.envelope import (
    DS_NS,
    Built,
    Envelope,
    ManifestRef,
    MessageHeader,
    Party,
    RefDigest,
    build_envelope,
    build_envelope_bytes,
    check_envelope,
    new_id,
    parse_envelope,
    serialize,
)
from hub.ebxml.errors import LOC, EbxmlError, err
from hub.ebxml.mime import GZIP_TYPE, PKCS7_TYPE, PLAIN_TYPE, Package, build_package, new_cid, parse_package
from hub.ebxml.receipt import open_payload
from hub.ebxml.signals import (
    acknowledgment_bytes,
    build_acknowledgment,
    build_message_error,
    build_soap_fault,
)
from hub.ebxml.signature import (
    RSA_SHA1,
    RSA_SHA256,
    SHA1,
    SHA256,
    Verified,
    sign_built,
    sign_to_bytes,
    verify_envelope,
)

log = logging.getLogger(__name__)


@dataclass
class LocalParty:
    """A party this MSH serves: its HER-id and its enterprise keys (signing and encryption)."""

    her_id: str
    sign_cert: x509.Certificate
    sign_key: PrivateKeyTypes
    decryption_keys: list[tuple[x509.Certificate, PrivateKeyTypes]]
    address: str | None = None  # our mail address (mailto:), for peers and the SMTP listener

    @classmethod
    def of(cls, identity: object, address: str | None = None) -> LocalParty:
        """From a hub.security.pki Identity (her_id, sign_cert, sign_key, decryption_keys)."""
        return cls(str(identity.her_id), identity.sign_cert, identity.sign_key,  # type: ignore[attr-defined]
                   list(identity.decryption_keys), address)  # type: ignore[attr-defined]


@dataclass
class Peer:
    """A counterparty as the address register knows it (used when no CPA names it)."""

    her_id: str
    sign_cert: x509.Certificate | None = None
    enc_cert: x509.Certificate | None = None
    endpoint: str | None = None  # mailto:..., http(s)://...
    compress: bool = False  # gzip payloads to this peer before encryption (as NAV does)
    allow_sha1: bool = False  # accept rsa-sha1/sha1 signatures from this peer (old HTTP sync senders)


class SentLog(Protocol):
    """Where the Msh keeps what it sent until the Acknowledgment comes (a dict, or a relay's store)."""

    def get(self, message_id: str, default: Sent | None = None, /) -> Sent | None: ...

    def __setitem__(self, message_id: str, sent: Sent, /) -> None: ...

    def pop(self, message_id: str, default: Sent | None = None, /) -> Sent | None: ...


def sent_references(entity: bytes) -> list[RefDigest]:
    """The ds:Reference digests of a package we signed (what its Acknowledgment must copy)."""
    pkg = parse_package(entity)
    env = parse_envelope(pkg.soap)
    refs = []
    if env.root is not None:
        for r in env.root.iter(f"{{{DS_NS}}}Reference"):
            dm = r.find(f"{{{DS_NS}}}DigestMethod")
            refs.append(RefDigest(r.get("URI", ""), dm.get("Algorithm", "") if dm is not None else "",
                                  (r.findtext(f"{{{DS_NS}}}DigestValue") or "").strip()))
    return refs


class PeerDirectory(Protocol):
    def peer(self, her_id: str) -> Peer | None: ...


class Peers(dict[str, Peer]):
    """A PeerDirectory in a dict."""

    def peer(self, her_id: str) -> Peer | None:
        return self.get(str(her_id))


class PayloadCrypto(Protocol):
    def encrypt(self, data: bytes, recipients: list[x509.Certificate]) -> bytes: ...

    def decrypt(self, der: bytes, keys: list[tuple[x509.Certificate, PrivateKeyTypes]]) -> bytes: ...


class CmsCrypto:
    """CMS EnvelopedData from hub.security.cms (AES-256-CBC, RSA key transport, as the framework runs)."""

    def encrypt(self, data: bytes, recipients: list[x509.Certificate]) -> bytes:
        from hub.security import cms

        return cms.encrypt(data, recipients)

    def decrypt(self, der: bytes, keys: list[tuple[x509.Certificate, PrivateKeyTypes]]) -> bytes:
        from hub.security import cms

        return cms.decrypt(der, keys)


@dataclass
class Delivery:
    """What the application gets: the envelope, decrypted payloads by cid, and the bytes as received."""

    envelope: Envelope
    payloads: dict[str, bytes]
    raw: bytes
    cpa: Cpa | None
    received_at: datetime
    signer: x509.Certificate | None

    @property
    def message_id(self) -> str:
        return self.envelope.header.message_id or ""


@dataclass
class Sent:
    """A message we sent, waiting for its Acknowledgment."""

    message_id: str
    to_her: str
    references: list[RefDigest]
    acked_at: datetime | None = None
    error: list[str] | None = None


@dataclass
class Outgoing:
    message_id: str
    conversation_id: str
    data: bytes  # the MIME entity to transmit
    endpoints: list[str]
    plan: SendPlan
    references: list[RefDigest]

    def __bytes__(self) -> bytes:
        return self.data


@dataclass
class Outcome:
    """The result of receiving one package.

    status: delivered | duplicate | rejected | signal | failed | deferred (a transient failure such as
    an unreachable CRL: no answer, nothing remembered; process again later). `response` is a MIME entity to
    send back (Acknowledgment, MessageError or SOAP Fault) or None; `sync` says it goes back on the same HTTP
    exchange, otherwise to `reply_to` (None: the transport's own return address, e.g. MAIL FROM).
    """

    status: str
    envelope: Envelope | None = None
    response: bytes | None = None
    response_kind: str | None = None  # ack | error | fault
    errors: list[EbxmlError] = field(default_factory=list)
    delivery: Delivery | None = None
    sync: bool = False
    reply_to: str | None = None
    matched: Sent | None = None  # for a received signal: the message of ours it answers
    # receive(record=False): the duplicate-elimination record (MessageId, digest, answer) the caller
    # writes once its own checks have chosen the answer
    record: tuple[str, str, bytes] | None = None


class Msh:
    def __init__(
        self,
        parties: list[LocalParty],
        *,
        cpas: CpaRepository | None = None,
        peers: PeerDirectory | None = None,
        seen: SeenMessages | None = None,
        handoff: Callable[[Delivery], None] | None = None,
        on_signal: Callable[[Envelope, Sent | None], None] | None = None,
        crypto: PayloadCrypto | None = None,
        validate_certificate: Callable[[x509.Certificate, datetime], None] | None = None,
        sent: SentLog | None = None,
    ) -> None:
        self.parties = {p.her_id: p for p in parties}
        self.cpas = cpas
        self.peers = peers or Peers()
        self.seen = seen if seen is not None else MemorySeen()
        self.handoff = handoff
        self.on_signal = on_signal
        self.crypto = crypto or CmsCrypto()
        # hook for hub.security.certs (chain, validity, revocation); raising means SecurityFailure
        self.validate_certificate = validate_certificate
        self.sent: SentLog = sent if sent is not None else {}

    # ------------------------------------------------------------ sending

    def _signed(self, party: LocalParty, root: object, payloads: dict[str, bytes],
                method: str = RSA_SHA256, digest: str = SHA256) -> tuple[bytes, list[RefDigest]]:
        """The envelope `root` (built here, unsigned) signed and serialized, and its reference digests."""
        key = party.sign_key
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the signing key must be RSA")
        return sign_to_bytes(root, key, party.sign_cert, payloads,  # type: ignore[arg-type]
                             signature_method=method, digest_method=digest)

    def _signed_built(self, party: LocalParty, built: Built | None, payloads: dict[str, bytes],
                      method: str = RSA_SHA256, digest: str = SHA256) -> tuple[bytes, list[RefDigest]] | None:
        """_signed() for an envelope from a template (hub.ebxml.envelope.build_envelope_bytes); None where
        the template does not apply."""
        key = party.sign_key
        if built is None or not isinstance(key, rsa.RSAPrivateKey):
            return None
        return sign_built(built, key, party.sign_cert, payloads, signature_method=method,
                          digest_method=digest)

    def send(
        self,
        *,
        from_her: str,
        to_her: str,
        payload: bytes,
        now: datetime,
        message_type: str | None = None,
        service: str | None = None,
        action: str | None = None,
        from_role: str | None = None,
        to_role: str | None = None,
        conversation_id: str | None = None,
        time_to_live: timedelta | None = None,
        sync_reply: bool = False,
        soap_base64: bool = True,
        description: str | None = None,
        message_id: str | None = None,
        protocol: str | None = None,
    ) -> Outgoing:
        """Build, sign and encrypt one business message. Names follow HISD 1209 from `message_type`
        unless service/action/roles are given (NAV-style services); the CPA decides channel and keys.
        `message_id`: a MessageId fixed by the caller (a relay stores it before the first attempt so
        that every retry carries the same one and the receiver's duplicate elimination works)."""
        party = self.parties[str(from_her)]
        if message_type:
            n = naming.naming(message_type, apprec=action == naming.APPREC)
            service, action = service or n.service, action or n.action
            from_role, to_role = from_role or n.from_role, to_role or n.to_role
        if not service or not action:
            raise ValueError("give message_type, or service and action")
        # `protocol` (SMTP/HTTP): the transport the caller sends over; of the channels a CPA binds to the
        # action, the one over it decides ack, sync and packaging
        plan = plan_send(self.cpas, party.her_id, str(to_her), now, service, action, protocol)
        if plan.cpa is not None and (from_role is None or to_role is None):
            ours, theirs = plan.cpa.party(party.her_id), plan.cpa.party(str(to_her))
            b = ours.binding(service, action, "send") if ours else None
            r = theirs.binding(service, action, "receive") if theirs else None
            from_role = from_role or (b[0].role if b else None)
            to_role = to_role or (r[0].role if r else None)
        peer = self.peers.peer(str(to_her))
        if not plan.endpoints and peer and peer.endpoint:
            plan.endpoints = [peer.endpoint]
        # The CPA's package (or the register's setting) says gzip, then encrypt; isConfidential="none"
        # with no pkcs7-mime layer sends the document plain.
        if plan.compress or (plan.cpa is None and peer is not None and peer.compress):
            plan.compress = True
            payload = compression.compress(payload)
        if plan.encrypt:
            enc_cert = plan.encryption_certificate or (peer.enc_cert if peer else None)
            if enc_cert is None:
                raise ValueError(f"no encryption certificate for HER {to_her} (no CPA, not in the register)")
            cms = self.crypto.encrypt(payload, [enc_cert])
        else:
            cms = payload
        cid = new_cid(f"{party.her_id}.hub")
        header = MessageHeader(
            from_party=Party.her(party.her_id, from_role),
            to_party=Party.her(to_her, to_role),
            cpa_id=plan.cpa_id,
            conversation_id=conversation_id or new_id(),
            service=service,
            action=action,
            message_id=message_id or new_id(),
            timestamp=now,
            time_to_live=now + time_to_live if time_to_live else None,
            duplicate_elimination=plan.duplicate_elimination,
            description=description,
        )
        ack_requested = plan.ack_requested and not sync_reply
        manifest = [ManifestRef("cid:" + cid)]
        # the CPA's algorithms for our signatures; SHA-1 only where the CPA names it
        method = RSA_SHA1 if plan.signature_algorithm and plan.signature_algorithm.endswith("rsa-sha1") \
            else RSA_SHA256
        digest = SHA1 if method == RSA_SHA1 and (plan.digest_algorithm or "").endswith("sha1") else SHA256
        # from a template where it applies (not SyncReply), else built as a tree
        built = None if sync_reply else build_envelope_bytes(header, ack_requested=ack_requested,
                                                             manifest=manifest)
        # unsigned only where the CPA says isNonRepudiationRequired="false" and isAuthenticated="none"
        done = (built.data, []) if built is not None and not plan.sign \
            else self._signed_built(party, built, {cid: cms}, method, digest)
        if done is None:
            root = build_envelope(header, ack_requested=ack_requested, sync_reply=sync_reply,
                                  manifest=manifest)
            done = self._signed(party, root, {cid: cms}, method, digest) if plan.sign \
                else (serialize(root), [])
        soap, refs = done
        data = build_package(soap, [(cid, cms)], soap_base64=soap_base64,
                             payload_type=PKCS7_TYPE if plan.encrypt else
                             GZIP_TYPE if plan.compress else PLAIN_TYPE)
        assert header.message_id and header.conversation_id
        self.sent[header.message_id] = Sent(header.message_id, str(to_her), refs)
        return Outgoing(header.message_id, header.conversation_id, data, plan.endpoints, plan, refs)

    # ------------------------------------------------------------ receiving

    def _reply_to(self, env: Envelope, cpa: Cpa | None) -> str | None:
        her = env.header.from_party.her_id
        if cpa is not None and her:
            p = cpa.party(her)
            tr = p.transport_of(p.channel(None)) if p else None
            # signals go to the party's default (MSH signal) channel; never to a `login` endpoint
            eps = [u for u, t in (tr.endpoints if tr else []) if t in (*DELIVERY_TYPES, "error")]
            if eps:
                return eps[0]
        peer = self.peers.peer(her) if her else None
        return peer.endpoint if peer else None

    def _fault(self, errors: list[EbxmlError]) -> Outcome:
        return Outcome("rejected", response=build_package(build_soap_fault(errors), soap_base64=False),
                       response_kind="fault", errors=errors, sync=True)

    def reply_address(self, env: Envelope) -> str | None:
        """Where signals for `env`'s sender go: its CPA's endpoint, else its address-register endpoint."""
        cpa = self.cpas.get(env.header.cpa_id or "") if self.cpas else None
        return self._reply_to(env, cpa)

    def message_error(self, env: Envelope, errors: list[EbxmlError], now: datetime) -> bytes:
        """A signed MessageError for a received message, decided outside the Msh (e.g. by a relay's
        content checks after the envelope was accepted)."""
        return self._error_response(env, errors, now)

    def unreadable_error(self, errors: list[EbxmlError], now: datetime, *, own_her: str,
                         sender: str | None = None) -> bytes:
        """A signed MessageError for input with no ebXML header to read (not XML, a DTD, broken MIME):
        from `own_her`, to the sender as the transport names it (`mailto:...`), answering no MessageId."""
        kind, _, value = (sender or "").partition(":")
        to = Party([(kind, value)] if value else [("unknown", "unknown")])
        received = MessageHeader(from_party=to, to_party=Party.her(own_her, None), cpa_id=None,
                                 conversation_id=None, service=None, action=None, message_id=None,
                                 timestamp=None)
        root = build_message_error(received, errors, now)
        party = self.parties.get(str(own_her))
        return build_package(self._signed(party, root, {})[0] if party is not None else serialize(root))

    def _error_response(self, env: Envelope, errors: list[EbxmlError], now: datetime) -> bytes:
        root = build_message_error(env.header, errors, now)
        party = self.parties.get(env.header.to_party.her_id or "")
        # a MessageError is signed like any signal; if the To is not ours, we can't
        return build_package(self._signed(party, root, {})[0] if party is not None else serialize(root))

    def receive(self, raw: bytes, now: datetime, *, transport: str = "smtp",
                parsed: tuple[Package, Envelope] | None = None, digest: str | None = None,
                record: bool = True) -> Outcome:
        """Process one received MIME entity (mail with headers, or HTTP headers + body). `parsed`: the
        package and envelope of `raw` when the caller has them already (not parsed again); `digest`:
        their content digest, when the caller computed it too (a C14N of the envelope spared).
        `record=False`: the seen record is not written but returned (`Outcome.record`)."""
        try:
            return self._receive(raw, now, transport, parsed, digest if parsed is not None else None,
                                 record)
        except Exception as exc:  # noqa: BLE001 - any bug must still produce an ebMS answer
            log.exception("unexpected error while receiving")
            e = EbxmlError(EbmsError.UNKNOWN, f"internal error: {type(exc).__name__}", LOC["envelope"])
            return self._fault([e])

    def _remember(self, outcome: Outcome, digest: str, record: bool) -> Outcome:
        h = outcome.envelope.header if outcome.envelope is not None else None
        if h is not None and h.message_id:
            rec = (h.message_id, digest, outcome.response or b"")
            if record:
                self.seen.seen_put(*rec)
            else:
                outcome.record = rec
        return outcome

    def _receive(self, raw: bytes, now: datetime, transport: str,
                 parsed: tuple[Package, Envelope] | None, digest: str | None = None,
                 record: bool = True) -> Outcome:
        if parsed is not None:
            pkg, env = parsed
        else:
            try:
                pkg = parse_package(raw)
                env = parse_envelope(pkg.soap)
            except EbxmlError as e:
                return self._fault([e])
        if env.is_signal:
            return self._receive_signal(env, pkg.parts, now)
        sync = env.sync_reply and transport == "http"
        h = env.header
        # What the CPA version in force at the message's timestamp (or the register) requires of it
        peer = self.peers.peer(h.from_party.her_id) if h.from_party.her_id else None
        cpa_in_force = self.cpas.get(h.cpa_id, h.timestamp or now) if self.cpas and h.cpa_id else None
        policy = ReceivePolicy.of(cpa_in_force, env, allow_sha1=bool(peer and peer.allow_sha1))
        errors = check_envelope(env, transport=transport, now=now,
                                signature_required=policy.signature_required)
        if h.to_party.her_id and h.to_party.her_id not in self.parties and not any(
                e.location == LOC["to_party"] for e in errors):
            errors.append(err(EbmsError.DELIVERY_FAILURE, "to_party",
                              f"HER {h.to_party.her_id} is not served by this message service handler"))
        if not h.from_party.her_id or not h.to_party.her_id:
            # Without one sender and one receiver there is no one to sign an answer for or send it to.
            if not errors:
                errors.append(err(EbmsError.OTHER_XML, "from_party", "no HER PartyId to answer"))
        if digest is None:
            digest = envelope_digest(env, pkg.parts) if env.root is not None else ""
        if h.message_id:
            d = decide(self.seen, h.message_id, digest)
            if d.kind == "duplicate":
                # The stored answer (Acknowledgment or MessageError) again, byte for byte; nothing processed.
                cpa_known = self.cpas.get(h.cpa_id or "") if self.cpas else None
                return Outcome("duplicate", env, response=d.response or None,
                               response_kind="replay" if d.response else None, sync=sync,
                               reply_to=self._reply_to(env, cpa_known))
            if d.kind == "conflict":
                e = err(EbmsError.INCONSISTENT, "message_id",
                        f"MessageId {h.message_id} was received before with other content (HITS 1172 §5.8.2)")
                return Outcome("rejected", env, self._error_response(env, [e], now), "error", [e], sync=sync,
                               reply_to=self._reply_to(env, None))
        for i, ref in enumerate(env.manifest, 1):
            if ref.cid is not None and ref.cid not in pkg.parts:
                errors.append(EbxmlError(EbmsError.MIME_PROBLEM,
                                         f"Manifest href {ref.href} names no MIME part of the package",
                                         f"{LOC['manifest_ref']}[{i}]"))
        if not env.manifest and not errors:
            errors.append(err(EbmsError.OTHER_XML, "manifest", "a business message needs a Manifest"))
        verified: Verified | None = None
        if env.signed and not any(e.code == EbmsError.MIME_PROBLEM for e in errors):
            try:
                verified = verify_envelope(env.root, pkg.parts,  # type: ignore[arg-type]
                                           allow_sha1=policy.allow_sha1, unsigned_c14n=env.unsigned_c14n)
            except EbxmlError as e:
                errors.append(e)
        cpa: Cpa | None = None
        if not errors:
            cpa, cerrs = check_against_cpa(env, self.cpas, verified.certificate if verified else None,
                                           sender_cert=peer.sign_cert if peer else None)
            errors += cerrs
            if cpa is None and peer is None and not cerrs:
                errors.append(err(EbmsError.VALUE_NOT_RECOGNIZED, "from_party",
                                  f"HER {h.from_party.her_id}: no CPA and not in the address register"))
        if not errors and verified and self.validate_certificate:
            try:
                self.validate_certificate(verified.certificate, h.timestamp or now)
            except Exception as exc:  # noqa: BLE001 - the validator's error text goes to the sender
                if getattr(exc, "transient", False):
                    # E.g. the CRL is unreachable: nothing is wrong with the message. No answer and no
                    # duplicate record, so the sender's retry (or ours, from the store) is processed anew.
                    e = err(EbmsError.SECURITY_FAILURE, "key_info", f"signing certificate (transient): {exc}")
                    return Outcome("deferred", env, errors=[e], sync=sync)
                errors.append(err(EbmsError.SECURITY_FAILURE, "key_info", f"signing certificate: {exc}"))
        payloads: dict[str, bytes] = {}
        if not errors:
            party = self.parties[h.to_party.her_id or ""]
            for i, ref in enumerate(env.manifest, 1):
                opened = open_payload(ref, i, pkg.parts, pkg.part_types, policy, party.decryption_keys,
                                      self.crypto.decrypt, cpa.cpa_id if cpa else None)
                if opened.error is not None:
                    errors.append(opened.error)
                elif opened.document is not None:
                    payloads[ref.cid or ""] = opened.document
        reply_to = self._reply_to(env, cpa)
        fatal = [e for e in errors if e.severity == "Error"]
        if fatal:
            response = self._error_response(env, errors, now)
            return self._remember(Outcome("rejected", env, response, "error", errors, sync=sync,
                                          reply_to=reply_to), digest, record)
        delivery = Delivery(env, payloads, raw, cpa, now, verified.certificate if verified else None)
        if self.handoff is not None:
            try:
                self.handoff(delivery)
            except Exception as exc:  # noqa: BLE001 - not delivered: tell the sender, let it retry
                log.warning("handoff failed for %s: %s", h.message_id, exc)
                e = err(EbmsError.DELIVERY_FAILURE, "envelope", f"could not be delivered: {exc}")
                return Outcome("failed", env, self._error_response(env, [e], now), "error", [e], sync=sync,
                               reply_to=reply_to)
        response = b""
        if env.ack_requested or sync:
            party = self.parties[h.to_party.her_id or ""]
            refs = verified.references if verified else []
            done = self._signed_built(party, acknowledgment_bytes(env, now, refs), {})
            if done is None:  # what the template does not take: built as a tree
                done = self._signed(party, build_acknowledgment(env, now, refs), {})
            response = build_package(done[0])
        return self._remember(Outcome("delivered", env, response or None, "ack" if response else None, errors,
                                      delivery, sync=sync, reply_to=reply_to), digest, record)

    def _receive_signal(self, env: Envelope, parts: dict[str, bytes], now: datetime) -> Outcome:
        """Acknowledgment/MessageError: verify, match with what we sent; never answered (HIS 1037 §7)."""
        h = env.header
        errors: list[EbxmlError] = []
        sent = self.sent.get(h.ref_to_message_id or "")
        if env.signed:
            peer = self.peers.peer(h.from_party.her_id) if h.from_party.her_id else None
            cpa = self.cpas.get(h.cpa_id, h.timestamp or now) if self.cpas and h.cpa_id else None
            policy = ReceivePolicy.of(cpa, env, allow_sha1=bool(peer and peer.allow_sha1))
            try:
                v = verify_envelope(env.root, parts,  # type: ignore[arg-type]
                                    allow_sha1=policy.allow_sha1)
            except EbxmlError as e:
                return Outcome("rejected", env, errors=[e])
            expected = None
            p = cpa.party(h.from_party.her_id) if cpa else None
            if p is not None:
                expected = p.signing_certificate()
            elif (peer := self.peers.peer(h.from_party.her_id or "")) is not None:
                expected = peer.sign_cert
            if expected is not None and v.certificate != expected:
                return Outcome("rejected", env, errors=[err(EbmsError.SECURITY_FAILURE, "key_info",
                                                            "signal not signed by the party's certificate")])
        elif env.acknowledgment is not None:
            errors.append(err(EbmsError.SECURITY_FAILURE, "signature", "unsigned Acknowledgment"))
        if sent is not None and env.acknowledgment is not None:
            ours = {(r.uri, r.digest_value) for r in sent.references}
            theirs = {(r.uri, r.digest_value) for r in env.acknowledgment.references}
            if theirs and theirs != ours:
                errors.append(err(EbmsError.INCONSISTENT, "header",
                                  "the Acknowledgment's reference digests are not those we signed"))
            elif not errors:
                sent.acked_at = now
        if sent is not None and env.error_list is not None:
            sent.error = [f"{e.code} {e.location}: {e.description}" for e in env.error_list.errors]
        if self.on_signal is not None:
            self.on_signal(env, sent)
        return Outcome("signal", env, errors=errors, matched=sent)
