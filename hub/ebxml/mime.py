"""MIME packaging of ebXML messages (HIS 1037 §5.1, HITS 1172 §5.5): pure bytes in, bytes out.

A package is a MIME entity: its own headers (MIME-Version, Content-Type, SOAPAction) and a body. A
message is multipart/related; type="text/xml"; start=<cid of the SOAP part>, with the SOAP part first and
each payload as application/pkcs7-mime; smime-type=enveloped-data, base64, Content-Id = Manifest href.
A signal is one text/xml part. SMTP puts the entity's headers among the mail headers; HTTP carries
them as HTTP headers; `split_entity`/`join_entity` convert between the two.
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import email.utils
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from hub.codes import EbmsError
from hub.ebxml.errors import EbxmlError

CRLF = b"\r\n"
PKCS7_TYPE = "application/pkcs7-mime; smime-type=enveloped-data"
PLAIN_TYPE = "application/xml"  # a payload sent unencrypted where the CPA says isConfidential="none"
GZIP_TYPE = "application/x-gzip"  # ...and compressed (the mimetype NAV's CPA packages name)


@dataclass
class Package:
    """A received package taken apart: the SOAP envelope bytes and the other parts by Content-Id."""

    soap: bytes
    parts: dict[str, bytes] = field(default_factory=dict)  # cid (without <>) -> decoded bytes
    part_types: dict[str, str] = field(default_factory=dict)
    soap_action: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # the top-level headers, lower-cased names


def _b64(data: bytes) -> bytes:
    raw = base64.b64encode(data)
    return CRLF.join(raw[i : i + 76] for i in range(0, len(raw), 76))


def _headers(pairs: list[tuple[str, str]]) -> bytes:
    return b"".join(f"{k}: {v}".encode("ascii") + CRLF for k, v in pairs)


def new_cid(domain: str = "hub") -> str:
    return f"{uuid.uuid4()}@{domain}"


def build_package(
    soap: bytes,
    payloads: list[tuple[str, bytes]] | None = None,
    *,
    soap_cid: str | None = None,
    soap_base64: bool = True,
    payload_type: str = PKCS7_TYPE,
) -> bytes:
    """The MIME entity (headers + body). No payloads: a signal, one text/xml part (no multipart).

    `soap_base64`: mail is safest base64 (real NAV/NHN mail does so); HTTP can carry it 8-bit.
    """
    if not payloads:
        top = [("MIME-Version", "1.0"), ("SOAPAction", '"ebXML"'),
               ("Content-Type", 'text/xml; charset="UTF-8"')]
        if soap_base64:
            top.append(("Content-Transfer-Encoding", "base64"))
            return _headers(top) + CRLF + _b64(soap) + CRLF
        top.append(("Content-Transfer-Encoding", "8bit"))
        return _headers(top) + CRLF + soap
    soap_cid = soap_cid or new_cid()
    boundary = "----=_Part_" + uuid.uuid4().hex
    top = [
        ("MIME-Version", "1.0"),
        ("SOAPAction", '"ebXML"'),
        ("Content-Type", f'multipart/related; type="text/xml"; boundary="{boundary}"; start="<{soap_cid}>"'),
    ]
    body = [b"--" + boundary.encode() + CRLF]
    soap_hdr = [("Content-Type", 'text/xml; charset="UTF-8"'), ("Content-ID", f"<{soap_cid}>")]
    if soap_base64:
        body += [_headers([*soap_hdr, ("Content-Transfer-Encoding", "base64")]), CRLF, _b64(soap), CRLF]
    else:
        body += [_headers([*soap_hdr, ("Content-Transfer-Encoding", "8bit")]), CRLF, soap, CRLF]
    for cid, data in payloads:
        body += [b"--" + boundary.encode() + CRLF,
                 _headers([("Content-Type", payload_type), ("Content-ID", f"<{cid}>"),
                           ("Content-Transfer-Encoding", "base64")]),
                 CRLF, _b64(data), CRLF]
    body.append(b"--" + boundary.encode() + b"--" + CRLF)
    return _headers(top) + CRLF + b"".join(body)


def split_entity(entity: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """(headers, body) of a MIME entity: for HTTP, where the headers travel as HTTP headers."""
    for sep in (b"\r\n\r\n", b"\n\n"):
        i = entity.find(sep)
        if i >= 0:
            head, body = entity[:i], entity[i + len(sep) :]
            break
    else:
        raise ValueError("no blank line after the headers")
    msg = email.message_from_bytes(head + b"\r\n\r\n", policy=email.policy.compat32)
    return [(k, " ".join(str(v).split())) for k, v in msg.items()], body


def join_entity(headers: list[tuple[str, str]], body: bytes) -> bytes:
    return _headers(headers) + CRLF + body


def _cid(value: str | None) -> str | None:
    if value is None:
        return None
    v = " ".join(str(value).split()).strip()
    return v[1:-1].strip() if v.startswith("<") and v.endswith(">") else v


def _fault(description: str, location: str) -> EbxmlError:
    return EbxmlError(EbmsError.MIME_PROBLEM, description, location, fault=True)


def _decoded(part: email.message.Message, name: str) -> bytes:
    cte = (part.get("Content-Transfer-Encoding") or "7bit").strip().lower()
    raw = part.get_payload(decode=False)
    if isinstance(raw, list):
        raise _fault(f"{name} is itself multipart", "Content-Type")
    if cte == "base64":
        data = raw.encode("ascii", "surrogateescape") if isinstance(raw, str) else bytes(raw)
        try:
            return base64.b64decode(b"".join(data.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _fault(f"{name}: base64 content cannot be decoded ({exc})",
                         "Content-Transfer-Encoding") from None
    if cte in ("7bit", "8bit", "binary", "quoted-printable"):
        # the email package keeps 8-bit bytes as surrogate escapes; decode=True gives them back as bytes
        return part.get_payload(decode=True)  # type: ignore[return-value]
    raise _fault(f"{name}: Content-Transfer-Encoding {cte!r} is not supported", "Content-Transfer-Encoding")


def parse_package(entity: bytes) -> Package:
    """Take a received MIME entity (mail or HTTP headers + body) apart; raise MimeProblem faults."""
    if not entity.strip():
        raise _fault("the message is empty", "Content-Type")
    return _plain_package(entity) or _email_package(entity)


def _email_package(entity: bytes) -> Package:
    """parse_package by the email package: every shape, and the faults with their reasons."""
    msg = email.message_from_bytes(entity, policy=email.policy.compat32)
    headers = {k.lower(): " ".join(str(v).split()) for k, v in msg.items()}
    ctype = msg.get_content_type()
    action = headers.get("soapaction")
    if "content-type" not in headers:
        raise _fault("no Content-Type header", "Content-Type")
    if ctype == "text/xml":
        return Package(_decoded(msg, "the SOAP part"), {}, {}, action, headers)
    if ctype != "multipart/related":
        raise _fault(f"Content-Type {ctype} is neither multipart/related nor text/xml (HIS 1037 §5.1)",
                     "Content-Type")
    if not msg.get_boundary():
        raise _fault("multipart/related without a boundary", "Content-Type")
    parts = msg.get_payload()
    if not isinstance(parts, list) or not parts or msg.defects:
        names = ", ".join(type(d).__name__ for d in msg.defects) or "no parts"
        raise _fault(f"the multipart body is broken ({names})", "Content-Type")
    start = _cid(msg.get_param("start"))
    soap_part = None
    if start:
        soap_part = next((p for p in parts if _cid(p.get("Content-ID")) == start), None)
        if soap_part is None:
            raise _fault(f"no part has the start Content-ID <{start}>", "Content-Type; start")
    else:
        soap_part = parts[0]  # RFC 2387: without start, the root is the first part
    if soap_part.get_content_type() != "text/xml":
        raise _fault(f"the root part is {soap_part.get_content_type()}, not text/xml", "Content-Type")
    pkg = Package(_decoded(soap_part, "the SOAP part"), {}, {}, action, headers)
    for p in parts:
        if p is soap_part:
            continue
        cid = _cid(p.get("Content-ID"))
        if not cid:
            raise _fault("a payload part has no Content-ID", "Content-ID")
        if cid in pkg.parts:
            raise _fault(f"Content-ID <{cid}> is used twice", "Content-ID")
        pkg.parts[cid] = _decoded(p, f"part <{cid}>")
        pkg.part_types[cid] = " ".join(str(p.get("Content-Type", "")).split())
    return pkg


# --- the plain shapes without the email package ---------------------------------------------------
# Profiles of a relay put the email package's parse at three quarters of reading a received envelope
# (0.3 ms of 0.45 for a 13 kB mail). `_plain_package` gives exactly what `_email_package` gives (compat32
# semantics: first header of a name for lookups, last one in `headers`, one line end before a
# delimiter belongs to it) for the shapes real traffic has: ASCII headers, CRLF or LF line ends, one
# level of multipart/related with a close delimiter, parts in base64, 7bit, 8bit or binary. Anything
# else, and any input that would be a fault, returns None and is read by the email package, which
# then says what is wrong (tests/test_ebxml_mime_plain.py compares the two on real and odd mail).

_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+:")  # the email package's header line, less the empty name
# a header block of one line per header (no continuation lines), and such a line: name, and the value as
# _head's loop makes it (blanks after the colon and the line end's CRs dropped)
_SIMPLE_HEAD = re.compile(r"(?:[\x21-\x39\x3b-\x7e]+:[^\n]*\n)*")
_SIMPLE_LINE = re.compile(r"([\x21-\x39\x3b-\x7e]+):[ \t]*([^\n]*?)\r*\n")
_LONE_CR = re.compile(rb"\r(?!\n)")


def _head(data: bytes) -> tuple[list[tuple[str, str]], bytes] | None:
    """Header lines (name, value as compat32 keeps it) and the body after the empty line."""
    if data[:1] in (b"\r", b"\n"):
        return None
    a = data.find(b"\n\r\n")
    # an LF LF only counts before it (a CRLF mail has none: not a search of the whole body)
    b = data.find(b"\n\n", 0, a + 1) if a >= 0 else data.find(b"\n\n")
    if a < 0 and b < 0:
        return None
    end, skip = (a, 3) if b < 0 or 0 <= a < b else (b, 2)
    try:
        text = data[: end + 1].decode("ascii")
    except UnicodeDecodeError:  # compat32 makes such a header a Header object: not a plain shape
        return None
    if _SIMPLE_HEAD.fullmatch(text):  # every line a header of its own: the loop below, in two C calls
        return _SIMPLE_LINE.findall(text), data[end + skip:]
    out: list[tuple[str, list[str]]] = []
    for line in text.split("\n")[:-1]:
        line += "\n"
        if line[0] in " \t":
            if not out:
                return None
            out[-1][1].append(line)
        elif (m := _NAME.match(line)) is not None:
            out.append((line[: m.end() - 1], [line[m.end():].lstrip(" \t")]))
        else:
            return None
    return [(k, "".join(v).rstrip("\r\n")) for k, v in out], data[end + skip:]


def _first_of(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The first value of each header name (lower case): what compat32's Message.get returns."""
    out: dict[str, str] = {}
    for k, v in headers:
        out.setdefault(k.lower(), v)
    return out


