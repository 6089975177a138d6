"""parse_package reads the plain shapes of MIME without the email package (hub.ebxml.mime._plain_package)
and must give exactly what the email package gives: compared on NAV's real mail, on every shape we build,
on odd and broken variants (which must go to the email package and get its fault), and on truncated
and mutated copies."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hub.ebxml.errors import EbxmlError
from hub.ebxml.mime import GZIP_TYPE, PLAIN_TYPE, _email_package, _plain_package, build_package, parse_package

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "ebxml"
SOAP = b'<?xml version="1.0" encoding="UTF-8"?><SOAP:Envelope xmlns:SOAP="x">\xc3\xa6\xc3\xb8</SOAP:Envelope>'


def outcome(fn: object, raw: bytes) -> tuple:
    try:
        return ("ok", fn(raw))  # type: ignore[operator]
    except EbxmlError as e:
        return ("fault", e.code, e.description, e.location)
    except Exception as e:  # noqa: BLE001 - whatever the email package raises, both must raise it
        return ("raised", type(e).__name__, str(e))


def same(raw: bytes) -> object:
    """Both readings agree; returns the plain reading (None: it left this input to the email package)."""
    plain = _plain_package(raw)
    if plain is not None:
        assert outcome(_email_package, raw) == ("ok", plain)
    if raw.strip():  # an empty entity is parse_package's own fault, before either reading
        assert outcome(parse_package, raw) == outcome(_email_package, raw)
    return plain


def mail(entity: bytes) -> bytes:
    return (b"Received: from a by b\r\nReceived: from c\r\n\tby d\r\nFrom: a@a.test\r\nTo: b@b.test\r\n"
            b"Subject: ebXML\r\nMessage-ID: <1@a.test>\r\n" + entity)


SHAPES = {
    "message": build_package(SOAP, [("p1@hub", b"\x00\x01binary" * 300)]),
    "message 8bit": build_package(SOAP, [("p1@hub", b"x" * 100)], soap_base64=False),
    "two payloads": build_package(SOAP, [("p1@hub", b"a" * 10), ("p2@hub", b"b" * 5000)],
                                  payload_type=PLAIN_TYPE),
    "gzip": build_package(SOAP, [("p1@hub", b"\x1f\x8b" + b"z" * 50)], payload_type=GZIP_TYPE),
    "signal": build_package(SOAP),
    "signal 8bit": build_package(SOAP, soap_base64=False),
}


def variants(entity: bytes) -> dict[str, bytes]:
    head, _, body = entity.partition(b"\r\n\r\n")
    boundary = head.split(b'boundary="')[1].split(b'"')[0] if b'boundary="' in head else b""
    out = {"as built": entity, "in a mail": mail(entity),
           "LF line ends": mail(entity).replace(b"\r\n", b"\n"),
           "lower-case names": entity.replace(b"Content-Type:", b"content-type:").replace(b"Content-ID:",
                                                                                             b"CONTENT-ID:"),
           "folded content-type": entity.replace(b"; type=", b";\r\n\ttype=").replace(b"; boundary=",
                                                                                     b";\r\n boundary="),
           "a second content-type": head + b"\r\nContent-Type: text/plain\r\n\r\n" + body,
           "bare CR": entity.replace(b"\r\n", b"\r", 1),
           "non-ASCII header": b"X-Name: \xc3\xa6\r\n" + entity,
           "no body": head,
           "empty head": b"\r\n" + entity,
           # header values with nothing, blanks, or blanks at the end (the one-line-per-header reading)
           "blank values": b"X-Empty:\r\nX-Blank: \t \r\nX-Trail: a \t\r\nX-Tight:b\r\n" + entity,
           # an LF LF ends the head before a later CRLF CRLF, and one after it does not
           "LF LF first": head.replace(b"\r\n", b"\n") + b"\n\n" + body,
           "LF LF later": entity.replace(b"\r\n\r\n", b"\r\n\r\n\n\n", 1)}
    if boundary:
        b = boundary
        out |= {
            "unquoted boundary": entity.replace(b'boundary="' + b + b'"', b"boundary=" + b),
            "no start": entity.replace(b'; start="', b'; x-start="'),
            "start unquoted": entity.replace(b'start="<', b"start=<").replace(b'>"', b">", 1),
            "start nowhere": entity.replace(b'start="<', b'start="<nowhere'),
            "padding after delimiters": body and head + b"\r\n\r\n" + body.replace(b"--" + b + b"\r\n",
                                                                                  b"--" + b + b" \t\r\n"),
            "preamble and epilogue": head + b"\r\n\r\npreamble\r\n" + body + b"epilogue\r\n--" + b + b"\r\n",
            "no close delimiter": entity.replace(b"--" + b + b"--", b"--" + b),
            "close without line end": entity.rstrip(b"\r\n"),
            "double delimiter": entity.replace(b"--" + b + b"\r\n", b"--" + b + b"\r\n--" + b + b"\r\n", 1),
            "near-delimiter line": entity.replace(b"\r\n--" + b + b"\r\n",
                                                  b"\r\n--" + b + b"x\r\n--" + b + b"\r\n", 1),
            "multipart in base64": entity.replace(b"MIME-Version: 1.0", b"Content-Transfer-Encoding: base64"),
            "quoted-printable part": entity.replace(b"Content-Transfer-Encoding: base64",
                                                    b"Content-Transfer-Encoding: quoted-printable"),
            "8bit with spaces": entity.replace(b"Content-Transfer-Encoding: base64",
                                               b"Content-Transfer-Encoding:  8bit "),
            "unknown encoding": entity.replace(b"Content-Transfer-Encoding: base64",
                                               b"Content-Transfer-Encoding: x-token"),
            "bad base64": entity.replace(b"Content-Transfer-Encoding: base64\r\n\r\n",
                                         b"Content-Transfer-Encoding: base64\r\n\r\n!!", 1),
            "no content-id": entity.replace(b"Content-ID: <p1@hub>", b"X-Content-ID: <p1@hub>"),
            "content-id twice": entity.replace(b"<p2@hub>", b"<p1@hub>"),
            "nested multipart": entity.replace(b"Content-Type: " + PLAIN_TYPE.encode(),
                                               b"Content-Type: multipart/mixed; boundary=zz"),
            "boundary with RFC 2231": entity.replace(b'boundary="', b'boundary*0="'),
            "backslash in a parameter": entity.replace(b'type="text/xml"', b'type="text\\/xml"'),
            "a header without colon": head + b"\r\nnot a header\r\n\r\n" + body,
            "a part without headers": entity.replace(b"--" + b + b"\r\nContent-Type: text/xml",
                                                     b"--" + b + b"\r\n\r\nContent-Type: text/xml", 1),
        }
    return out


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_shape_and_variant_reads_the_same(shape: str) -> None:
    taken = {name: same(raw) is not None for name, raw in variants(SHAPES[shape]).items()}
    # the shapes our peers and we send take the plain reading
    for name in ("as built", "in a mail", "LF line ends", "lower-case names", "folded content-type"):
        assert taken[name], name
    for name in ("bare CR", "non-ASCII header", "no body", "empty head"):
        assert not taken[name], name


def test_truncated_and_mutated_copies_read_the_same() -> None:
    rnd = random.Random(17)
    for entity in (mail(SHAPES["two payloads"]), SHAPES["signal"]):
        for k in range(0, len(entity), 97):
            same(entity[:k] + b"\r\n")
        for _ in range(300):
            b = bytearray(entity)
            for _ in range(rnd.randint(1, 3)):
                b[rnd.randrange(len(b))] = rnd.choice(b"\r\n-:;\" \tx=<>")
            same(bytes(b))


@pytest.mark.skipif(not REF.is_dir(), reason="../shared/reference not present")
def test_real_nav_mail_reads_the_same() -> None:
    files = sorted(REF.glob("*.eml"))
    assert files
    plain = {f.name: same(f.read_bytes()) for f in files}
    assert plain["navikt-smtp_mails_inbox_example.eml"] is not None
    assert plain["navikt-smtp_mails_inbox_acknowledgment.eml"] is not None
