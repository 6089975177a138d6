"""Opening a received payload part the way the CPA (or the register defaults) says: pure functions.

A part is encrypted (CMS EnvelopedData as DER, PEM or S/MIME) or plain; plain is accepted only where
the CPA says isConfidential="none". After decryption the content may be gzip, recognised by its magic
bytes since no MIME header says so (NAV). The Msh and `hub ebxml inspect` both open payloads here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from hub.codes import EbmsError
from hub.ebxml import compression
from hub.ebxml.cpa import ReceivePolicy
from hub.ebxml.envelope import ManifestRef
from hub.ebxml.errors import LOC, EbxmlError
from hub.security.cms import looks_like_cms

Keys = Sequence[tuple[x509.Certificate, PrivateKeyTypes]]
Decrypt = Callable[[bytes, Keys], bytes]


@dataclass
class OpenedPayload:
    """One Manifest reference's part: how it came (kind), what it is after opening, or why not."""

    href: str
    kind: str  # encrypted | plain | missing
    size: int  # bytes of the part as carried
    document: bytes | None = None  # after decryption and decompression
    compressed: bool | None = None  # None: not known (not opened)
    error: EbxmlError | None = None


def part_kind(data: bytes, content_type: str = "") -> str:
    """`encrypted` for CMS (by content or a pkcs7-mime Content-Type), else `plain`."""
    return "encrypted" if looks_like_cms(data) or "pkcs7-mime" in content_type.lower() else "plain"


def open_payload(ref: ManifestRef, index: int, parts: dict[str, bytes], part_types: dict[str, str],
                 policy: ReceivePolicy, keys: Keys, decrypt: Decrypt | None,
                 cpa_id: str | None = None) -> OpenedPayload:
    """Decrypt (when encrypted and `decrypt` is given), refuse plain where encryption is required,
    and gunzip gzip content. Errors are ebMS errors located at the Manifest reference."""
    where = f"{LOC['manifest_ref']}[{index}]"
    cid = ref.cid or ""
    if cid not in parts:
        return OpenedPayload(ref.href, "missing", 0, error=EbxmlError(
            EbmsError.MIME_PROBLEM, f"Manifest href {ref.href} names no MIME part of the package", where))
    data = parts[cid]
    out = OpenedPayload(ref.href, part_kind(data, part_types.get(cid, "")), len(data))
    if out.kind == "plain" and policy.encryption_required:
        why = (f"CPA {cpa_id} requires encryption for this action" if cpa_id
               else "without a CPA payloads must be encrypted (HITS 1171)")
        out.error = EbxmlError(EbmsError.SECURITY_FAILURE,
                               f"payload {ref.href} is not encrypted (no CMS EnvelopedData): {why}", where)
        return out
    if out.kind == "encrypted":
        if decrypt is None:
            return out  # not opened: no key to open it with (inspect without a key)
        try:
            data = decrypt(data, keys)
        except Exception as exc:  # noqa: BLE001 - SecurityError or a CMS parse error
            out.error = EbxmlError(EbmsError.SECURITY_FAILURE, f"payload {ref.href}: {exc}", where)
            return out
    try:
        out.document, out.compressed = compression.unwrap(data)
    except compression.CompressionError as exc:
        out.error = EbxmlError(EbmsError.MIME_PROBLEM, f"payload {ref.href}: {exc}", where)
    return out
