"""Per-stage timestamps of relayed messages, for bench/profile_latency.py (not used by the relay itself).

`install()` wraps the steps a message passes through in a relay's process (classes patched, so call it
before the Relay is made) and records (message id, stage, time.monotonic()) for each: CLOCK_MONOTONIC is
one clock for every process of the machine, so the GP's relay and the hospital's (a child process) can
be put on one time line. `links` ties a message of one relay to the other's: (our id, ebXML MessageId).
GC pauses are recorded too (gc.callbacks), and `dump()` writes it all as JSON.
"""

from __future__ import annotations

import functools
import gc
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

events: list[tuple[str, str, float]] = []  # (message id, stage, monotonic)
links: list[tuple[str, str]] = []  # (message id, ebXML MessageId it was sent or received as)
gcs: list[tuple[float, float, int]] = []  # (start, seconds, generation)
_cur = threading.local()
_gc_t0 = [0.0]


def mark(mid: str | None, stage: str) -> None:
    if mid:
        events.append((mid, stage, time.monotonic()))


def _wrap(cls: Any, name: str, before: Callable[..., None] | None = None,  # noqa: ANN401
          after: Callable[..., None] | None = None) -> None:
    fn = getattr(cls, name)

    @functools.wraps(fn)
    def w(*a: Any, **kw: Any) -> Any:  # noqa: ANN401
        if before is not None:
            before(*a, **kw)
        out = fn(*a, **kw)
        if after is not None:
            after(out, *a, **kw)
        return out

    setattr(cls, name, w)


def _awrap(cls: Any, name: str, before: Callable[..., None]) -> None:  # noqa: ANN401
    fn = getattr(cls, name)

    @functools.wraps(fn)
    async def w(*a: Any, **kw: Any) -> Any:  # noqa: ANN401
        before(*a, **kw)
        return await fn(*a, **kw)

    setattr(cls, name, w)


def _gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_t0[0] = time.monotonic()
    else:
        gcs.append((_gc_t0[0], time.monotonic() - _gc_t0[0], info["generation"]))


