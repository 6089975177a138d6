"""Delivery channels: put a message's bytes where its receiver will find them.

A deliverer only moves bytes and reports what happened; the worker turns that into lifecycle events.
- `FolderDeliverer`: a local system's `in/` folder. Delivered = written, fsynced and renamed into place;
  a ledger of markers makes a second attempt after a crash a no-op (see the class).
- `NetworkDeliverer`: ebXML via the Msh over SMTP or HTTP (sign, encrypt, send); delivered when the
  peer's ebMS Acknowledgment arrives (SMTP) or comes back in the response (HTTP sync).
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from hub.fsmode import private_dir
from hub.relay.pipeline import DeliveryError, Route, RouteKind
from hub.store import Message

SPOOL_DIRS = ("out", "in", "archive", "error")
SIGNAL = "ebxml-signal"  # artefact kind: the peer's last ebMS signal about a message we sent


class Outcome(StrEnum):
    DELIVERED = "delivered"  # the receiver has it (folder written, HTTP sync ack)
    SENT = "sent"  # handed to the network; the ebMS ack comes later


@dataclass(frozen=True)
class Delivery:
    outcome: Outcome
    detail: str  # where it went, for the timeline ("folder .../in/x.xml", "smtp edi@... 250 OK")
    out_message_id: str | None = None  # the ebXML MessageId of what we sent
    signal: bytes | None = None  # HTTP sync: the peer's Acknowledgment


class Deliverer(Protocol):
    """`prepare(route, data, message) -> {artefact kind: bytes}`, optional: what must be stored before the
    first attempt; the worker writes it in the commit that claims the message."""

    def deliver(self, route: Route, data: bytes, message: Message) -> Delivery: ...


def ensure_spool(folder: Path) -> Path:
    """A local system's spool: out/ (it writes), in/ (we write), archive/ and error/."""
    for d in SPOOL_DIRS:
        private_dir(folder / d)
    return folder


def file_name(message: Message) -> str:
    kind = (message.msg_type or "msg").lower().replace("_", "-")
    return f"{kind}-{message.short_id}.xml"


def _fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _DirSync:
    """Group commit for directory fsyncs: a caller whose entries are in place (created, renamed) waits
    for an fsync of the folder that began after that; one running fsync covers everyone who asked
    before it began. Eight workers publishing into one in/ folder then share fsyncs instead of
    queueing eight of them (each a journal commit) behind the folder's lock."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._asked: dict[str, int] = {}  # path -> requests so far
        self._done: dict[str, int] = {}  # path -> requests covered by a finished fsync
        self._running: set[str] = set()

    def sync(self, path: str | Path) -> None:
        key = str(path)
        with self._cond:
            mine = self._asked[key] = self._asked.get(key, 0) + 1
            while True:
                if self._done.get(key, 0) >= mine:
                    return
                if key not in self._running:
                    self._running.add(key)
                    covers = self._asked[key]  # everyone who asked before this fsync begins
                    break
                self._cond.wait()
        try:
            _fsync_dir(path)
        finally:
            with self._cond:
                self._running.discard(key)
                if sys.exc_info()[0] is None:
                    self._done[key] = max(self._done.get(key, 0), covers)
                self._cond.notify_all()  # on failure a waiter runs its own fsync (and sees the error)


_dir_sync = _DirSync()


def _write_synced(path: str | Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically: temp file, fsync, rename, fsync the folder."""
    tmp = target.with_name(f".{target.name}.tmp")
    _write_synced(tmp, data)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


LEDGER = ".hub-delivered"  # inside in/: receivers skip dot entries
SEED = ".seed-"  # in the ledger: the empty file markers are hard links to (see FolderDeliverer)
PRUNE_EVERY_S = 3600.0  # how often the worker's sweep forgets old markers (FolderDeliverer.housekeep)
SEED_EVERY_S = 3600.0  # a new seed this often: a marker's age (its seed's mtime) is known to this much


# a file system without hard links (FAT, some network shares) says so with one of these
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EXDEV})


