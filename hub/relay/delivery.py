"""Delivery channels: put a message's bytes where its receiver will find them.

A deliverer only moves bytes and reports what happened; the worker turns that into lifecycle events.
- `FolderDeliverer`: a local system's `in/` folder. Delivered = written, fsynced and renamed into place.
  The file name is derived from the store id, so a second attempt after a crash replaces the same
  file instead of adding a copy: the receiver never sees a message twice.
- `NetworkDeliverer`: ebXML via the Msh over SMTP or HTTP (sign, encrypt, send); delivered when the
  peer's ebMS Acknowledgment arrives (SMTP) or comes back in the response (HTTP sync).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from hub.relay.pipeline import DeliveryError, Route, RouteKind
from hub.store import Message

SPOOL_DIRS = ("out", "in", "archive", "error")


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
    def deliver(self, route: Route, data: bytes, message: Message) -> Delivery: ...


def ensure_spool(folder: Path) -> Path:
    """A local system's spool: out/ (it writes), in/ (we write), archive/ and error/."""
    for d in SPOOL_DIRS:
        (folder / d).mkdir(parents=True, exist_ok=True)
    return folder


def file_name(message: Message) -> str:
    kind = (message.msg_type or "msg").lower().replace("_", "-")
    return f"{kind}-{message.short_id}.xml"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(target: Path, data: bytes) -> None:
    """Write `data` to `target` atomically: temp file, fsync, rename, fsync the folder."""
    tmp = target.with_name(f".{target.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


class FolderDeliverer:
    def __init__(self, *, fsync: bool = True) -> None:
        self.fsync = fsync

    def deliver(self, route: Route, data: bytes, message: Message) -> Delivery:
        if route.kind is not RouteKind.FOLDER:
            raise DeliveryError("route", f"not a folder route: {route.kind}", permanent=True)
        inbox = Path(route.endpoint) / "in"
        if not inbox.is_dir():
            # a missing folder is a configuration fault an operator fixes; retrying may then succeed
            raise DeliveryError("folder.missing", f"{inbox} does not exist", permanent=False)
        target = inbox / file_name(message)
        write_durably(target, data)
        return Delivery(Outcome.DELIVERED, f"folder {target}")

    @staticmethod
    def notice(folder: Path, name: str, text: str) -> Path:
        """A note for a local system (e.g. why a message was not delivered) in its error/ folder."""
        target = folder / "error" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        write_durably(target, text.encode("utf-8"))
        return target


class NetworkDeliverer:
    """ebXML to a network peer: `send(route, data, message) -> Delivery` comes from the Msh wiring.

    Kept as a thin adapter so the worker sees one interface for every channel; the transport code
    (hub.transport) does the sending and raises its own errors, which `pipeline.classify` sorts.
    """

    def __init__(self, send: Callable[[Route, bytes, Message], Delivery]) -> None:
        self._send = send

    def deliver(self, route: Route, data: bytes, message: Message) -> Delivery:
        if route.kind not in (RouteKind.SMTP, RouteKind.HTTP):
            raise DeliveryError("route", f"not a network route: {route.kind}", permanent=True)
        return self._send(route, data, message)