def install() -> None:
    from hub.relay import ebms_intake, network, worker
    from hub.relay.delivery import FolderDeliverer
    from hub.relay.ebms_delivery import EbmsDelivery
    from hub.relay.intake import Intake
    from hub.relay.unwrap import Unwrapper
    from hub.store.base import Store

    gc.callbacks.append(_gc)
    install_pg_timing()

    # local intake (the GP's relay): hand-over, then stored
    def local_before(self: Any, data: bytes, *a: Any, **kw: Any) -> None:  # noqa: ANN401
        _cur.t = time.monotonic()

    def local_after(out: Any, *a: Any, **kw: Any) -> None:  # noqa: ANN401
        m = out[0]
        if m is not None:
            events.append((m.id, "handover", _cur.t))

    _wrap(Intake, "accept_local", local_before, local_after)

    def stored(out: Any, *a: Any, **kw: Any) -> None:  # noqa: ANN401
        mark(out.id, "stored")

    _wrap(Store, "put_received", None, stored)
    _wrap(worker.Worker, "notify_received", lambda self, mid, *a, **kw: mark(mid, "notified"))
    _wrap(worker.Worker, "admit", lambda self, ref, *a, **kw: mark(ref, "admit"))

    def adv_before(self: Any, ref: str, *a: Any, **kw: Any) -> None:  # noqa: ANN401
        mark(ref, "advance0")

    def adv_after(out: Any, self: Any, ref: str, *a: Any, **kw: Any) -> None:  # noqa: ANN401
        mark(ref, "advance1")

    for n in ("advance", "advance_answered"):
        _wrap(Store, n, adv_before, adv_after)

    def deliver_before(self: Any, msg: Any, *a: Any, **kw: Any) -> None:  # noqa: ANN401
        _cur.mid = msg.id
        mark(msg.id, "deliver")
        if msg.out_message_id:
            links.append((msg.id, msg.out_message_id))

    _wrap(worker.Worker, "deliver", deliver_before)
    _wrap(worker.Worker, "_delivered", lambda self, msg, *a, **kw: mark(msg.id, "delivered0"))
    _wrap(network.Outbound, "send", lambda *a, **kw: mark(getattr(_cur, "mid", None), "send0"),
          lambda *a, **kw: mark(getattr(_cur, "mid", None), "send1"))
    _wrap(Store, "mark_sent", None, lambda out, self, ref, **kw: mark(ref, "marked_sent"))
    _wrap(EbmsDelivery, "prepare", lambda self, route, data, m, *a, **kw: mark(m.id, "prepare0"),
          lambda out, self, route, data, m, *a, **kw: mark(m.id, "prepare1"))
    _wrap(FolderDeliverer, "deliver", lambda self, route, data, m, *a, **kw: mark(m.id, "folder0"),
          lambda out, self, route, data, m, *a, **kw: mark(m.id, "folder1"))
    _wrap(Unwrapper, "unwrap", lambda self, m, *a, **kw: mark(m.id, "unwrap0"),
          lambda out, self, m, *a, **kw: mark(m.id, "unwrap1"))

    # the network intake (the hospital's relay): the DATA is in, then the store step's thread runs
    _awrap(ebms_intake.EbmsIntake, "store_mail", lambda *a, **kw: setattr(_cur, "mail", time.monotonic()))

    def take_before(self: Any, raw: bytes, *a: Any, **kw: Any) -> None:  # noqa: ANN401
        _cur.take = time.monotonic()

    def take_after(out: Any, *a: Any, **kw: Any) -> None:  # noqa: ANN401
        m = out.message
        if m is not None and out.what == "stored":
            events.append((m.id, "take0", _cur.take))
            if m.ebxml_message_id:
                links.append((m.id, m.ebxml_message_id))

    _wrap(ebms_intake.EbmsIntake, "take", take_before, take_after)

    def on_ack_before(self: Any, ref: str, *a: Any, **kw: Any) -> None:  # noqa: ANN401
        events.append(("ebxml:" + ref, "ack_in", time.monotonic()))

    _wrap(worker.Worker, "on_ack", on_ack_before,
          lambda out, self, ref, *a, **kw: events.append(("ebxml:" + ref, "ack_applied", time.monotonic())))


def dump(path: Path) -> None:
    path.write_text(json.dumps({"events": events, "links": links, "gcs": gcs, "stmts": stmts}))


stmts: dict[str, list[float]] = {}  # statement kind -> wall seconds each (PostgreSQL round trips)


def install_pg_timing() -> None:
    """Wall time of each PostgreSQL statement and commit, by kind (the first words of the SQL)."""
    import psycopg

    from hub.store import postgres

    for name in ("execute", "all", "one"):
        fn = getattr(postgres._Tx, name)

        def w(self: Any, sql: str, params: Any = (), _fn: Any = fn) -> Any:  # noqa: ANN401
            t = time.monotonic()
            try:
                return _fn(self, sql, params)
            finally:
                key = " ".join(sql.split()[:3])[:40]
                stmts.setdefault(key, []).append(time.monotonic() - t)

        setattr(postgres._Tx, name, w)
    tx_exit = psycopg.Transaction.__exit__

    def exit_(self: Any, *a: Any) -> Any:  # noqa: ANN401
        t = time.monotonic()
        try:
            return tx_exit(self, *a)
        finally:
            stmts.setdefault("COMMIT", []).append(time.monotonic() - t)

    psycopg.Transaction.__exit__ = exit_  # type: ignore[method-assign]
    tx_enter = psycopg.Transaction.__enter__

    def enter(self: Any) -> Any:  # noqa: ANN401
        t = time.monotonic()
        try:
            return tx_enter(self)
        finally:
            stmts.setdefault("BEGIN", []).append(time.monotonic() - t)

    psycopg.Transaction.__enter__ = enter  # type: ignore[method-assign]
