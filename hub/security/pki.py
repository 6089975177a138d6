"""A test PKI shaped like the Norwegian enterprise-certificate PKI (Buypass/Commfides style).

`init_pki(DIR)` writes:

    DIR/pki.json                      parties, CRL base URL, revoked serials
    DIR/ca/root.pem  root.key.pem     trust anchor (self-signed)
    DIR/ca/issuing.pem issuing.key.pem  issuing CA (signs every party certificate)
    DIR/ca/rogue.pem rogue.key.pem    a CA nobody trusts (for "unknown CA")
    DIR/trust/anchors.pem             the trust anchors a validator should be configured with
    DIR/crl/root.crl  issuing.crl     DER CRLs, served by `serve_crl` at <crl_url>root.crl, ...
    DIR/parties/NAME/sign.pem sign.key.pem   nonRepudiation + digitalSignature
    DIR/parties/NAME/enc.pem  enc.key.pem    keyEncipherment + dataEncipherment
    DIR/special/KIND.pem KIND.key.pem  expired, not-yet-valid, revoked, wrong-usage, self-signed, unknown-ca

Subjects follow the enterprise certificates: C=NO, O=<organisation>, OU=HER-id <her id>,
serialNumber=<organisation number>, CN=<organisation>. Private keys are PEM with mode 0600.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID

from hub.ascii import is_ascii_digits
from hub.fsmode import private_dir, write_private
from hub.security import keystore
from hub.security.errors import SecurityError

DEFAULT_CRL_URL = "http://127.0.0.1:8079/crl/"
SPECIAL_KINDS = ("expired", "not-yet-valid", "revoked", "wrong-usage", "self-signed", "unknown-ca")
HER_OU_PREFIX = "HER-id "
_UTC = dt.UTC


@dataclass(frozen=True)
class PartySpec:
    """A party on the network: a short name for files, its HER-id and organisation number."""

    name: str
    her_id: str
    org_no: str
    org_name: str = ""

    @property
    def display_name(self) -> str:
        return self.org_name or self.name

    @classmethod
    def parse(cls, text: str) -> PartySpec:
        """`NAME:HERID:ORGNR` (as on the command line)."""
        parts = text.split(":")
        if len(parts) != 3 or not parts[0] or not (is_ascii_digits(parts[1]) and is_ascii_digits(parts[2])):
            raise ValueError(f"party {text!r} is not NAME:HERID:ORGNR (HER-id and org.no. are digits)")
        return cls(parts[0], parts[1], parts[2])


def default_parties() -> list[PartySpec]:
    """The demo parties (same HER-ids and org.no. as hub.fixtures.people) plus the hub itself."""
    from hub.fixtures import people

    out = [
        PartySpec(name, str(p.her_id), p.org_no or "", p.name)
        for name, p in (
            ("gp", people.GP_OFFICE),
            ("hospital", people.HOSPITAL),
            ("lab", people.LAB),
            ("nursinghome", people.NURSING_HOME),
        )
    ]
    out.append(PartySpec("hub", "80001", people.make_org_no("99887766"), "Meldingshub"))
    return out


@dataclass(frozen=True)
class Identity:
    """One party's keys: signing pair, encryption pair, chain (issuing CA, root), and old decryption keys."""

    name: str
    her_id: str
    org_no: str
    sign_cert: x509.Certificate
    sign_key: PrivateKeyTypes
    enc_cert: x509.Certificate
    enc_key: PrivateKeyTypes
    chain: tuple[x509.Certificate, ...]
    previous_enc: tuple[tuple[x509.Certificate, PrivateKeyTypes], ...] = ()

    @property
    def decryption_keys(self) -> list[tuple[x509.Certificate, PrivateKeyTypes]]:
        """Current encryption key first, then those kept from before a certificate change."""
        return [(self.enc_cert, self.enc_key), *self.previous_enc]


