"""Hostile and broken input is refused with a clear reason, never expanded, fetched or crashed on."""

from __future__ import annotations

import pytest

from hub.xmlsafe import XmlInputError, parse_bytes

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    b'<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><a>&lol3;</a>'
)
XXE = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>'
XXE_NET = b'<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://192.0.2.1/evil.dtd"><a/>'


@pytest.mark.parametrize(
    "data,kind",
    [
        (BILLION_LAUGHS, "dtd-forbidden"),
        (XXE, "dtd-forbidden"),
        (XXE_NET, "dtd-forbidden"),
        (b"<a><b></a>", "not-well-formed"),
        (b"Dette er ikke XML", "not-xml"),
        (b"", "empty"),
        (b'<?xml version="1.0" encoding="UTF-8"?><a>\xe6\xff</a>', "encoding"),
    ],
)
def test_refused_with_kind(data: bytes, kind: str) -> None:
    with pytest.raises(XmlInputError) as info:
        parse_bytes(data)
    assert info.value.kind == kind
    assert info.value.code == "T01"


def test_size_limit_is_enforced_before_parsing() -> None:
    with pytest.raises(XmlInputError) as info:
        parse_bytes(b"<a>" + b"x" * 2000 + b"</a>", max_bytes=1000)
    assert info.value.kind == "too-large"
    assert "1000" in str(info.value)


def test_position_of_syntax_error_is_reported() -> None:
    with pytest.raises(XmlInputError) as info:
        parse_bytes(b"<a>\n<b>\n</a>")
    assert info.value.line == 3


def test_plain_document_parses() -> None:
    assert parse_bytes(b"<a><b>ok</b></a>").getroot().findtext("b") == "ok"
