"""A vendor's message service in a process of its own, for tests/test_conformance_vendor_ebms.py.

    python tests/conformance_vendor_msh.py PROFILE.toml PKI_DIR ROOT [--smtp RELAY_PORT [--starttls]]
        [--mute | --ack-everything]

Listens for ebXML over HTTP on 127.0.0.1 (port 0), writes its CPP to ROOT/cpp.xml and its URL on the
first line of stdout, then waits for the test centre's CPA in ROOT/cpa.xml and installs it. Behind the
message service a simulated receiving system answers with AppRecs. `--smtp RELAY_PORT`: ebXML over SMTP
instead: an SMTP listener on 127.0.0.1 (port 0) for its mailbox, the first line of stdout is
`mailto:ADDRESS 127.0.0.1:PORT`, and everything it sends (signals, AppRecs) is mailed through the SMTP
server on 127.0.0.1:RELAY_PORT (the test centre's listener stands in for the mail relay); each mail it
takes is kept as ROOT/received/N.eml; with `--starttls` that listener requires STARTTLS, with a
certificate for 127.0.0.1 from the test PKI's issuing CA. `--mute`: the message service takes messages
in and never sends an ebMS signal back (no Acknowledgment, no MessageError); `--ack-everything`: where
it should answer with a MessageError it answers with an Acknowledgment.

It is the hub's own Msh (hub.conformance.ebms.SystemGateway), not an independent implementation: what
it shows is the runner driving a separate process over real HTTP with a CPA, not interoperability with
another vendor's code.
"""

from __future__ import annotations

import asyncio
import signal
import ssl
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path

from hub.conformance.catalogue import message_types
from hub.conformance.ebms import SystemGateway
from hub.conformance.profiles import load_profile, load_profiles
from hub.conformance.simulated import TEST_CENTRE, SimulatedSystem
from hub.conformance.trust import network_pki
from hub.conformance.vendor_ebms import http_sync, roles_of_claims
from hub.ebxml.corpus import CpaParty, build_cpp
from hub.ebxml.cpa import CpaRepository, load_cpa
from hub.security.tls import issue_tls_certificate
from hub.transport.smtp import SmtpListener, SmtpSender


def cpp_of(party: CpaParty) -> bytes:
    """The hub's CPP for the party, its HTTP channel answering signals synchronously."""
    return http_sync(build_cpp(party))


class VendorGateway(SystemGateway):
    """The CPA binds the organisation's HER-id to the test centre's: everything goes out under those.
    The CPA is (re)installed whenever the test centre has written a new one, before a message is processed."""

    installed = 0  # mtime of the CPA installed

    def install(self) -> None:
        cpa = self.root / "cpa.xml"
        if cpa.exists() and cpa.stat().st_mtime_ns != self.installed:
            self.installed = cpa.stat().st_mtime_ns
            self.msh.cpas = CpaRepository([load_cpa(cpa.read_bytes(), str(cpa))])

    ack_everything = False  # the faulty release: a MessageError is replaced by the last Acknowledgment
    last_ack = None

    async def on_http(self, entity: bytes):  # noqa: ANN201 - HttpReply
        self.install()
        reply = await super().on_http(entity)
        kind = self.gateway.outcomes[-1].response_kind if self.gateway.outcomes else None
        if kind == "ack":
            self.last_ack = reply
        elif kind == "error" and self.ack_everything and self.last_ack is not None:
            return self.last_ack
        return reply

    received = 0  # mails taken (SMTP), kept in ROOT/received

    async def on_mail(self, data: bytes, mail_from: str, rcpts: list[str]) -> None:
        self.install()
        self.received += 1
        kept = self.root / "received"
        kept.mkdir(exist_ok=True)
        (kept / f"{self.received}.eml").write_bytes(data)
        if self.mute or not self.ack_everything:
            await super().on_mail(data, mail_from, rcpts)
            return
        outcome = await asyncio.to_thread(self.msh.receive, data, datetime.now(UTC), transport="smtp")
        answer = outcome.response
        if outcome.response_kind == "ack":
            self.last_ack = answer
        elif outcome.response_kind == "error" and self.last_ack is not None:
            answer = self.last_ack
        if answer and self.gateway.smtp is not None:
            to = outcome.reply_to if (outcome.reply_to or "").startswith("mailto:") else mail_from
            await self.gateway.smtp.send(answer, to)

    def post(self, data: bytes, *, sender: int, receiver: int, action: str, conversation: str,
             answers: str | None = None) -> str:
        self.install()
        return super().post(data, sender=self.her_ids[0], receiver=TEST_CENTRE.her_id, action=action,
                            conversation=conversation, answers=answers)


def main() -> None:
    profile_file, pki_dir, root = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    profile = load_profile(profile_file)
    pki = network_pki(pki_dir, {**load_profiles(), profile.name: profile})
    relay = int(sys.argv[sys.argv.index("--smtp") + 1]) if "--smtp" in sys.argv else None
    gateway = VendorGateway(profile, root, pki, transport="smtp" if relay else "http")
    if relay:
        gateway.gateway.smtp = SmtpSender("127.0.0.1", relay, gateway.mailbox, timeout=10.0)
    if relay and "--starttls" in sys.argv:  # the same mailbox again, on a listener that requires TLS
        cert, key = issue_tls_certificate(pki.dir, root / "tls", "vendor-smtp", ["127.0.0.1"])
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(cert, key)
        gateway.loop.run(gateway.listener.stop())
        gateway.listener = SmtpListener({gateway.mailbox}, gateway.on_mail, tls_context=tls,
                                        require_starttls=True)
        gateway.loop.run(gateway.listener.start())
    gateway.her_ids = [profile.her_id, *[h for h in gateway.her_ids if h != profile.her_id]]
    gateway.mute = "--mute" in sys.argv
    gateway.ack_everything = "--ack-everything" in sys.argv
    ident = pki.identity(profile.slug)
    roles = roles_of_claims(profile, {m.key: m for m in message_types()})
    (root / "cpp.xml").write_bytes(cpp_of(CpaParty(str(profile.her_id), profile.name, ident.sign_cert,
                                                   ident.enc_cert, gateway.url, roles)))
    system = SimulatedSystem(profile, root, pki=pki).start()
    print(gateway.url if not relay else f"{gateway.url} 127.0.0.1:{gateway.listener.port}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.wait(0.2):
        pass
    system.stop()
    gateway.close()


if __name__ == "__main__":
    main()
