"""gzip of payloads, as NAV's traffic uses it: the KITH document is gzipped, then encrypted.

No MIME header says so (the part is application/pkcs7-mime either way), so a receiver recognises gzip
by its magic bytes after decryption. Decompression is bounded: a small part must not expand without
limit (a "zip bomb" costs the relay memory, not the sender).
"""

from __future__ import annotations

import gzip
import zlib

MAGIC = b"\x1f\x8b"
MAX_EXPANDED = 64 * 1024 * 1024  # KITH documents with attachments stay far below this


class CompressionError(ValueError):
    """The payload starts like gzip but cannot be decompressed (or expands beyond the limit)."""


def is_gzip(data: bytes) -> bool:
    return data[:2] == MAGIC


def compress(data: bytes) -> bytes:
    # mtime=0: the same document compresses to the same bytes (retries, digests)
    return gzip.compress(data, mtime=0)


def decompress(data: bytes, max_bytes: int = MAX_EXPANDED) -> bytes:
    """The gzip member(s) of `data` expanded, at most `max_bytes`; CompressionError otherwise."""
    d = zlib.decompressobj(wbits=31)  # gzip header and trailer
    out = bytearray()
    rest = data
    try:
        while rest:
            out += d.decompress(rest, max_bytes + 1 - len(out))
            if len(out) > max_bytes:
                raise CompressionError(f"gzip payload expands beyond {max_bytes} bytes")
            if d.unconsumed_tail:
                rest = d.unconsumed_tail
                continue
            if not d.eof:
                raise CompressionError("gzip payload is truncated")
            rest = d.unused_data
            if rest and is_gzip(rest):  # concatenated members (RFC 1952 §2.2)
                d = zlib.decompressobj(wbits=31)
            elif rest.strip(b"\0"):
                raise CompressionError("bytes after the end of the gzip payload")
            else:
                rest = b""
    except zlib.error as exc:
        raise CompressionError(f"gzip payload cannot be decompressed: {exc}") from None
    return bytes(out)


def unwrap(data: bytes, max_bytes: int = MAX_EXPANDED) -> tuple[bytes, bool]:
    """(the document, whether it was gzip): recognised by content, as no header says so."""
    return (decompress(data, max_bytes), True) if is_gzip(data) else (data, False)
