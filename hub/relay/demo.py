"""`hub serve --demo`: the relay on SQLite with four simulated systems, the flow shown live.

A GP office, a hospital, a lab and a nursing home (hub.fixtures.people) exchange Dialogmelding,
Henvisning, Epikrise, Rekvisisjon and Svarrapport through their spool folders, and answer every
message they receive with an AppRec. Now and then the GP addresses an unknown HER-id (the relay
refuses it with E21 and answers with an AppRec of its own), and the hospital forgets to answer (the
relay flags the message once the AppRec limit has passed). Everything lives under $HUB_HOME/demo,
created on first start.
"""

from __future__ import annotations

import itertools
import os
import random
import shutil
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hub.config import home
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.paths import FIXTURES_DIR
from hub.relay import pipeline as pl
from hub.relay.delivery import ensure_spool
from hub.relay.server import Relay, RelayConfig, default_inspector
from hub.relay.worker import Inspector
from hub.store import Message

DEMO_FILES = ("hub.toml", "register.toml")


def demo_home() -> Path:
    return home() / "demo"


def setup(where: Path | None = None) -> Path:
    """Create the demo's folder (config, register) on first start; returns its hub.toml."""
    d = where or demo_home()
    d.mkdir(parents=True, exist_ok=True)
    for name in DEMO_FILES:
        target = d / name
        if not target.exists():
            shutil.copyfile(FIXTURES_DIR / "demo" / name, target)
    (d / "spool").mkdir(exist_ok=True)
    return d / "hub.toml"


@dataclass(frozen=True)
class Plan:
    """One kind of message a simulated system sends."""

    family: str
    version: str
    sender: people.Party
    receiver: people.Party
    msg_type: str | None = None
    variant: str | None = None


UNKNOWN = people.Party(89999, "Ukjent mottaker", None, "gp")

PLANS: tuple[Plan, ...] = (
    Plan("Henvisning", "1.1", people.GP_FASTLEGE, people.HOSP_POLIKLINIKK),
    Plan("Rekvisisjon", "1.6", people.GP_FASTLEGE, people.LAB_BIOKJEMI),
    Plan("Svarrapport", "1.4", people.LAB_BIOKJEMI, people.GP_FASTLEGE, variant="biokjemi"),
    Plan("Epikrise", "1.2", people.HOSP_MEDISINSK, people.GP_FASTLEGE),
    Plan("Dialogmelding", "1.1", people.NURSING_SYKEPLEIER, people.GP_FASTLEGE, "DIALOG_HELSEFAGLIG"),
    Plan("Dialogmelding", "1.0", people.GP_FASTLEGE, people.NURSING_TILDELING, "DIALOG_NOTAT"),
    Plan("Dialogmelding", "1.0", people.GP_FASTLEGE_2, people.HOSP_POLIKLINIKK, "DIALOG_FORESPORSEL"),
)
ODD_ONE = Plan("Dialogmelding", "1.0", people.GP_FASTLEGE, UNKNOWN, "DIALOG_NOTAT")


@dataclass
class SimSystem:
    """A journal system that exchanges files with the relay through its spool folder."""

    org: people.Party
    folder: Path
    inspect: Inspector
    rng: random.Random
    forget: float = 0.0  # share of received messages it never answers
    received: int = 0
    answered: int = 0
    apprecs: int = 0

    def send(self, data: bytes, stem: str) -> None:
        out = self.folder / "out"
        tmp = out / f".{stem}.xml.part"
        tmp.write_bytes(data)
        os.replace(tmp, out / f"{stem}.xml")  # appears whole: the watcher never reads half a file

    def poll(self) -> None:
        inbox = self.folder / "in"
        try:
            names = sorted(n for n in os.listdir(inbox) if not n.startswith("."))
        except FileNotFoundError:
            return
        for name in names:
            path = inbox / name
            data = path.read_bytes()
            (self.folder / "read").mkdir(exist_ok=True)
            os.replace(path, self.folder / "read" / name)
            f = self.inspect(data, name)
            if f.is_apprec:
                self.apprecs += 1
                continue
            self.received += 1
            if self.rng.random() < self.forget:
                continue
            self.answer(f)

    def answer(self, f: pl.Facts) -> None:
        me = people.DIRECTORY.get(f.receiver_her or 0)
        them = people.DIRECTORY.get(f.sender_her or 0)
        if me is None or them is None or not f.msg_id:
            return
        issued = (f.gen_date or datetime.now(UTC)).replace(tzinfo=None).isoformat(timespec="seconds")
        body = build("AppRec", "1.0", sender=me, receiver=them, status="1",
                     original=(f.msg_type or "", issued, f.msg_id), gen_date=_now_local(),
                     msg_id=str(uuid.uuid4()))
        self.send(body, f"apprec-{f.msg_id}")
        self.answered += 1