@dataclass(frozen=True)
class PkiLayout:
    dir: Path
    crl_url: str
    parties: tuple[PartySpec, ...] = field(default=())

    @property
    def root_cert(self) -> Path:
        return self.dir / "ca" / "root.pem"

    @property
    def issuing_cert(self) -> Path:
        return self.dir / "ca" / "issuing.pem"

    @property
    def anchors(self) -> Path:
        return self.dir / "trust" / "anchors.pem"

    @property
    def crl_dir(self) -> Path:
        return self.dir / "crl"

    def party_dir(self, name: str) -> Path:
        return self.dir / "parties" / name

    def cert(self, party: str, purpose: str) -> Path:
        """purpose: sign | enc."""
        return self.party_dir(party) / f"{purpose}.pem"

    def key(self, party: str, purpose: str) -> Path:
        return self.party_dir(party) / f"{purpose}.key.pem"

    def special_cert(self, kind: str) -> Path:
        return self.dir / "special" / f"{kind}.pem"

    def special_key(self, kind: str) -> Path:
        return self.dir / "special" / f"{kind}.key.pem"


# --- building certificates ---------------------------------------------------------------------------


def _new_key(key_size: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=key_size)


def _name(org_name: str, org_no: str | None = None, her_id: str | None = None) -> x509.Name:
    attrs = [
        x509.NameAttribute(NameOID.COUNTRY_NAME, "NO"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_name),
    ]
    if her_id:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, HER_OU_PREFIX + her_id))
    if org_no:
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, org_no))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, org_name))
    return x509.Name(attrs)


_SIGN_USAGE = dict(
    digital_signature=True, content_commitment=True, key_encipherment=False, data_encipherment=False
)
_ENC_USAGE = dict(
    digital_signature=False, content_commitment=False, key_encipherment=True, data_encipherment=True
)
_CA_USAGE = dict(
    digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False
)


def _key_usage(flags: dict[str, bool], *, ca: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        **flags, key_agreement=False, key_cert_sign=ca, crl_sign=ca, encipher_only=False, decipher_only=False
    )


