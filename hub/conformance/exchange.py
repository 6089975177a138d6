"""The folder exchange between the runner and a system under test: real files in, real files out.

Layout of one system's exchange folder::

    to-system/     messages the runner sends the system (M cases, AppRecs for its S messages)
    from-system/   what the system sends back: produced messages (S) and AppRecs (M)
    orders/        S orders: "produce an Epikrise 1.0 for patient X to HER-id Y" (a tester's click)
    patients.json  the test patients registered in the system before the run (test setup)

Every message is `<id>.xml` with an envelope sidecar `<id>.json` ({"id", "from", "to", "ref", "action"})
that plays the ebXML envelope's part: who sent it to whom, as what (Action) and which message it answers
(RefToMessageId).
Writers put the sidecar first and move the XML into place with an atomic rename, so a watcher never
sees half a file. That layout is the simulated systems' (they play their communication module's part).

A vendor's own system speaks plain KITH XML, without sidecars: hub.conformance.plain_folder.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

TO_SYSTEM = "to-system"
FROM_SYSTEM = "from-system"
ORDERS = "orders"
DONE = "done"


@dataclass(frozen=True)
class Envelope:
    id: str
    sender: int | None  # HER-id of the sending party (ebXML From)
    receiver: int | None  # HER-id of the receiving party (ebXML To)
    ref: str | None = None  # the transfer this one answers
    action: str | None = None  # ebXML Action (message type): known even when the content is unreadable

    def to_json(self) -> dict:
        return {"id": self.id, "from": self.sender, "to": self.receiver, "ref": self.ref,
                "action": self.action}

    @classmethod
    def from_json(cls, d: dict) -> Envelope:
        return cls(d["id"], d.get("from"), d.get("to"), d.get("ref"), d.get("action"))


@dataclass(frozen=True)
class Transfer:
    envelope: Envelope
    data: bytes
    path: Path
    at: float  # monotonic time it was picked up


def new_id() -> str:
    return str(uuid.uuid4())


def atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def put(folder: Path, envelope: Envelope, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / f"{envelope.id}.json", json.dumps(envelope.to_json()).encode())
    target = folder / f"{envelope.id}.xml"
    atomic_write(target, data)
    return target


def take(folder: Path) -> list[Transfer]:
    """Every complete transfer in `folder`, oldest first, moved to `folder/done` (taken once)."""
    if not folder.is_dir():
        return []
    out = []
    done = folder / DONE
    for xml in sorted(folder.glob("*.xml"), key=lambda p: p.stat().st_mtime_ns):
        side = xml.with_suffix(".json")
        if not side.exists():
            continue
        env = Envelope.from_json(json.loads(side.read_text(encoding="utf-8")))
        data = xml.read_bytes()
        done.mkdir(exist_ok=True)
        os.replace(xml, done / xml.name)
        os.replace(side, done / side.name)
        out.append(Transfer(env, data, done / xml.name, time.monotonic()))
    return out


class Exchange(Protocol):
    """The runner's side of a system's endpoint: the folder, or ebXML over HTTP (hub.conformance.ebms)."""

    transport: str

    def register_patients(self, patients: list[dict]) -> None: ...

    def send(self, data: bytes, *, sender: int | None, receiver: int | None, ref: str | None = None,
             action: str | None = None) -> str: ...

    def order(self, order: dict) -> str: ...

    def wait(self, want: set[str], *, by: str = "ref", timeout: float,
             quiet: float = 0.0) -> list[Transfer]: ...


class FolderExchange:
    """The runner's side of one system's exchange folder."""

    transport = "folder"

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in (TO_SYSTEM, FROM_SYSTEM, ORDERS):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._inbox: list[Transfer] = []

    def register_patients(self, patients: list[dict]) -> None:
        atomic_write(self.root / "patients.json", json.dumps(patients, ensure_ascii=False).encode())

    def send(self, data: bytes, *, sender: int | None, receiver: int | None, ref: str | None = None,
             action: str | None = None) -> str:
        env = Envelope(new_id(), sender, receiver, ref, action)
        put(self.root / TO_SYSTEM, env, data)
        return env.id

    def order(self, order: dict) -> str:
        """The order as the simulated systems read it (the runner's order: Runner.order_of)."""
        oid = new_id()
        legacy = {"id": oid, "message": order["key"], "receiver": order["receiver_her"],
                  "patient": order["person"], "seed": order.get("seed", 1)}
        atomic_write(self.root / ORDERS / f"{oid}.json", json.dumps(legacy).encode())
        return oid

    def poll(self) -> list[Transfer]:
        got = take(self.root / FROM_SYSTEM)
        self._inbox.extend(got)
        return got

    def wait(self, want: set[str], *, by: str = "ref", timeout: float, quiet: float = 0.0) -> list[Transfer]:
        """Collect transfers answering the ids in `want` (by envelope ref, or by order id) until all
        came or `timeout` passed; then keep listening `quiet` seconds more for unwanted extras
        (a second AppRec for a duplicate must be seen to be judged)."""
        deadline = time.monotonic() + timeout
        seen: set[str] = set()
        while time.monotonic() < deadline:
            self.poll()
            seen = {getattr(t.envelope, by) for t in self._inbox} & want
            if seen == want:
                break
            time.sleep(0.005)
        if quiet:
            end = time.monotonic() + quiet
            while time.monotonic() < end:
                self.poll()
                time.sleep(0.005)
        hits = [t for t in self._inbox if getattr(t.envelope, by) in want]
        self._inbox = [t for t in self._inbox if t not in hits]
        return hits

