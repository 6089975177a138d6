"""The relay's keys, certificates and trust, from files named in hub.toml (PEM or PKCS#12).

    [[identities]]                  # one per own HER-id; the relay's own (her_id) signs for the rest
    her_id = 80000
    sign = "keys/sign.p12"          # PKCS#12 with certificate and key, or sign_cert + sign_key (PEM)
    enc = "keys/enc.p12"            # or enc_cert + enc_key; previous_enc = ["old-enc.p12"] still decrypt
    password_file = "keys/p12.pass" # for encrypted PKCS#12 / PEM keys (first line)
    [trust]
    anchors = ["trust/anchors.pem"]          # root CAs (Buypass, Commfides; the test root)
    intermediates = ["trust/issuing.pem"]
    check_revocation = true                  # CRLs from the certificates' distribution points
    crl_cache = "crl-cache"                  # kept CRLs (optional)
    crl_timeout_s = 3
    [tls]                                    # the listeners' server certificate (SMTP STARTTLS, HTTPS)
    cert = "tls/relay.pem"                   # PEM: the certificate (and its chain), and its key
    key = "tls/relay.key.pem"

Without these, `pki = "<folder>"` (+ `identity = "<party>"`) takes all of them from a test PKI made by
`hub pki init` (hub.security.pki, a generator of such files).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from hub.security import keystore
from hub.security.certs import CertificateValidator
from hub.security.errors import SecurityError


class IdentityConfigError(ValueError):
    pass


@dataclass(frozen=True)
class KeyPair:
    """A certificate with its private key: a PKCS#12 file, or a PEM certificate and a PEM key."""

    cert: Path
    key: Path | None = None  # None: `cert` is PKCS#12 holding both
    password_file: Path | None = None

    def load(self) -> tuple[x509.Certificate, PrivateKeyTypes]:
        password = _password(self.password_file)
        if self.key is None:
            return keystore.load_pkcs12(self.cert, password)
        return keystore.load_certificate(self.cert), keystore.load_private_key(self.key, password)


@dataclass(frozen=True)
class OwnIdentity:
    her_id: str
    sign: KeyPair
    enc: KeyPair
    previous_enc: tuple[KeyPair, ...] = ()

    def load(self) -> tuple[x509.Certificate, PrivateKeyTypes, list[tuple[x509.Certificate, PrivateKeyTypes]]]:  # noqa: E501
        """(signing certificate, signing key, decryption keys newest first)."""
        sc, sk = self.sign.load()
        return sc, sk, [self.enc.load(), *(p.load() for p in self.previous_enc)]


@dataclass(frozen=True)
class Trust:
    anchors: tuple[Path, ...]
    intermediates: tuple[Path, ...] = ()
    check_revocation: bool = True
    crl_cache: Path | None = None
    crl_timeout_s: float = 3.0

    def validator(self) -> CertificateValidator:
        anchors = [c for p in self.anchors for c in keystore.load_certificates(p)]
        inter = [c for p in self.intermediates for c in keystore.load_certificates(p)]
        return CertificateValidator(anchors, inter, self.crl_cache, self.crl_timeout_s,
                                    check_revocation=self.check_revocation)

    def client_tls(self) -> ssl.SSLContext:
        """For outbound TLS (SMTP STARTTLS, HTTPS): the peer's certificate must chain to our anchors."""
        ctx = ssl.create_default_context(cafile=None)
        ctx.load_verify_locations(cadata="".join(p.read_text(encoding="ascii") for p in self.anchors))
        return ctx


