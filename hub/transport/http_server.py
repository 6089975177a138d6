"""The hub's HTTP listener on aiohttp.web: every HTTP route of a relay (or a test peer) on one server.

    server = HttpServer(HttpSettings(listen=("127.0.0.1", 0)))
    server.add_route("POST", "/submit", handler)       # handler(HttpRequest) -> HttpReply
    server.start()                                     # its own thread and event loop; stop() ends both

What the server enforces before a handler sees a request:
- TLS from a PEM certificate and key; with `client_ca` the client may (or, `require_client_cert`, must)
  present a certificate chaining to it, and `identify(certificate)` (run in the pool: it may check
  revocation) maps it to a registered party.
  With `require_client_cert` a certificate that maps to no party gets 403.
- the body limit on the bytes actually read, chunked or not (413); a negative or malformed
  Content-Length is refused by aiohttp's parser (400);
- timeouts: `header_timeout` for the request head (and an idle keep-alive connection, and the TLS
  handshake), `body_timeout` for the whole body (408);
- `max_connections` open connections; one more gets 503 and is closed.
Blocking handlers (the store, the relay's worker code) run in a thread pool, never on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from cryptography import x509

from hub.config import HttpSection, host_port
from hub.ebxml.mime import join_entity
from hub.transport.http import DEFAULT_MAX_BYTES, ENTITY_HEADERS, HttpReply
from hub.transport.loops import new_event_loop

log = logging.getLogger("hub.transport.http_server")

_HOP = {"content-length", "transfer-encoding", "connection", "keep-alive"}
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 44\r\n"
         b"Retry-After: 5\r\nConnection: close\r\n\r\n" b'{"error": "too many connections; try again"}')


@dataclass(frozen=True)
class HttpSettings:
    """What the server and the outbound client run with: hub.toml's `[http]` with paths resolved."""

    listen: tuple[str, int] | None = None
    tls: bool = False
    cert: Path | None = None  # PEM: the server certificate, then its chain
    key: Path | None = None  # PEM private key
    client_ca: tuple[Path, ...] = ()  # PEM anchors (and intermediates) for client certificates
    require_client_cert: bool = False
    anchors: tuple[Path, ...] = ()  # PEM anchors for outbound https (empty: the system's store)
    client_cert: Path | None = None  # PEM offered to https peers that ask (default: cert)
    client_key: Path | None = None
    max_body: int = DEFAULT_MAX_BYTES
    header_timeout: float = 30.0
    body_timeout: float = 120.0
    max_connections: int = 256

    @classmethod
    def from_section(cls, t: HttpSection, base: Path) -> HttpSettings:
        """From hub.toml's validated `[http]` (hub.config.HttpSection); paths relative to `base`."""

        def path(v: str | None) -> Path | None:
            return None if not v else (Path(v) if Path(v).is_absolute() else base / v)

        def paths(vs: list[str]) -> tuple[Path, ...]:
            return tuple(p for p in (path(v) for v in vs) if p is not None)

        return cls(
            listen=host_port(t.listen) if t.listen else None, tls=t.tls, cert=path(t.cert), key=path(t.key),
            client_ca=paths(t.client_ca), require_client_cert=t.require_client_cert,
            anchors=paths(t.anchors), client_cert=path(t.client_cert), client_key=path(t.client_key),
            max_body=t.max_body, header_timeout=t.header_timeout_s, body_timeout=t.body_timeout_s,
            max_connections=t.max_connections,
        )

    def server_ssl(self, base: ssl.SSLContext | None = None) -> ssl.SSLContext | None:
        """`base`: a context holding the certificate already (hub.toml's [tls]), used without cert/key."""
        if not self.tls:
            return None
        if self.cert is not None and self.key is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.cert, self.key)
        elif base is not None:
            ctx = base
        else:
            raise ValueError("http: tls = true needs cert and key, or the [tls] certificate")
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.client_ca:
            for ca in self.client_ca:
                ctx.load_verify_locations(cafile=ca)
            ctx.verify_mode = ssl.CERT_REQUIRED if self.require_client_cert else ssl.CERT_OPTIONAL
        return ctx

    def client_ssl(self) -> ssl.SSLContext:
        """For outbound https: anchors verified, and our certificate offered to a peer that asks."""
        ctx = ssl.create_default_context()
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        for a in self.anchors:
            ctx.load_verify_locations(cafile=a)
        cert, key = (self.client_cert, self.client_key) if self.client_cert else (self.cert, self.key)
        if cert is not None and key is not None:
            ctx.load_cert_chain(cert, key)
        return ctx


