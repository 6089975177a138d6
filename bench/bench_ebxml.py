"""Receiving ebXML under a CPA: what the CPA-driven packaging costs the receiving MSH.

Prints `name: value` lines, ratios against a baseline measured in the same run:
- `receive_gzip_vs_plain_cms`: Msh.receive of a message whose document is gzipped inside the CMS (NAV's
  packaging, recognised by content) / the same message without gzip. Near 1: decompression is a small
  part of verify + decrypt.
- `receive_plain_payload_vs_cms`: an unencrypted payload where the CPA says isConfidential="none" / the
  same encrypted: what the RSA key transport and AES decryption cost a receiver.
- `receive_cms_vs_rsa_sign`: one Msh.receive (CMS) / one raw RSA-2048 signature of this machine.
Times are CPU time of this thread (the best of two interleaved rounds of 60 messages each).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hub.ebxml import compression
from hub.ebxml.corpus import CpaParty, build_cpa
from hub.ebxml.cpa import CpaRepository, load_cpa
from hub.ebxml.envelope import ManifestRef, MessageHeader, Party, build_envelope, new_id, serialize
from hub.ebxml.mime import PLAIN_TYPE, build_package, new_cid
from hub.ebxml.msh import LocalParty, Msh
from hub.ebxml.signature import sign_envelope
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.security import cms
from hub.security.pki import load_identity
from hub.security.testing import shared_test_pki

NOW = datetime.now(UTC)
N = 60  # messages per variant and round


def rate(fn: Callable[[], object], seconds: float = 1.0) -> float:
    """Calls per CPU second of this thread, after a warm-up."""
    for _ in range(3):
        fn()
    n, start = 0, time.thread_time()
    while time.thread_time() - start < seconds:
        fn()
        n += 1
    return n / (time.thread_time() - start)


def main() -> None:
    pki = shared_test_pki().dir
    gp, lab = load_identity(pki, "gp"), load_identity(pki, "lab")
    roles_a = [("DIALOG_NOTATsender", "S-DIALOG_NOTAT", ["DIALOG_NOTAT"], [])]
    roles_b = [("DIALOG_NOTATreceiver", "S-DIALOG_NOTAT", [], ["DIALOG_NOTAT"])]
    plain = {"confidential": "none"}  # the CPA lets a plain payload come (isConfidential="none")
    repo = CpaRepository([load_cpa(build_cpa("bench:1", [
        CpaParty("82001", "GP", gp.sign_cert, gp.enc_cert, "mailto:gp@x.test", roles_a, **plain),
        CpaParty("83001", "Lab", lab.sign_cert, lab.enc_cert, "mailto:lab@x.test", roles_b, **plain)],
        datetime(2020, 1, 1, tzinfo=UTC), datetime(2040, 1, 1, tzinfo=UTC)))])
    doc = build("Dialogmelding", "1.0", sender=people.GP_FASTLEGE, receiver=people.HOSP_POLIKLINIKK,
                msg_type="DIALOG_NOTAT", gen_date=NOW.replace(tzinfo=None), msg_id=new_id())

    def message(part: bytes, encrypted: bool) -> Callable[[], bytes]:
        def make() -> bytes:  # a fresh MessageId each time: duplicate elimination must not short-cut
            h = MessageHeader(Party.her("82001", "DIALOG_NOTATsender"),
                              Party.her("83001", "DIALOG_NOTATreceiver"),
                              "bench:1", new_id(), "S-DIALOG_NOTAT", "DIALOG_NOTAT", new_id(), NOW)
            cid = new_cid("bench")
            env = build_envelope(h, ack_requested=True, manifest=[ManifestRef("cid:" + cid)])
            sign_envelope(env, gp.sign_key, gp.sign_cert, {cid: part})  # type: ignore[arg-type]
            return build_package(serialize(env), [(cid, part)],
                                 **({} if encrypted else {"payload_type": PLAIN_TYPE}))
        return make

    variants = {
        "cms": message(cms.encrypt(doc, [lab.enc_cert]), True),
        "gzip_cms": message(cms.encrypt(compression.compress(doc), [lab.enc_cert]), True),
        "plain": message(doc, False),
    }
    msh = Msh([LocalParty("83001", lab.sign_cert, lab.sign_key, list(lab.decryption_keys))], cpas=repo)
    msgs = {name: [make() for _ in range(N + 1)] for name, make in variants.items()}
    rates = {}
    for _ in range(2):  # interleaved rounds, the best of each: other tenants' load hits every variant
        for name, batch in msgs.items():
            out = msh.receive(batch[0], NOW)
            assert out.status == "delivered", (name, out.errors)
            start = time.thread_time()
            for m in batch[1:]:
                msh.receive(m, NOW)
            rates[name] = max(rates.get(name, 0.0), N / (time.thread_time() - start))
            msh.seen = type(msh.seen)()  # forget: the next round receives the same MessageIds anew
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_rate = rate(lambda: key.sign(b"x" * 64, padding.PKCS1v15(), hashes.SHA256()))
    print(f"receive_gzip_vs_plain_cms: {rates['cms'] / rates['gzip_cms']:.2f}")
    print(f"receive_plain_payload_vs_cms: {rates['cms'] / rates['plain']:.2f}")
    print(f"receive_cms_vs_rsa_sign: {rsa_rate / rates['cms']:.2f}")
    print(f"receive_cms_per_s: {rates['cms']:.0f}")


if __name__ == "__main__":
    main()
