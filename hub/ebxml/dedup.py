"""Duplicate elimination (HIS 1037 §6.2.1, HITS 1172 §5.8.2) as a decision, apart from any storage.

Same MessageId and same content: answer again with the stored signal, byte for byte, process nothing.
Same MessageId with other content: not a resend but a reused id, an error. "Content" is a digest over
the canonical envelope without its signature plus the raw payload parts, so a resend through another
mail server (other line ends, other MIME boundaries, other base64 wrapping) still counts as the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

from lxml import etree

from hub.ebxml.envelope import DS_NS, SOAP_NS, Envelope


class SeenRecord(Protocol):
    message_id: str
    digest: str
    response: bytes


class SeenMessages(Protocol):
    """What the durable store offers (hub.store: seen_get / seen_put); the first record wins."""

    def seen_get(self, message_id: str) -> SeenRecord | None: ...

    def seen_put(self, message_id: str, digest: str, response: bytes) -> object: ...


@dataclass(frozen=True)
class Seen:
    message_id: str
    digest: str
    response: bytes


class MemorySeen:
    """In-memory SeenMessages, for tests and for a hub run without a store."""

    def __init__(self) -> None:
        self._seen: dict[str, Seen] = {}

    def seen_get(self, message_id: str) -> Seen | None:
        return self._seen.get(message_id)

    def seen_put(self, message_id: str, digest: str, response: bytes) -> Seen:
        return self._seen.setdefault(message_id, Seen(message_id, digest, bytes(response)))

    def __len__(self) -> int:
        return len(self._seen)


def unsigned_c14n(root: etree._Element) -> bytes:
    """C14N of the envelope without the ds:Signature elements of its Header (with their tails)."""
    import copy

    doc = copy.deepcopy(root)
    header = doc.find(f"{{{SOAP_NS}}}Header")
    if header is not None:
        for sig in header.findall(f"{{{DS_NS}}}Signature"):
            header.remove(sig)
    return etree.tostring(doc, method="c14n")


def content_digest(root: etree._Element, parts: dict[str, bytes], c14n: bytes | None = None) -> str:
    """sha256 over C14N(envelope minus ds:Signature) and each part (sorted by cid); `c14n`: that C14N
    when already made (unsigned_c14n)."""
    h = hashlib.sha256(unsigned_c14n(root) if c14n is None else c14n)
    for cid in sorted(parts):
        h.update(b"\0" + cid.encode() + b"\0" + hashlib.sha256(parts[cid]).digest())
    return h.hexdigest()


@dataclass(frozen=True)
class Decision:
    kind: str  # "new" | "duplicate" | "conflict"
    response: bytes | None = None  # the stored signal for a duplicate


def decide(seen: SeenMessages, message_id: str, digest: str) -> Decision:
    rec = seen.seen_get(message_id)
    if rec is None:
        return Decision("new")
    if rec.digest == digest:
        return Decision("duplicate", bytes(rec.response))
    return Decision("conflict")


def envelope_digest(env: Envelope, parts: dict[str, bytes]) -> str:
    """content_digest of a parsed envelope, its C14N kept on it (`unsigned_c14n`) for the signature check."""
    assert env.root is not None
    if env.unsigned_c14n is None:
        env.unsigned_c14n = unsigned_c14n(env.root)
    return content_digest(env.root, parts, env.unsigned_c14n)
