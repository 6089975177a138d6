"""The test network's PKI: an enterprise signing certificate for the test centre and for every system.

Built with hub.security.pki (root + issuing CA, the special expired / revoked / unknown-CA certificates)
and checked with hub.security.xmldsig and hub.security.certs, the same code the relay trusts. One PKI
per folder is created on first use and kept (key generation takes seconds), so evidence stays
verifiable later. Its CRLs are read from the PKI folder through the validator's fetch hook instead of
a loopback server: a kept PKI then needs no port baked into its certificates.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from lxml import etree

from hub.conformance.profiles import Profile
from hub.security.certs import CertificateValidator
from hub.security.errors import SecurityError
from hub.security.pki import (
    Identity,
    PartySpec,
    init_pki,
    layout,
    load_identity,
    load_intermediates,
    load_special,
    load_trust_anchors,
)
from hub.security.xmldsig import DS, cert_from_b64, check_expected, sign_enveloped, verify_enveloped
from hub.xmlsafe import XmlInputError, parse_bytes

TEST_CENTRE = "test-centre"
# Never resolved: the certificates only need a distribution point name (see the module docstring).
CRL_URL = "http://crl.test-network.invalid/crl/"
_SIGNATURE = f"{{{DS}}}Signature"


def party_specs(profiles: dict[str, Profile]) -> list[PartySpec]:
    from hub.conformance.simulated import TEST_CENTRE as CENTRE

    out = [PartySpec(TEST_CENTRE, str(CENTRE.her_id), "974600013", CENTRE.name)]
    out += [PartySpec(p.slug, str(p.her_id), "999999999", p.name) for p in profiles.values()]
    return out


@dataclass
class NetworkPki:
    dir: Path
    validator: CertificateValidator
    _ids: dict[str, Identity] = field(default_factory=dict)

    def identity(self, name: str) -> Identity:
        """`name`: TEST_CENTRE or a profile's slug."""
        if name not in self._ids:
            self._ids[name] = load_identity(self.dir, name)
        return self._ids[name]

    def special(self, kind: str) -> tuple[x509.Certificate, PrivateKeyTypes]:
        return load_special(self.dir, kind)

    def sign(self, data: bytes, name: str) -> bytes:
        ident = self.identity(name)
        return sign_enveloped(data, ident.sign_key, ident.sign_cert)

    def sign_with(self, data: bytes, kind: str) -> bytes:
        cert, key = self.special(kind)
        return sign_enveloped(data, key, cert)


_lock = threading.Lock()
_cache: dict[Path, NetworkPki] = {}


def network_pki(folder: Path, profiles: dict[str, Profile]) -> NetworkPki:
    """The PKI in `folder`, created (or re-created when a system is new) with a party per profile."""
    folder = folder.resolve()
    specs = party_specs(profiles)
    with _lock:
        pki = _cache.get(folder)
        if pki is None or not _has_parties(folder, specs):
            if not _has_parties(folder, specs):
                init_pki(folder, specs, crl_url=CRL_URL, overwrite=True)
            crl_dir = folder / "crl"

            def fetch(url: str, _timeout: float) -> bytes:
                return (crl_dir / url.rsplit("/", 1)[-1]).read_bytes()

            validator = CertificateValidator(load_trust_anchors(folder), load_intermediates(folder),
                                             fetch=fetch)
            pki = _cache[folder] = NetworkPki(folder, validator)
        return pki


def _has_parties(folder: Path, specs: list[PartySpec]) -> bool:
    if not (folder / "pki.json").exists():
        return False
    have = {(p.name, p.her_id) for p in layout(folder).parties}
    return all((s.name, s.her_id) in have for s in specs)


# --- judging -------------------------------------------------------------------------------------------


@dataclass
class SignatureCheck:
    """What the security checks found: `signature` (S01) and `certificate` (S02/S03) problems apart."""

    signed: bool
    signer: x509.Certificate | None = None
    signature: SecurityError | None = None
    certificate: SecurityError | None = None

    @property
    def error(self) -> SecurityError | None:
        return self.signature or self.certificate


def is_signed(data: bytes) -> bool:
    return DS.encode() in data and b"Signature" in data


def check_signature(data: bytes, pki: NetworkPki, registered: list[x509.Certificate] | None = None
                    ) -> SignatureCheck:
    """Verify the enveloped signature, then (if `registered`) that the signer is the registered sender,
    then the signer's certificate (time, path to the test root, revocation)."""
    try:
        out = SignatureCheck(True, verify_enveloped(data).certificate)
    except SecurityError as exc:
        # The certificate is judged on its own even when the signature fails: two findings, two cases.
        out = SignatureCheck(is_signed(data), _key_info_certificate(data), signature=exc)
    except XmlInputError:
        return SignatureCheck(False)
    if out.signer is None:
        return out
    try:  # the certificate's own state first: a revoked certificate is S03 whoever registered it
        pki.validator.check(out.signer, "sign")
        if registered is not None:
            check_expected(out.signer, registered)
    except SecurityError as exc:
        out.certificate = exc
    return out


def _key_info_certificate(data: bytes) -> x509.Certificate | None:
    """The one certificate in the signature's KeyInfo, if there is exactly one that parses."""
    try:
        root = parse_bytes(data).getroot()
        found = root.findall(f"{_SIGNATURE}/{{{DS}}}KeyInfo/{{{DS}}}X509Data/{{{DS}}}X509Certificate")
        if len(found) != 1:
            return None
        return cert_from_b64(found[0].text or "")
    except (XmlInputError, ValueError):
        return None


def strip_signature(data: bytes) -> bytes:
    """The document without its enveloped signature (older schemas do not allow ds:Signature)."""
    if not is_signed(data):
        return data
    try:
        root = parse_bytes(data).getroot()
    except XmlInputError:
        return data
    sigs = [el for el in root if el.tag == _SIGNATURE]
    if not sigs:
        return data
    for el in sigs:
        root.remove(el)
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")


def tamper(data: bytes) -> bytes:
    """A signed document changed after signing: its message id replaced (still valid otherwise)."""
    import uuid

    root = parse_bytes(data).getroot()
    ids = root.xpath("(//*[local-name()='MsgId'] | /*/*[local-name()='Id'])[1]")
    if ids:
        ids[0].text = str(uuid.uuid4())
    else:
        root.set("changed", "after-signing")
    return etree.tostring(root.getroottree(), xml_declaration=True, encoding="UTF-8")
