"""Message security speed: sign+verify per message against the raw RSA-2048 signing rate of this machine.

Prints `name: value` lines. The headline is `sign_verify_cost_vs_rsa_sign` = time of one sign+verify of a
KITH message / time of one raw RSA-2048 signature from `openssl speed` in the same run (target <= 2).
signxml's figure for the same work is printed beside ours for comparison.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from hub.security import cms, keystore
from hub.security.certs import CertificateValidator
from hub.security.pki import (
    PartySpec,
    init_pki,
    load_identity,
    load_intermediates,
    load_trust_anchors,
    serve_crl,
)
from hub.security.xmldsig import sign_enveloped, verify_enveloped

PROJECT = Path(__file__).resolve().parent.parent


def rate(fn: Callable[[], object], seconds: float = 1.5) -> float:
    """Calls per CPU second of this thread, after a short warm-up.

    CPU time, as `openssl speed` divides by user CPU time unless told `-elapsed`: on a shared virtual
    machine wall time also counts the time other tenants hold the core, which would weigh on our side
    of the ratio only.
    """
    for _ in range(20):
        fn()
    n, start = 0, time.thread_time()
    deadline = start + seconds
    while True:
        for _ in range(20):
            fn()
        n += 20
        now = time.thread_time()
        if now >= deadline:
            return n / (now - start)


def openssl_rsa2048_sign_per_s(seconds: int = 2) -> float | None:
    exe = shutil.which("openssl")
    if exe is None:
        return None
    cmd = [exe, "speed", "-seconds", str(seconds), "rsa2048"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    m = re.search(r"rsa\s+2048 bits\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)", out)
    return float(m.group(1)) if m else None


def message() -> bytes:
    sample = PROJECT / "fixtures" / "messages" / "dialogmelding-1.0-dialog-notat.xml"
    if sample.exists():
        return sample.read_bytes()
    body = "".join(f"<Linje n='{i}'>Blodprøve tatt, svar følger</Linje>" for i in range(60))
    return f'<MsgHead xmlns="http://www.kith.no/xmlstds/msghead/2006-05-24">{body}</MsgHead>'.encode()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "pki"
        with serve_crl(d) as srv:
            init_pki(
                d,
                [PartySpec("gp", "82001", "921543018"), PartySpec("lab", "83001", "918773207")],
                crl_url=srv.url,
                special=False,
            )
            gp, lab = load_identity(d, "gp"), load_identity(d, "lab")
            doc = message()
            print(f"message_bytes: {len(doc)}")

            signed = sign_enveloped(doc, gp.sign_key, gp.sign_cert)
            expected = [gp.sign_cert]

            def sign_verify() -> None:
                verify_enveloped(sign_enveloped(doc, gp.sign_key, gp.sign_cert), expected_certs=expected)

            # The machine is shared and noisy: alternate the two measurements in rounds and keep each
            # side's best round, so a burst of load on one side does not decide the ratio.
            sv_rounds, ossl_rounds = [], []
            for _ in range(5):
                sv_rounds.append(rate(sign_verify, 1.0))
                o = openssl_rsa2048_sign_per_s(1)
                if o:
                    ossl_rounds.append(o)
            sv = max(sv_rounds)
            print(f"sign_per_s: {rate(lambda: sign_enveloped(doc, gp.sign_key, gp.sign_cert)):.0f}")
            print(f"verify_per_s: {rate(lambda: verify_enveloped(signed, expected_certs=expected)):.0f}")
            print(f"sign_verify_per_s: {sv:.0f}")
            digest = b"\x00" * 32
            raw = rate(lambda: gp.sign_key.sign(digest, padding.PKCS1v15(), hashes.SHA256()))  # type: ignore[union-attr]
            print(f"cryptography_rsa2048_sign_per_s: {raw:.0f}")
            ossl = max(ossl_rounds) if ossl_rounds else None
            if ossl:
                print(f"openssl_rsa2048_sign_per_s: {ossl:.0f}")
                print(f"sign_verify_cost_vs_rsa_sign: {ossl / sv:.2f}")
            else:
                print("openssl_rsa2048_sign_per_s: unavailable (no openssl binary)")

            # where one sign+verify goes (microseconds per step; each runs once per sign or verify)
            from lxml import etree

            from hub.security import xmldsig
            from hub.xmlsafe import parse_bytes

            root = parse_bytes(signed).getroot()
            si = root.find(f"{{{xmldsig.DS}}}Signature/{{{xmldsig.DS}}}SignedInfo")
            pub = gp.sign_cert.public_key()
            sigval = gp.sign_key.sign(b"x", padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr]
            steps = {
                "parse": lambda: parse_bytes(signed),
                "c14n_document": lambda: xmldsig._c14n_document(root, False, False),
                "c14n_signedinfo": lambda: xmldsig.c14n_subtree(si, False, False),
                "serialize": lambda: etree.tostring(
                    root.getroottree(), xml_declaration=True, encoding="UTF-8"
                ),
                "rsa_verify": lambda: pub.verify(sigval, b"x", padding.PKCS1v15(), hashes.SHA256()),  # type: ignore[union-attr]
            }
            for name, fn in steps.items():
                print(f"step_{name}_us: {1e6 / rate(fn, 0.5):.0f}")
            print(f"step_rsa_sign_us: {1e6 / raw:.0f}")

            # signxml on the same work, for comparison (why hub does its own canonical profile)
            from signxml import XMLSigner, XMLVerifier

            signer = XMLSigner(c14n_algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315")

            def signxml_sign_verify() -> None:
                root = signer.sign(
                    etree.fromstring(doc),
                    key=gp.sign_key,
                    cert=[gp.sign_cert],
                    exclude_c14n_transform_element=True,
                )
                XMLVerifier().verify(etree.tostring(root), x509_cert=gp.sign_cert)

            sx = rate(signxml_sign_verify)
            print(f"signxml_sign_verify_per_s: {sx:.0f}")
            if ossl:
                print(f"signxml_sign_verify_cost_vs_rsa_sign: {ossl / sx:.2f}")

            # CMS: a signed message and a 1 MB attachment-sized payload
            enc = cms.encrypt(signed, [lab.enc_cert])
            print(f"cms_encrypt_per_s: {rate(lambda: cms.encrypt(signed, [lab.enc_cert])):.0f}")
            print(f"cms_decrypt_per_s: {rate(lambda: cms.decrypt(enc, lab.decryption_keys)):.0f}")
            big = bytes(1024 * 1024)
            big_enc = cms.encrypt(big, [lab.enc_cert])
            print(f"cms_encrypt_1mb_per_s: {rate(lambda: cms.encrypt(big, [lab.enc_cert]), 1.0):.1f}")
            print(
                f"cms_decrypt_1mb_per_s: {rate(lambda: cms.decrypt(big_enc, lab.decryption_keys), 1.0):.1f}"
            )

            # keys: parsing cost once, then cached
            key_path = d / "parties" / "gp" / "sign.key.pem"
            pem = key_path.read_bytes()
            from cryptography.hazmat.primitives.serialization import load_pem_private_key

            t = time.perf_counter()
            for _ in range(10):
                load_pem_private_key(pem, None)
            print(f"private_key_parse_ms: {(time.perf_counter() - t) / 10 * 1000:.1f}")
            keystore.load_private_key(key_path)
            print(f"private_key_cached_per_s: {rate(lambda: keystore.load_private_key(key_path), 0.5):.0f}")

            v = CertificateValidator(load_trust_anchors(d), load_intermediates(d))
            v.check(gp.sign_cert, "sign")
            print(f"cert_check_cached_crl_per_s: {rate(lambda: v.check(gp.sign_cert, 'sign'), 1.0):.0f}")
            print(f"crl_fetches: {v.fetches}")


if __name__ == "__main__":
    main()
