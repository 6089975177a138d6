"""Certificate validation for message security: path, time, key usage, revocation (CRL).

Decisions, in the order they are made (the first failure wins, so every certificate gets the one
clear reason a person would give):

1. self-signed and not a trust anchor  -> certificate-self-signed (S02)
2. not valid at the message's time     -> certificate-expired / certificate-not-yet-valid (S02)
3. key usage unfit for the purpose     -> certificate-wrong-usage (S02)
   sign: digitalSignature or nonRepudiation; encrypt: keyEncipherment (RSA key transport)
4. no known issuer                      -> certificate-unknown-ca (S02)
5. path to a trust anchor (cryptography.x509.verification; anything else wrong) -> certificate-invalid (S02)
6. revocation by CRL for the leaf and every intermediate: revoked -> certificate-revoked (S03);
   CRL unreachable, unreadable, badly signed or stale -> crl-unavailable / crl-invalid, *transient*
   (the relay tries again later).

CRLs are fetched over HTTP from the certificate's CRL Distribution Point and kept until their
nextUpdate, in memory and (optionally) in `crl_cache_dir` so a restart does not refetch them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from hub.ascii import is_ascii_digits
from hub.security.errors import SecurityError
from hub.security.pki import HER_OU_PREFIX

Purpose = Literal["sign", "encrypt"]
Fetcher = Callable[[str, float], bytes]


@dataclass(frozen=True)
class CertReport:
    """A certificate that passed: its path, and facts for `hub cert check` and for logs."""

    certificate: x509.Certificate
    purpose: str
    chain: tuple[x509.Certificate, ...]  # leaf first, trust anchor last
    checked_at: dt.datetime
    not_after: dt.datetime
    days_to_expiry: int
    revocation: str  # "good" | "not checked: ..."
    crl_next_update: dt.datetime | None

    @property
    def subject(self) -> str:
        return self.certificate.subject.rfc4514_string()

    @property
    def org_no(self) -> str | None:
        return org_no_of(self.certificate)

    @property
    def her_id(self) -> str | None:
        return her_id_of(self.certificate)


def org_no_of(cert: x509.Certificate) -> str | None:
    """The organisation number: subject serialNumber (older Buypass/Commfides enterprise certificates) or
    organizationIdentifier `NTRNO-<orgno>` (eIDAS-style, Buypass G2 as in NAV's CPA)."""
    for a in cert.subject.get_attributes_for_oid(NameOID.SERIAL_NUMBER):
        if is_ascii_digits(str(a.value)):
            return str(a.value)
    for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_IDENTIFIER):
        value = str(a.value)
        if value.startswith("NTRNO-"):
            return value[len("NTRNO-") :]
    return None


def her_id_of(cert: x509.Certificate) -> str | None:
    for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME):
        value = str(a.value)
        if value.startswith(HER_OU_PREFIX):
            return value[len(HER_OU_PREFIX) :]
    return None


def describe(cert: x509.Certificate) -> str:
    return f"'{cert.subject.rfc4514_string()}' (serial {cert.serial_number:x})"


def _fail(kind: str, message: str) -> SecurityError:
    return SecurityError.of(kind, message)


def _http_fetch(url: str, timeout: float) -> bytes:
    if not url.startswith(("http://", "https://")):
        raise OSError(f"unsupported CRL URL scheme: {url}")
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
        return resp.read(20 * 1024 * 1024)


def _crl_urls(cert: x509.Certificate) -> list[str]:
    try:
        dps = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [
        n.value
        for dp in dps
        for n in (dp.full_name or [])
        if isinstance(n, x509.UniformResourceIdentifier) and n.value.startswith(("http://", "https://"))
    ]


def _is_self_issued(cert: x509.Certificate) -> bool:
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:  # InvalidSignature, ValueError, TypeError: not its own issuer
        return False
    return True


def _usage_fits(cert: x509.Certificate, purpose: Purpose) -> str | None:
    """None when fit, else why not."""
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return "it has no keyUsage extension"
    if purpose == "sign":
        if ku.digital_signature or ku.content_commitment:
            return None
        return "signing needs digitalSignature or nonRepudiation"
    if purpose == "encrypt":
        if ku.key_encipherment:
            return None
        return "encryption (RSA key transport) needs keyEncipherment"
    raise ValueError(f"purpose must be 'sign' or 'encrypt', not {purpose!r}")


