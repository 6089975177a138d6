"""TLS server/client certificates from a test PKI's issuing CA, for HTTPS between relays in tests and
demos. Production relays use certificates from a real CA, named in hub.toml's `[http]` table.

    cert, key = issue_tls_certificate(pki_dir, out_dir, "relay-a", ["127.0.0.1", "localhost"])

The certificate file holds the leaf then the issuing CA (the chain a TLS peer needs); the key file is
written 0600. The test PKI's `trust/anchors.pem` is what peers verify it against.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hub.security import keystore


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return x509.SubjectAlternativeName(names)


def issue_tls_certificate(pki_dir: Path, out_dir: Path, name: str, hosts: list[str], *,
                          days: int = 365) -> tuple[Path, Path]:
    """A certificate for `hosts` (DNS names or IP addresses), good for TLS server and client use,
    signed by the test PKI's issuing CA. Returns (certificate chain PEM, private key PEM)."""
    pki_dir, out_dir = Path(pki_dir), Path(out_dir)
    issuer = keystore.load_certificate(pki_dir / "ca" / "issuing.pem")
    issuer_key = keystore.load_private_key(pki_dir / "ca" / "issuing.key.pem")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.public_key()),  # type: ignore[arg-type]
                       critical=False)
        .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out_dir / f"{name}.tls.pem", out_dir / f"{name}.tls.key"
    keystore.write_certificates(cert_path, [cert, issuer])
    keystore.write_private_key(key_path, key)
    return cert_path, key_path
