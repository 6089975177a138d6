"""Evidence of conformance runs: every case's verdict, the messages exchanged, the errors found.

Kept in our own `conformance_*` tables inside the hub's SQLite database file under HUB_HOME
(`hub.sqlite`, the file the relay's store uses by default) — the store has no evidence API, and
this module is the only one that touches these tables, so moving them behind the store later is a
change in one place. Message bytes are stored as they were exchanged (content-addressed by SHA-256)
so an approval can be audited years later.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from hub.config import home

SCHEMA = """
CREATE TABLE IF NOT EXISTS conformance_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    system TEXT NOT NULL,
    system_version TEXT NOT NULL,
    category TEXT NOT NULL,
    message TEXT NOT NULL,          -- catalogue key, e.g. "Epikrise:1.0"
    direction TEXT NOT NULL,        -- S | M
    month TEXT NOT NULL,            -- MM.YY the test counts for (campaign month or today)
    transport TEXT NOT NULL,
    ruleset TEXT NOT NULL,          -- fingerprint of the rule set the cases were judged with
    message_fp TEXT NOT NULL,       -- fingerprint of the message version's definition (schema)
    campaign TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    verdict TEXT                    -- pass | fail | incomplete
);
CREATE INDEX IF NOT EXISTS conformance_runs_cell
    ON conformance_runs(system, message, direction);
