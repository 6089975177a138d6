"""CPU per message of the receiving side of an ebXML relay, step by step (issue 17): where the Python
around the RSA work goes when a signed and encrypted message (and its Acknowledgment) comes in.

    .venv/bin/python -m bench.profile_intake            # `name: value` lines, microseconds of CPU
    .venv/bin/python -m bench.profile_intake --profile  # and cProfile's top functions per step

Steps, each on this thread's CPU clock (time.thread_time), the best of three rounds:
- `intake_smtp_data_us`: an aiosmtpd listener (hub.transport.smtp) taking one mail over loopback, its
  event-loop thread only (the sender runs in another thread);
- `intake_smtp_send_us`: the other side of that: the pooled aiosmtplib sender (SmtpSender), its thread;
  both on the relay's default event loop (uvloop), and `*_asyncio_loop_us` on asyncio's own;
- `intake_peek_us`: MIME + envelope parse and duplicate digest before the mail is stored;
- `intake_receive_us`: Msh.receive with that parse handed over (signature, CPA/register, CMS decrypt,
  the signed Acknowledgment): two RSA private-key operations;
- `intake_signal_us`: the sending relay taking the Acknowledgment (peek + verify + match);
- `rsa2048_private_op_us`: one RSA-2048 PKCS#1 v1.5 signature, for scale.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from hub.ebxml.msh import LocalParty, Msh, Peer, Peers
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.relay.ebms_intake import peek
from hub.security.pki import load_identity
from hub.security.testing import shared_test_pki
from hub.transport.loops import new_event_loop
from hub.transport.smtp import SmtpListener, SmtpSender, wrap_mail

N = 200
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def per_call_us(items: list, fn: Callable[[object], object],
                profile: cProfile.Profile | None = None) -> float:
    """CPU microseconds per call of fn over items (this thread), the best of three rounds."""
    best = float("inf")
    for _ in range(3):
        if profile is not None:
            profile.enable()
        start = time.thread_time()
        for it in items:
            fn(it)
        best = min(best, (time.thread_time() - start) * 1e6 / len(items))
        if profile is not None:
            profile.disable()
    return best


def smtp_data_us(mails: list[bytes], profile: cProfile.Profile | None = None,
                 event_loop: str = "auto") -> tuple[float, float]:
    """CPU of the listener's event-loop thread per mail (MAIL, RCPT, DATA over one kept session), and
    of the sender's thread (each the best of three rounds); both on loops of that kind (hub.transport.loops,
    as the relay's `event_loop`)."""
    ready, stop = threading.Event(), threading.Event()
    box: dict[str, object] = {}

    async def store(data: bytes, mail_from: str, rcpts: list[str]) -> None:
        return None

    async def nothing(data: bytes, mail_from: str, rcpts: list[str]) -> None:
        return None

    def serve() -> None:
        async def main() -> None:
            li = await SmtpListener({"edi@b.test"}, nothing, store=store).start()
            box["listener"], box["loop"] = li, asyncio.get_running_loop()
            ready.set()
            if profile is not None:
                profile.enable()
            while not stop.is_set():
                await asyncio.sleep(0.01)
            if profile is not None:
                profile.disable()
            await li.stop()

        with asyncio.Runner(loop_factory=lambda: new_event_loop(event_loop)) as runner:
            runner.run(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ready.wait(10)
    li, loop = box["listener"], box["loop"]
    assert isinstance(li, SmtpListener) and isinstance(loop, asyncio.AbstractEventLoop)

    def server_cpu() -> float:
        return asyncio.run_coroutine_threadsafe(_thread_time(), loop).result()

    async def send_all() -> None:
        sender = SmtpSender("127.0.0.1", li.port, "edi@a.test", pool=1)
        for m in mails[:5]:
            await sender.send(m, "mailto:edi@b.test")
        best = best_send = float("inf")
        for _ in range(3):
            c0, s0 = server_cpu(), time.thread_time()
            for m in mails:
                await sender.send(m, "mailto:edi@b.test")
            best_send = min(best_send, (time.thread_time() - s0) * 1e6 / len(mails))
            best = min(best, (server_cpu() - c0) * 1e6 / len(mails))
        await sender.close()
        box["best"], box["best_send"] = best, best_send

    with asyncio.Runner(loop_factory=lambda: new_event_loop(event_loop)) as runner:
        runner.run(send_all())
    stop.set()
    t.join(10)
    return float(box["best"]), float(box["best_send"])  # type: ignore[arg-type]


async def _thread_time() -> float:
    return time.thread_time()


def main() -> int:
    profile = "--profile" in sys.argv[1:]
    pki = shared_test_pki().dir
    gp, lab = load_identity(pki, "gp"), load_identity(pki, "lab")
    sender = Msh([LocalParty.of(gp)], peers=Peers({lab.her_id: Peer(lab.her_id, lab.sign_cert, lab.enc_cert,
                                                                     "mailto:edi@b.test")}))
    receiver = Msh([LocalParty.of(lab)], peers=Peers({gp.her_id: Peer(gp.her_id, gp.sign_cert, gp.enc_cert,
                                                                      "mailto:edi@a.test")}))
    doc = build("Dialogmelding", "1.0", sender=people.GP_FASTLEGE, receiver=people.HOSP_POLIKLINIKK,
                msg_type="DIALOG_NOTAT", gen_date="2026-01-05T10:00:00")
    entities = [sender.send(from_her=gp.her_id, to_her=lab.her_id, payload=doc, now=NOW,
                            message_type="DIALOG_NOTAT").data for _ in range(N)]
    mails = [wrap_mail(e, mail_from="edi@a.test", rcpt_to="edi@b.test") for e in entities]
    print(f"intake_mail_bytes: {len(mails[0])}")
    profs = {name: cProfile.Profile() if profile else None for name in ("peek", "receive", "signal", "smtp")}

    peeks = [peek(m) for m in mails]
    print(f"intake_peek_us: {per_call_us(mails, peek, profs['peek']):.0f}")  # type: ignore[arg-type]

    acks: list[bytes] = []

    def receive(i: object) -> None:
        assert isinstance(i, int)
        p = peeks[i]
        out = receiver.receive(mails[i], NOW, parsed=p.parsed, digest=p.digest, record=False)  # type: ignore[union-attr]
        assert out.status == "delivered", out.errors
        if len(acks) < N:
            acks.append(out.response or b"")

    print(f"intake_receive_us: {per_call_us(list(range(N)), receive, profs['receive']):.0f}")
    ack_mails = [wrap_mail(a, mail_from="edi@b.test", rcpt_to="edi@a.test") for a in acks]

    def signal(m: object) -> None:
        assert isinstance(m, bytes)
        p = peek(m)
        assert not isinstance(p, Exception) and p.signal
        out = sender.receive(m, NOW, parsed=p.parsed)
        assert out.status == "signal" and not out.errors, out.errors

    print(f"intake_signal_us: {per_call_us(ack_mails, signal, profs['signal']):.0f}")
    listener_us, sender_us = smtp_data_us(mails, profs["smtp"])  # on the relay's default loop (uvloop)
    print(f"intake_smtp_data_us: {listener_us:.0f}")
    print(f"intake_smtp_send_us: {sender_us:.0f}")
    listener_us, sender_us = smtp_data_us(mails, None, "asyncio")  # on asyncio's own, for comparison
    print(f"intake_smtp_data_asyncio_loop_us: {listener_us:.0f}")
    print(f"intake_smtp_send_asyncio_loop_us: {sender_us:.0f}")
    key = lab.sign_key
    sign = per_call_us(list(range(200)), lambda _: key.sign(b"x" * 32, padding.PKCS1v15(), hashes.SHA256()))  # type: ignore[union-attr]
    print(f"rsa2048_private_op_us: {sign:.0f}")
    for name, p in profs.items():
        if p is not None:
            print(f"# --- {name}")
            pstats.Stats(p).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