def _now_local() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass
class Demo:
    relay: Relay
    every: float = 0.8  # seconds between new messages
    seed: int = 7
    events: deque[tuple[str, str, str, str, str, str]] = field(default_factory=lambda: deque(maxlen=16))
    sent: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.inspect = default_inspector()
        spool = self.relay.cfg.spool_root
        self.systems: dict[int, SimSystem] = {}
        for org, forget in ((people.GP_OFFICE, 0.0), (people.HOSPITAL, 0.15), (people.LAB, 0.0),
                            (people.NURSING_HOME, 0.0)):
            folder = ensure_spool(spool / str(org.her_id))
            self.systems[org.her_id] = SimSystem(org, folder, self.inspect,
                                                 random.Random(self.seed + org.her_id), forget)
        self.relay.tap.listeners.append(self._on_event)
        self._stop = threading.Event()
        self._plans = itertools.cycle(PLANS)
        self._lock = threading.Lock()

    def _on_event(self, what: str, m: Message, detail: str) -> None:
        t = datetime.now().strftime("%H:%M:%S")
        with self._lock:
            self.events.appendleft((t, m.short_id, m.msg_type or "?", f"{m.sender_her} → {m.receiver_her}",
                                    what, detail))

    def send_one(self) -> None:
        plan = ODD_ONE if self.sent % 11 == 10 else next(self._plans)
        org = people.organisation_of(plan.sender)
        kw: dict[str, object] = {"gen_date": _now_local(), "msg_id": str(uuid.uuid4())}
        if plan.variant:
            kw["variant"] = plan.variant
        data = build(plan.family, plan.version, seed=self.sent + 1, sender=plan.sender,
                     receiver=plan.receiver, msg_type=plan.msg_type, **kw)
        self.systems[org.her_id].send(data, f"{plan.family.lower()}-{kw['msg_id']}")
        self.sent += 1

    def run_systems(self) -> None:
        next_send = time.monotonic()
        while not self._stop.is_set():
            try:
                for s in self.systems.values():
                    s.poll()
                if time.monotonic() >= next_send:
                    self.send_one()
                    next_send += self.every
            except Exception as exc:  # noqa: BLE001 - a simulated system's hiccup is shown, not fatal
                self.events.appendleft((datetime.now().strftime("%H:%M:%S"), "-", "-", "-", "demo error",
                                        str(exc)))
            self._stop.wait(0.1)

    def view(self) -> Group:
        table = Table(title="hub relay demo: the flow, newest first", expand=True, header_style="bold")
        for col, kw in (("time", {}), ("id", {}), ("type", {}), ("from → to", {}), ("step", {}),
                        ("detail", {"overflow": "ellipsis", "no_wrap": True, "ratio": 1})):
            table.add_column(col, **kw)
        colour = {"rejected": "red", "undelivered": "red", "failed": "red", "apprec_overdue": "yellow",
                  "retrying": "yellow", "completed": "green", "delivered": "cyan", "answer": "magenta"}
        with self._lock:
            rows = list(self.events)
        for r in rows:
            table.add_row(*r[:4], Text(r[4], style=colour.get(r[4], "")), r[5])
        stats = self.relay.store.stats()
        line = "  ".join(f"{k} {v}" for k, v in stats.items() if v)
        systems = "  ".join(f"{s.org.name}: got {s.received}, answered {s.answered}, AppRecs {s.apprecs}"
                            for s in self.systems.values())
        return Group(table, Text(f"messages by state: {line}"), Text(systems, style="dim"),
                     Text("Ctrl-C stops", style="dim"))

    def run(self, duration: float | None = None, console: Console | None = None) -> None:
        console = console or Console()
        t = threading.Thread(target=self.run_systems, name="demo-systems", daemon=True)
        if self.relay.http is not None:
            host, port = self.relay.http.address
            console.print(f"submit API: http://{host}:{port}/submit "
                          f"(tokens in {self.relay.cfg.register[0]})")
        console.print(f"spool folders: {self.relay.cfg.spool_root}")
        if console.is_terminal:
            with Live(get_renderable=self.view, console=console, refresh_per_second=4, screen=False):
                t.start()
                self.relay.run(duration)
        else:
            # a pipe (tests, logs): one line per step instead of a redrawn table
            self.relay.tap.listeners.append(
                lambda what, m, detail: console.print(
                    f"{m.short_id} {m.msg_type or '?'} {m.sender_her}->{m.receiver_her} {what}: {detail}",
                    soft_wrap=True, highlight=False))
            t.start()
            self.relay.run(duration)
        self._stop.set()
        t.join(5)
        stats = self.relay_stats()
        console.print("demo stopped; messages by state: "
                      + ", ".join(f"{k} {v}" for k, v in stats.items() if v))

    def relay_stats(self) -> dict[str, int]:
        from hub.store import open_store

        with open_store(self.relay.cfg.store) as s:  # the relay closed its own on stop
            return s.stats()


def main(duration: float | None = None, console: Console | None = None) -> Demo:
    cfg = RelayConfig.load(setup())
    demo = Demo(Relay(cfg))
    demo.run(duration, console)
    return demo
