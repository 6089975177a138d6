"""Payload encryption as CMS EnvelopedData, the way the Norwegian ebXML framework carries payloads.

Profile (as the real NAV .p7m): EnvelopedData version 0, one KeyTransRecipientInfo per recipient
identified by issuerAndSerialNumber, key transport rsaEncryption (PKCS#1 v1.5), content aes-256-cbc,
content type id-data. cryptography's PKCS7EnvelopeBuilder produces exactly that.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import pkcs7

from hub.security.errors import SecurityError


def _is_encryption_cert(cert: x509.Certificate) -> bool:
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True  # no restriction stated; full validation is CertificateValidator's job
    return ku.key_encipherment


def encrypt(data: bytes, recipients: Sequence[x509.Certificate]) -> bytes:
    """EnvelopedData (DER) of `data` for each recipient's encryption certificate (RSA, keyEncipherment)."""
    if not recipients:
        raise SecurityError.of("encrypt-failed", "no recipient certificate given")
    builder = pkcs7.PKCS7EnvelopeBuilder().set_data(data).set_content_encryption_algorithm(algorithms.AES256)
    for cert in recipients:
        if not isinstance(cert.public_key(), rsa.RSAPublicKey):
            raise SecurityError.of("encrypt-failed", f"{cert.subject.rfc4514_string()}: needs RSA")
        if not _is_encryption_cert(cert):
            raise SecurityError.of(
                "certificate-wrong-usage",
                f"{cert.subject.rfc4514_string()} lacks keyEncipherment: not an encryption certificate",
            )
        builder = builder.add_recipient(cert)
    # Binary: the payload is bytes, never MIME-canonicalised text (no CRLF rewriting)
    return builder.encrypt(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary])


def decrypt(der: bytes, keys: Sequence[tuple[x509.Certificate, PrivateKeyTypes]]) -> bytes:
    """Open EnvelopedData (DER) with whichever held key it was encrypted for.

    `keys` are (certificate, private key) pairs, current first; during a certificate change a party holds
    its previous decryption key beside the new one. The recipient info is matched on issuerAndSerialNumber.
    """
    if not keys:
        raise SecurityError.of("decrypt-no-key", "no decryption key held")
    if der[:1] != b"\x30":
        raise SecurityError.of("decrypt-failed", "not DER CMS (no leading SEQUENCE); still base64?")
    last: str = ""
    for cert, key in keys:
        try:
            return pkcs7.pkcs7_decrypt_der(der, cert, key, [])  # type: ignore[arg-type]
        except ValueError as exc:
            text = str(exc)
            if "No recipient" in text:
                last = text
                continue
            raise SecurityError.of("decrypt-failed", f"cannot decrypt the EnvelopedData: {text}") from None
        except Exception as exc:  # UnsupportedAlgorithm and friends: report, do not crash the relay
            raise SecurityError.of("decrypt-failed", f"cannot decrypt the EnvelopedData: {exc}") from None
    held = "; ".join(f"{c.issuer.rfc4514_string()} #{c.serial_number:x}" for c, _ in keys)
    raise SecurityError.of(
        "decrypt-no-key", f"the message is not encrypted for any certificate we hold ({held}): {last}"
    )
