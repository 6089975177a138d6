"""The event loops the relay runs its network edge on (hub.toml `event_loop`).

uvloop (libuv) runs the loop's own machinery in C: polling, socket reads and writes, timers, callbacks
and the wake-ups other threads send with call_soon_threadsafe; the protocols on it (aiosmtpd with its
STARTTLS, aiosmtplib, aiohttp) are the same Python code either way.
"""

from __future__ import annotations

import asyncio
import importlib.util

EVENT_LOOPS = ("auto", "uvloop", "asyncio")


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def check_event_loop(kind: str) -> None:
    """ValueError for a kind that is not one of EVENT_LOOPS or cannot run here."""
    if kind not in EVENT_LOOPS:
        raise ValueError(f"event_loop: one of {', '.join(EVENT_LOOPS)}, not {kind!r}")
    if kind == "uvloop" and not uvloop_available():
        raise ValueError('event_loop = "uvloop", but uvloop is not installed (pip install uvloop)')


def resolve(kind: str) -> str:
    """The loop that kind runs on here: "uvloop" or "asyncio"."""
    check_event_loop(kind)
    return "asyncio" if kind == "asyncio" or (kind == "auto" and not uvloop_available()) else "uvloop"


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    """A new loop of that kind; "auto": uvloop where it is installed, else asyncio's own."""
    if resolve(kind) == "asyncio":
        return asyncio.new_event_loop()
    import uvloop

    return uvloop.new_event_loop()