def _build(
    subject: x509.Name,
    public_key: rsa.RSAPublicKey,
    issuer_cert: x509.Certificate | None,
    issuer_key: PrivateKeyTypes,
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    ca: bool,
    usage: dict[str, bool],
    crl_dp: str | None,
) -> x509.Certificate:
    issuer_name = issuer_cert.subject if issuer_cert else subject
    issuer_pub = issuer_cert.public_key() if issuer_cert else public_key
    b = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.BasicConstraints(ca=ca, path_length=0 if ca and issuer_cert else None), critical=True
        )
        .add_extension(_key_usage(usage, ca=ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_pub), critical=False)  # type: ignore[arg-type]
    )
    if crl_dp:
        dp = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_dp)], None, None, None)
        b = b.add_extension(x509.CRLDistributionPoints([dp]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]


def _write_pair(cert_path: Path, key_path: Path, cert: x509.Certificate, key: PrivateKeyTypes) -> None:
    keystore.write_certificates(cert_path, [cert])
    keystore.write_private_key(key_path, key)


def _now() -> dt.datetime:
    return dt.datetime.now(_UTC).replace(microsecond=0)


def _normal_base(url: str) -> str:
    return url if url.endswith("/") else url + "/"


def _read_manifest(dir: Path) -> dict:
    p = Path(dir) / "pki.json"
    if not p.exists():
        raise SecurityError.of(
            "key-error", f"{dir} is not a test PKI (no pki.json); run `hub pki init {dir}`"
        )
    return json.loads(p.read_text(encoding="utf-8"))


def _write_manifest(dir: Path, manifest: dict) -> None:
    p = Path(dir) / "pki.json"
    tmp = p.with_suffix(".tmp")
    write_private(tmp, json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8"))
    tmp.replace(p)


def layout(dir: Path) -> PkiLayout:
    m = _read_manifest(dir)
    parties = tuple(
        PartySpec(n, p["her_id"], p["org_no"], p.get("org_name", "")) for n, p in m["parties"].items()
    )
    return PkiLayout(Path(dir), m["crl_url"], parties)


def init_pki(
    dir: Path,
    parties: list[PartySpec] | None = None,
    crl_url: str | None = None,
    *,
    overwrite: bool = False,
    key_size: int = 2048,
    special: bool = True,
) -> PkiLayout:
    """Create root + issuing CA, a sign and an enc certificate per party, the special test certificates
    (unless `special=False`) and the CRLs. `crl_url` is the base URL the certificates' CRL Distribution
    Points point at (`<crl_url>issuing.crl`, `<crl_url>root.crl`)."""
    dir = Path(dir)
    if (dir / "pki.json").exists() and not overwrite:
        raise FileExistsError(f"{dir} already holds a PKI (pki.json); pass overwrite to replace it")
    parties = default_parties() if parties is None else list(parties)
    names = [p.name for p in parties]
    if len(set(names)) != len(names):
        raise ValueError(f"party names must be unique: {names}")
    base = _normal_base(crl_url or DEFAULT_CRL_URL)
    lay = PkiLayout(dir, base, tuple(parties))
    now = _now()
    private_dir(dir)

    root_key = _new_key(key_size)
    root = _build(
        _name("Hub Test Root CA"),
        root_key.public_key(),
        None,
        root_key,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=3650 * 2),
        ca=True,
        usage=_CA_USAGE,
        crl_dp=None,
    )
    issuing_key = _new_key(key_size)
    issuing = _build(
        _name("Hub Test Issuing CA"),
        issuing_key.public_key(),
        root,
        root_key,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=3650),
        ca=True,
        usage=_CA_USAGE,
        crl_dp=base + "root.crl",
    )
    _write_pair(dir / "ca" / "root.pem", dir / "ca" / "root.key.pem", root, root_key)
    _write_pair(dir / "ca" / "issuing.pem", dir / "ca" / "issuing.key.pem", issuing, issuing_key)
    keystore.write_certificates(lay.anchors, [root])
    leaf_dp = base + "issuing.crl"

    def leaf(
        spec: PartySpec,
        usage: dict[str, bool],
        *,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
    ) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
        k = _new_key(key_size)
        c = _build(
            _name(spec.display_name, spec.org_no, spec.her_id),
            k.public_key(),
            issuing,
            issuing_key,
            not_before=start or now - dt.timedelta(days=1),
            not_after=end or now + dt.timedelta(days=3 * 365),
            ca=False,
            usage=usage,
            crl_dp=leaf_dp,
        )
        return c, k

    manifest: dict = {"crl_url": base, "parties": {}, "revoked": {}, "special": {}}
    for spec in parties:
        for purpose, usage in (("sign", _SIGN_USAGE), ("enc", _ENC_USAGE)):
            c, k = leaf(spec, usage)
            _write_pair(lay.cert(spec.name, purpose), lay.key(spec.name, purpose), c, k)
        manifest["parties"][spec.name] = {
            "her_id": spec.her_id,
            "org_no": spec.org_no,
            "org_name": spec.org_name,
        }

    rogue_key = _new_key(key_size)
    rogue = _build(
        _name("Rogue Test CA"),
        rogue_key.public_key(),
        None,
        rogue_key,
        not_before=now - dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=3650),
        ca=True,
        usage=_CA_USAGE,
        crl_dp=None,
    )
    _write_pair(dir / "ca" / "rogue.pem", dir / "ca" / "rogue.key.pem", rogue, rogue_key)
    if special:

        def spec_of(kind: str, her_id: str) -> PartySpec:
            return PartySpec(kind, her_id, "999999999", f"Test {kind}")

        made: dict[str, tuple[x509.Certificate, PrivateKeyTypes]] = {
            "expired": leaf(
                spec_of("expired", "90001"),
                _SIGN_USAGE,
                start=now - dt.timedelta(days=400),
                end=now - dt.timedelta(days=30),
            ),
            "not-yet-valid": leaf(
                spec_of("not-yet-valid", "90002"),
                _SIGN_USAGE,
                start=now + dt.timedelta(days=30),
                end=now + dt.timedelta(days=400),
            ),
            "revoked": leaf(spec_of("revoked", "90003"), _SIGN_USAGE),
            # an encryption-only certificate: wrong for signing
            "wrong-usage": leaf(spec_of("wrong-usage", "90004"), _ENC_USAGE),
        }
        def outsider(kind: str, her_id: str, issuer: x509.Certificate | None,
                     issuer_key: PrivateKeyTypes | None) -> tuple[x509.Certificate, PrivateKeyTypes]:
            """A signing certificate outside our issuing CA (issuer None: signed by its own key)."""
            k = _new_key(key_size)
            c = _build(_name(f"Test {kind}", "999999999", her_id), k.public_key(), issuer, issuer_key or k,
                       not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=365),
                       ca=False, usage=_SIGN_USAGE, crl_dp=None)
            return c, k

        made["self-signed"] = outsider("self-signed", "90005", None, None)
        made["unknown-ca"] = outsider("unknown-ca", "90006", rogue, rogue_key)
        for kind, (c, k) in made.items():
            _write_pair(lay.special_cert(kind), lay.special_key(kind), c, k)
            manifest["special"][kind] = format(c.serial_number, "x")
        manifest["revoked"][format(made["revoked"][0].serial_number, "x")] = {
            "revoked_at": (now - dt.timedelta(hours=1)).isoformat(),
            "reason": "key_compromise",
        }
    _write_manifest(dir, manifest)
    publish_crl(dir)
    return lay