CREATE TABLE IF NOT EXISTS conformance_cases (
    run_id INTEGER NOT NULL REFERENCES conformance_runs(id),
    seq INTEGER NOT NULL,
    case_id TEXT NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,           -- builtin | apprec-sheet#N | akseptansetest/<path>
    verdict TEXT NOT NULL,          -- pass | fail | skip | blocked
    expected TEXT,
    observed TEXT,
    errors TEXT NOT NULL,           -- JSON list of problems found
    elapsed_ms INTEGER,
    PRIMARY KEY (run_id, seq)
);
CREATE TABLE IF NOT EXISTS conformance_exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES conformance_runs(id),
    case_id TEXT NOT NULL,
    flow TEXT NOT NULL,             -- to-system | from-system
    name TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS conformance_confirmations (
    run_id INTEGER NOT NULL REFERENCES conformance_runs(id),
    case_id TEXT NOT NULL,          -- a manual case of the run: what the tester saw
    verdict TEXT NOT NULL,          -- pass | fail
    note TEXT,
    at TEXT NOT NULL,
    PRIMARY KEY (run_id, case_id)
);
CREATE TABLE IF NOT EXISTS conformance_blobs (
    sha256 TEXT PRIMARY KEY,
    content BLOB NOT NULL
);
"""


def default_path() -> Path:
    return home() / "hub.sqlite"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class CaseRecord:
    case_id: str
    title: str
    source: str
    verdict: str
    expected: str | None = None
    observed: str | None = None
    errors: list[dict] = field(default_factory=list)
    elapsed_ms: int | None = None


@dataclass(frozen=True)
class Run:
    id: int
    system: str
    system_version: str
    category: str
    message: str
    direction: str
    month: str
    transport: str
    ruleset: str
    message_fp: str
    campaign: str | None
    started_at: str
    finished_at: str | None
    verdict: str | None


@dataclass(frozen=True)
class Exchange:
    case_id: str
    flow: str
    name: str
    sha256: str
    at: str


class Evidence:
    """The evidence tables of one database file. Safe to open from several threads (one per call)."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._conn() as c:
            c.executescript(SCHEMA)

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            with conn:
                yield conn
        finally:
            conn.close()

    # --- writing ---------------------------------------------------------------------------------

    def start_run(self, *, system: str, system_version: str, category: str, message: str,
                  direction: str, month: str, transport: str, ruleset: str, message_fp: str,
                  campaign: str | None = None) -> int:
        with self._conn() as c:
            cur = c.execute(
                "INSERT INTO conformance_runs (system, system_version, category, message, direction,"
                " month, transport, ruleset, message_fp, campaign, started_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (system, system_version, category, message, direction, month, transport, ruleset,
                 message_fp, campaign, _now()),
            )
            return int(cur.lastrowid or 0)

    def add_cases(self, run_id: int, cases: list[CaseRecord]) -> None:
        with self._conn() as c:
            c.executemany(
                "INSERT INTO conformance_cases (run_id, seq, case_id, title, source, verdict, expected,"
                " observed, errors, elapsed_ms) VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(run_id, i, r.case_id, r.title, r.source, r.verdict, r.expected, r.observed,
                  json.dumps(r.errors, ensure_ascii=False), r.elapsed_ms) for i, r in enumerate(cases)],
            )

    def add_exchange(self, run_id: int, case_id: str, flow: str, name: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with self._conn() as c:
            c.execute("INSERT OR IGNORE INTO conformance_blobs (sha256, content) VALUES (?, ?)",
                      (digest, data))
            c.execute(
                "INSERT INTO conformance_exchanges (run_id, case_id, flow, name, sha256, at)"
                " VALUES (?,?,?,?,?,?)", (run_id, case_id, flow, name, digest, _now()))
        return digest

    def finish_run(self, run_id: int, verdict: str) -> None:
        with self._conn() as c:
            c.execute("UPDATE conformance_runs SET verdict = ?, finished_at = ? WHERE id = ?",
                      (verdict, _now(), run_id))

    def confirm(self, run_id: int, case_id: str, verdict: str, note: str | None = None) -> None:
        """The tester's answer to a manual case: it replaces the case's `manual` verdict (the answer, its
        note and time are kept beside it); a failed one fails the run (the cell is not approved)."""
        if verdict not in ("pass", "fail"):
            raise ValueError(f"verdict {verdict!r} is not pass or fail")
        manual = [c.case_id for c in self.cases(run_id) if c.verdict == "manual"]
        if case_id not in manual and case_id not in self.confirmations(run_id):
            raise KeyError(f"run {run_id} has no manual case {case_id!r}"
                           + (f" (open: {', '.join(manual)})" if manual else " (none is open)"))
        with self._conn() as c:
            c.execute("INSERT OR REPLACE INTO conformance_confirmations (run_id, case_id, verdict, note, at)"
                      " VALUES (?,?,?,?,?)", (run_id, case_id, verdict, note, _now()))
            c.execute("UPDATE conformance_cases SET verdict = ?, observed = ?"
                      " WHERE run_id = ? AND case_id = ?",
                      (verdict, "confirmed by the tester" + (f": {note}" if note else ""), run_id, case_id))
            if verdict == "fail":
                c.execute("UPDATE conformance_runs SET verdict = 'fail' WHERE id = ?", (run_id,))

    # --- reading ---------------------------------------------------------------------------------

    def confirmations(self, run_id: int) -> dict[str, tuple[str, str | None, str]]:
        """case id -> (verdict, note, when) of the tester's answers in a run."""
        with self._conn() as c:
            rows = c.execute("SELECT case_id, verdict, note, at FROM conformance_confirmations"
                             " WHERE run_id = ?", (run_id,))
            return {r["case_id"]: (r["verdict"], r["note"], r["at"]) for r in rows}

    def open_manual(self, run_id: int) -> list[str]:
        """The manual cases of a run nobody has answered yet (the matrix marks such approvals (*))."""
        return [c.case_id for c in self.cases(run_id) if c.verdict == "manual"]

    def runs(self, system: str | None = None, campaign: str | None = None) -> list[Run]:
        sql = "SELECT * FROM conformance_runs WHERE finished_at IS NOT NULL"
        args: list[str] = []
        if system:
            sql += " AND system = ?"
            args.append(system)
        if campaign:
            sql += " AND campaign = ?"
            args.append(campaign)
        with self._conn() as c:
            return [Run(**dict(r)) for r in c.execute(sql + " ORDER BY id", args)]

    def run(self, run_id: int) -> Run:
        with self._conn() as c:
            row = c.execute("SELECT * FROM conformance_runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(run_id)
        return Run(**dict(row))

    def cases(self, run_id: int) -> list[CaseRecord]:
        with self._conn() as c:
            rows = c.execute("SELECT * FROM conformance_cases WHERE run_id = ? ORDER BY seq", (run_id,))
            return [CaseRecord(r["case_id"], r["title"], r["source"], r["verdict"], r["expected"],
                               r["observed"], json.loads(r["errors"]), r["elapsed_ms"]) for r in rows]

    def exchanges(self, run_id: int, case_id: str | None = None) -> list[Exchange]:
        sql = "SELECT case_id, flow, name, sha256, at FROM conformance_exchanges WHERE run_id = ?"
        args: list[object] = [run_id]
        if case_id:
            sql += " AND case_id = ?"
            args.append(case_id)
        with self._conn() as c:
            return [Exchange(**dict(r)) for r in c.execute(sql + " ORDER BY id", args)]

    def blob(self, sha256: str) -> bytes:
        with self._conn() as c:
            row = c.execute("SELECT content FROM conformance_blobs WHERE sha256 = ?", (sha256,)).fetchone()
        if row is None:
            raise KeyError(sha256)
        return bytes(row[0])
