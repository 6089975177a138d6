"""Benchmarks: `make bench` runs every bench/bench_*.py; each prints `name: value` lines."""

from __future__ import annotations

import os

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_url(default: str = PG_DEFAULT) -> str | None:
    """The PostgreSQL server the benchmarks use ($HUB_BENCH_PG), or None to skip PostgreSQL: set empty.
    Anything that is no postgresql:// URL is refused, as open_store would take it for a SQLite file's path."""
    url = os.environ.get("HUB_BENCH_PG", default)
    if not url:
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise SystemExit(f"HUB_BENCH_PG is not a postgresql:// URL: {url!r} (empty skips PostgreSQL)")
    return url