@dataclass(frozen=True)
class HttpRequest:
    """One request as a handler sees it: the body is read in full and within the limits."""

    method: str
    path: str
    params: Mapping[str, str]  # the route's {placeholders}
    headers: Mapping[str, str]  # case-insensitive lookup; items() as the client spelled them
    body: bytes
    peer: str  # host:port
    client_cert: x509.Certificate | None = None
    client: Any = None  # what `identify` made of the certificate (a register Party), or None
    query: Mapping[str, str] = field(default_factory=dict)

    def entity(self) -> bytes:
        """The MIME entity an ebXML POST carried: its entity headers and the body."""
        return join_entity([(k, v) for k, v in self.headers.items() if k.lower() in ENTITY_HEADERS],
                           self.body)


Handler = Callable[[HttpRequest], HttpReply] | Callable[[HttpRequest], Awaitable[HttpReply]]


class _Refused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


class _Busy(asyncio.Protocol):
    """The answer to one connection over the limit."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a TCP transport (uvloop's is not a subclass of asyncio.Transport)
        transport.write(_BUSY)  # type: ignore[attr-defined]
        transport.close()


class _LimitedSite(web.TCPSite):
    """aiohttp's TCP site with a cap on open connections and a TLS handshake timeout."""

    def __init__(self, runner: web.AppRunner, sock: socket.socket, *, ssl_context: ssl.SSLContext | None,
                 limit: int, handshake_timeout: float) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(runner, host, port, ssl_context=ssl_context)
        self._sock, self._limit, self._handshake_timeout = sock, limit, handshake_timeout

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with the runner
        server = self._runner.server
        assert server is not None
        limit = self._limit

        def factory() -> asyncio.BaseProtocol:
            return server() if len(server.connections) < limit else _Busy()

        kw: dict[str, Any] = {"ssl": self._ssl_context, "backlog": self._backlog}
        if self._ssl_context is not None:
            kw["ssl_handshake_timeout"] = self._handshake_timeout
        self._server = await asyncio.get_running_loop().create_server(factory, sock=self._sock, **kw)


