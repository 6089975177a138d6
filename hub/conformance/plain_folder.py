"""The folder of a vendor's own system under test (endpoint `folder:DIR`): plain KITH XML only.

    in/       messages for the system, `<id>.xml`, each moved into place with an atomic rename
    out/      everything the system sends, its messages and its AppRecs, as `*.xml`; the runner takes them
    orders/   `<case>.json`: what the tester must make the system send (Sending cases)
    taken/    what the runner took from out/, kept as it came

No sidecars: who sent what to whom, and which message an AppRec answers (OriginalMsgId), is read from
the documents themselves (hub.conformance.grading.read_document).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from hub.conformance.exchange import ORDERS, Envelope, Transfer, atomic_write, new_id
from hub.conformance.grading import read_document

IN, OUT, TAKEN = "in", "out", "taken"
ORDER_FIELDS = ("case", "message", "version", "enter", "sender_her", "receiver_her", "receiver_org_her",
                "receiver_name", "patient")
Announce = Callable[[dict, Path], None]  # an order and the file it was written to
Countdown = Callable[[float], None]  # seconds left of the current wait


class PlainFolderExchange:
    """The runner's side of a vendor system's folder: plain KITH XML in `in/` and `out/`, nothing else.

    An AppRec answers the transfer whose message has its OriginalMsgId/Id; any other document answers
    the open order (a person makes the system send one message at a time). An AppRec whose
    OriginalMsgId names no message sent is kept in `strays` for the grading to report."""

    transport = "folder"
    envelope = False  # nothing beside the document says who sent it: unreadable input cannot be answered

    def __init__(self, root: Path, *, announce: Announce | None = None,
                 countdown: Countdown | None = None) -> None:
        self.root = root
        for sub in (IN, OUT, ORDERS, TAKEN):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self.announce = announce or (lambda _order, _path: None)
        self.countdown = countdown or (lambda _left: None)
        self._by_msg_id: dict[str, str] = {}  # MsgId of a message sent -> the first transfer carrying it
        self._open_orders: list[str] = []
        self._inbox: list[Transfer] = []
        self.strays: list[Transfer] = []

    def register_patients(self, patients: list[dict]) -> None:
        """A vendor registers the test patients in its system by hand; the list is there to read."""
        text = json.dumps(patients, ensure_ascii=False, indent=1)
        atomic_write(self.root / "patients.json", text.encode())

    def send(self, data: bytes, *, sender: int | None, receiver: int | None, ref: str | None = None,
             action: str | None = None) -> str:
        tid = new_id()
        msg_id = read_document(data).msg_id
        if msg_id:
            self._by_msg_id.setdefault(msg_id, tid)
        atomic_write(self.root / IN / f"{tid}.xml", data)
        return tid

    def order(self, order: dict) -> str:
        case = str(order["case"])
        path = self.root / ORDERS / f"{case}.json"
        shown = {k: order[k] for k in ORDER_FIELDS if k in order} | {"send_to": str(self.root / OUT)}
        atomic_write(path, json.dumps(shown, ensure_ascii=False, indent=1).encode())
        self._open_orders.append(case)
        self.announce(shown, path)
        return case

    def poll(self) -> list[Transfer]:
        out = self.root / OUT
        got = []
        files = [p for p in out.glob("*.xml") if not p.name.startswith(".")]
        for path in sorted(files, key=lambda p: p.stat().st_mtime_ns):
            data = path.read_bytes()
            taken = self.root / TAKEN / path.name
            if taken.exists():
                taken = taken.with_name(f"{path.stem}-{new_id()[:8]}.xml")
            os.replace(path, taken)
            doc = read_document(data)
            if doc.is_apprec:
                ref = self._by_msg_id.get(doc.original_msg_id or "")
            else:
                ref = self._open_orders.pop(0) if self._open_orders else None
            t = Transfer(Envelope(path.stem, doc.sender_her, doc.receiver_her, ref,
                                  "APPREC" if doc.is_apprec else doc.type), data, taken, time.monotonic())
            (self._inbox if ref else self.strays).append(t)
            got.append(t)
        return got

    def wait(self, want: set[str], *, by: str = "ref", timeout: float, quiet: float = 0.0) -> list[Transfer]:
        """As FolderExchange.wait, with the seconds left told to `countdown` about once a second."""
        deadline = time.monotonic() + timeout
        told = None
        while True:
            self.poll()
            if {getattr(t.envelope, by) for t in self._inbox} >= want:
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if told is None or int(left) != told:
                told = int(left)
                self.countdown(left)
            time.sleep(0.02)
        end = time.monotonic() + quiet
        while time.monotonic() < end:
            self.poll()
            time.sleep(0.02)
        for oid in want & set(self._open_orders):  # an order not answered in time is closed
            self._open_orders.remove(oid)
        hits = [t for t in self._inbox if getattr(t.envelope, by) in want]
        self._inbox = [t for t in self._inbox if t not in hits]
        return hits