def _content_type(headers: dict[str, str]) -> str:
    value = headers.get("content-type")
    if value is None:
        return "text/plain"
    ctype = value.partition(";")[0].strip().lower()
    return ctype if ctype.count("/") == 1 else "text/plain"


def _params(value: str) -> dict[str, str] | None:
    """Content-Type parameters as Message.get_param returns them (first of a name); None for RFC 2231
    and backslash-quoted values."""
    if "\\" in value or "*" in value:
        return None
    s, plist = ";" + value, []
    while s[:1] == ";":  # email.message._parseparam: a ';' inside quotes does not split
        s = s[1:]
        end = s.find(";")
        while end > 0 and s.count('"', 0, end) % 2:
            end = s.find(";", end + 1)
        if end < 0:
            end = len(s)
        plist.append(s[:end].strip())
        s = s[end:]
    out: dict[str, str] = {}
    for p in plist[1:]:
        name, eq, val = p.partition("=")
        out.setdefault(name.strip().lower(), email.utils.unquote(val.strip()) if eq else "")
    return out


def _plain_part(headers: dict[str, str], payload: bytes) -> bytes | None:
    cte = (headers.get("content-transfer-encoding") or "7bit").strip().lower()
    if cte == "base64":
        try:
            return base64.b64decode(b"".join(payload.split()), validate=True)
        except (binascii.Error, ValueError):
            return None
    return payload if cte in ("7bit", "8bit", "binary") else None


