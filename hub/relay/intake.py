"""Intake: how messages get into the relay. Every path stores first and answers second.

- `FolderWatcher`: each local system drops files into `<spool>/<her>/out/`. A file is claimed by an
  atomic rename into `out/.intake-<node>/` (two nodes never take the same file), stored, and only then
  moved to `archive/`. After a crash the claimed files are stored again unless the store already has
  them (a `seen` record keyed by party, file name and digest is written in the same commit).
- `SubmitServer`: `POST /submit` with `Authorization: Bearer <token>` (the token of a local system in
  the address register). 202 with the message id once stored; `Idempotency-Key` makes a retried POST
  return the first answer instead of storing the message twice. `GET /messages/<id>` shows the state
  and timeline of one's own messages. `POST /ebxml` takes ebXML from network peers when a network
  handler is wired in (hub.relay.server).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from hub.relay import pipeline as pl
from hub.relay.delivery import ensure_spool
from hub.relay.register import Party, Register
from hub.store import Message, MessageMeta, Store

log = logging.getLogger("hub.relay.intake")

MAX_SIZE = 50 * 1024 * 1024  # a KITH message with attachments; larger is refused, not read


class Intake:
    """The one way into the store: durable first, then the worker is told."""

    def __init__(self, store: Store, *, node: str,
                 on_stored: Callable[[str, Message, bytes], None]) -> None:
        self.store, self.node, self.on_stored = store, node, on_stored

    def accept_local(
        self, data: bytes, party: Party, channel: pl.Channel, *, dedup_key: str | None = None,
        detail: str = "",
    ) -> tuple[Message | None, bool]:
        """Store a local system's message; returns (message, fresh).

        A repeated `dedup_key` is not stored again: (the first message, False), or (None, False) when
        the first one's id was not yet noted (a crash between the two commits).
        """
        if dedup_key is not None and self.store.seen_get(dedup_key) is not None:
            return self.lookup(dedup_key), False
        digest = hashlib.sha256(data).hexdigest()
        meta = MessageMeta(direction="local", channel=channel.value, sender_her=str(party.her_id))
        # the seen row is written in the same commit as the message: from then on it counts as seen
        seen_rec = None if dedup_key is None else (dedup_key, digest, b"")
        m = self.store.put_received(
            data, meta, actor=self.node, seen=seen_rec,
            reason=f"{channel.value} from {party.her_id} {party.name}" + (f" ({detail})" if detail else ""),
        )
        if dedup_key is not None:
            self._remember(dedup_key, m)
        self.on_stored(m.id, m, data)  # the worker takes both as stored instead of reading them back
        return m, True

    def _remember(self, key: str, m: Message) -> None:
        # the id goes in a second record, read when the same key comes again
        self.store.seen_put(f"{key}#id", m.sha256, m.id.encode())

    def lookup(self, dedup_key: str) -> Message | None:
        rec = self.store.seen_get(f"{dedup_key}#id")
        return None if rec is None else self.store.get(rec.response.decode())


# --- watched folders ---------------------------------------------------------------------------------

def _skip(name: str) -> bool:
    return name.startswith(".") or name.endswith((".tmp", ".part", ".partial", "~"))


class FolderWatcher:
    """Polls the `out/` folder of every local system; polling works on every file system, NFS included."""

    def __init__(
        self, intake: Intake, register: Register, spool_root: Path, *, poll: float = 0.2,
        settle: float = 0.0,
    ) -> None:
        self.intake, self.register, self.spool_root = intake, register, spool_root
        self.poll, self.settle = poll, settle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def folders(self, *, create: bool = False) -> list[tuple[Party, Path]]:
        """(local system, its spool folder); `create` makes missing spool folders (at start only: a
        folder that disappears later is an outage to notice, not to paper over)."""
        out: list[tuple[Party, Path]] = []
        seen: set[Path] = set()
        for p in self.register:
            if p.parent_her_id is not None:
                continue  # a local system is an organisation; its services share its folder
            route = pl.route_for(self.register, p.her_id, self.spool_root)
            if route is None or not route.local:
                continue
            folder = Path(route.endpoint)
            if folder not in seen:
                seen.add(folder)
                out.append((p, ensure_spool(folder) if create else folder))
        return out

    def _work_dir(self, folder: Path) -> Path | None:
        d = folder / "out" / f".intake-{self.intake.node}"
        try:
            d.mkdir(exist_ok=True)
        except FileNotFoundError:
            return None  # the system's out/ is gone (unmounted share): nothing to take
        return d

    def scan_once(self) -> int:
        """Store every waiting file once; returns how many were taken."""
        n = 0
        for party, folder in self.folders():
            work = self._work_dir(folder)
            if work is None:
                continue
            # first what an earlier run of this node claimed but may not have finished
            for name in sorted(os.listdir(work)):
                n += self._take(party, folder, work / name)
            try:
                names = sorted(os.listdir(folder / "out"))
            except FileNotFoundError:
                continue
            for name in names:
                if self._stop.is_set():
                    return n
                src = folder / "out" / name
                if _skip(name) or not src.is_file():
                    continue
                claimed = work / name
                try:
                    os.rename(src, claimed)  # atomic: only one node gets it
                except FileNotFoundError:
                    continue
                n += self._take(party, folder, claimed)
        return n

    def _take(self, party: Party, folder: Path, path: Path) -> int:
        try:
            size = path.stat().st_size
            if size > MAX_SIZE:
                os.replace(path, folder / "error" / path.name)
                log.warning("%s: %d bytes is over the limit; moved to error/", path, size)
                return 0
            data = path.read_bytes()
        except FileNotFoundError:
            return 0
        digest = hashlib.sha256(data).hexdigest()
        key = f"folder:{party.her_id}:{path.name}:{digest}"
        m, _fresh = self.intake.accept_local(data, party, pl.Channel.FOLDER, dedup_key=key,
                                             detail=f"file {path.name}")
        prefix = m.short_id if m is not None else "duplicate"
        os.replace(path, folder / "archive" / f"{prefix}-{path.name}")
        return 1

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception:  # noqa: BLE001 - a bad folder must not stop intake of the others
                log.exception("folder scan failed")
            self._stop.wait(self.poll)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="folder-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


# --- HTTP: submit API (local systems) and ebXML POST (network peers) ----------------------------------

@dataclass(frozen=True)
class HttpReply:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


NetworkHandler = Callable[[bytes, dict[str, str], str], HttpReply]


def _json(status: int, data: object) -> HttpReply:
    return HttpReply(status, json.dumps(data, default=str).encode())


class SubmitApi:
    """The request handling, apart from the HTTP server (testable without a socket)."""

    def __init__(self, intake: Intake, register: Register, *, network: NetworkHandler | None = None) -> None:
        self.intake, self.register, self.network = intake, register, network

    def authenticate(self, headers: dict[str, str]) -> Party | None:
        auth = headers.get("authorization", "")
        if not auth.lower().startswith("bearer "):
            return None
        return self.register.by_token(auth[7:].strip())

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes, peer: str) -> HttpReply:
        if method == "GET" and path == "/health":
            return _json(200, {"ok": True})
        if method == "POST" and path in ("/ebxml", "/ebxml/msh"):
            if self.network is None:
                return _json(404, {"error": "no ebXML endpoint on this relay"})
            return self.network(body, headers, peer)
        party = self.authenticate(headers)
        if party is None:
            return HttpReply(401, b'{"error": "a valid bearer token of a local system is required"}',
                             headers=(("WWW-Authenticate", 'Bearer realm="hub"'),))
        if method == "POST" and path == "/submit":
            if not body:
                return _json(400, {"error": "empty body"})
            key = headers.get("idempotency-key")
            dedup = f"submit:{party.her_id}:{key}" if key else None
            m, fresh = self.intake.accept_local(body, party, pl.Channel.SUBMIT, dedup_key=dedup,
                                                detail=f"from {peer}")
            if m is None:
                return _json(200, {"duplicate": True})
            return _json(202 if fresh else 200, {"id": m.id, "short_id": m.short_id, "state": m.state.value,
                                                 "duplicate": not fresh})
        if method == "GET" and path.startswith("/messages/"):
            m = self.intake.store.get(path.rsplit("/", 1)[-1])
            mine = m is not None and (pl.belongs_to(self.register, pl._int(m.sender_her), party.her_id)
                                      or pl.belongs_to(self.register, pl._int(m.receiver_her), party.her_id))
            if m is None or not mine:
                return _json(404, {"error": "no such message of yours"})
            tl = self.intake.store.timeline(m.id)
            return _json(200, {
                "id": m.id, "short_id": m.short_id, "state": m.state.value, "msg_type": m.msg_type,
                "kith_msg_id": m.kith_msg_id, "apprec_status": m.apprec_status,
                "last_error": None if m.last_error is None else m.last_error.__dict__,
                "timeline": [{"at": e.at, "event": e.event, "to": e.to_state, "reason": e.reason}
                             for e in tl],
            })
        return _json(404, {"error": f"no {method} {path}"})


class _Handler(BaseHTTPRequestHandler):
    api: SubmitApi
    protocol_version = "HTTP/1.1"

    def _do(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_SIZE:
            self.send_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            reply = self.api.handle(method, self.path.split("?", 1)[0], headers, body,
                                    f"{self.client_address[0]}:{self.client_address[1]}")
        except Exception:  # noqa: BLE001 - the store said no: the sender must try again
            log.exception("HTTP %s %s failed", method, self.path)
            reply = _json(503, {"error": "not stored; try again"})
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for k, v in reply.headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(reply.body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._do("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._do("POST")

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        log.debug("http %s " + format, self.client_address[0], *args)


class SubmitServer:
    def __init__(self, api: SubmitApi, host: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"api": api})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="submit-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
