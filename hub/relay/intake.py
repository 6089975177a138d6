"""Intake: how messages get into the relay. Every path stores first and answers second.

- `FolderWatcher`: each local system drops files into `<spool>/<her>/out/`. A file is claimed by an
  atomic rename into `out/.intake-<node>/` (two nodes never take the same file), stored, and only then
  moved to `archive/`. After a crash the claimed files are stored again unless the store already has
  them (a `seen` record keyed by party, file name and digest is written in the same commit).
- `SubmitApi`: the relay's routes on `hub.transport.http_server.HttpServer`. `POST /submit` with
  `Authorization: Bearer <token>` (the token of a local system in the address register) or that
  system's registered client certificate (mTLS). 202 with the message id once stored; `Idempotency-Key`
  makes a retried POST return the first answer instead of storing the message twice.
  `GET /messages/<id>` shows the state and timeline of one's own messages. `POST /ebxml` takes ebXML
  from network peers when a network handler is wired in (hub.relay.server).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hub.relay import pipeline as pl
from hub.relay.delivery import ensure_spool
from hub.relay.register import Party, Register
from hub.security import keystore
from hub.security.errors import SecurityError
from hub.store import Message, MessageMeta, Store
from hub.transport.http import HttpReply
from hub.transport.http_server import HttpRequest, HttpServer

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
            d.mkdir(mode=0o700)
            os.chmod(d, 0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:
            pass
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
        os.chmod(path, 0o600)  # the archived original is the hub's now, not readable as the sender left it
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

# POST /ebxml from a network peer: the MIME entity (entity headers + body) and the request (its peer,
# its client certificate's party) -> the answer (202, a SyncReply's signal, a duplicate's recorded one)
NetworkHandler = Callable[[bytes, HttpRequest], HttpReply]


class ClientCertificates:
    """mTLS: the register party whose registered certificate (sign_cert or enc_cert) a client presented.
    The TLS layer has checked the chain against `client_ca`; this names who it is, and `check` (the
    relay's certificate validation: validity, revocation) must pass, else nobody. The register is read
    again after RECHECK_S, so a party added or a certificate renewed is seen without a restart; a
    certificate found good is not checked again for VALID_FOR_S (a refused one always is)."""

    RECHECK_S = 30.0
    VALID_FOR_S = 60.0

    def __init__(self, register: Register, *,
                 check: Callable[[x509.Certificate], object] | None = None) -> None:
        self.register, self.check = register, check
        self._by_fp: dict[bytes, Party] = {}
        self._good: dict[bytes, float] = {}
        self._at = -self.RECHECK_S
        self._lock = threading.Lock()

    def _load(self) -> dict[bytes, Party]:
        out: dict[bytes, Party] = {}
        for p in self.register:
            for path in {p.sign_cert, p.enc_cert} - {None}:
                try:
                    cert = keystore.load_certificate(Path(str(path)))
                except (OSError, SecurityError) as exc:
                    log.warning("party %s: certificate %s not readable: %s", p.her_id, path, exc)
                    continue
                out.setdefault(cert.fingerprint(hashes.SHA256()), p)
        return out

    def __call__(self, cert: x509.Certificate) -> Party | None:
        now = time.monotonic()
        fp = cert.fingerprint(hashes.SHA256())
        with self._lock:
            if now - self._at > self.RECHECK_S:
                self._by_fp, self._at = self._load(), now
            party, good_until = self._by_fp.get(fp), self._good.get(fp, 0.0)
        if party is None or self.check is None or good_until > now:
            return party
        try:
            self.check(cert)
        except SecurityError as exc:
            log.warning("client certificate of %s %s refused: %s", party.her_id, party.name, exc)
            return None
        with self._lock:
            self._good[fp] = now + self.VALID_FOR_S
        return party


class SubmitApi:
    """The relay's HTTP routes (`routes()`), apart from the server that carries them."""

    def __init__(self, intake: Intake, register: Register, *, network: NetworkHandler | None = None) -> None:
        self.intake, self.register, self.network = intake, register, network

    def routes(self, server: HttpServer) -> None:
        """Declare this API's routes on `server` (other parts add theirs the same way)."""
        server.add_route("POST", "/submit", self.submit)
        server.add_route("GET", "/messages/{id}", self.message)
        if self.network is not None:
            for path in ("/ebxml", "/ebxml/msh"):
                server.add_route("POST", path, self.ebxml)

    def ebxml(self, req: HttpRequest) -> HttpReply:
        assert self.network is not None
        return self.network(req.entity(), req)

    def authenticate(self, req: HttpRequest) -> Party | None:
        """The local system behind a request: its bearer token, or its registered client certificate."""
        auth = req.headers.get("authorization", "")
        by_token = self.register.by_token(auth[7:].strip()) if auth.lower().startswith("bearer ") else None
        by_cert = req.client if isinstance(req.client, Party) and req.client.local else None
        if by_token is not None and by_cert is not None and by_token.her_id != by_cert.her_id:
            return None  # two credentials of two parties: neither is believed
        return by_token or by_cert

    def _unauthorized(self) -> HttpReply:
        return HttpReply.json(401, {"error": "a valid bearer token (or client certificate) of a local system "
                                             "is required"}, ("WWW-Authenticate", 'Bearer realm="hub"'))

    def submit(self, req: HttpRequest) -> HttpReply:
        party = self.authenticate(req)
        if party is None:
            return self._unauthorized()
        if not req.body:
            return HttpReply.json(400, {"error": "empty body"})
        key = req.headers.get("idempotency-key")
        dedup = f"submit:{party.her_id}:{key}" if key else None
        m, fresh = self.intake.accept_local(req.body, party, pl.Channel.SUBMIT, dedup_key=dedup,
                                            detail=f"from {req.peer}")
        if m is None:
            return HttpReply.json(200, {"duplicate": True})
        return HttpReply.json(202 if fresh else 200, {"id": m.id, "short_id": m.short_id,
                                                      "state": m.state.value, "duplicate": not fresh})

    def message(self, req: HttpRequest) -> HttpReply:
        party = self.authenticate(req)
        if party is None:
            return self._unauthorized()
        m = self.intake.store.get(req.params["id"])
        mine = m is not None and (pl.belongs_to(self.register, pl._int(m.sender_her), party.her_id)
                                  or pl.belongs_to(self.register, pl._int(m.receiver_her), party.her_id))
        if m is None or not mine:
            return HttpReply.json(404, {"error": "no such message of yours"})
        tl = self.intake.store.timeline(m.id)
        return HttpReply.json(200, {
            "id": m.id, "short_id": m.short_id, "state": m.state.value, "msg_type": m.msg_type,
            "kith_msg_id": m.kith_msg_id, "apprec_status": m.apprec_status,
            "last_error": None if m.last_error is None else m.last_error.__dict__,
            "timeline": [{"at": e.at, "event": e.event, "to": e.to_state, "reason": e.reason} for e in tl],
        })
