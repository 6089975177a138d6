"""Loading certificates and private keys from PEM files, parsed once and kept.

Loading an RSA private key costs tens of milliseconds (key checks), signing with a loaded one about
one: everything here is cached per file, keyed on the file's size and mtime so a replaced file is
reloaded.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12

from hub.fsmode import write_private
from hub.security.errors import SecurityError

_lock = threading.Lock()
_cache: dict[tuple[str, str], tuple[tuple[int, int], Any]] = {}


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return (st.st_mtime_ns, st.st_size)


def _cached(kind: str, path: Path, load: Any) -> Any:
    key = (kind, str(path.resolve()))
    try:
        stamp = _stamp(path)
    except OSError as exc:
        raise SecurityError.of("key-error", f"cannot read {path}: {exc.strerror}") from None
    with _lock:
        hit = _cache.get(key)
        if hit and hit[0] == stamp:
            return hit[1]
    value = load(path.read_bytes())
    with _lock:
        _cache[key] = (stamp, value)
    return value


def load_certificates(path: Path) -> list[x509.Certificate]:
    """All certificates in a PEM (or single DER) file."""

    def load(data: bytes) -> list[x509.Certificate]:
        try:
            if b"-----BEGIN" in data:
                return x509.load_pem_x509_certificates(data)
            return [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise SecurityError.of("key-error", f"{path} holds no readable certificate: {exc}") from None

    return list(_cached("certs", Path(path), load))


def load_certificate(path: Path) -> x509.Certificate:
    """The first certificate in a PEM or DER file."""
    return load_certificates(path)[0]


def load_private_key(path: Path, password: bytes | None = None) -> PrivateKeyTypes:
    def load(data: bytes) -> PrivateKeyTypes:
        try:
            if b"-----BEGIN" in data:
                return serialization.load_pem_private_key(data, password=password)
            return serialization.load_der_private_key(data, password=password)
        except (ValueError, TypeError) as exc:
            raise SecurityError.of("key-error", f"{path} holds no readable private key: {exc}") from None

    return _cached("key", Path(path), load)


def load_pkcs12(path: Path, password: bytes | None = None) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """The certificate and key of a PKCS#12 file (.p12/.pfx, as Buypass and Commfides issue them)."""

    def load(data: bytes) -> tuple[x509.Certificate, PrivateKeyTypes]:
        try:
            key, cert, _chain = pkcs12.load_key_and_certificates(data, password)
        except (ValueError, TypeError) as exc:
            raise SecurityError.of("key-error", f"{path} is no readable PKCS#12 file: {exc}") from None
        if key is None or cert is None:
            raise SecurityError.of("key-error", f"{path} holds no certificate with its private key")
        return cert, key

    return _cached(f"p12:{password!r}", Path(path), load)


def write_pkcs12(path: Path, cert: x509.Certificate, key: PrivateKeyTypes, password: bytes | None = None,
                 chain: list[x509.Certificate] | None = None) -> None:
    """A PKCS#12 file, mode 0600 from the first byte."""
    enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
    data = pkcs12.serialize_key_and_certificates(None, key, cert, chain, enc)  # type: ignore[arg-type]
    write_private(path, data)


def write_private_key(path: Path, key: PrivateKeyTypes) -> None:
    """PEM (PKCS#8, unencrypted), mode 0600 from the first byte: never world-readable, not even briefly."""
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    write_private(path, pem)


def write_certificates(path: Path, certs: list[x509.Certificate]) -> None:
    """Certificates are public, but the hub's files are its own: 0600 in a 0700 folder like the rest."""
    write_private(path, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))