def publish_crl(dir: Path, *, valid_for: dt.timedelta = dt.timedelta(days=7)) -> None:
    """(Re)write both CRLs from pki.json: the issuing CA lists revoked party certificates; the root none."""
    dir = Path(dir)
    m = _read_manifest(dir)
    now = _now()
    for ca, revoked in (("root", {}), ("issuing", m["revoked"])):
        cert = keystore.load_certificate(dir / "ca" / f"{ca}.pem")
        key = keystore.load_private_key(dir / "ca" / f"{ca}.key.pem")
        b = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(cert.subject)
            .last_update(now - dt.timedelta(minutes=1))
            .next_update(now + valid_for)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(cert.public_key()), critical=False
            )  # type: ignore[arg-type]
            .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
        )
        for serial_hex, info in revoked.items():
            rc = (
                x509.RevokedCertificateBuilder()
                .serial_number(int(serial_hex, 16))
                .revocation_date(dt.datetime.fromisoformat(info["revoked_at"]))
                .add_extension(
                    x509.CRLReason(x509.ReasonFlags[info.get("reason", "unspecified")]), critical=False
                )
                .build()
            )
            b = b.add_revoked_certificate(rc)
        crl = b.sign(key, hashes.SHA256())  # type: ignore[arg-type]
        out = dir / "crl" / f"{ca}.crl"
        tmp = out.with_suffix(".tmp")
        write_private(tmp, crl.public_bytes(serialization.Encoding.DER))
        tmp.replace(out)  # a server reading the file never sees half a CRL


def revoke(
    dir: Path, cert: x509.Certificate, *, reason: str = "key_compromise", at: dt.datetime | None = None
) -> None:
    """Add `cert` (issued by the issuing CA) to the CRL and republish it."""
    m = _read_manifest(dir)
    m["revoked"][format(cert.serial_number, "x")] = {
        "revoked_at": (at or _now()).isoformat(),
        "reason": reason,
    }
    _write_manifest(dir, m)
    publish_crl(dir)


def renew_encryption(dir: Path, party: str, *, key_size: int = 2048) -> Identity:
    """A certificate change: the current enc pair moves to enc-previous-N and a new one is issued.
    The returned identity decrypts with both (messages encrypted to the old certificate still arrive)."""
    lay = layout(dir)
    spec = next((p for p in lay.parties if p.name == party), None)
    if spec is None:
        raise SecurityError.of("key-error", f"no party {party!r} in {dir}")
    pdir = lay.party_dir(party)
    n = 1 + len(list(pdir.glob("enc-previous-*.key.pem")))
    lay.cert(party, "enc").replace(pdir / f"enc-previous-{n}.pem")
    lay.key(party, "enc").replace(pdir / f"enc-previous-{n}.key.pem")
    issuing = keystore.load_certificate(lay.issuing_cert)
    issuing_key = keystore.load_private_key(Path(dir) / "ca" / "issuing.key.pem")
    k = _new_key(key_size)
    now = _now()
    c = _build(
        _name(spec.display_name, spec.org_no, spec.her_id),
        k.public_key(),
        issuing,
        issuing_key,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + dt.timedelta(days=3 * 365),
        ca=False,
        usage=_ENC_USAGE,
        crl_dp=lay.crl_url + "issuing.crl",
    )
    _write_pair(lay.cert(party, "enc"), lay.key(party, "enc"), c, k)
    return load_identity(dir, party)


