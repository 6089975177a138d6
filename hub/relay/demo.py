"""`hub serve --demo`: two relays on SQLite with four simulated systems, the flow shown live.

A GP office, a hospital, a lab and a nursing home (hub.fixtures.people) exchange Dialogmelding,
Henvisning, Epikrise, Rekvisisjon and Svarrapport through their spool folders, and answer every
message they receive with an AppRec. The municipal relay (HER 80000) serves the GP, the lab and the
nursing home; the hospital sits behind a second relay (HER 81000, `demo/sykehus`) in the same process,
so every message to or from the hospital, and its AppRec, crosses the network as signed + encrypted
ebXML over SMTP on 127.0.0.1 with ebMS Acknowledgments (test PKI made in `demo/pki` on first start,
its CRL served on loopback while the demo runs). Now and then the GP addresses an unknown HER-id (the
relay refuses it with E21 and answers with an AppRec of its own), and the hospital forgets to answer
(the relay flags the message once the AppRec limit has passed). Everything lives under
$HUB_HOME/demo, created on first start.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
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
from hub.security.pki import PartySpec, init_pki, layout, serve_crl
from hub.store import Message, StoreError

DEMO_FILES = ("hub.toml", "register.toml", "sykehus/hub.toml", "sykehus/register.toml")
# bumped when the demo's files change shape: an older demo folder gets the new files (its store stays)
DEMO_VERSION = "2"
PEER = "sykehus"  # the hospital relay's folder under the demo folder
# the two relays' enterprise identities in the demo PKI (HER-ids as in the registers)
PKI_PARTIES = [PartySpec("kommune", "80000", "964338531", "Fjordbyen kommune"),
               PartySpec("sykehus", "81000", "983015549", "Fjordbyen sykehus HF")]


def demo_home() -> Path:
    return home() / "demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup(where: Path | None = None) -> Path:
    """Create the demo's folder (configs, registers, test PKI) on first start; returns its hub.toml."""
    d = where or demo_home()
    d.mkdir(parents=True, exist_ok=True)
    marker = d / ".demo-version"
    current = marker.exists() and marker.read_text().strip() == DEMO_VERSION
    for name in DEMO_FILES:
        target = d / name
        if not target.exists() or not current:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(FIXTURES_DIR / "demo" / name, target)
    (d / "spool").mkdir(exist_ok=True)
    if not (d / "pki" / "pki.json").exists():
        # the CRL URL is fixed in the certificates: a port free now; `Demo.run` serves it there
        # (or, when that port is taken at a later start, points the validators elsewhere)
        init_pki(d / "pki", PKI_PARTIES, crl_url=f"http://127.0.0.1:{_free_port()}/crl/", special=False)
    marker.write_text(DEMO_VERSION + "\n")
    return d / "hub.toml"


def pin_smtp(path: Path, listen: int, relay: int) -> None:
    """Write this start's SMTP ports into the demo's hub.toml, so that what the relay runs with is
    what `hub queue ... --config` reads (resend --dry-run checks that SMTP relay)."""
    out, section = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[smtp]" and stripped.startswith(("listen =", "relay =")):
            continue
        out.append(line)
        if stripped == "[smtp]":
            out += [f'listen = "127.0.0.1:{listen}"', f'relay = "127.0.0.1:{relay}"']
    path.write_text("\n".join(out) + "\n", encoding="utf-8")


def networked(path: Path) -> tuple[Relay, Relay]:
    """The municipal relay (`path`) and the hospital's relay beside it, joined over SMTP on 127.0.0.1
    with ports free now (each relay sends to the other's listener)."""
    pa, pb = _free_port(), _free_port()
    pin_smtp(path, pa, pb)
    pin_smtp(path.parent / PEER / "hub.toml", pb, pa)
    return Relay(RelayConfig.load(path)), Relay(RelayConfig.load(path.parent / PEER / "hub.toml"))


def _shown(p: Path) -> Path:
    """`p` relative to the current folder when it is under it (a shorter command to copy)."""
    try:
        return p.resolve().relative_to(Path.cwd())
    except ValueError:
        return p


