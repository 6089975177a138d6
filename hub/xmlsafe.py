"""The one way the hub parses untrusted XML: no DTDs, no entities, no network, bounded size."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from lxml import etree

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
# A DOCTYPE can only stand in the prolog: after declarations, processing instructions and comments.
# Possessive `*+`: without it a failed match backtracks each lazy `.*?` across the whole document.
_PROLOG_DOCTYPE = re.compile(rb"\A(?:\xef\xbb\xbf)?(?:\s+|<\?.*?\?>|<!--.*?-->)*+<!DOCTYPE", re.DOTALL)


@dataclass
class XmlInputError(Exception):
    """Input that is not acceptable XML. `code` is the AppRec error code the receiver answers with."""

    kind: str  # not-xml | not-well-formed | dtd-forbidden | too-large | encoding | empty
    message: str
    line: int | None = None
    column: int | None = None
    code: str = "T01"

    def __str__(self) -> str:
        where = f" (line {self.line}, column {self.column})" if self.line else ""
        return f"{self.kind}: {self.message}{where}"


# One parser per thread, reused: an lxml parser is locked while in use (so not shared across threads),
# and a fresh one sets up a new libxml2 parser context on its first parse, ~25% of a small message's
# parse time. A parser holds no document state between parses; its settings are all that carries over.
_LOCAL = threading.local()


def _parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_LOCAL, "parser", None)
    if parser is None:
        parser = _LOCAL.parser = _new_parser()
    return parser


def _new_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )


def parse_bytes(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._ElementTree:
    """Parse `data` as a KITH/ebXML document or raise XmlInputError naming what is wrong and where."""
    if len(data) > max_bytes:
        raise XmlInputError("too-large", f"{len(data)} bytes exceeds the limit of {max_bytes} bytes")
    stripped = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if not stripped:
        raise XmlInputError("empty", "the document is empty")
    if not stripped.startswith(b"<"):
        raise XmlInputError("not-xml", "the content does not start with '<'; it is not XML", 1, 1)
    if _PROLOG_DOCTYPE.match(data):
        # KITH messages never carry a DTD; one here is an entity attack (XXE, billion laughs) or an error.
        raise XmlInputError(
            "dtd-forbidden", "a DOCTYPE/DTD is not allowed in health e-messages (entity attacks)", 1, 1
        )
    try:
        tree = etree.ElementTree(etree.fromstring(data, _parser()))
    except etree.XMLSyntaxError as exc:
        line, col = exc.position if exc.position else (None, None)
        msg = str(exc.msg if hasattr(exc, "msg") else exc)
        kind = "encoding" if "encoding" in msg.lower() or "utf-8" in msg.lower() else "not-well-formed"
        raise XmlInputError(kind, msg, line, col) from None
    return tree


def reparse_own(data: bytes) -> etree._Element:
    """Read back XML the hub serialised itself from an already parsed document (same safe settings,
    none of parse_bytes' checks on untrusted input)."""
    return etree.fromstring(data, _parser())
