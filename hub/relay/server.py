"""`Relay`: assembles configuration, store, register, PKI, CPAs, listeners and workers; stops cleanly.

Configuration is hub.toml, validated by `hub.config` (every key: docs/configuration.md); relative paths
in it are relative to the file's folder.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from hub import config, logs
from hub.config import ConfigError
from hub.ebxml.mime import join_entity
from hub.fsmode import private_dir
from hub.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from hub.metrics import RelayMetrics, health
from hub.relay import affinity
from hub.relay import pipeline as pl
from hub.relay import register as regmod
from hub.relay.delivery import Deliverer, FolderDeliverer
from hub.relay.hop import retry_policies
from hub.relay.identities import Security
from hub.relay.intake import ClientCertificates, FolderWatcher, Intake, NetworkHandler, SubmitApi
from hub.relay.network import Network
from hub.relay.processes import Supervisor
from hub.relay.worker import Answerer, Inspector, Tap, Worker, WorkerConfig, local_notifier
from hub.store import Message, Store, open_store
from hub.transport.http import HttpReply
from hub.transport.http_server import HttpRequest, HttpServer, HttpSettings
from hub.transport.loops import check_event_loop
from hub.transport.smtp import SmtpSettings

log = logging.getLogger("hub.relay")


def _hostport(text: str | None) -> tuple[str, int] | None:
    return config.host_port(text) if text else None


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
    http: HttpSettings | None = None  # [http]: TLS, client certificates, limits (hub.transport.http_server)
    smtp_listen: tuple[str, int] | None = None
    smtp_relay: tuple[str, int] | None = None
    smtp_addresses: list[str] = field(default_factory=list)
    folder_poll: float = 0.2
    identity: str | None = None  # party name in the PKI; default: the one whose HER-id is her_id
    defer_s: float = 60.0  # a network message whose check could not be made now (CRL away) is retried
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    base: Path = field(default_factory=Path.cwd)
    settings: config.HubSettings | None = None  # the validated hub.toml (hub.config) behind this
    postgres: config.PostgresSection = field(default_factory=config.PostgresSection)  # its store's pool
    # keys, certificates, trust and TLS: [[identities]], [trust], [tls] (hub.relay.identities)
    security: Security = field(default_factory=Security)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    event_loop: str = "auto"  # of the network edge's loops (hub.transport.loops)
    cpu_affinity: str = "auto"  # one core per relay process (hub.relay.affinity)

    @classmethod
    def load(cls, path: Path) -> RelayConfig:
        """hub.toml validated by hub.config (unknown keys and wrong types are errors naming the key)."""
        return cls.from_settings(config.read(path), path.resolve().parent)

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path) -> RelayConfig:
        return cls.from_settings(config.validate(d), base)

    @classmethod
    def from_settings(cls, s: config.HubSettings, base: Path) -> RelayConfig:
        cf = config.Config(base / config.FILE_NAME, s)  # paths are relative to the file's folder
        if s.her_id is None:
            raise ConfigError("her_id (the relay's own HER-id, an integer) is required")
        w = s.worker
        local_policy, net_policy = retry_policies(w)
        wc = WorkerConfig(
            threads=w.threads,
            lease=timedelta(seconds=w.lease_s),
            poll=w.poll_s,
            local_policy=local_policy,
            network_policy=net_policy,
            ttl=timedelta(seconds=w.ttl_s) if w.ttl_s else None,
            apprec_limit=timedelta(seconds=w.apprec_limit_s),
            defer_s=w.defer_s,
            processes=w.processes,
        )
        cfg = cls(
            her_id=s.her_id, store=config.sqlite_url(s.store, base), register=cf.register_paths,
            spool_root=cf.spool_root, pki=cf.pki, cpa_dir=cf.resolve(s.cpa_dir),
            http_listen=_hostport(s.http.listen), http=HttpSettings.from_section(s.http, base),
            smtp_listen=_hostport(s.smtp.listen),
            smtp_relay=_hostport(s.smtp.relay), smtp_addresses=list(s.smtp.addresses),
            folder_poll=s.folders.poll, identity=s.identity, defer_s=w.defer_s,
            worker=wc, base=base, settings=s, postgres=s.postgres, event_loop=s.event_loop,
            cpu_affinity=s.cpu_affinity,
        )
        try:
            cfg.security = Security.from_settings(s, base)
            cfg.smtp = SmtpSettings.from_section(s.smtp)
            check_event_loop(s.event_loop)
            affinity.check_setting(s.cpu_affinity)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if s.http.tls and not s.http.cert and cfg.security.tls is None:
            raise ConfigError("http: tls = true needs cert and key there, or a [tls] section")
        cfg.node = str(s.node or f"{socket.gethostname()}-{s.her_id}")
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
        worker_only: bool = False,
    ) -> None:
        """`worker_only`: a worker process of a node (hub.relay.processes): no listener, no folder watch."""
        self.cfg = cfg
        self.store = store or open_store(cfg.store, postgres=cfg.postgres)
        self._own_store = store is None
        self.worker_only = worker_only
        self.processes: Supervisor | None = None
        self._kept = threading.local()  # which worker process this thread's last intake gave its message
        if cfg.worker.processes > 1 or worker_only:
            cfg.worker.leased_admission = True
        self.register = regmod.load(cfg.register) if cfg.register else regmod.Register()
        self.tap = tap or Tap()
        self.tap.listeners.append(logs.state_listener(cfg.node))  # every step logged (hub.logs)
        self.stopped = threading.Event()
        deliverers: dict[pl.RouteKind, Deliverer] = {pl.RouteKind.FOLDER: FolderDeliverer()}
        network: NetworkHandler | None = None
        self.network: Network | None = None
        unwrap: Callable | None = None
        if (cfg.pki is not None or cfg.security.identities) and (cfg.smtp_listen or cfg.smtp_relay
                                                                  or cfg.http_listen):
            # the worker is made below with the network's steps: its callbacks are looked up late
            self.network = Network(
                cfg, self.store, self.register, tap=self.tap,
                on_received=lambda mid, m=None, data=None: self._network_received(mid, m, data),
                on_ack=lambda *a, **kw: self.worker.on_ack(*a, **kw),
                on_nack=lambda ref, code, text: self.worker.on_nack(ref, code, text))
        if self.network is not None:
            deliverers.update(self.network.deliverers())
            network = self.network.intake.http_handler
            unwrap = self.network.unwrapper.unwrap
            handoff = self.network.intake.handoff
            if handoff is not None and cfg.worker.leased_admission:
                # what the intake parsed is for this process's worker only when it keeps the message
                self.network.intake.handoff = lambda *a: self._kept_here() and handoff(*a)
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

        def stored(mid: str, m: Any, data: bytes) -> None:  # noqa: ANN401
            logs.log_state("received", m, f"by {m.channel}", cfg.node)
            if not self._left(mid):
                self.worker.notify_received(mid, m, data)

        self.intake = Intake(self.store, node=cfg.node, on_stored=stored)
        self.metrics = RelayMetrics(self)  # GET /metrics; hub.metrics.health(relay) answers GET /health
        self.watcher = FolderWatcher(self.intake, self.register, cfg.spool_root, poll=cfg.folder_poll)
        self.http: HttpServer | None = None
        if cfg.worker.processes > 1 and not worker_only:
            if cfg.settings is None:
                raise ConfigError("worker.processes > 1 needs the relay configured from hub.toml settings")
            s = cfg.settings
            self.processes = Supervisor(s.model_dump_json(by_alias=True), cfg.base, cfg.node,
                                        cfg.worker.processes, s.log.level, s.log.format)
            self.store.birth_lease = self._birth_lease
        if cfg.http_listen and not worker_only:
            # every HTTP route of the relay is declared on this one server: SubmitApi.routes, and beside it
            settings = replace(cfg.http or HttpSettings(), listen=cfg.http_listen)
            # HTTPS with [http] cert/key, else with the listeners' [tls] certificate (as SMTP's STARTTLS)
            tls = cfg.security.server_tls() if settings.tls and settings.cert is None else None
            check = None
            if (net := self.network) is not None:  # the relay's own certificate validation (chain, CRL)
                def check(c: Any) -> object:  # noqa: ANN401 - an x509 certificate
                    return net.validator.check(c, "sign")  # looked up late: tests and the demo swap it
            self.http = HttpServer(settings, identify=ClientCertificates(self.register, check=check),
                                   name="relay-http", tls_context=tls, event_loop=cfg.event_loop)
            SubmitApi(self.intake, self.register, network=network).routes(self.http)
            self.http.add_route("GET", "/health", self._health)  # hub.metrics; unknown paths: 404
            self.http.add_route("GET", "/metrics", self._metrics)

    def _health(self, req: HttpRequest) -> HttpReply:
        h = health(self)
        return HttpReply.json(h.status, h.as_dict())

    def _metrics(self, req: HttpRequest) -> HttpReply:
        body = self.metrics.exposition()
        return HttpReply(200, join_entity([("Content-Type", METRICS_CONTENT_TYPE)], body))

    def _birth_lease(self, actor: str) -> tuple[str, timedelta] | None:
        """processes > 1: keep a message stored here while this process's threads have room (or no worker
        process is up), else give it to a worker process (in turn) in the same INSERT: it is told the id
        and admits it without a claim of its own."""
        w = self.worker.cfg
        to = None
        if self.processes is not None and self.worker.load() >= max(1, w.threads // w.processes):
            to = self.processes.pick()
        self._kept.to = to
        return (to or w.node, w.lease)

    def _kept_here(self) -> bool:
        """After an intake on this thread stored a message: is it this process's worker's to admit?"""
        return getattr(self._kept, "to", None) is None

    def _left(self, mid: str) -> bool:
        """The message just stored on this thread went to a worker process: tell it."""
        to = getattr(self._kept, "to", None)
        if to is None:
            return False
        assert self.processes is not None
        self.processes.hand(to, mid)
        return True

    def _network_received(self, mid: str, m: Message | None = None, data: bytes | None = None) -> None:
        """`m`, `data`: the message and its bytes as the intake stored them (not read again); a deferred
        one is admitted again by its id alone."""
        if self._left(mid):
            return
        if logs.enabled(logging.INFO):
            seen = m if m is not None else self.store.get(mid)
            if seen is not None:
                logs.log_state("received", seen, f"by {seen.channel}", self.cfg.node)
        self.worker.notify_received(mid, m, data)

    def start(self) -> None:
        private_dir(self.cfg.spool_root)
        self.watcher.folders(create=True)  # every local system's spool folders
        self.worker.start()
        if self.processes is not None:
            self.processes.start()
        if self.network is not None:
            self.network.start()
        if not self.worker_only:
            self.watcher.start()
        if self.http is not None:
            self.http.start()
        log.info("relay %s (HER %s) running; node %s", self.cfg.store, self.cfg.her_id, self.cfg.node)

    def stop(self) -> None:
        """Stop taking new messages first, then let the workers finish, then close the store."""
        if self.http is not None:
            self.http.stop()
        self.watcher.stop()
        if self.processes is not None:
            self.processes.stop()  # before our network: their acknowledgments still find our listener
        if self.network is not None:
            self.network.stop()
        self.worker.stop()
        if self._own_store:
            self.store.close()
        affinity.unpin()  # a process that hosted this relay for a while (tests, benchmarks): its cores back
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
        settle_process(self.cfg.cpu_affinity)
        try:
            done.wait(duration)
        finally:
            for sig, h in old.items():
                signal.signal(sig, h)
            self.stop()


# How long a thread may hold the GIL while another waits for it (Python's default: 5 ms). A relay's
# threads mostly wait (store commits, database round trips, sockets) and each wait ends in a wait for the
# GIL while another message's checks or crypto run: up to the whole interval, each time.
SWITCH_INTERVAL_S = 0.001


def settle_process(cpu_affinity: str = "auto") -> None:
    """Once a relay process has started (Relay.run, a worker process, bench_relay's relays):

    - what start-up made (modules, compiled schemas, keys, the register) lives as long as the process, so
      it leaves the cyclic collector's reach (gc.freeze): a full collection then walks only what came
      later: 12 ms of CPU per pass over a started relay's 68,000 objects before, under 0.1 ms after (a
      115 ms gen2 pause was seen in a message's path under load);
    - a thread waiting for the GIL gets it within SWITCH_INTERVAL_S: the relay's store operations on
      PostgreSQL beside one busy thread 46 -> 18 ms per message, and bench_relay's p99 at half load,
      in pairs of runs, SQLite 62/39/42 -> 19/28/37 ms, PostgreSQL 41/111/39 -> 70/46/29 ms;
    - its threads run on one core (`cpu_affinity`, hub.relay.affinity)."""
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    affinity.pin_process(cpu_affinity)


def pid_file(cfg: RelayConfig) -> Path:
    return cfg.spool_root.parent / f"relay-{cfg.node}.pid"


def write_pid(cfg: RelayConfig) -> None:
    pid_file(cfg).write_text(str(os.getpid()))