@contextlib.contextmanager
def crl_served(relays: list[Relay]) -> Iterator[str]:
    """Serve the demo PKI's CRLs on loopback while the relays run (their certificate checks fetch them)."""
    pki = next((r.cfg.pki for r in relays if r.cfg.pki is not None), None)
    if pki is None or not (pki / "pki.json").exists():
        yield ""
        return
    base = layout(pki).crl_url
    port = int(base.rsplit(":", 1)[1].split("/", 1)[0])
    try:
        server = serve_crl(pki, port=port)
        srv = server.__enter__()
    except OSError:  # the port is taken now: serve anywhere and fetch from there
        server = serve_crl(pki)
        srv = server.__enter__()
        from hub.security.certs import CertificateValidator, _http_fetch

        url = srv.url
        for r in relays:
            if r.network is not None:
                old = r.network.validator
                r.network.validator = CertificateValidator(
                    old.anchors, old.intermediates,
                    fetch=lambda u, t: _http_fetch(url + u.rsplit("/", 1)[-1], t))
    try:
        yield srv.url
    finally:
        server.__exit__(None, None, None)


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


def hop(m: Message) -> str:
    """How the message reached (or leaves) this relay: ebXML over the network, or a local folder."""
    if m.channel in pl.NETWORK_CHANNELS:
        return f"ebXML/{m.channel} in"
    if m.direction == "out":
        return "ebXML out"
    return "folder"


Row = tuple[str, str, str, str, str, str, str, str]