def export_pkcs12(dir: Path, party: str, purpose: str, out: Path, password: bytes | None = None) -> Path:
    """A party's certificate and key (purpose "sign" or "enc") as one PKCS#12 file, as CAs issue them."""
    lay = layout(dir)
    keystore.write_pkcs12(out, keystore.load_certificate(lay.cert(party, purpose)),
                          keystore.load_private_key(lay.key(party, purpose)), password,
                          [keystore.load_certificate(lay.issuing_cert)])
    return out


# --- loading -----------------------------------------------------------------------------------------


def load_identity(dir: Path, party: str) -> Identity:
    """A party's certificates and keys (parsed once per file and kept; see keystore)."""
    lay = layout(dir)
    spec = next((p for p in lay.parties if p.name == party), None)
    if spec is None:
        known = ", ".join(p.name for p in lay.parties)
        raise SecurityError.of("key-error", f"no party {party!r} in {dir} (parties: {known})")
    pdir = lay.party_dir(party)
    previous = []
    for key_path in sorted(pdir.glob("enc-previous-*.key.pem"), reverse=True):  # newest old key first
        cert_path = key_path.with_name(key_path.name.replace(".key.pem", ".pem"))
        previous.append((keystore.load_certificate(cert_path), keystore.load_private_key(key_path)))
    return Identity(
        name=party,
        her_id=spec.her_id,
        org_no=spec.org_no,
        sign_cert=keystore.load_certificate(lay.cert(party, "sign")),
        sign_key=keystore.load_private_key(lay.key(party, "sign")),
        enc_cert=keystore.load_certificate(lay.cert(party, "enc")),
        enc_key=keystore.load_private_key(lay.key(party, "enc")),
        chain=(keystore.load_certificate(lay.issuing_cert), keystore.load_certificate(lay.root_cert)),
        previous_enc=tuple(previous),
    )


def load_trust_anchors(dir: Path) -> list[x509.Certificate]:
    return keystore.load_certificates(Path(dir) / "trust" / "anchors.pem")


def load_intermediates(dir: Path) -> list[x509.Certificate]:
    return keystore.load_certificates(Path(dir) / "ca" / "issuing.pem")


def load_special(dir: Path, kind: str) -> tuple[x509.Certificate, PrivateKeyTypes]:
    """One of the test certificates (SPECIAL_KINDS) with its key."""
    lay = PkiLayout(Path(dir), "")
    return keystore.load_certificate(lay.special_cert(kind)), keystore.load_private_key(lay.special_key(kind))


# --- serving the CRL ---------------------------------------------------------------------------------


@dataclass
class CrlServer:
    """A running loopback HTTP server for DIR/crl; `url` is the base the certificates' CRL DPs use."""

    url: str
    requests: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serve_crl(dir: Path, host: str = "127.0.0.1", port: int = 0) -> Iterator[CrlServer]:
    """Serve DIR/crl/*.crl over HTTP (for tests and demos). Start it before `init_pki` to learn the port:

    with serve_crl(d) as srv:
        init_pki(d, parties, crl_url=srv.url)
    """
    crl_dir = Path(dir) / "crl"
    served = CrlServer("")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            served.requests.append(self.path)
            name = self.path.rsplit("/", 1)[-1]
            path = crl_dir / name
            if not name.endswith(".crl") or not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/pkix-crl")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = http.server.ThreadingHTTPServer((host, port), Handler)
    served.url = f"http://{host}:{server.server_address[1]}/crl/"
    thread = threading.Thread(target=server.serve_forever, name="crl-server", daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
