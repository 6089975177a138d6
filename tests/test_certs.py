"""Certificate validation: path, time, usage, CRL revocation over real loopback HTTP."""

from __future__ import annotations

import datetime as dt
import socket

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from hub.security import keystore
from hub.security.certs import CertificateValidator, her_id_of, org_no_of
from hub.security.errors import SecurityError
from hub.security.pki import (
    PartySpec,
    init_pki,
    load_identity,
    load_intermediates,
    load_special,
    load_trust_anchors,
    publish_crl,
    revoke,
    serve_crl,
)


@pytest.fixture()
def validator(pki, tmp_path):
    return CertificateValidator(
        load_trust_anchors(pki.dir), load_intermediates(pki.dir), crl_cache_dir=tmp_path
    )


def _expect(kind: str, code: str, fn, *args, permanent: bool = True, **kw) -> SecurityError:
    with pytest.raises(SecurityError) as ei:
        fn(*args, **kw)
    assert (ei.value.kind, ei.value.apprec_code, ei.value.permanent) == (kind, code, permanent), str(ei.value)
    assert ei.value.ebms_code == "SecurityFailure"
    return ei.value


def test_good_certificates(validator, gp):
    r = validator.check(gp.sign_cert, "sign")
    assert [c.subject for c in r.chain] == [gp.sign_cert.subject, gp.chain[0].subject, gp.chain[1].subject]
    assert r.revocation == "good" and r.crl_next_update is not None
    assert 3 * 365 - 2 <= r.days_to_expiry <= 3 * 365
    assert (r.org_no, r.her_id) == ("921543018", "82001")
    assert (org_no_of(gp.enc_cert), her_id_of(gp.enc_cert)) == ("921543018", "82001")
    assert validator.check(gp.enc_cert, "encrypt").chain[0] == gp.enc_cert


def test_wrong_usage(validator, pki, gp):
    _expect("certificate-wrong-usage", "S02", validator.check, gp.enc_cert, "sign")
    err = _expect("certificate-wrong-usage", "S02", validator.check, gp.sign_cert, "encrypt")
    assert "keyEncipherment" in err.message
    _expect(
        "certificate-wrong-usage", "S02", validator.check, load_special(pki.dir, "wrong-usage")[0], "sign"
    )


def test_expired_and_not_yet_valid(validator, pki, gp):
    err = _expect("certificate-expired", "S02", validator.check, load_special(pki.dir, "expired")[0], "sign")
    assert "expired on" in err.message
    _expect(
        "certificate-not-yet-valid", "S02", validator.check, load_special(pki.dir, "not-yet-valid")[0], "sign"
    )
    # the message's time decides, not the clock
    later = gp.sign_cert.not_valid_after_utc + dt.timedelta(days=1)
    _expect("certificate-expired", "S02", validator.check, gp.sign_cert, "sign", later)


def test_revoked_is_s03(validator, pki):
    err = _expect("certificate-revoked", "S03", validator.check, load_special(pki.dir, "revoked")[0], "sign")
    assert "key_compromise" in err.message


def test_self_signed_and_unknown_ca(validator, pki):
    err = _expect(
        "certificate-self-signed", "S02", validator.check, load_special(pki.dir, "self-signed")[0], "sign"
    )
    assert "self-signed" in err.message
    err = _expect(
        "certificate-unknown-ca", "S02", validator.check, load_special(pki.dir, "unknown-ca")[0], "sign"
    )
    assert "Rogue Test CA" in err.message


def test_crl_cached_until_next_update(pki, gp, tmp_path):
    anchors, inter = load_trust_anchors(pki.dir), load_intermediates(pki.dir)
    v = CertificateValidator(anchors, inter, crl_cache_dir=tmp_path)
    before = len(pki.crl.requests)
    for _ in range(3):
        v.check(gp.sign_cert, "sign")
    assert v.fetches == 2  # issuing.crl for the leaf, root.crl for the issuing CA; once each
    assert len(pki.crl.requests) - before == 2
    # a new validator (a restart) reads the disk cache instead of the network
    v2 = CertificateValidator(anchors, inter, crl_cache_dir=tmp_path)
    v2.check(gp.sign_cert, "sign")
    assert v2.fetches == 0 and len(pki.crl.requests) - before == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_crl_is_transient_then_recovers(tmp_path):
    port = _free_port()
    d = tmp_path / "pki"
    init_pki(d, [PartySpec("p", "1", "2")], crl_url=f"http://127.0.0.1:{port}/crl/", special=False)
    p = load_identity(d, "p")
    v = CertificateValidator(load_trust_anchors(d), load_intermediates(d), fetch_timeout=1.0)
    err = _expect("crl-unavailable", "S99", v.check, p.sign_cert, "sign", permanent=False)
    assert "try again later" in err.message and err.transient
    with serve_crl(d, port=port):
        assert v.check(p.sign_cert, "sign").revocation == "good"


def test_revocation_after_publication_and_bad_crl(tmp_path):
    d = tmp_path / "pki"
    with serve_crl(d) as srv:
        init_pki(d, [PartySpec("p", "1", "2")], crl_url=srv.url, special=False)
        p = load_identity(d, "p")
        anchors, inter = load_trust_anchors(d), load_intermediates(d)
        assert CertificateValidator(anchors, inter).check(p.sign_cert, "sign").revocation == "good"
        revoke(d, p.sign_cert, reason="superseded")
        # revoked after the message was made (not a key compromise): the message still stands
        old_msg = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        CertificateValidator(anchors, inter).check(p.sign_cert, "sign", old_msg)
        _expect("certificate-revoked", "S03", CertificateValidator(anchors, inter).check, p.sign_cert, "sign")
        # a CRL signed by someone else is not believed, and that is not the sender's fault: transient
        rogue_key = keystore.load_private_key(d / "ca" / "rogue.key.pem")
        issuing = keystore.load_certificate(d / "ca" / "issuing.pem")
        now = dt.datetime.now(dt.UTC)
        forged = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(issuing.subject)
            .last_update(now)
            .next_update(now + dt.timedelta(days=1))
            .sign(rogue_key, hashes.SHA256())
        )
        (d / "crl" / "issuing.crl").write_bytes(forged.public_bytes(Encoding.DER))
        err = _expect(
            "crl-invalid",
            "S99",
            CertificateValidator(anchors, inter).check,
            p.sign_cert,
            "sign",
            permanent=False,
        )
        assert "not signed by" in err.message
        publish_crl(d, valid_for=dt.timedelta(seconds=-10))  # published already stale
        _expect(
            "crl-invalid",
            "S99",
            CertificateValidator(anchors, inter).check,
            p.enc_cert,
            "encrypt",
            permanent=False,
        )