@dataclass
class Demo:
    relay: Relay
    peer: Relay | None = None  # the hospital's relay, reached over the network (None: all local)
    every: float = 0.8  # seconds between new messages
    seed: int = 7
    events: deque[Row] = field(default_factory=lambda: deque(maxlen=16))
    sent: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.inspect = default_inspector()
        self.systems: dict[int, SimSystem] = {}
        for org, forget in ((people.GP_OFFICE, 0.0), (people.HOSPITAL, 0.15), (people.LAB, 0.0),
                            (people.NURSING_HOME, 0.0)):
            folder = ensure_spool(self.serving(org.her_id).cfg.spool_root / str(org.her_id))
            self.systems[org.her_id] = SimSystem(org, folder, self.inspect,
                                                 random.Random(self.seed + org.her_id), forget)
        self.relay.tap.listeners.append(self._listener(self.label(self.relay)))
        if self.peer is not None:
            self.peer.tap.listeners.append(self._listener(self.label(self.peer)))
        self._stop = threading.Event()
        self._plans = itertools.cycle(PLANS)
        self._lock = threading.Lock()
        self._last: dict[str, dict[str, int]] = {}

    def serving(self, her_id: int) -> Relay:
        """The relay whose folders a local system uses: the peer when its register serves the party."""
        if self.peer is not None:
            p = self.peer.register.resolve(her_id)
            if p is not None and p.local:
                return self.peer
        return self.relay

    @staticmethod
    def label(r: Relay) -> str:
        return f"relay {r.cfg.her_id}"

    def _listener(self, label: str):  # noqa: ANN202 - a Tap listener
        def on_event(what: str, m: Message, detail: str) -> None:
            t = datetime.now().strftime("%H:%M:%S")
            with self._lock:
                self.events.appendleft((t, label, m.short_id, m.msg_type or "?",
                                        f"{m.sender_her} → {m.receiver_her}", hop(m), what, detail))

        return on_event

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
                self.events.appendleft((datetime.now().strftime("%H:%M:%S"), "demo", "-", "-", "-", "-",
                                        "demo error", str(exc)))
            self._stop.wait(0.1)

    def view(self) -> Group:
        table = Table(title="hub relay demo: the flow, newest first", expand=True, header_style="bold")
        for col, kw in (("time", {}), ("where", {}), ("id", {}), ("type", {}), ("from → to", {}),
                        ("hop", {}), ("step", {}),
                        ("detail", {"overflow": "ellipsis", "no_wrap": True, "ratio": 1})):
            table.add_column(col, **kw)
        colour = {"rejected": "red", "undelivered": "red", "failed": "red", "apprec_overdue": "yellow",
                  "retrying": "yellow", "completed": "green", "delivered": "cyan", "answer": "magenta"}
        with self._lock:
            rows = list(self.events)
        for r in rows:
            table.add_row(*r[:5], Text(r[5], style="bold blue" if r[5].startswith("ebXML") else "dim"),
                          Text(r[6], style=colour.get(r[6], "")), r[7])
        line = "   ".join(f"{self.label(r)}: " + "  ".join(f"{k} {v}" for k, v in self._stats(r).items() if v)
                           for r in self.relays)
        systems = "  ".join(f"{s.org.name}: got {s.received}, answered {s.answered}, AppRecs {s.apprecs}"
                            for s in self.systems.values())
        return Group(table, Text(f"messages by state: {line}"), Text(systems, style="dim"),
                     Text("Ctrl-C stops", style="dim"))

    def _stats(self, r: Relay) -> dict[str, int]:
        """The relay's counts; the last ones seen once it has stopped (the view's final refresh comes
        after the relay closed its store)."""
        try:
            self._last[r.cfg.node] = r.store.stats()
        except StoreError:
            pass
        return self._last.get(r.cfg.node, {})

    @property
    def relays(self) -> list[Relay]:
        return [self.relay] + ([self.peer] if self.peer is not None else [])

    def run(self, duration: float | None = None, console: Console | None = None) -> None:
        console = console or Console()
        t = threading.Thread(target=self.run_systems, name="demo-systems", daemon=True)
        if self.relay.http is not None:
            host, port = self.relay.http.address
            console.print(f"submit API: http://{host}:{port}/submit "
                          f"(tokens in {self.relay.cfg.register[0]})")
        for r in self.relays:
            smtp = f", ebXML over SMTP on {r.cfg.smtp_listen[0]}:{r.cfg.smtp_listen[1]}" \
                if r.cfg.smtp_listen and r.network is not None else ""
            console.print(f"{self.label(r)}: spool folders {r.cfg.spool_root}{smtp}")
            conf = _shown(r.cfg.base / "hub.toml")
            console.print(f"  config {conf}; inspect it with: hub queue list --config {conf}",
                          highlight=False, soft_wrap=True)
        if not console.is_terminal:
            # a pipe (tests, logs): one line per step instead of a redrawn table
            def line(label: str):  # noqa: ANN202 - a Tap listener
                return lambda what, m, detail: console.print(
                    f"[{label}] {m.short_id} {m.msg_type or '?'} {m.sender_her}->{m.receiver_her} "
                    f"({hop(m)}) {what}: {detail}", soft_wrap=True, highlight=False, markup=False)

            for r in self.relays:
                r.tap.listeners.append(line(self.label(r)))
        done = threading.Event()
        old: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda *_: done.set())
        try:
            with contextlib.ExitStack() as stack:
                stack.enter_context(crl_served(self.relays))
                for r in reversed(self.relays):  # stopped in reverse, also when starting fails
                    r.start()
                    stack.callback(r.stop)
                if console.is_terminal:
                    stack.enter_context(Live(get_renderable=self.view, console=console,
                                             refresh_per_second=4, screen=False))
                t.start()
                try:
                    done.wait(duration)  # until Ctrl-C / SIGTERM / duration
                finally:
                    self._stop.set()  # no new messages from the simulated systems
                    t.join(5)
                    self._settle(self.SETTLE_S)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)  # type: ignore[arg-type]
        for r in self.relays:
            stats = self.relay_stats(r)
            console.print(f"demo stopped; {self.label(r)} messages by state: "
                          + ", ".join(f"{k} {v}" for k, v in stats.items() if v))

    SETTLE_S = 3.0  # at stop: how long ebXML messages on their way may take to get their signals

    def _settle(self, limit: float) -> None:
        """Give messages between the relays a moment to be acknowledged, so that stopping one relay
        does not leave the other retrying (nothing is lost either way: the store keeps them)."""
        if self.peer is None:
            return
        moving = ("sending", "awaiting_ack", "retrying")
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                if not any(r.store.stats().get(k) for r in self.relays for k in moving):
                    return
            except StoreError:
                return
            time.sleep(0.1)

    def relay_stats(self, relay: Relay | None = None) -> dict[str, int]:
        from hub.store import open_store

        cfg = (relay or self.relay).cfg
        with open_store(cfg.store, postgres=cfg.postgres) as s:  # the relay closed its own on stop
            return s.stats()


def create(path: Path | None = None) -> Demo:
    """The demo on `path` (default: $HUB_HOME/demo, set up on first start): both relays when the config
    names a PKI for network traffic, else the municipal relay alone."""
    path = path or setup()
    cfg = RelayConfig.load(path)
    if cfg.pki is not None and (path.parent / PEER / "hub.toml").exists():
        a, b = networked(path)
        return Demo(a, b)
    return Demo(Relay(cfg))


def main(duration: float | None = None, console: Console | None = None) -> Demo:
    demo = create()
    demo.run(duration, console)
    return demo
