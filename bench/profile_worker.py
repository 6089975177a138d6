"""Worker-thread CPU per message of both relays of the network run (issue 17), measured in one thread, one
message after another: steadier than the threaded bench (bench_relay) on a busy machine.

    .venv/bin/python -m bench.profile_worker            # `name: value` lines, ms of CPU per message
    .venv/bin/python -m bench.profile_worker --steps    # and the CPU of each step, us per message
    .venv/bin/python -m bench.profile_worker --profile a|b   # cProfile (CPU clock) of one side's admits

The two relays of bench_relay.run_network (the GP's "a", the hospital's "b"), in this process, their
listeners and outbound clients running, their worker pools not started: here each message is taken in at
the GP's relay (Intake.accept_local) and admitted by calling its Worker.admit (validate, route, sign and
encrypt the envelope, send it over SMTP); the hospital's relay stores it on arrival (its SMTP listener),
and here its Worker.admit runs for each one (verify, decrypt, validate, write the folder, sign the
Acknowledgment). CPU is this thread's (time.thread_time) around the admits only; the best of ROUNDS
rounds of N messages after a warm-up (HUB_BENCH_N, HUB_BENCH_ROUNDS: 150 and 3).
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import logging
import os
import pstats
import queue
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import bench_relay as br
from hub.relay import pipeline as pl
from hub.relay.server import Relay, RelayConfig
from hub.security.testing import shared_test_pki

N = int(os.environ.get("HUB_BENCH_N", "150"))
ROUNDS = int(os.environ.get("HUB_BENCH_ROUNDS", "3"))


def _port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return int(sk.getsockname()[1])


def relays(home: Path) -> tuple[Relay, Relay]:
    """The GP's and the hospital's relay as bench_relay.run_network configures them (SQLite)."""
    pki = shared_test_pki().dir
    regs = br.net_registers(pki)
    pa, pb = _port(), _port()
    out = []
    for name, her, ident, listen, to, addr in (("a", 80000, "hub", pa, pb, "edi@a.test"),
                                               ("b", 81000, "lab", pb, pa, "edi@b.test")):
        h = home / name
        h.mkdir()
        (h / "register.toml").write_text(regs[name])
        cfg = br._net_config(name, her, ident, listen, to, addr, "sqlite:///hub.sqlite", pki)
        out.append(Relay(RelayConfig.from_dict(cfg, h)))
    return out[0], out[1]


class Steps:
    """CPU of named steps on the measuring thread (wrappers around the relays' objects)."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = {}
        self.thread = threading.get_ident()

    def wrap(self, obj: object, attr: str, label: str) -> None:
        fn = getattr(obj, attr, None)
        if fn is None:
            return

        @functools.wraps(fn)
        def timed(*a: Any, **kw: Any) -> Any:  # noqa: ANN401
            if threading.get_ident() != self.thread:
                return fn(*a, **kw)
            t = time.thread_time()
            try:
                return fn(*a, **kw)
            finally:
                self.cpu[label] = self.cpu.get(label, 0.0) + time.thread_time() - t

        setattr(obj, attr, timed)

    def install(self, side: str, r: Relay) -> None:
        w = r.worker
        for attr in ("inspect", "unwrap", "answer_peer", "tap", "_delivered"):
            self.wrap(w, attr, f"{side}.worker.{attr}")
        for d in {id(d): d for d in w.deliverers.values()}.values():
            self.wrap(d, "deliver", f"{side}.{type(d).__name__}.deliver")
            self.wrap(d, "prepare", f"{side}.{type(d).__name__}.prepare")
        for attr in ("advance", "blob", "get", "seen_get", "put_received"):
            self.wrap(r.store, attr, f"{side}.store.{attr}")
        if r.network is not None:
            msh = r.network.msh
            for attr in ("receive", "send"):
                self.wrap(msh, attr, f"{side}.msh.{attr}")
            self.wrap(msh.crypto, "encrypt", f"{side}.cms.encrypt")
            self.wrap(msh.crypto, "decrypt", f"{side}.cms.decrypt")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", action="store_true")
    ap.add_argument("--profile", choices=("a", "b"))
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        a, b = relays(Path(tmp))
        for r in (a, b):
            r.watcher.folders(create=True)
            assert r.network is not None
            r.network.start()  # listener and outbound clients; the workers are driven from here
        steps = Steps()
        if args.steps:
            steps.install("a", a)
            steps.install("b", b)
        prof = cProfile.Profile(time.thread_time) if args.profile else None
        gp = a.register.get(82001)
        assert gp is not None

        def timed(side: str, fn: Callable[[], object]) -> float:
            if prof is not None and args.profile == side:
                prof.enable()
            t = time.thread_time()
            fn()
            cpu = time.thread_time() - t
            if prof is not None and args.profile == side:
                prof.disable()
            return cpu

        best = {"a": float("inf"), "b": float("inf")}
        try:
            for rnd in range(ROUNDS + 1):  # round 0: warm-up (schemas, sessions, certificates)
                items = br.messages_with_ids(N if rnd else 20)
                cpu_a = 0.0
                for _, doc in items:
                    m, _ = a.intake.accept_local(doc, gp, pl.Channel.SUBMIT)
                    assert m is not None
                    a.worker._received.get_nowait()  # queued for the pool, admitted here instead
                    cpu_a += timed("a", lambda m=m, doc=doc: a.worker.admit(m.id, m, doc))
                got = []
                deadline = time.monotonic() + 60
                while len(got) < len(items) and time.monotonic() < deadline:
                    try:
                        got.append(b.worker._received.get(timeout=1))
                    except queue.Empty:
                        pass
                if len(got) < len(items):
                    raise RuntimeError(f"the hospital's relay got {len(got)} of {len(items)}")
                cpu_b = timed("b", lambda got=got: [b.worker.admit(*item) for item in got])
                if rnd:
                    best["a"] = min(best["a"], cpu_a / len(items))
                    best["b"] = min(best["b"], cpu_b / len(items))
                else:
                    steps.cpu.clear()
                    if prof is not None:
                        prof = cProfile.Profile(time.thread_time)
                time.sleep(0.5)  # the last Acknowledgments home
        finally:
            for r in (a, b):
                assert r.network is not None
                r.network.stop()
                r.store.close()
    for label in sorted(steps.cpu):
        print(f"# {label}: {steps.cpu[label] * 1e6 / (N * ROUNDS):.0f} us")
    print(f"worker_cpu_ms_per_msg_a: {best['a'] * 1000:.3f}  (the GP's relay: validate, route, sign, "
          "encrypt, send)")
    print(f"worker_cpu_ms_per_msg_b: {best['b'] * 1000:.3f}  (the hospital's relay: verify, decrypt, "
          "validate, folder, Acknowledgment)", flush=True)
    if prof is not None:
        pstats.Stats(prof).sort_stats(os.environ.get("PROFILE_SORT", "cumulative")).print_stats(40)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
