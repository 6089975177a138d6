"""One exception for every message-security failure, carrying the codes the receiver answers with.

A receiver answers a failed signature or certificate check with an AppRec error (code list 8221:
S01 signature, S02 invalid certificate, S03 revoked, S99 other) when it can read the message, and with
an ebMS MessageError `SecurityFailure` at the transport level. `permanent` tells the relay whether a
retry can help: an unreachable CRL can, a revoked certificate cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

from hub.codes import EbmsError

# kind -> (AppRec code, permanent)
KINDS: dict[str, tuple[str, bool]] = {
    "signature-missing": ("S01", True),
    "signature-multiple": ("S01", True),
    "signature-invalid": ("S01", True),  # tampered content or SignedInfo
    "signature-malformed": ("S01", True),
    "algorithm-not-allowed": ("S01", True),
    "certificate-missing": ("S02", True),
    "certificate-multiple": ("S02", True),
    "certificate-mismatch": ("S02", True),  # not the certificate registered for the sender
    "certificate-expired": ("S02", True),
    "certificate-not-yet-valid": ("S02", True),
    "certificate-self-signed": ("S02", True),
    "certificate-unknown-ca": ("S02", True),
    "certificate-wrong-usage": ("S02", True),
    "certificate-invalid": ("S02", True),  # path building failed for another reason
    "certificate-revoked": ("S03", True),
    "crl-unavailable": ("S99", False),  # revocation status unknown now; try again later
    "crl-invalid": ("S99", False),
    "decrypt-no-key": ("S99", True),  # not encrypted for any key we hold
    "decrypt-failed": ("S99", True),
    "encrypt-failed": ("S99", True),
    "key-error": ("S99", True),
    "other": ("S99", True),
}


@dataclass
class SecurityError(Exception):
    """A security check failed. Build with `SecurityError.of(kind, message)` to get the usual codes."""

    kind: str
    message: str
    apprec_code: str = "S99"
    ebms_code: str = EbmsError.SECURITY_FAILURE.value
    permanent: bool = True

    @classmethod
    def of(cls, kind: str, message: str) -> SecurityError:
        apprec, permanent = KINDS.get(kind, KINDS["other"])
        return cls(kind, message, apprec, EbmsError.SECURITY_FAILURE.value, permanent)

    @property
    def transient(self) -> bool:
        return not self.permanent

    def __str__(self) -> str:
        return f"{self.kind}: {self.message} (AppRec {self.apprec_code}, ebMS {self.ebms_code})"
