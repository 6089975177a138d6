"""One core per relay process (hub.toml `cpu_affinity`).

A relay process runs Python on one core at a time (the GIL), with a dozen threads that each wait often
(store commits, fsyncs, sockets) and then wait for the GIL again. Spread over several cores by the
kernel, each of those hand-overs wakes a thread on another core and the GIL travels between caches; on
one core the same hand-over is a plain context switch. Measured with bench_relay (two relays on a
2-core machine, SQLite): 8.7 -> 6.8 ms of CPU per relayed message, 145 -> 210 msgs/s, context switches
180 -> 84 a message. Work that leaves the GIL (RSA, fsync, SQLite's I/O) loses the second core, which it
barely used; a node that should use more cores runs more processes (`worker.processes`), and `auto`
puts each on a core of its own.

- `auto` (default): each process of the node (the main one and every worker process) is pinned to the
  core of its allowed set that the fewest single-core processes of this machine are pinned to (hub
  processes of other nodes included; not the kernel's own threads), the lowest of those on a tie;
  under an flock, so that processes starting together do not pick the same core. Nothing happens where
  the set has one core only, or the platform has no sched_setaffinity (not Linux).
- `off`: the kernel schedules the process's threads over every allowed core.
- a list such as `0,2-3`: the cores to choose from as `auto` does.

The allowed set is the one the first pinned process of a tree started with (taskset, a cgroup's
cpuset): it is passed down in `AFFINITY_ENV`, so a worker process started by a pinned main process
chooses among all of them, not only its parent's one core.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable

log = logging.getLogger("hub.relay")

AFFINITY_ENV = "_HUB_AFFINITY_CPUS"  # the allowed set before pinning, for child processes
LOCK_NAME = "hub-cpu-affinity.lock"  # in the temp folder: one per machine, whoever runs the node
_CPUS = re.compile(r"^Cpus_allowed_list:\s*(\S+)", re.M)
# the kernel's own threads (ksoftirqd/N, kworker/N:M, migration/N...) are pinned to every core, in numbers
# that come and go: they are not load of the kind a relay should avoid ("Kthread: 1" since Linux 6.x;
# before it, every kernel thread but kthreadd itself is kthreadd's child, PPid 2)
_KTHREAD = re.compile(r"^(?:Kthread:\s*1|PPid:\s*2)\s*$", re.M)
_before: frozenset[int] | None = None  # this process's allowed set before pin_process
_lock = threading.Lock()


def parse_cpus(text: str) -> frozenset[int]:
    """A CPU list as Linux writes it ("0-3,8,10-11"); ValueError naming what is wrong."""
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"not a CPU list (such as 0,2-3): {text!r}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ValueError(f"CPU range {part!r} runs backwards")
        out.update(range(lo, hi + 1))
    return frozenset(out)


def check_setting(value: str) -> str:
    """hub.toml's `cpu_affinity`: auto, off or a CPU list; ValueError otherwise."""
    if value not in ("auto", "off"):
        try:
            parse_cpus(value)
        except ValueError as exc:
            raise ValueError(f"cpu_affinity: auto, off or a CPU list such as 0,2-3 ({exc})") from None
    return value


def pinned_counts(statuses: Iterable[str]) -> Counter[int]:
    """Per core, how many of these processes (/proc/<pid>/status texts) are pinned to it alone; kernel
    threads are not counted."""
    out: Counter[int] = Counter()
    for st in statuses:
        m = _CPUS.search(st)
        if m is None or _KTHREAD.search(st):
            continue
        try:
            cpus = parse_cpus(m.group(1))
        except ValueError:
            continue
        if len(cpus) == 1:
            out[next(iter(cpus))] += 1
    return out


def choose(allowed: Iterable[int], counts: Counter[int]) -> int:
    """The allowed core the fewest processes are pinned to; the lowest on a tie."""
    return min(sorted(allowed), key=lambda c: counts[c])


def machine_statuses() -> Iterable[str]:
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if pid.isdigit() and pid != me:
            try:
                with open(f"/proc/{pid}/status") as f:
                    yield f.read()
            except OSError:
                continue  # ended meanwhile, or not ours to read


def _set_all_threads(cpus: frozenset[int]) -> None:
    """Every thread of this process (threads made later inherit it from the one that makes them)."""
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except ProcessLookupError:
            continue  # that thread ended meanwhile


def pin_process(setting: str = "auto") -> int | None:
    """Pin this process (all its threads) to one core as `setting` says; the core, or None."""
    global _before
    if setting == "off" or not hasattr(os, "sched_setaffinity"):
        return None
    with _lock:
        current = frozenset(os.sched_getaffinity(0))
        before = _before or current
        inherited = os.environ.get(AFFINITY_ENV)
        allowed = parse_cpus(inherited) if inherited and _before is None else before
        if setting != "auto":
            allowed = parse_cpus(setting)
        if len(allowed) < 2:
            return None
        try:
            fd = os.open(os.path.join(tempfile.gettempdir(), LOCK_NAME),
                         os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError:
            fd = -1  # another user's file, a read-only temp folder: choose without the lock
        try:
            if fd >= 0:
                fcntl.flock(fd, fcntl.LOCK_EX)
            core = choose(allowed, pinned_counts(machine_statuses()))
            try:
                _set_all_threads(frozenset({core}))
            except OSError as exc:  # a core outside the cgroup's cpuset, a sandbox without the call
                log.warning("cpu_affinity %s: could not pin this process to CPU %d: %s", setting, core, exc)
                return None
        finally:
            if fd >= 0:
                os.close(fd)  # closing ends the flock
        _before = before
        os.environ[AFFINITY_ENV] = ",".join(str(c) for c in sorted(allowed))
    log.info("relay process %d pinned to CPU %d (cpu_affinity = %s)", os.getpid(), core, setting)
    return core


def unpin() -> None:
    """Give this process back the allowed set it had before pin_process (a process that hosted a relay
    for a while: tests, benchmarks); nothing if it was not pinned."""
    global _before
    with _lock:
        if _before is None:
            return
        _set_all_threads(_before)
        _before = None
        os.environ.pop(AFFINITY_ENV, None)