class HttpServer:
    def __init__(self, settings: HttpSettings, *,
                 identify: Callable[[x509.Certificate], Any] | None = None, name: str = "http",
                 tls_context: ssl.SSLContext | None = None, event_loop: str = "auto") -> None:
        """`event_loop`: of its thread (hub.transport.loops)."""
        if settings.listen is None:
            raise ValueError("HttpServer needs settings.listen")
        self.settings, self.identify, self.name = settings, identify, name
        self._tls_base = tls_context  # the certificate when settings name none (hub.toml's [tls])
        self._routes: list[tuple[str, str, Handler, bool]] = []
        self._runner: web.AppRunner | None = None
        self._site: _LimitedSite | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event_loop = event_loop
        self._thread: threading.Thread | None = None
        self._certs: dict[bytes, x509.Certificate] = {}
        # bound now: the address is known (port 0 chosen) and a port in use fails here, before start()
        self._sock = socket.create_server(settings.listen, backlog=128)

    # --- routes: the one place every HTTP endpoint is declared ------------------------------------------
    def add_route(self, method: str, path: str, handler: Handler, *, blocking: bool = True) -> None:
        """`path` may hold {placeholders} (aiohttp's syntax), given to the handler as `params`.
        `blocking`: the handler is a plain function run in the server's thread pool (it may use the
        store); else a coroutine function run on the loop (it must not block)."""
        if self._runner is not None:
            raise RuntimeError("routes are added before start()")
        self._routes.append((method.upper(), path, handler, blocking))

    # --- life -----------------------------------------------------------------------------------------
    async def astart(self) -> HttpServer:
        """Start on the running loop."""
        s = self.settings
        assert s.listen is not None
        app = web.Application(client_max_size=s.max_body)
        for method, path, handler, blocking in self._routes:
            app.router.add_route(method, path, self._wrap(handler, blocking))
        self._pool = ThreadPoolExecutor(max_workers=min(s.max_connections, 64),
                                        thread_name_prefix=f"{self.name}-handler")
        # keepalive_timeout starts at connection_made: a connection that sends no complete head in
        # time is closed (aiohttp has no separate header timeout); lingering drains a refused body
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     keepalive_timeout=s.header_timeout,
                                     lingering_time=min(5.0, s.body_timeout), shutdown_timeout=5.0)
        await self._runner.setup()
        self._site = _LimitedSite(self._runner, self._sock, ssl_context=s.server_ssl(self._tls_base),
                                  limit=s.max_connections, handshake_timeout=s.header_timeout)
        await self._site.start()
        return self

    async def astop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def start(self) -> None:
        """Start in a thread of its own with its own event loop."""
        self._loop = new_event_loop(self._event_loop)
        self._thread = threading.Thread(target=self._loop.run_forever, name=self.name, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.astart(), self._loop).result(30)

    def stop(self) -> None:
        if self._loop is None:
            self._sock.close()  # never started
            return
        try:
            asyncio.run_coroutine_threadsafe(self.astop(), self._loop).result(30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(10)
            self._loop.close()
            self._loop = self._thread = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def url(self, path: str = "") -> str:
        host, port = self.address
        return f"{'https' if self.settings.tls else 'http'}://{host}:{port}{path}"

    # --- one request ----------------------------------------------------------------------------------
    def _wrap(self, handler: Handler, blocking: bool) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def serve(request: web.Request) -> web.Response:
            try:
                req = await self._request(request)
                if blocking:
                    loop = asyncio.get_running_loop()
                    reply = await loop.run_in_executor(self._pool, handler, req)
                else:
                    reply = await handler(req)  # type: ignore[misc]
            except _Refused as r:
                resp = _response(HttpReply.json(r.status, {"error": r.text}))
                if r.status == 408:
                    resp.force_close()
                # after a 413 aiohttp drains (and drops) what the client still sends for up to
                # lingering_time, so the client reads its 413 instead of a reset; then it closes
                return resp
            except Exception:  # noqa: BLE001 - e.g. the store said no: the sender must try again
                log.exception("%s %s failed", request.method, request.path)
                return _response(HttpReply.json(503, {"error": "not taken; try again"}))
            return _response(reply)

        return serve

    async def _request(self, request: web.Request) -> HttpRequest:
        cert = self._client_cert(request)
        client = None
        if cert is not None and self.identify is not None:
            # in the pool: naming the party may check revocation (a CRL fetched, at worst)
            client = await asyncio.get_running_loop().run_in_executor(self._pool, self.identify, cert)
        if self.settings.require_client_cert and client is None:
            raise _Refused(403, "the client certificate is not registered for any party")
        body = b""
        if request.body_exists:
            body = await self._read_body(request)
        peer = request.transport.get_extra_info("peername") if request.transport is not None else None
        return HttpRequest(
            request.method, request.path, dict(request.match_info),
            request.headers, body,
            f"{peer[0]}:{peer[1]}" if peer else "?", cert, client, dict(request.query),
        )

    async def _read_body(self, request: web.Request) -> bytes:
        limit = self.settings.max_body
        declared = request.content_length
        if declared is not None and declared > limit:
            raise _Refused(413, f"the body ({declared} bytes) is over the limit of {limit} bytes")
        data = bytearray()
        try:
            async with asyncio.timeout(self.settings.body_timeout):
                async for chunk in request.content.iter_any():
                    data += chunk
                    if len(data) > limit:
                        raise _Refused(413, f"the body is over the limit of {limit} bytes")
        except TimeoutError:
            raise _Refused(408, f"the body did not arrive within {self.settings.body_timeout:g} s") from None
        return bytes(data)

    def _client_cert(self, request: web.Request) -> x509.Certificate | None:
        tr = request.transport
        sslobj = tr.get_extra_info("ssl_object") if tr is not None else None
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        if not der:
            return None
        cert = self._certs.get(der)
        if cert is None:
            cert = x509.load_der_x509_certificate(der)
            if len(self._certs) > 1024:
                self._certs.clear()
            self._certs[der] = cert
        return cert


def _response(reply: HttpReply) -> web.Response:
    headers, body = reply.parts()
    return web.Response(status=reply.status, body=body,
                        headers=[(k, v) for k, v in headers if k.lower() not in _HOP])


class HttpListener:
    """One ebXML POST route on its own server, on the caller's loop: handler(MIME entity) -> HttpReply."""

    def __init__(self, handler: Callable[[bytes], Awaitable[HttpReply]], host: str = "127.0.0.1",
                 port: int = 0, path: str = "/ebxml", *, settings: HttpSettings | None = None) -> None:
        self.path = path
        self.settings = settings or HttpSettings(listen=(host, port))

        async def on_post(req: HttpRequest) -> HttpReply:
            return await handler(req.entity())

        self.server = HttpServer(self.settings, name="ebxml-http")
        self.server.add_route("POST", path, on_post, blocking=False)

    async def start(self) -> HttpListener:
        await self.server.astart()
        return self

    async def stop(self) -> None:
        await self.server.astop()

    @property
    def port(self) -> int:
        return self.server.address[1]

    @property
    def url(self) -> str:
        return self.server.url(self.path)
