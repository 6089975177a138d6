"""One core per relay process (hub.relay.affinity, hub.toml `cpu_affinity`).

The choice is a plain function of the allowed cores and what other processes are pinned to; the pinning
itself is run for real, in child processes (sched_setaffinity, /proc), and in a real `hub serve` with a
worker process: the two processes of the node must sit on different cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from relay_helpers import wait_for
from test_relay_processes import children, two_process_config
from test_relay_reliability import start

from hub.relay import affinity
from hub.relay.server import ConfigError, RelayConfig

LINUX = sys.platform.startswith("linux") and hasattr(os, "sched_setaffinity")
CORES = sorted(os.sched_getaffinity(0)) if LINUX else []
needs_two = pytest.mark.skipif(len(CORES) < 2, reason="needs Linux and two allowed cores")


def test_parse_cpus() -> None:
    assert affinity.parse_cpus("0") == {0}
    assert affinity.parse_cpus("0-3,8,10-11") == {0, 1, 2, 3, 8, 10, 11}
    assert affinity.parse_cpus(" 2 , 4-5") == {2, 4, 5}
    for bad in ("", "a", "1-", "3-1", "1,,2", "-1"):
        with pytest.raises(ValueError):
            affinity.parse_cpus(bad)


def test_setting_is_checked_where_the_configuration_is_read(tmp_path: Path) -> None:
    for ok in ("auto", "off", "0", "0,2-3"):
        assert affinity.check_setting(ok) == ok
    base = {"store": "sqlite:///hub.sqlite", "her_id": 80000, "register": []}
    assert RelayConfig.from_dict(base, tmp_path).cpu_affinity == "auto"
    assert RelayConfig.from_dict({**base, "cpu_affinity": "1-2"}, tmp_path).cpu_affinity == "1-2"
    with pytest.raises(ConfigError, match="cpu_affinity: auto, off or a CPU list"):
        RelayConfig.from_dict({**base, "cpu_affinity": "fast"}, tmp_path)


def _status(cpus: str, kthread: str = "Kthread:\t0\n", ppid: int = 1234) -> str:
    return (f"Name:\tpython\nState:\tS (sleeping)\nPPid:\t{ppid}\n{kthread}Cpus_allowed_list:\t{cpus}\n"
            "VmRSS:\t1 kB\n")


def test_choice_is_the_core_fewest_processes_are_pinned_to() -> None:
    counts = affinity.pinned_counts([_status("0"), _status("0"), _status("1"), _status("0-3"),
                                     _status("2,3"), _status("3"), "Name:\tkthread\n"])
    # only single-core masks count: a process free to move is the kernel's to place
    assert counts == Counter({0: 2, 1: 1, 3: 1})
    assert affinity.choose([0, 1, 2, 3], counts) == 2
    assert affinity.choose([0, 1, 3], counts) == 1  # 1 and 3 tie: the lowest
    assert affinity.choose([0], counts) == 0
    assert affinity.choose([3, 1, 0], Counter()) == 0


def test_kernel_threads_do_not_count() -> None:
    """ksoftirqd/1, kworker/0:2 and their kind sit on every core in numbers that come and go: counted,
    they decided which core a relay took, and two relays of one machine ended on the same core."""
    assert affinity.pinned_counts([
        _status("0", "Kthread:\t1\n", ppid=2), _status("0", "Kthread:\t1\n", ppid=2),
        _status("1", "", ppid=2),  # a kernel before 6.x: no Kthread line, kthreadd's child
        _status("1", "Kthread:\t1\n", ppid=0),  # kthreadd itself
        _status("1"),
    ]) == Counter({1: 1})
    # on this machine: the kernel's per-core threads are there, and none of them counts
    if LINUX:
        kernel = [st for st in affinity.machine_statuses() if "Kthread:\t1" in st or "PPid:\t2\n" in st]
        assert not affinity.pinned_counts(kernel)


PIN = """
import json, os, sys, time
from hub.relay import affinity
core = affinity.pin_process(sys.argv[1])
tasks = {t: sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")}
print(json.dumps({"core": core, "tasks": tasks, "env": os.environ.get(affinity.AFFINITY_ENV)}), flush=True)
if len(sys.argv) > 2:  # start a child as the supervisor starts a worker process: it inherits our mask
    out = __import__("subprocess").run([sys.executable, "-c", sys.argv[2], sys.argv[1]],
                                       capture_output=True, text=True).stdout
    print(out, end="", flush=True)
sys.stdin.read()  # stay pinned until the test lets go
"""


def _pinned(setting: str, *extra: str) -> tuple[subprocess.Popen[str], list[dict[str, object]]]:
    p = subprocess.Popen([sys.executable, "-c", PIN, setting, *extra], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    lines = [json.loads(p.stdout.readline()) for _ in range(1 + bool(extra))]
    return p, lines


def _release(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        p.wait(10)


def _pinned_now() -> Counter[int]:
    """What the machine's processes are pinned to now (other pinned processes may be about)."""
    return affinity.pinned_counts(affinity.machine_statuses())


@needs_two
def test_processes_started_one_after_another_take_different_cores() -> None:
    procs, got = [], []
    before = _pinned_now()
    try:
        for _ in range(len(CORES)):
            p, (line,) = _pinned("auto")
            procs.append(p)
            got.append(line)
        cores = [g["core"] for g in got]
        for i, core in enumerate(cores):  # each where the fewest were pinned, those before it counted
            assert core == affinity.choose(CORES, before + Counter(cores[:i])), (before, cores)
        if not before:
            assert sorted(cores) == CORES  # on a machine with nothing else pinned: one core each
        for g in got:
            # every thread of it, not only the one that asked
            assert all(mask == [g["core"]] for mask in g["tasks"].values()), g  # type: ignore[union-attr]
    finally:
        _release(*procs)


@needs_two
def test_a_child_of_a_pinned_process_chooses_among_all_cores() -> None:
    before = _pinned_now()
    p, (parent, child) = _pinned("auto", PIN.replace("sys.stdin.read()", "pass"))
    try:
        assert parent["env"] == child["env"] == ",".join(map(str, CORES))
        # not stuck on the one core it inherited: it chooses among all, its parent counted
        assert child["core"] == affinity.choose(CORES, before + Counter([parent["core"]]))
        assert child["core"] != parent["core"] or before
    finally:
        _release(p)


@needs_two
def test_off_and_a_list() -> None:
    p, (off,) = _pinned("off")
    q, (listed,) = _pinned(str(CORES[-1]))  # a one-core list: nothing to choose, left as it is
    r, (two,) = _pinned(f"{CORES[0]},{CORES[1]}")
    try:
        assert off["core"] is None and all(m == CORES for m in off["tasks"].values())  # type: ignore[union-attr]
        assert listed["core"] is None
        assert two["core"] in CORES[:2]
    finally:
        _release(p, q, r)


@needs_two
def test_unpin_gives_the_cores_back() -> None:
    code = ("import os; from hub.relay import affinity; c = affinity.pin_process('auto'); "
            "a = sorted(os.sched_getaffinity(0)); affinity.unpin(); "
            "print(c, a, sorted(os.sched_getaffinity(0)), os.environ.get(affinity.AFFINITY_ENV))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split(" ", 1)
    core = int(out[0])
    assert out[1].strip() == f"[{core}] {CORES} None"


@needs_two
def test_a_node_and_its_worker_process_on_cores_of_their_own(tmp_path: Path) -> None:
    cfg = two_process_config(tmp_path / "node", f"sqlite:///{tmp_path / 'hub.sqlite'}")
    proc = start(cfg)
    try:
        wait_for(lambda: len(children(proc.pid)) == 1, timeout=30, what="the worker process")
        pids = [proc.pid, children(proc.pid)[0]]

        def masks() -> list[set[int]]:
            return [{c for t in Path(f"/proc/{pid}/task").iterdir()
                     for c in os.sched_getaffinity(int(t.name))} for pid in pids]

        wait_for(lambda: all(len(m) == 1 for m in masks()), timeout=30, what="both processes pinned")
        main, worker = masks()
        assert main != worker
    finally:
        proc.terminate()
        proc.wait(15)