class CertificateValidator:
    """Validate certificates against configured trust anchors; thread-safe, CRLs cached until nextUpdate."""

    def __init__(
        self,
        trust_anchors: Sequence[x509.Certificate],
        intermediates: Iterable[x509.Certificate] = (),
        crl_cache_dir: Path | None = None,
        fetch_timeout: float = 3.0,
        *,
        check_revocation: bool = True,
        fetch: Fetcher | None = None,
    ) -> None:
        if not trust_anchors:
            raise ValueError("at least one trust anchor is needed")
        self.anchors = list(trust_anchors)
        self.intermediates = list(intermediates)
        self.crl_cache_dir = Path(crl_cache_dir) if crl_cache_dir else None
        self.fetch_timeout = fetch_timeout
        self.check_revocation = check_revocation
        self._fetch = fetch or _http_fetch
        self._store = verification.Store(self.anchors)
        self._crls: dict[str, x509.CertificateRevocationList] = {}
        self._lock = threading.Lock()
        self._url_locks: dict[str, threading.Lock] = {}
        self.fetches = 0  # CRL downloads made (for tests and metrics)

    # --- path --------------------------------------------------------------------------------------

    def _path(
        self, cert: x509.Certificate, at: dt.datetime, extra: Sequence[x509.Certificate]
    ) -> tuple[x509.Certificate, ...]:
        pool = [*self.intermediates, *extra]
        names = {c.subject for c in pool} | {a.subject for a in self.anchors}
        if cert.issuer not in names:
            raise _fail(
                "certificate-unknown-ca",
                f"{describe(cert)} is issued by '{cert.issuer.rfc4514_string()}', which is not a trusted CA",
            )
        builder = (
            verification.PolicyBuilder()
            .store(self._store)
            .time(at)
            .extension_policies(
                ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(),
                # enterprise certificates carry no SAN/EKU requirements of the web PKI; usage is checked above
                ee_policy=verification.ExtensionPolicy.permit_all(),
            )
        )
        try:
            verified = builder.build_client_verifier().verify(cert, pool)
        except verification.VerificationError as exc:
            text = str(exc)
            if "candidates exhausted" in text:
                raise _fail(
                    "certificate-unknown-ca", f"no path from {describe(cert)} to a trust anchor"
                ) from None
            raise _fail("certificate-invalid", f"{describe(cert)}: {text}") from None
        return tuple(verified.chain)

    # --- revocation --------------------------------------------------------------------------------

    def _cache_file(self, url: str) -> Path | None:
        if self.crl_cache_dir is None:
            return None
        return self.crl_cache_dir / (hashlib.sha256(url.encode()).hexdigest()[:32] + ".crl")

    def _load_crl(
        self, url: str, issuer: x509.Certificate, now: dt.datetime
    ) -> x509.CertificateRevocationList:
        def fresh(crl: x509.CertificateRevocationList | None) -> bool:
            nu = crl.next_update_utc if crl is not None else None
            return crl is not None and nu is not None and nu > now

        with self._lock:
            crl = self._crls.get(url)
            if fresh(crl):
                return crl  # type: ignore[return-value]
            url_lock = self._url_locks.setdefault(url, threading.Lock())
        with url_lock:  # one download per URL even when many messages wait for it
            with self._lock:
                crl = self._crls.get(url)
            if fresh(crl):
                return crl  # type: ignore[return-value]
            cache = self._cache_file(url)
            if cache is not None and cache.exists():
                try:
                    crl = x509.load_der_x509_crl(cache.read_bytes())
                except ValueError:
                    crl = None
                if fresh(crl) and self._crl_signed_by(crl, issuer):  # type: ignore[arg-type]
                    with self._lock:
                        self._crls[url] = crl  # type: ignore[assignment]
                    return crl  # type: ignore[return-value]
            try:
                data = self._fetch(url, self.fetch_timeout)
                self.fetches += 1
            except (OSError, urllib.error.URLError, TimeoutError) as exc:
                raise _fail(
                    "crl-unavailable",
                    f"the CRL at {url} cannot be fetched ({exc}); revocation status unknown, try again later",
                ) from None
            try:
                crl = x509.load_der_x509_crl(data) if data[:1] == b"\x30" else x509.load_pem_x509_crl(data)
            except ValueError as exc:
                raise _fail("crl-invalid", f"the CRL at {url} cannot be read: {exc}") from None
            if not self._crl_signed_by(crl, issuer):
                raise _fail("crl-invalid", f"the CRL at {url} is not signed by {describe(issuer)}")
            if not fresh(crl):
                raise _fail(
                    "crl-invalid", f"the CRL at {url} is out of date (nextUpdate {crl.next_update_utc})"
                )
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp")
                tmp.write_bytes(crl.public_bytes(serialization.Encoding.DER))
                tmp.replace(cache)
            with self._lock:
                self._crls[url] = crl
            return crl

    @staticmethod
    def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
        return crl.issuer == issuer.subject and crl.is_signature_valid(issuer.public_key())  # type: ignore[arg-type]

    def _revocation(
        self, chain: tuple[x509.Certificate, ...], at: dt.datetime
    ) -> tuple[str, dt.datetime | None]:
        now = dt.datetime.now(dt.UTC)
        leaf_next: dt.datetime | None = None
        for i, cert in enumerate(chain[:-1]):  # the anchor is trusted as configured
            issuer = chain[i + 1]
            urls = _crl_urls(cert)
            if not urls:
                if i == 0:
                    raise _fail(
                        "certificate-invalid",
                        f"{describe(cert)} names no CRL distribution point; its revocation cannot be checked",
                    )
                continue
            crl = self._load_crl(urls[0], issuer, now)
            if i == 0:
                leaf_next = crl.next_update_utc
            entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
            if entry is None:
                continue
            try:
                reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            except x509.ExtensionNotFound:
                reason = x509.ReasonFlags.unspecified
            when = entry.revocation_date_utc
            # a key compromise taints every signature made with the key; other reasons count from the date
            if reason == x509.ReasonFlags.key_compromise or when <= at:
                what = "certificate" if i == 0 else "issuing CA certificate"
                raise _fail(
                    "certificate-revoked",
                    f"the {what} {describe(cert)} was revoked on {when:%Y-%m-%d %H:%M} UTC ({reason.name})",
                )
        return "good", leaf_next

    # --- the check ---------------------------------------------------------------------------------

    def check(
        self,
        cert: x509.Certificate,
        purpose: Purpose,
        at: dt.datetime | None = None,
        *,
        intermediates: Sequence[x509.Certificate] = (),
    ) -> CertReport:
        """Validate `cert` for `purpose` at `at` (the message's time; default now). Raises SecurityError."""
        now = dt.datetime.now(dt.UTC)
        at = now if at is None else (at if at.tzinfo else at.replace(tzinfo=dt.UTC))
        if _is_self_issued(cert) and cert not in self.anchors:
            raise _fail(
                "certificate-self-signed", f"{describe(cert)} is self-signed, not issued by a trusted CA"
            )
        if at < cert.not_valid_before_utc:
            raise _fail(
                "certificate-not-yet-valid",
                f"{describe(cert)} is not valid until {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
                f"(checked at {at:%Y-%m-%d %H:%M} UTC)",
            )
        if at > cert.not_valid_after_utc:
            raise _fail(
                "certificate-expired",
                f"{describe(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
                f"(checked at {at:%Y-%m-%d %H:%M} UTC)",
            )
        why = _usage_fits(cert, purpose)
        if why:
            raise _fail("certificate-wrong-usage", f"{describe(cert)} is not fit for {purpose}: {why}")
        chain = self._path(cert, at, intermediates)
        if self.check_revocation:
            status, next_update = self._revocation(chain, at)
        else:
            status, next_update = "not checked: revocation checking is off", None
        return CertReport(
            certificate=cert,
            purpose=purpose,
            chain=chain,
            checked_at=at,
            not_after=cert.not_valid_after_utc,
            days_to_expiry=(cert.not_valid_after_utc - now).days,
            revocation=status,
            crl_next_update=next_update,
        )
