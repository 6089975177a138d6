"""End-to-end relay throughput and latency, on SQLite and on PostgreSQL, next to `openssl speed rsa2048`.

The headline lines (`relay_sqlite_*`, `relay_postgres_*`) are a stream of signed and encrypted messages:
two relays, the GP's (in this process) and the hospital's (in a child process, as two relays never
share an interpreter when deployed), each on its own store of that backend. A
Dialogmelding from the GP's system is stored durably at the GP's relay, parsed, schema- and
rule-validated, routed, wrapped in ebXML (envelope signed, payload CMS-encrypted for the hospital's
relay) and sent over SMTP on loopback; the hospital's relay stores it durably before its 250, verifies,
decrypts, validates, writes it fsynced into the hospital's folder and answers with a signed ebMS
Acknowledgment. Each message costs three RSA private-key operations (envelope signature, CMS decrypt,
the ack's signature) across both relays, which share the cores of this process's affinity.

- throughput: N messages handed over as fast as the submitters can; msgs/s = N / (last written at the
  hospital - first handed over).
- latency: at half that rate, paced; from hand-over at the GP's relay to written at the hospital's.

`relay_local_*`: one relay delivering to a local system's folder (no ebXML, no RSA): the cost of the
store and pipeline alone.

`*_cpu_ms_per_msg_a` / `_b`: the CPU of each relay's (main) process per message of the throughput run,
split by thread kind (THREAD_KINDS: worker, store, network, listener, dispatch, other): where the cost
above the RSA floor sits.

Prints `name: value` lines; PostgreSQL figures only when a server answers at $HUB_BENCH_PG (empty: skip them).
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench import pg_url
from hub.config import HubSettings
from hub.fixtures import people
from hub.fixtures.builder import build
from hub.relay import pipeline as pl
from hub.relay.server import Relay, RelayConfig, settle_process
from hub.transport import loops

N = int(os.environ.get("HUB_BENCH_N", "1500"))
N_LAT = int(os.environ.get("HUB_BENCH_N_LATENCY", "600"))
SUBMITTERS = 4
T = TypeVar("T")

REGISTER = """
[[party]]
her_id = 82001
name = "Legekontoret"
kind = "gp"
local = true
[[party]]
her_id = 82002
name = "Kari Fjeld"
parent = 82001
[[party]]
her_id = 81001
name = "Sykehuset"
kind = "hospital"
local = true
[[party]]
her_id = 81002
name = "Poliklinikk"
parent = 81001
"""


def openssl_rsa2048_sign_per_s() -> float | None:
    try:
        out = subprocess.run(["openssl", "speed", "-seconds", "2", "rsa2048"], capture_output=True,
                             text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        m = re.match(r"\s*rsa\s+2048 bits\s+[\d.]+s\s+[\d.]+s\s+([\d.]+)\s+([\d.]+)", line)
        if m:
            return float(m.group(1))
    return None


def messages(n: int) -> list[bytes]:
    return [d for _, d in messages_with_ids(n)]


def messages_with_ids(n: int) -> list[tuple[str, bytes]]:
    """(KITH MsgId, document): the id follows a message through both relays of the network run."""
    tmpl = build("Dialogmelding", "1.0", sender=people.GP_FASTLEGE, receiver=people.HOSP_POLIKLINIKK,
                 msg_type="DIALOG_NOTAT", msg_id="00000000-0000-4000-8000-000000000000",
                 gen_date="2026-01-05T10:00:00")
    out = []
    for _ in range(n):
        mid = str(uuid.uuid4())
        out.append((mid, tmpl.replace(b"00000000-0000-4000-8000-000000000000", mid.encode())))
    return out


def cores_used() -> int:
    """The cores this process (and so the relay in it) may run on; openssl speed, run from here,
    measures one of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def submit_all(items: list[T], hand_over: Callable[[T], object]) -> None:
    """Hand every item over as fast as SUBMITTERS threads can, and wait until all are handed over."""
    chunks = [items[i::SUBMITTERS] for i in range(SUBMITTERS)]
    ts = [threading.Thread(target=lambda c=c: [hand_over(d) for d in c]) for c in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def paced(items: list[T], rate: float, fn: Callable[[T], object]) -> None:
    """Call fn for each item at `rate` per second (absolute schedule: a late call does not shift the rest)."""
    gap = 1.0 / rate
    t_next = time.perf_counter()
    for it in items:
        while (left := t_next - time.perf_counter()) > 0:
            time.sleep(left)
        fn(it)
        t_next += gap


def percentiles(lats_ms: list[float]) -> tuple[float, float]:
    lats = sorted(lats_ms)
    return statistics.median(lats), lats[min(len(lats) - 1, int(len(lats) * 0.99))]


class Clock:
    """Hand-over and delivery times per store id, from the relay's tap."""

    def __init__(self) -> None:
        self.start: dict[str, float] = {}
        self.done: dict[str, float] = {}
        self.lock = threading.Lock()
        self.all_done = threading.Event()
        self.expect = 0

    def tap(self, what: str, m: object, detail: str) -> None:
        if what == "delivered":
            with self.lock:
                self.done[m.id] = time.perf_counter()  # type: ignore[attr-defined]
                if len(self.done) >= self.expect:
                    self.all_done.set()


def run_backend(name: str, store_url: str, home: Path) -> dict[str, float]:
    (home / "register.toml").write_text(REGISTER)
    cfg = RelayConfig.from_dict({
        "store": store_url, "her_id": 80000, "node": f"bench-{name}", "register": ["register.toml"],
        "folders": {"root": "spool", "poll": 3600},  # intake goes through the API below, not the folder
        "worker": {"threads": int(os.environ.get("HUB_BENCH_THREADS", "8")), "poll_s": 0.05,
                   "apprec_limit_s": 3600},
    }, home)
    clock = Clock()
    relay = Relay(cfg)
    relay.tap.listeners.append(clock.tap)
    relay.start()
    settle_process(relay.cfg.cpu_affinity)  # as Relay.run does
    gp = relay.register.get(82001)
    assert gp is not None
    out: dict[str, float] = {}
    try:
        def hand_over(data: bytes) -> None:
            t = time.perf_counter()
            m, _ = relay.intake.accept_local(data, gp, pl.Channel.SUBMIT)
            assert m is not None
            with clock.lock:
                clock.start[m.id] = t

        # warm-up: compiled schemas, connections
        clock.expect = 20
        for d in messages(20):
            hand_over(d)
        clock.all_done.wait(60)

        # throughput
        batch = messages(N)
        clock.start.clear()
        clock.done.clear()
        clock.all_done.clear()
        clock.expect = N
        t0 = time.perf_counter()
        submit_all(batch, hand_over)
        if not clock.all_done.wait(300):
            raise RuntimeError(f"{name}: only {len(clock.done)} of {N} delivered")
        rate = N / (max(clock.done.values()) - t0)
        out["msgs_per_s"] = rate

        # latency at half that rate
        lat_batch = messages(N_LAT)
        clock.start.clear()
        clock.done.clear()
        clock.all_done.clear()
        clock.expect = N_LAT
        # one sleep per gap, not a 2 ms polling loop: the harness should not compete with the relay
        paced(lat_batch, rate / 2, hand_over)
        if not clock.all_done.wait(300):
            raise RuntimeError(f"{name}: only {len(clock.done)} of {N_LAT} delivered (latency run)")
        out["p50_ms"], out["p99_ms"] = percentiles(
            [(clock.done[i] - clock.start[i]) * 1000 for i in clock.done if i in clock.start])
        out["latency_load_msgs_per_s"] = rate / 2
    finally:
        relay.stop()
    return out


N_NET = int(os.environ.get("HUB_BENCH_N_NETWORK", "400"))


def _net_party(her: int, name: str, extra: str) -> str:
    return f"[[party]]\nher_id = {her}\nname = \"{name}\"\n{extra}\n"


def _net_config(name: str, her: int, ident: str, listen: int, to: int, addr: str, store: str,
                pki: Path, transport: str = "smtp", processes: int = 1) -> dict[str, object]:
    channel: dict[str, object] = {"smtp": {"listen": f"127.0.0.1:{listen}", "relay": f"127.0.0.1:{to}",
                                           "addresses": [addr]}}
    if transport == "http":
        channel = {"http": {"listen": f"127.0.0.1:{listen}"}}
    return {
        "store": store, "her_id": her, "node": f"bench-net-{name}",
        "register": ["register.toml"], "pki": str(pki), "identity": ident, **channel,
        "folders": {"root": "spool", "poll": 3600},
        "worker": {"threads": int(os.environ.get("HUB_BENCH_THREADS", "8")), "poll_s": 0.05,
                   "apprec_limit_s": 3600, "network_retry_interval_s": 600, "processes": processes},
    }


def serve_peer(home: Path) -> int:
    """The hospital's relay of the network run, in its own process (as deployed: two relays never share
    an interpreter): prints `ready`, then `delivered <KITH MsgId> <time.monotonic()> <statements> <waits>`
    per message written to the hospital's folder (CLOCK_MONOTONIC is one clock for every process of this
    machine; Store.statements and Store.round_trips are this process's); stops when stdin closes."""
    cfg = RelayConfig.from_dict(json.loads((home / "config.json").read_text()), home)
    trace = os.environ.get("HUB_BENCH_TRACE")  # bench/profile_latency.py: per-stage timestamps
    if trace:
        from bench import latency_trace

        latency_trace.install()
    relay = Relay(cfg)
    out = threading.Lock()

    def tap(what: str, m: object, detail: str) -> None:
        if what == "delivered" and getattr(m, "direction", None) == "in":
            line = (f"delivered {getattr(m, 'kith_msg_id', '')} {time.monotonic()!r} "
                    f"{relay.store.statements} {relay.store.round_trips}\n")
            with out:
                sys.stdout.write(line)
                sys.stdout.flush()

    stop = threading.Event()
    if cfg.worker.processes > 1:
        # its worker processes deliver too, and their taps are not ours: the hospital's folder tells
        threading.Thread(target=_report_deliveries, args=(relay, out, stop), daemon=True).start()
    else:
        relay.tap.listeners.append(tap)
    relay.start()
    settle_process(relay.cfg.cpu_affinity)  # as Relay.run does
    try:
        print("ready", flush=True)
        for line in sys.stdin:  # until stdin closes; "cpu" asks for thread_cpu() and usage()
            if line.strip() == "cpu":
                with out:
                    sys.stdout.write(f"cpu {json.dumps({'threads': thread_cpu(), 'usage': usage()})}\n")
                    sys.stdout.flush()
    finally:
        stop.set()
        relay.stop()
        if trace:
            latency_trace.dump(Path(trace))
    return 0


def _report_deliveries(relay: Relay, out: threading.Lock, stop: threading.Event) -> None:
    """Deliveries as the hospital's folder shows them (each published file's mtime, on CLOCK_MONOTONIC
    like the rest of the bench). Not the store's events: on PostgreSQL their seq is not commit order."""
    inbox = relay.cfg.spool_root / "81001" / "in"
    known: set[str] = set()
    while not stop.wait(0.005):
        try:
            names = [n for n in os.listdir(inbox) if not n.startswith(".") and n not in known]
        except FileNotFoundError:
            continue
        if not names:
            continue
        mono, wall = time.monotonic(), time.time()
        lines = []
        for n in names:
            f = inbox / n
            data = f.read_bytes()
            mid = data.split(b"<MsgId>")[1].split(b"</MsgId>")[0].decode()
            lines.append(f"delivered {mid} {mono - (wall - f.stat().st_mtime)!r} {relay.store.statements} "
                         f"{relay.store.round_trips}\n")
            known.add(n)
        with out:
            sys.stdout.write("".join(lines))
            sys.stdout.flush()


def net_registers(pki: Path, transport: str = "smtp", pa: int = 0, pb: int = 0) -> dict[str, str]:
    """register.toml of the GP's relay "a" and the hospital's relay "b" of the network run: each knows the
    other's parties at its endpoint (mail, or HTTP at ports pa/pb) with the certificates of the test PKI."""

    def certs(name: str) -> str:
        d = pki / "parties" / name
        return f'sign_cert = "{d / "sign.pem"}"\nenc_cert = "{d / "enc.pem"}"'

    a_peer = f'endpoint = "mailto:edi@b.test"\n{certs("lab")}'
    b_peer = f'endpoint = "mailto:edi@a.test"\n{certs("hub")}'
    if transport == "http":
        a_peer = f'endpoint = "http://127.0.0.1:{pb}/ebxml"\n{certs("lab")}'
        b_peer = f'endpoint = "http://127.0.0.1:{pa}/ebxml"\n{certs("hub")}'
    return {
        "a": _net_party(80000, "Relay A", "local = true") + _net_party(82001, "GP", "local = true")
        + _net_party(82002, "Kari", "parent = 82001") + _net_party(81001, "Hospital", a_peer)
        + _net_party(81002, "Poliklinikk", "parent = 81001"),
        "b": _net_party(81000, "Relay B", "local = true") + _net_party(81001, "Hospital", "local = true")
        + _net_party(81002, "Poliklinikk", "parent = 81001") + _net_party(82001, "GP", b_peer)
        + _net_party(82002, "Kari", "parent = 82001"),
    }


def run_network(home: Path, stores: dict[str, str] | None = None,
                transport: str = "smtp", processes: int = 1) -> dict[str, float]:
    """Two relays over SMTP (or `transport="http"`: POST /ebxml to the hospital's relay, and its
    Acknowledgment POSTed back to ours) on loopback, each in its own process: the GP's relay (here) signs the
    envelope and encrypts the payload for the hospital's relay (a child process), which verifies,
    decrypts, validates, writes the folder and acknowledges. msgs/s = N / (last written at the
    hospital - first handed over); latency at half that rate, from hand-over at the GP's relay to
    written at the hospital's (matched by KITH MsgId). `stores`: the store URL of relay "a" and "b"
    (default: a SQLite file each). `processes`: of each relay (worker.processes); CPU counts every
    process of both relays. store_statements_per_msg_a/_b: each relay's SQL statements (reads and writes)
    during the throughput run per message, of its main process (with one process: all of them)."""
    import socket

    from hub.security.testing import shared_test_pki

    pki = shared_test_pki().dir

    def port() -> int:
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            return int(sk.getsockname()[1])

    pa, pb = port(), port()
    regs = net_registers(pki, transport, pa, pb)
    cfgs = {}
    for name, her, ident, listen, to, addr in (("a", 80000, "hub", pa, pb, "edi@a.test"),
                                               ("b", 81000, "lab", pb, pa, "edi@b.test")):
        h = home / name
        h.mkdir()
        (h / "register.toml").write_text(regs[name])
        cfgs[name] = _net_config(name, her, ident, listen, to, addr,
                                 (stores or {}).get(name, "sqlite:///hub.sqlite"), pki, transport, processes)
    (home / "b" / "config.json").write_text(json.dumps(cfgs["b"]))
    start: dict[str, float] = {}
    done: dict[str, float] = {}
    peer_statements = [0, 0]  # the peer's Store.statements and round_trips at its latest delivered line
    peer_cpu: list[dict[str, dict[str, float]]] = []  # its thread_cpu() and usage() answers
    cpu_answered = threading.Event()
    lock, all_done = threading.Lock(), threading.Event()
    expect = [0]
    peer = subprocess.Popen([sys.executable, "-m", "bench.bench_relay", "--peer", str(home / "b")],
                            cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert peer.stdout is not None and peer.stdin is not None
    ready = threading.Event()

    def read_peer() -> None:
        assert peer.stdout is not None
        for line in peer.stdout:
            parts = line.split()
            if parts[:1] == ["ready"]:
                ready.set()
            elif parts[:1] == ["cpu"]:
                peer_cpu.append(json.loads(line.split(" ", 1)[1]))
                cpu_answered.set()
            elif len(parts) == 5 and parts[0] == "delivered":
                with lock:
                    done[parts[1]] = float(parts[2])
                    peer_statements[0] = max(peer_statements[0], int(parts[3]))
                    peer_statements[1] = max(peer_statements[1], int(parts[4]))
                    if len(done) >= expect[0]:
                        all_done.set()

    reader = threading.Thread(target=read_peer, daemon=True)
    reader.start()
    relay = Relay(RelayConfig.from_dict(cfgs["a"], home / "a"))
    relay.start()
    settle_process(relay.cfg.cpu_affinity)  # as Relay.run does
    try:
        if not ready.wait(60):
            raise RuntimeError("the hospital's relay did not start")
        gp = relay.register.get(82001)
        assert gp is not None

        def hand_over(item: tuple[str, bytes]) -> None:
            with lock:
                start[item[0]] = time.monotonic()
            relay.intake.accept_local(item[1], gp, pl.Channel.SUBMIT)

        def run(items: list[tuple[str, bytes]], rate: float | None) -> None:
            with lock:
                start.clear()
                done.clear()
                all_done.clear()
                expect[0] = len(items)
            if rate is None:
                submit_all(items, hand_over)
            else:
                paced(items, rate, hand_over)
            if not all_done.wait(600):
                raise RuntimeError(f"network: only {len(done)} of {len(items)} delivered")

        def peer_threads() -> dict[str, dict[str, float]]:
            assert peer.stdin is not None
            cpu_answered.clear()
            peer.stdin.write("cpu\n")
            peer.stdin.flush()
            return peer_cpu[-1] if cpu_answered.wait(30) else {"threads": {}, "usage": {}}

        run(messages_with_ids(10), None)  # warm-up: sessions, schemas, certificates
        items = messages_with_ids(N_NET)
        ta0, tb0, ua0 = thread_cpu(), peer_threads(), usage()
        cpu0 = time.process_time() + _cpu_of_descendants()
        sa0, sb0 = relay.store.statements, peer_statements[0]
        ra0, rb0 = relay.store.round_trips, peer_statements[1]
        run(items, None)
        cpu = time.process_time() + _cpu_of_descendants() - cpu0
        ta, ua, tb1 = thread_cpu(), usage(), peer_threads()
        # both relays' main processes: kernel time and context switches (threads that ended included)
        u = {k: ua[k] - ua0[k] + tb1["usage"].get(k, 0.0) - tb0["usage"].get(k, 0.0)
             for k in ("user", "sys", "switches")}
        sw = {f"usage_switches_{side}_{k[9:]}": (after[k] - before.get(k, 0.0)) / N_NET
              for side, before, after in (("a", ua0, ua), ("b", tb0["usage"], tb1["usage"]))
              for k in after if k.startswith("switches")}
        ta, tb = _per_msg(ta0, ta, N_NET), _per_msg(tb0["threads"], tb1["threads"], N_NET)
        sa, sb = relay.store.statements - sa0, peer_statements[0] - sb0
        ra, rb = relay.store.round_trips - ra0, peer_statements[1] - rb0
        rate = N_NET / (max(done.values()) - min(start.values()))
        run(messages_with_ids(max(20, N_NET // 2)), rate / 2)
        p50, p99 = percentiles([(done[k] - start[k]) * 1000 for k in done if k in start])
        return {"msgs_per_s": rate, "p50_ms": p50, "p99_ms": p99, "latency_load_msgs_per_s": rate / 2,
                "cpu_ms_per_msg": cpu * 1000 / N_NET, "store_statements_per_msg_a": sa / N_NET,
                "store_statements_per_msg_b": sb / N_NET,
                **({"store_round_trips_per_msg_a": ra / N_NET, "store_round_trips_per_msg_b": rb / N_NET}
                   if ra or rb else {}),
                **({"usage_sys_share": u["sys"] / (u["user"] + u["sys"]),
                    "usage_switches_per_msg": u["switches"] / N_NET, **sw}
                   if u["user"] + u["sys"] > 0 else {}),
                **{f"cpu_threads_a_{k}": v for k, v in ta.items()},
                **{f"cpu_threads_b_{k}": v for k, v in tb.items()}}
    finally:
        # the peer first: its last acknowledgments still find our listener
        peer.stdin.close()
        try:
            peer.wait(30)
        except subprocess.TimeoutExpired:
            peer.kill()
        relay.stop()


# thread kinds of a relay's process, by thread name: the worker pool (admit, deliver), its dispatcher, the
# store's writer, the network's event loop (the SMTP listener's sessions, SMTP/HTTP sending), the default
# executor's threads (the SMTP listener's handlers: intake) and the intake's signal threads (signals
# applied after the 250); the rest is "other": main thread, ended threads and, at the GP's relay, the
# bench's submitter threads, which run the local intake (Intake.accept_local)
THREAD_KINDS = {"relay": "worker", "dispatch": "dispatch", "store": "store", "network": "network",
                "asyncio": "listener", "intake": "listener"}


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of this process, by thread kind (THREAD_KINDS; Linux /proc)."""
    tck = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for th in threading.enumerate():
        try:
            f = Path(f"/proc/self/task/{th.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        kind = THREAD_KINDS.get(re.split(r"[-_:]", th.name, maxsplit=1)[0])
        if kind is not None:
            out[kind] = out.get(kind, 0.0) + (int(f[11]) + int(f[12])) / tck
    out["other"] = time.process_time() - sum(out.values())
    return out


def usage() -> dict[str, float]:
    """This process's user and kernel CPU seconds and context switches (voluntary: a thread waited for a
    lock, the GIL, I/O; involuntary: preempted), every thread's so far, ended ones included."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    out = {"user": r.ru_utime, "sys": r.ru_stime, "switches": float(r.ru_nvcsw + r.ru_nivcsw)}
    for th in threading.enumerate():  # the live threads' by THREAD_KINDS, as thread_cpu()
        kind = THREAD_KINDS.get(re.split(r"[-_:]", th.name, maxsplit=1)[0])
        try:
            status = Path(f"/proc/self/task/{th.native_id}/status").read_text()
        except (OSError, TypeError):
            continue
        if kind is not None:
            n = sum(int(v) for v in re.findall(r"ctxt_switches:\s+(\d+)", status))
            out[f"switches_{kind}"] = out.get(f"switches_{kind}", 0.0) + n
    return out


def _per_msg(before: dict[str, float], after: dict[str, float], n: int) -> dict[str, float]:
    return {k: (after.get(k, 0.0) - before.get(k, 0.0)) * 1000 / n for k in after}


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (the peer relay, and each relay's worker processes), from /proc."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for t in tasks:
            try:
                kids = [int(x) for x in (t / "children").read_text().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out


def _cpu_of_descendants() -> float:
    return sum(_cpu_of(p) for p in _descendants(os.getpid()))


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from /proc (0 where there is none)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _report(prefix: str, r: dict[str, float], rsa: float | None, cores: int, note: str = "",
            rsa_ops: int = 0) -> None:
    print(f"{prefix}_msgs_per_s: {r['msgs_per_s']:.0f}{note}")
    if rsa:
        # against the signing rate of every core the relays may use (openssl speed is one core)
        print(f"{prefix}_vs_rsa: {r['msgs_per_s'] / (rsa * cores):.3f}")
    if "cpu_ms_per_msg" in r:
        # CPU of both relays' processes per message during the throughput run; where it goes decides
        # how near the RSA floor the relay can come
        print(f"{prefix}_cpu_ms_per_msg: {r['cpu_ms_per_msg']:.2f}")
        if rsa and rsa_ops:
            print(f"{prefix}_rsa_share_of_cpu: {rsa_ops * 1000 / rsa / r['cpu_ms_per_msg']:.3f}")
    if "usage_sys_share" in r:
        # of both relays' main processes: what the kernel does for them (fsync, sockets, waking threads)
        # and how often their threads were switched out; the cost of the design, not of any one function
        print(f"{prefix}_sys_share_of_cpu: {r['usage_sys_share']:.3f}  (kernel time of that CPU)")
        print(f"{prefix}_context_switches_per_msg: {r['usage_switches_per_msg']:.0f}  (both relays' threads)")
        for side, who in (("a", "the GP's relay"), ("b", "the hospital's relay")):
            if f"usage_switches_{side}_" in r:
                kinds = sorted((k for k in r if k.startswith(f"usage_switches_{side}_") and k[-1] != "_"),
                               key=lambda k: -r[k])
                parts = " ".join(f"{k.rsplit('_', 1)[1]}={r[k]:.0f}" for k in kinds)
                print(f"{prefix}_context_switches_per_msg_{side}: {r[f'usage_switches_{side}_']:.0f}  "
                      f"({who}; live threads by kind: {parts})")
    for side, who in (("a", "the GP's relay"), ("b", "the hospital's relay")):
        kinds = [k for k in r if k.startswith(f"cpu_threads_{side}_")]
        if kinds:
            # where that CPU goes, per thread kind of the relay's (main) process: see THREAD_KINDS
            parts = " ".join(f"{k.rsplit('_', 1)[1]}={r[k]:.2f}" for k in sorted(kinds, key=lambda k: -r[k]))
            print(f"{prefix}_cpu_ms_per_msg_{side}: {sum(r[k] for k in kinds):.2f}  "
                  f"({who}, by thread: {parts})")
        if f"store_statements_per_msg_{side}" in r:
            print(f"{prefix}_store_statements_per_msg_{side}: {r[f'store_statements_per_msg_{side}']:.1f}"
                  f"  ({who}; reads and writes during the throughput run)")
        if f"store_round_trips_per_msg_{side}" in r:
            print(f"{prefix}_store_round_trips_per_msg_{side}: {r[f'store_round_trips_per_msg_{side}']:.1f}"
                  f"  ({who}; waits for the database server's answer)")
    print(f"{prefix}_p50_ms: {r['p50_ms']:.1f}")
    print(f"{prefix}_p99_ms: {r['p99_ms']:.1f}  (at {r['latency_load_msgs_per_s']:.0f} msgs/s)", flush=True)


def main() -> int:
    rsa = openssl_rsa2048_sign_per_s()
    cores = cores_used()
    print(f"openssl_rsa2048_sign_per_s: {rsa if rsa is not None else 'n/a'}  (one core)", flush=True)
    # every *_vs_rsa line divides by the signing rate of ALL the cores this process may run on (its
    # CPU affinity, which the peer relay's process inherits): workers, store writers, SMTP loops, fsyncs
    print(f"cores_used: {cores} (this process's CPU affinity; both relays run on these cores)")
    # the relays' network edge runs on this loop (hub.toml event_loop; HUB_EVENT_LOOP=asyncio to compare)
    print(f"event_loop: {loops.resolve(HubSettings().event_loop)}")
    pg = pg_url()
    backends = ["sqlite"]
    try:
        if pg is None:
            raise ValueError("HUB_BENCH_PG is empty")
        import psycopg

        with psycopg.connect(pg, connect_timeout=3):
            backends.append("postgres")
    except Exception as exc:  # noqa: BLE001
        print(f"# postgres skipped: {exc}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in backends:
            schemas = [f"bench_relay_{secrets.token_hex(4)}" for _ in range(5)]

            def url(i: int, name: str = name, schemas: list[str] = schemas) -> str:
                return "sqlite:///hub.sqlite" if name == "sqlite" else f"{pg}?schema={schemas[i]}"

            try:
                home = Path(tmp) / f"{name}-network"
                home.mkdir()
                net = run_network(home, {"a": url(0), "b": url(1)})
                _report(f"relay_{name}", net, rsa, cores,
                        "  (signed+encrypted ebXML over SMTP; two relays, one process each; "
                        "3 RSA private-key ops per message)", rsa_ops=3)
                if os.environ.get("HUB_BENCH_PROCESSES", "2") != "1":  # issue 17: worker.processes = 2
                    home = Path(tmp) / f"{name}-network-2"
                    home.mkdir()
                    net2 = run_network(home, {"a": url(3), "b": url(4)}, processes=2)
                    # of the main processes only: not what the worker processes do
                    net2 = {k: v for k, v in net2.items()
                            if not k.startswith(("store_statements", "store_round_trips", "cpu_threads",
                                                 "usage_"))}
                    _report(f"relay_{name}_processes2", net2, rsa, cores,
                            "  (the same, two processes per relay; x"
                            f"{net2['msgs_per_s'] / net['msgs_per_s']:.2f} of one)", rsa_ops=3)
                if name == "sqlite":  # the HTTP edge, on one backend (the store's cost is above)
                    home = Path(tmp) / f"{name}-http"
                    home.mkdir()
                    _report(f"relay_http_{name}", run_network(home, {"a": url(0), "b": url(1)}, "http"),
                            rsa, cores, "  (the same over HTTP POST /ebxml both ways)", rsa_ops=3)
                home = Path(tmp) / f"{name}-local"
                home.mkdir()
                _report(f"relay_local_{name}", run_backend(name, url(2), home), rsa, cores,
                        "  (one relay, local folder delivery, no ebXML)")
            finally:
                if name == "postgres":
                    import psycopg

                    with psycopg.connect(pg, autocommit=True) as c:
                        for sch in schemas:
                            c.execute(f"DROP SCHEMA IF EXISTS {sch} CASCADE")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--peer"]:
        sys.exit(serve_peer(Path(sys.argv[2])))
    sys.exit(main())