class FolderDeliverer:
    """Exactly once into a folder, even across crashes and a receiver that takes files at once.

    Publishing is a rename, and the folder itself records how far an attempt got: the message is
    first written to a hidden temp file, then a marker goes into `in/.hub-delivered/`, then the temp
    file is renamed into place. A retry after a crash finds: no marker -> write again; marker and
    temp file -> publish it; marker and no temp file -> it was published (and maybe already taken
    by the receiver): report delivered without writing a second copy.

    A marker is a hard link to an empty seed file in the ledger rather than a file of its own: a link
    is a directory entry only, while a new inode costs the allocator (ext4: 0.1-0.3 ms of kernel CPU
    per file here). A marker's mtime is its seed's, and a seed serves `SEED_EVERY_S` at most, so
    prune() keeps a marker that much longer. Where links do not work (a file system without them, a
    seed at its link limit) the marker is a new empty file, as the ledger's markers always were.
    """

    def __init__(self, *, keep_markers_s: float = 7 * 24 * 3600) -> None:
        self.keep_markers_s = keep_markers_s
        self._ledgers: set[str] = set()  # made already: no mkdir (a stat under the folder's lock) each time
        self._seeds: dict[str, tuple[str, float]] = {}  # ledger -> (its current seed, made at)
        self._no_links: set[str] = set()  # ledgers whose file system refused a hard link
        self._lock = threading.Lock()
        self._pruned_at = time.time()  # the ledgers' last clean-up (housekeep)

    def deliver(self, route: Route, data: bytes, message: Message) -> Delivery:
        if route.kind is not RouteKind.FOLDER:
            raise DeliveryError("route", f"not a folder route: {route.kind}", permanent=True)
        # plain strings: the path arithmetic of pathlib costs more than the system calls it names
        inbox = os.path.join(route.endpoint, "in")
        name = file_name(message)
        target = os.path.join(inbox, name)
        tmp = os.path.join(inbox, f".{name}.tmp")
        ledger = os.path.join(inbox, LEDGER)
        marker = os.path.join(ledger, name)
        # the first attempt has no earlier one whose traces to look for (a retry after a crash is
        # claimed again, attempts >= 2); the look-ups are stats that queue behind other workers' renames
        first = message.attempts <= 1
        try:
            if not first and os.path.exists(marker) and not os.path.exists(tmp):
                return Delivery(Outcome.DELIVERED, f"folder {target} (published by an earlier attempt)")
            if first or not os.path.exists(tmp) or os.stat(tmp).st_size != len(data):
                _write_synced(tmp, data)
            if first or not os.path.exists(marker):
                if ledger not in self._ledgers:
                    private_dir(Path(ledger))
                    self._ledgers.add(ledger)
                self._mark(ledger, marker)
                _dir_sync.sync(ledger)
            os.replace(tmp, target)
            _dir_sync.sync(inbox)
        except FileNotFoundError:
            if os.path.isdir(inbox):
                self._ledgers.discard(ledger)
                raise
            # a missing folder is a configuration fault an operator fixes; retrying may then succeed
            raise DeliveryError("folder.missing", f"{inbox} does not exist", permanent=False) from None
        return Delivery(Outcome.DELIVERED, f"folder {target}")

    def _mark(self, ledger: str, marker: str) -> None:
        """Make `marker` (not yet durable: the caller syncs the ledger)."""
        if ledger not in self._no_links:
            for _ in range(2):
                seed = self._seed(ledger)
                try:
                    os.link(seed, marker)
                    return
                except FileExistsError:
                    return  # an earlier attempt's
                except FileNotFoundError:
                    if not os.path.isdir(ledger):
                        raise
                    self._retire(ledger, seed)  # pruned meanwhile (or another process's clean-up)
                except OSError as exc:
                    if exc.errno == errno.EMLINK:
                        self._retire(ledger, seed)  # full: the next one
                        continue
                    if exc.errno not in _NO_LINKS:
                        raise  # a fault of the folder (no space, I/O): the attempt fails and is retried
                    self._no_links.add(ledger)
                    break
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o600))

    def _seed(self, ledger: str) -> str:
        now = time.time()
        cur = self._seeds.get(ledger)
        if cur is not None and now - cur[1] < SEED_EVERY_S:
            return cur[0]
        with self._lock:
            cur = self._seeds.get(ledger)
            if cur is not None and now - cur[1] < SEED_EVERY_S:
                return cur[0]
            # a name of its own (processes of one node share the folder); durable before any marker
            # names it: the ledger's fsync after the marker then covers the seed's entry too
            seed = os.path.join(ledger, f"{SEED}{time.time_ns()}-{os.getpid()}")
            _write_synced(seed, b"")
            self._seeds[ledger] = (seed, now)
            return seed

    def _retire(self, ledger: str, seed: str) -> None:
        with self._lock:
            if self._seeds.get(ledger, ("", 0.0))[0] == seed:
                del self._seeds[ledger]

    def prune(self, inbox: Path, now: float) -> int:
        """Forget markers older than `keep_markers_s` (a retry never comes that late); a marker linked
        to a seed is as old as the seed at most `SEED_EVERY_S` after it, hence the margin."""
        n = 0
        ledger = inbox / LEDGER
        if not ledger.is_dir():
            return 0
        for e in os.scandir(ledger):
            if now - e.stat().st_mtime > self.keep_markers_s + SEED_EVERY_S:
                os.unlink(e.path)
                n += 1
        return n

    def housekeep(self, now: float | None = None) -> int:
        """prune() every ledger this deliverer wrote to since it started, at most once per
        `PRUNE_EVERY_S` (the worker's sweep calls it: without it a ledger grows by a marker per message
        for ever). How many entries went."""
        now = time.time() if now is None else now
        with self._lock:
            if now - self._pruned_at < PRUNE_EVERY_S:
                return 0
            self._pruned_at = now
            ledgers = list(self._ledgers)
        n = 0
        for ledger in ledgers:
            try:
                n += self.prune(Path(ledger).parent, now)
            except OSError:
                continue  # a folder gone or unreadable: its deliveries say so; the next round tries again
        return n

    @staticmethod
    def notice(folder: Path, name: str, text: str) -> Path:
        """A note for a local system (e.g. why a message was not delivered) in its error/ folder."""
        target = folder / "error" / name
        private_dir(target.parent)
        write_durably(target, text.encode("utf-8"))
        return target


class NetworkDeliverer:
    """ebXML to a network peer: `send(route, data, message) -> Delivery` comes from the Msh wiring.

    Kept as a thin adapter so the worker sees one interface for every channel; the transport code
    (hub.transport) does the sending and raises its own errors, which `pipeline.classify` sorts.
    """

    def __init__(self, send: Callable[..., Delivery],
                 prepare: Callable[[Route, bytes, Message], dict[str, bytes]] | None = None) -> None:
        self._send = send
        self._prepare = prepare

    def prepare(self, route: Route, data: bytes, message: Message) -> dict[str, bytes] | None:
        return self._prepare(route, data, message) if self._prepare is not None else None

    def deliver(self, route: Route, data: bytes, message: Message, *,
                prepared: dict[str, bytes] | None = None) -> Delivery:
        """`prepared`: what prepare() made for this attempt and the claim stored (else read back)."""
        if route.kind not in (RouteKind.SMTP, RouteKind.HTTP):
            raise DeliveryError("route", f"not a network route: {route.kind}", permanent=True)
        if prepared:
            return self._send(route, data, message, prepared=prepared)
        return self._send(route, data, message)
