"""The durable store of messages, their timelines, duplicate-elimination records and the audit log.

`open_store(url)`:
- `sqlite:///var/hub.sqlite` (relative path), `sqlite:////srv/hub/hub.sqlite` (absolute), or a plain path;
- `postgresql://user@host:5432/db` (also `postgres://`); `?schema=name` keeps the hub's tables in
  that schema (created if missing); other query parameters go to libpq. Its connections come from a
  pool per store, sized by hub.toml's [postgres] section (`postgres=`; default: that section's defaults).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from hub.config import PostgresSection, home
from hub.store.base import (
    APPREC_LIMIT,
    DEFAULT_LEASE,
    ORIGINAL,
    PAYLOAD,
    AuditEntry,
    ErrorInfo,
    LeaseLost,
    Message,
    MessageMeta,
    MsgIdTaken,
    NotFound,
    SeenRecord,
    Step,
    Store,
    StoreError,
    Swept,
    TimelineEntry,
)

__all__ = [
    "APPREC_LIMIT", "DEFAULT_LEASE", "ORIGINAL", "PAYLOAD", "AuditEntry", "ErrorInfo", "LeaseLost", "Message",
    "MessageMeta", "MissingStore", "MsgIdTaken", "NotFound", "SeenRecord", "Store", "Step", "StoreError",
    "Swept",
    "TimelineEntry", "default_url", "open_store",
]


def default_url() -> str:
    return f"sqlite:///{home() / 'hub.sqlite'}"


class MissingStore(StoreError):
    """`open_store(..., create=False)` found no store: the text names the path."""


def open_store(url: str | None = None, *, create: bool = True,
               postgres: PostgresSection | None = None) -> Store:
    """Open (creating and migrating as needed) the store at `url`; default: HUB_HOME/hub.sqlite.

    `create=False` (the operator's commands): a SQLite file that is not there is an error naming its
    path, never a new empty store that would answer "no messages".
    """
    url = url or default_url()
    parts = urlsplit(url)
    if parts.scheme in ("postgresql", "postgres"):
        from hub.store.postgres import PostgresStore

        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((v for k, v in query if k == "schema"), None)
        rest = urlencode([(k, v) for k, v in query if k != "schema"])
        pool = postgres or PostgresSection()
        return PostgresStore(urlunsplit(parts._replace(query=rest)), schema=schema, pool_min=pool.pool_min,
                             pool_max=pool.pool_max, pool_timeout_s=pool.pool_timeout_s)
    from hub.store.sqlite import SQLiteStore

    if parts.scheme == "sqlite":
        if not url.startswith("sqlite:///"):
            raise ValueError(f"SQLite URLs look like sqlite:///relative/path or sqlite:////abs/path: {url!r}")
        path = Path(url[len("sqlite:///"):])
    elif parts.scheme and len(parts.scheme) > 1:  # "C:" is a drive, not a scheme
        raise ValueError(f"unsupported store URL {url!r} (sqlite:///... or postgresql://...)")
    else:
        path = Path(url)
    if not create and not path.is_file():
        raise MissingStore(f"no store at {path.resolve()} (a relay creates it on its first start)")
    return SQLiteStore(path)