@dataclass(frozen=True)
class Security:
    """Everything of hub.toml that names keys, certificates and trust."""

    identities: tuple[OwnIdentity, ...] = ()
    trust: Trust | None = None
    tls: KeyPair | None = None
    legacy: dict[str, Any] = field(default_factory=dict)  # pki folder and party name (test PKI layout)

    def identity(self, her_id: int | str) -> OwnIdentity | None:
        return next((i for i in self.identities if i.her_id == str(her_id)), None)

    def server_tls(self) -> ssl.SSLContext | None:
        """The listeners' TLS context ([tls]); None when no certificate is configured."""
        if self.tls is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.tls.cert, self.tls.key, password=_password(self.tls.password_file))
        return ctx

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path) -> Security:
        def p(v: Any) -> Path:  # noqa: ANN401 - TOML value
            if not isinstance(v, str) or not v:
                raise IdentityConfigError(f"expected a file name, got {v!r}")
            q = Path(v)
            return q if q.is_absolute() else base / q

        def pair(sec: dict[str, Any], name: str, where: str) -> KeyPair:
            pw = p(sec["password_file"]) if sec.get("password_file") else None
            if sec.get(name):
                return KeyPair(p(sec[name]), None, pw)
            if sec.get(f"{name}_cert") and sec.get(f"{name}_key"):
                return KeyPair(p(sec[f"{name}_cert"]), p(sec[f"{name}_key"]), pw)
            raise IdentityConfigError(f"{where}: give {name} (PKCS#12) or {name}_cert and {name}_key (PEM)")

        idents = []
        for i, sec in enumerate(d.get("identities", []) or []):
            where = f"identities[{i}]"
            if not str(sec.get("her_id", "")).isdigit():
                raise IdentityConfigError(f"{where}: her_id (an integer) is required")
            pw = {"password_file": sec["password_file"]} if sec.get("password_file") else {}
            prev = tuple(pair({"enc": x, **pw}, "enc", where) for x in sec.get("previous_enc", []))
            idents.append(OwnIdentity(str(sec["her_id"]), pair(sec, "sign", where), pair(sec, "enc", where),
                                      prev))
        trust = None
        if t := d.get("trust"):
            anchors = t.get("anchors") or []
            anchors = [anchors] if isinstance(anchors, str) else anchors
            if not anchors:
                raise IdentityConfigError("trust.anchors: at least one trust anchor file is needed")
            inter = t.get("intermediates") or []
            inter = [inter] if isinstance(inter, str) else inter
            trust = Trust(tuple(p(a) for a in anchors), tuple(p(x) for x in inter),
                          bool(t.get("check_revocation", True)),
                          p(t["crl_cache"]) if t.get("crl_cache") else None,
                          float(t.get("crl_timeout_s", 3.0)))
        tls = None
        if t := d.get("tls"):
            if not (t.get("cert") and t.get("key")):
                raise IdentityConfigError("tls: give cert and key (PEM files)")
            pw = p(t["password_file"]) if t.get("password_file") else None
            tls = KeyPair(p(t["cert"]), p(t["key"]), pw)
        legacy = {"pki": p(d["pki"]), "identity": d.get("identity")} if d.get("pki") else {}
        return cls(tuple(idents), trust, tls, legacy)

    @classmethod
    def from_settings(cls, s: Any, base: Path) -> Security:  # noqa: ANN401 - hub.config.HubSettings
        """From hub.toml as hub.config validated it."""
        d: dict[str, Any] = {
            "identities": [{k: v for k, v in i.model_dump().items() if v not in (None, [])}
                           for i in s.identities],
            "trust": s.trust.model_dump() if s.trust is not None else None,
            "tls": s.tls.model_dump() if s.tls is not None else None,
            "pki": s.pki, "identity": s.identity,
        }
        return cls.from_dict(d, base)

    def with_test_pki(self, her_id: int) -> Security:
        """Fill what is not configured from a test PKI folder (`pki = ...`): the relay's identity (the
        party named by `identity`, else the one with this HER-id, else "hub"), anchors and issuing CA."""
        pki = self.legacy.get("pki")
        if pki is None:
            return self
        from hub.security.pki import PkiLayout, layout

        lay: PkiLayout = layout(pki)
        name = self.legacy.get("identity") or next(
            (x.name for x in lay.parties if str(x.her_id) == str(her_id)), "hub")
        if name not in {x.name for x in lay.parties}:
            known = ", ".join(x.name for x in lay.parties)
            raise SecurityError.of("key-error", f"no party {name!r} in {pki} (parties: {known})")
        idents = self.identities
        if self.identity(her_id) is None:
            d = lay.party_dir(name)
            prev = tuple(KeyPair(k.with_name(k.name.replace(".key.pem", ".pem")), k)
                         for k in sorted(d.glob("enc-previous-*.key.pem"), reverse=True))
            own = OwnIdentity(str(her_id), KeyPair(lay.cert(name, "sign"), lay.key(name, "sign")),
                              KeyPair(lay.cert(name, "enc"), lay.key(name, "enc")), prev)
            idents = (*idents, own)
        trust = self.trust or Trust((lay.anchors,), (lay.issuing_cert,))
        return Security(idents, trust, self.tls, self.legacy)

    @property
    def configured(self) -> bool:
        return bool(self.identities) or bool(self.legacy)


def _password(path: Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes().splitlines()[0] if path.read_bytes() else b""
    except OSError as exc:
        raise SecurityError.of("key-error", f"cannot read {path}: {exc.strerror}") from None
