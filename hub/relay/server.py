"""`Relay`: assembles configuration, store, register, PKI, CPAs, listeners and workers; stops cleanly.

Configuration is a TOML file (docs/relay.md); relative paths in it are relative to the file's folder:

    store = "sqlite:///hub.sqlite"     # or postgresql://postgres@127.0.0.1/hub
    her_id = 80000                     # the relay's own communication party
    node = "relay-a"                   # this process's name in leases and timelines (stable across restarts)
    pki = "pki"                        # hub.security test PKI layout (network channels only)
    identity = "hub"                   # this relay's party in that PKI (signs envelopes, decrypts)
    register = ["register.toml"]
    cpa_dir = "cpa"
    [smtp]    listen = "127.0.0.1:2525"   relay = "127.0.0.1:25"   addresses = ["edi@relay.example"]
    [http]    listen = "127.0.0.1:8080"   # POST /submit for local systems, POST /ebxml for peers
    [folders] root = "spool"             poll = 0.2
    [worker]  threads = 8  lease_s = 300  local_retries = 5  local_retry_interval_s = 30
              network_retries = 5  network_retry_interval_s = 43200  ttl_s = 0  apprec_limit_s = 345600
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from hub.relay import pipeline as pl
from hub.relay import register as regmod
from hub.relay.delivery import Deliverer, FolderDeliverer
from hub.relay.intake import FolderWatcher, Intake, NetworkHandler, SubmitApi, SubmitServer
from hub.relay.lifecycle import RetryPolicy
from hub.relay.network import Network
from hub.relay.worker import Answerer, Inspector, Tap, Worker, WorkerConfig, local_notifier
from hub.store import Store, open_store

log = logging.getLogger("hub.relay")


class ConfigError(ValueError):
    pass


def _hostport(text: str, what: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"{what}: expected host:port, got {text!r}")
    return host, int(port)


@dataclass
class RelayConfig:
    her_id: int
    store: str
    register: list[Path]
    spool_root: Path
    node: str = field(default_factory=lambda: f"{socket.gethostname()}")
    pki: Path | None = None
    cpa_dir: Path | None = None
    http_listen: tuple[str, int] | None = None
    smtp_listen: tuple[str, int] | None = None
    smtp_relay: tuple[str, int] | None = None
    smtp_addresses: list[str] = field(default_factory=list)
    folder_poll: float = 0.2
    identity: str | None = None  # party name in the PKI; default: the one whose HER-id is her_id
    defer_s: float = 60.0  # a network message whose check could not be made now (CRL away) is retried
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    base: Path = field(default_factory=Path.cwd)

    @classmethod
    def load(cls, path: Path) -> RelayConfig:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        return cls.from_dict(data, path.resolve().parent)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path) -> RelayConfig:
        def p(v: str | None) -> Path | None:
            if not v:
                return None
            q = Path(v)
            return q if q.is_absolute() else base / q

        store = d.get("store") or "sqlite:///hub.sqlite"
        if store.startswith("sqlite:///") and not store.startswith("sqlite:////"):
            store = f"sqlite:///{base / store[len('sqlite:///'):]}"
        try:
            her_id = int(d["her_id"])
        except (KeyError, TypeError, ValueError):
            raise ConfigError("her_id (the relay's own HER-id, an integer) is required") from None
        regs = d.get("register", [])
        regs = [regs] if isinstance(regs, str) else regs
        w = d.get("worker", {})
        net_retry = None
        if "network_retries" in w or "network_retry_interval_s" in w:
            net_retry = RetryPolicy(int(w.get("network_retries", 5)),
                                    timedelta(seconds=float(w.get("network_retry_interval_s", 43200))))
        wc = WorkerConfig(
            threads=int(w.get("threads", 8)),
            lease=timedelta(seconds=float(w.get("lease_s", 300))),
            poll=float(w.get("poll_s", 0.25)),
            local_policy=RetryPolicy(int(w.get("local_retries", 5)),
                                     timedelta(seconds=max(1.0, float(w.get("local_retry_interval_s", 30))))),
            network_policy=net_retry,
            ttl=timedelta(seconds=float(w["ttl_s"])) if w.get("ttl_s") else None,
            apprec_limit=timedelta(seconds=float(w.get("apprec_limit_s", 96 * 3600))),
            defer_s=float(w.get("defer_s", 60.0)),
        )
        smtp, http, folders = d.get("smtp", {}), d.get("http", {}), d.get("folders", {})
        cfg = cls(
            her_id=her_id, store=store, register=[x for x in (p(r) for r in regs) if x],
            spool_root=p(folders.get("root", "spool")) or base / "spool",
            pki=p(d.get("pki")), cpa_dir=p(d.get("cpa_dir")),
            http_listen=_hostport(http["listen"], "http.listen") if http.get("listen") else None,
            smtp_listen=_hostport(smtp["listen"], "smtp.listen") if smtp.get("listen") else None,
            smtp_relay=_hostport(smtp["relay"], "smtp.relay") if smtp.get("relay") else None,
            smtp_addresses=list(smtp.get("addresses", [])),
            folder_poll=float(folders.get("poll", 0.2)),
            identity=d.get("identity"), defer_s=float(w.get("defer_s", 60.0)),
            worker=wc, base=base,
        )
        cfg.node = str(d.get("node") or f"{socket.gethostname()}-{her_id}")
        cfg.worker.node = cfg.node
        return cfg


# --- the default checks: hub.validation + hub.messages.apprec -----------------------------------------

def default_inspector() -> Inspector:
    """Validation (schema + business rules) and, for an AppRec, its OriginalMsgId and status."""
    from hub.validation.registry import default_registry
    from hub.validation.validate import Validator

    registry = default_registry()  # compiled schemas, shared by every thread

    def inspect(data: bytes, name: str) -> pl.Facts:
        # a fresh Validator per message: its "MsgId unique in this run" memory is for batch runs,
        # not for a relay that lives for months (duplicates are the transports' business here)
        r = Validator(registry).validate_bytes(data, name)
        orig = status = None
        root = getattr(getattr(r, "info", None), "payload", None)
        if r.family == "AppRec" and root is not None:
            orig = (root.findtext("{*}OriginalMsgId/{*}Id") or "").strip() or None
            st = root.find("{*}Status")
            status = None if st is None else st.get("V")
        return pl.facts_from_result(r, original_msg_id=orig, apprec_status=status)

    return inspect


def default_answerer() -> Answerer:
    """A negative AppRec from the relay (its own HER-id) for a message it refused at intake."""
    import copy

    from hub.messages.apprec import Party, build_apprec
    from hub.validation.result import Problem

    def answer(facts: pl.Facts, reject: pl.Reject, own_her: int) -> bytes | None:
        result = facts.source
        info = getattr(result, "info", None)
        if result is None or info is None or info.sender is None or not facts.msg_id:
            return None
        # the refusal is the relay's (E21 unknown receiver, ...), whatever validation said
        answered = copy.copy(result)
        answered.problems = [Problem(reject.code, "relay." + reject.code.lower(), reject.text)]
        # `own_her` is who writes it (pipeline.apprec_author): the addressed receiver, as the document
        # names it (organisation, service, person), when the relay speaks for it; else the relay
        rcv = info.receiver
        me = rcv if rcv is not None and str(own_her) == str(rcv.communication_her_id) else \
            Party(name="Meldingsformidler", her_id=str(own_her))
        return build_apprec(answered, sender=me, receiver=info.sender)

    return answer


# --- the relay -----------------------------------------------------------------------------------------

class Relay:
    def __init__(
        self,
        cfg: RelayConfig,
        *,
        store: Store | None = None,
        inspector: Inspector | None = None,
        answerer: Answerer | None = None,
        tap: Tap | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = store or open_store(cfg.store)
        self._own_store = store is None
        self.register = regmod.load(cfg.register) if cfg.register else regmod.Register()
        self.tap = tap or Tap()
        self.stopped = threading.Event()
        deliverers: dict[pl.RouteKind, Deliverer] = {pl.RouteKind.FOLDER: FolderDeliverer()}
        network: NetworkHandler | None = None
        self.network: Network | None = None
        unwrap: Callable | None = None
        if cfg.pki is not None and (cfg.smtp_listen or cfg.smtp_relay or cfg.http_listen):
            # the worker is made below with the network's steps: its callbacks are looked up late
            self.network = Network(
                cfg, self.store, self.register, tap=self.tap,
                on_received=lambda mid: self.worker.notify_received(mid),
                on_ack=lambda ref, detail: self.worker.on_ack(ref, detail),
                on_nack=lambda ref, code, text: self.worker.on_nack(ref, code, text))
        if self.network is not None:
            deliverers.update(self.network.deliverers())
            network = self.network.intake.http_handler
            unwrap = self.network.unwrapper.unwrap
        notify_local = local_notifier(self.register, cfg.spool_root)
        inspect = inspector or default_inspector()
        if self.network is not None:
            inspect = self.network.kith.checked(inspect)  # KITH document signatures

        def notify(m: Any, why: str) -> None:  # noqa: ANN401
            if m.direction == "in" and self.network is not None:
                self.network.unwrapper.tell_peer(m, why)
            else:
                notify_local(m, why)

        unwrapper = self.network.unwrapper if self.network is not None else None
        self.worker = Worker(
            self.store, self.register, own_her=cfg.her_id, spool_root=cfg.spool_root,
            inspector=inspect, deliverers=deliverers,
            answerer=answerer if answerer is not None else default_answerer(), notifier=notify,
            unwrap=unwrap, config=cfg.worker, tap=self.tap,
            answer_peer=unwrapper.answer_peer if unwrapper is not None else None,
            peer_seen=unwrapper.ack_record if unwrapper is not None else None,
        )
        self.intake = Intake(self.store, node=cfg.node, on_stored=self.worker.notify_received)
        self.watcher = FolderWatcher(self.intake, self.register, cfg.spool_root, poll=cfg.folder_poll)
        self.http: SubmitServer | None = None
        if cfg.http_listen:
            self.http = SubmitServer(SubmitApi(self.intake, self.register, network=network), *cfg.http_listen)

    def start(self) -> None:
        self.cfg.spool_root.mkdir(parents=True, exist_ok=True)
        self.watcher.folders(create=True)  # every local system's spool folders
        self.worker.start()
        if self.network is not None:
            self.network.start()
        self.watcher.start()
        if self.http is not None:
            self.http.start()
        log.info("relay %s (HER %s) running; node %s", self.cfg.store, self.cfg.her_id, self.cfg.node)

    def stop(self) -> None:
        """Stop taking new messages first, then let the workers finish, then close the store."""
        if self.http is not None:
            self.http.stop()
        self.watcher.stop()
        if self.network is not None:
            self.network.stop()
        self.worker.stop()
        if self._own_store:
            self.store.close()
        self.stopped.set()

    def run(self, duration: float | None = None, *, handle_signals: bool = True,
            stop: threading.Event | None = None) -> None:
        """Run until SIGINT/SIGTERM, `stop`, or `duration` seconds have passed."""
        done = stop or threading.Event()
        old: dict[int, Any] = {}
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda *_: done.set())
        self.start()
        try:
            done.wait(duration)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            self.stop()


def pid_file(cfg: RelayConfig) -> Path:
    return cfg.spool_root.parent / f"relay-{cfg.node}.pid"


def write_pid(cfg: RelayConfig) -> None:
    pid_file(cfg).write_text(str(os.getpid()))