_DELIMITER_END = re.compile(rb"(--)?[ \t]*(?:\r?\n|\Z)")  # after --boundary: close mark, padding, line end


def _delimiters(body: bytes, dash_boundary: bytes) -> Iterator[tuple[int, re.Match[bytes]]]:
    """Where each delimiter line starts, and the match of its end (group 1: a close delimiter)."""
    at = 0 if body.startswith(dash_boundary) else -1
    if at < 0 and (n := body.find(b"\n" + dash_boundary)) >= 0:
        at = n + 1
    while at >= 0:
        m = _DELIMITER_END.match(body, at + len(dash_boundary))
        if m is not None:
            yield at, m
        n = body.find(b"\n" + dash_boundary, at)
        at = n + 1 if n >= 0 else -1


def _plain_package(entity: bytes) -> Package | None:
    if _LONE_CR.search(entity):  # a lone CR ends a line for the email package
        return None
    split = _head(entity)
    if split is None:
        return None
    top_list, body = split
    top = _first_of(top_list)
    headers = {k.lower(): " ".join(v.split()) for k, v in top_list}
    action = headers.get("soapaction")
    ctype = _content_type(top)
    if "content-type" not in headers or ctype not in ("text/xml", "multipart/related"):
        return None
    if ctype == "text/xml":
        soap = _plain_part(top, body)
        return None if soap is None else Package(soap, {}, {}, action, headers)
    params = _params(top.get("content-type") or "")
    # a multipart in base64 or quoted-printable is a defect to the email package
    if params is None or (top.get("content-transfer-encoding") or "8bit").lower() not in (
            "7bit", "8bit", "binary"):
        return None
    boundary = email.utils.unquote(params.get("boundary", "")).rstrip()
    if not boundary or not boundary.isascii():
        return None
    parts: list[tuple[dict[str, str], bytes]] = []
    start = None
    for at, m in _delimiters(body, b"--" + boundary.encode()):
        if start is not None:
            raw = body[start:at]
            split = _head(raw)
            if split is None:
                return None
            ph = _first_of(split[0])
            payload = split[1]
            if payload.endswith(b"\r\n"):
                payload = payload[:-2]
            elif payload.endswith(b"\n"):
                payload = payload[:-1]
            if _content_type(ph).split("/")[0] in ("multipart", "message"):
                return None
            parts.append((ph, payload))
        if m.group(1):
            break
        start = m.end()
    else:
        return None  # no close delimiter (a defect)
    if not parts:
        return None
    cid_of = [_cid(ph.get("content-id")) for ph, _ in parts]
    root = _cid(params.get("start"))
    i = (cid_of.index(root) if root in cid_of else -1) if root else 0
    if i < 0 or _content_type(parts[i][0]) != "text/xml":
        return None
    soap = _plain_part(*parts[i])
    if soap is None:
        return None
    pkg = Package(soap, {}, {}, action, headers)
    for j, (ph, payload) in enumerate(parts):
        cid = cid_of[j]
        if j == i:
            continue
        if not cid or cid in pkg.parts:
            return None
        data = _plain_part(ph, payload)
        if data is None:
            return None
        pkg.parts[cid] = data
        pkg.part_types[cid] = " ".join((ph.get("content-type") or "").split())
    return pkg
