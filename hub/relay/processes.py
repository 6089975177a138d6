"""Several processes on one node: the main process listens and takes messages in; worker processes share
the checks, signing, encryption and delivery over the node's store (SQLite WAL or PostgreSQL).

How work reaches a worker process: a message stored as `received` carries an admission lease in its
INSERT (`Store.birth_lease`): the main process keeps it (its own worker admits it at once, as with one
process) while its threads have room, and otherwise gives it to the next live worker process, which
it tells the message's id down its stdin pipe: no claim, no extra commit. The lease is
not a state (hub.relay.lifecycle still decides every state); the commit that records the verdict ends
it, and a process that dies leaves its leases to run out (or its restart, under the same name, takes
them back at once), so admission, with its answers to the sender, runs once per message. Due work
(retries, AppRecs to send) is claimed by every process with `claim_due` as before.

Worker processes are named `<node>-w1`, `<node>-w2`, ...: stable across restarts, so a restarted one
voids its own earlier claims at once. The main process restarts a worker that dies; a worker dies with
the main process (PR_SET_PDEATHSIG; its stdin closing stops it cleanly too).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

log = logging.getLogger("hub.relay")

RESTART_BACKOFF_MAX_S = 30.0


def worker_names(node: str, processes: int) -> list[str]:
    return [f"{node}-w{i}" for i in range(1, processes)]


@dataclass
class _Child:
    name: str
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    next_start: float = 0.0


class Supervisor:
    """Starts `processes - 1` worker processes, hands them messages, restarts them when they die, stops
    them."""

    def __init__(self, settings_json: str, base: Path, node: str, processes: int,
                 log_level: str | None = None, log_format: str | None = None) -> None:
        self.settings_json, self.base = settings_json, base
        self.log_level, self.log_format = log_level, log_format
        self.children = [_Child(n) for n in worker_names(node, processes)]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._turn = 0
        self._thread: threading.Thread | None = None

    def _spawn(self, c: _Child) -> None:
        cmd = [sys.executable, "-m", "hub.relay.processes", "--node", c.name, "--base", str(self.base),
               "--parent", str(os.getpid())]
        if self.log_level:
            cmd += ["--log-level", self.log_level]
        if self.log_format:
            cmd += ["--log-format", self.log_format]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert p.stdin is not None
        p.stdin.write(self.settings_json.encode() + b"\n")
        p.stdin.flush()
        c.proc, c.started = p, time.monotonic()
        log.info("worker process %s started (pid %s)", c.name, p.pid)

    def start(self) -> None:
        with self._lock:
            for c in self.children:
                self._spawn(c)
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)
        self._thread.start()

    def alive(self) -> int:
        with self._lock:
            return sum(1 for c in self.children if c.proc is not None and c.proc.poll() is None)

    def pids(self) -> dict[str, int]:
        with self._lock:
            return {c.name: c.proc.pid for c in self.children if c.proc is not None and c.proc.poll() is None}

    def pick(self) -> str | None:
        """The next live worker process, in turn (None: none is up)."""
        with self._lock:
            n = len(self.children)
            for k in range(n):
                c = self.children[(self._turn + k) % n]
                if c.proc is not None and c.proc.poll() is None:
                    self._turn = (self._turn + k + 1) % n
                    return c.name
        return None

    def hand(self, name: str, message_id: str) -> None:
        """Tell worker process `name` that a message it holds was stored (a line down its stdin). Lost
        if it just died: its restart takes back what it held."""
        self._send(f"{message_id}\n".encode(), name)

    def _send(self, line: bytes, name: str | None = None) -> None:
        with self._lock:
            for c in self.children:
                if (name is None or c.name == name) and c.proc is not None and c.proc.stdin is not None \
                        and c.proc.poll() is None:
                    with contextlib.suppress(OSError, ValueError):
                        c.proc.stdin.write(line)
                        c.proc.stdin.flush()

    def _watch(self) -> None:
        while not self._stop.wait(0.2):
            with self._lock:
                now = time.monotonic()
                for c in self.children:
                    if c.proc is None or c.proc.poll() is None or self._stop.is_set():
                        continue
                    if c.next_start == 0.0:
                        # quick deaths back off (a broken config must not spin); a long life starts over
                        quick = now - c.started < 10
                        c.restarts = c.restarts + 1 if quick else 0
                        delay = min(RESTART_BACKOFF_MAX_S, 0.5 * 2 ** c.restarts) if quick else 0.0
                        c.next_start = now + delay
                        log.warning("worker process %s (pid %s) ended with %s; restarting in %.1f s",
                                    c.name, c.proc.pid, c.proc.returncode, delay)
                    if now >= c.next_start:
                        c.next_start = 0.0
                        with contextlib.suppress(OSError):
                            c.proc.stdin.close()  # type: ignore[union-attr]
                        self._spawn(c)

    def stop(self, timeout: float = 20.0) -> None:
        """Each worker finishes what it holds and exits (its stdin closes); killed after `timeout`."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            procs = [c.proc for c in self.children if c.proc is not None]
        for p in procs:
            with contextlib.suppress(OSError):
                p.stdin.close()  # type: ignore[union-attr]
        end = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker process pid %s did not stop in %.0f s: killed", p.pid, timeout)
                p.kill()
                p.wait()


def _die_with_parent(parent: int) -> None:
    """SIGKILL when the main process dies (Linux); elsewhere its closed stdin stops us."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)  # it died before the line above took effect


def worker_main(argv: list[str]) -> int:
    import argparse

    from hub import config, logs
    from hub.relay.server import Relay, RelayConfig, settle_process

    ap = argparse.ArgumentParser(prog="python -m hub.relay.processes")
    ap.add_argument("--node", required=True)
    ap.add_argument("--base", required=True, type=Path)
    ap.add_argument("--parent", required=True, type=int)
    ap.add_argument("--log-level")
    ap.add_argument("--log-format")
    a = ap.parse_args(argv)
    _die_with_parent(a.parent)
    stdin = sys.stdin.buffer
    s = config.validate(json.loads(stdin.readline()), "the main process's configuration")
    logs.setup(a.log_level or s.log.level, a.log_format or s.log.format)
    cfg = RelayConfig.from_settings(s, a.base)
    # no listener here: the main process takes messages in; this one checks, signs, delivers
    cfg = replace(cfg, node=a.node, smtp_listen=None, worker=replace(cfg.worker, node=a.node))
    relay = Relay(cfg, worker_only=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process, which stops us

    def wakes() -> None:
        for line in stdin:  # a line per message the main process gave us: its id
            if mid := line.strip().decode():
                relay.worker.notify_received(mid)
        done.set()  # the main process stopped (or died): finish and go

    relay.start()
    settle_process(cfg.cpu_affinity)
    threading.Thread(target=wakes, name="wakes", daemon=True).start()
    try:
        done.wait()
    finally:
        relay.stop()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
