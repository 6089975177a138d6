"""Payload encryption as CMS EnvelopedData, the way the Norwegian ebXML framework carries payloads.

Profile (as the real NAV .p7m): EnvelopedData version 0, one KeyTransRecipientInfo per recipient
identified by issuerAndSerialNumber, key transport rsaEncryption (PKCS#1 v1.5), content aes-256-cbc,
content type id-data. cryptography's PKCS7EnvelopeBuilder produces exactly that.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import re
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


_PEM = re.compile(rb"-----BEGIN (CMS|PKCS7)-----(.*?)-----END \1-----", re.S)


def looks_like_cms(data: bytes) -> bool:
    """Whether `data` is CMS in one of the shapes `to_der` reads (DER, PEM, S/MIME), by its first bytes."""
    # DER: a SEQUENCE with a long-form (or BER indefinite) length; a text document starting with "0"
    # has a printable second byte
    if len(data) > 1 and data[0] == 0x30 and 0x80 <= data[1] <= 0x84:
        return True
    head = data.lstrip()[:2048].lower()
    return head.startswith((b"-----begin cms-----", b"-----begin pkcs7-----")) \
        or (b"content-type:" in head and b"pkcs7-mime" in head)


def to_der(data: bytes) -> bytes:
    """CMS as DER from DER, PEM (`openssl cms -outform PEM`) or S/MIME (`-outform SMIME`: a MIME entity
    application/(x-)pkcs7-mime, base64); SecurityError decrypt-failed naming the shape otherwise."""
    if data[:1] == b"\x30":
        return data
    m = _PEM.search(data)
    if m:
        try:
            return base64.b64decode(b"".join(m.group(2).split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SecurityError.of("decrypt-failed", f"PEM CMS: base64 cannot be decoded ({exc})") from None
    head = data.lstrip()[:2048].lower()
    if b"content-type:" in head and b"pkcs7-mime" in head:
        msg = email.message_from_bytes(data.lstrip(), policy=email.policy.compat32)
        if msg.get_content_subtype() not in ("pkcs7-mime", "x-pkcs7-mime"):
            raise SecurityError.of("decrypt-failed", f"S/MIME part is {msg.get_content_type()}, "
                                   "not application/pkcs7-mime")
        body = msg.get_payload(decode=True)
        if isinstance(body, bytes) and body[:1] == b"\x30":
            return body
        raise SecurityError.of("decrypt-failed", "S/MIME body is not base64 DER CMS")
    raise SecurityError.of("decrypt-failed", "not CMS: neither DER (leading SEQUENCE), PEM nor S/MIME")


def decrypt(der: bytes, keys: Sequence[tuple[x509.Certificate, PrivateKeyTypes]]) -> bytes:
    """Open EnvelopedData (DER, PEM or S/MIME) with whichever held key it was encrypted for.

    `keys` are (certificate, private key) pairs, current first; during a certificate change a party holds
    its previous decryption key beside the new one. The recipient info is matched on issuerAndSerialNumber.
    """
    if not keys:
        raise SecurityError.of("decrypt-no-key", "no decryption key held")
    der = to_der(der)
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
