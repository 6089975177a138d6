"""HTTP adapters around the Msh: a small HTTP/1.1 POST endpoint on asyncio streams, and a client.

The MIME entity's headers travel as HTTP headers (Content-Type with boundary/start, SOAPAction) and its
body as the HTTP body. A synchronous signal (SyncReply) comes back in the HTTP response; a SOAP Fault
with status 500 (SOAP 1.1 over HTTP); otherwise 202 Accepted with no body.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from hub.ascii import is_ascii_digits
from hub.ebxml.mime import join_entity, split_entity

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
_KEEP = ("content-type", "soapaction", "mime-version", "content-transfer-encoding")


@dataclass
class HttpReply:
    status: int
    entity: bytes | None = None  # a MIME entity (headers + body) or None for no body


Handler = Callable[[bytes], Awaitable[HttpReply]]
_REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Content Too Large", 500: "Internal Server Error",
            503: "Service Unavailable"}


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, list[tuple[str, str]]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers.append((k.strip(), v.strip()))
    return lines[0], headers


def _response(status: int, entity: bytes | None) -> bytes:
    headers: list[tuple[str, str]] = []
    body = b""
    if entity:
        headers, body = split_entity(entity)
        headers = [(k, v) for k, v in headers if k.lower() in _KEEP]
    head = f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode("latin-1") + body


@dataclass
class HttpListener:
    """POST `path` -> handler(MIME entity) -> HttpReply. One request per connection (Connection: close)."""

    handler: Handler
    host: str = "127.0.0.1"
    port: int = 0
    path: str = "/ebxml"
    max_bytes: int = DEFAULT_MAX_BYTES
    ssl_context: ssl.SSLContext | None = None
    _server: asyncio.base_events.Server | None = None

    async def start(self) -> HttpListener:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self.ssl_context,
                                                  limit=64 * 1024)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{self.host}:{self.port}{self.path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                request, headers = await asyncio.wait_for(_read_head(reader), 30)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                writer.write(_response(400, None))
                return
            parts = request.split()
            if len(parts) != 3 or parts[0] != "POST":
                writer.write(_response(405, None))
                return
            if urlsplit(parts[1]).path != self.path:
                writer.write(_response(404, None))
                return
            lengths = [v for k, v in headers if k.lower() == "content-length"]
            if not lengths or not is_ascii_digits(lengths[0]):
                writer.write(_response(411, None))  # chunked uploads are not needed by ebXML peers
                return
            n = int(lengths[0])
            if n > self.max_bytes:
                writer.write(_response(413, None))
                return
            body = await asyncio.wait_for(reader.readexactly(n), 60)
            entity = join_entity([(k, v) for k, v in headers if k.lower() in _KEEP], body)
            reply = await self.handler(entity)
            writer.write(_response(reply.status, reply.entity))
        finally:
            try:
                await writer.drain()
            finally:
                writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def post(url: str, entity: bytes, *, ssl_context: ssl.SSLContext | None = None,
               timeout: float = 60.0) -> HttpReply:
    """POST a MIME entity; the reply's body with its MIME headers as an entity (None when empty)."""
    u = urlsplit(url)
    tls = u.scheme == "https"
    port = u.port or (443 if tls else 80)
    ctx = (ssl_context or ssl.create_default_context()) if tls else None
    headers, body = split_entity(entity)
    req = f"POST {u.path or '/'}{'?' + u.query if u.query else ''} HTTP/1.1\r\nHost: {u.hostname}:{port}\r\n"
    req += "".join(f"{k}: {v}\r\n" for k, v in headers if k.lower() in _KEEP)
    req += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"

    async def run() -> HttpReply:
        reader, writer = await asyncio.open_connection(u.hostname, port, ssl=ctx)
        try:
            writer.write(req.encode("latin-1") + body)
            await writer.drain()
            status_line, rheaders = await _read_head(reader)
            status = int(status_line.split()[1])
            lengths = [v for k, v in rheaders if k.lower() == "content-length"]
            data = await reader.readexactly(int(lengths[0])) if lengths else await reader.read()
        finally:
            writer.close()
        if not data:
            return HttpReply(status, None)
        return HttpReply(status, join_entity([(k, v) for k, v in rheaders if k.lower() in _KEEP], data))

    return await asyncio.wait_for(run(), timeout)
