"""Shared helpers of the relay tests: a relay home with a register, polling until something happens."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from hub.relay.server import RelayConfig

T = TypeVar("T")

GP_TOKEN = "gp-secret-token"
NH_TOKEN = "nh-secret-token"

REGISTER = f"""
[[party]]
her_id = 80000
name = "Relay"
local = true

[[party]]
her_id = 82001
name = "Legekontoret Fjordbyen"
kind = "gp"
local = true
token = "{GP_TOKEN}"

[[party]]
her_id = 82002
name = "Kari Fjeld"
parent = 82001
level = "person"

[[party]]
her_id = 81001
name = "Fjordbyen sykehus HF"
kind = "hospital"
local = true

[[party]]
her_id = 81002
name = "Medisinsk poliklinikk"
parent = 81001

[[party]]
her_id = 81003
name = "Medisinsk avdeling"
parent = 81001

[[party]]
her_id = 84001
name = "Fjordbyen sykehjem"
kind = "nursing"
local = true
token = "{NH_TOKEN}"

[[party]]
her_id = 84002
name = "Tildelingskontoret"
parent = 84001
"""


def make_config(home: Path, *, store: str | None = None, node: str = "test-node", http: bool = False,
                extra_register: str = "", worker: dict[str, Any] | None = None) -> RelayConfig:
    home.mkdir(parents=True, exist_ok=True)
    (home / "register.toml").write_text(REGISTER + extra_register, encoding="utf-8")
    d: dict[str, Any] = {
        "store": store or "sqlite:///hub.sqlite",
        "her_id": 80000,
        "node": node,
        "register": ["register.toml"],
        "folders": {"root": "spool", "poll": 0.05},
        "worker": {"threads": 4, "poll_s": 0.05, "local_retry_interval_s": 1, "local_retries": 3,
                   **(worker or {})},
    }
    if http:
        d["http"] = {"listen": "127.0.0.1:0"}
    return RelayConfig.from_dict(d, home)


def wait_for(fn: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def drop(folder: Path, name: str, data: bytes) -> Path:
    """Put a file into a local system's out/ folder the way a journal system should: whole, at once."""
    out = folder / "out"
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.part"
    tmp.write_bytes(data)
    tmp.rename(out / name)
    return out / name


def files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.is_dir() else []


PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def pg_store(prefix: str) -> Iterator[str]:
    """A store URL on a throwaway PostgreSQL schema, dropped afterwards; skips the test without a server."""
    import psycopg
    import pytest

    try:
        with psycopg.connect(PG_URL, connect_timeout=2):
            pass
    except Exception:  # noqa: BLE001 - any failure to connect means: no server to test against
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield f"{PG_URL}?schema={schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
