"""The durable store: records, schema and every operation, shared by the SQLite and PostgreSQL backends.

A backend supplies only connections and transactions (`_write`, `_write_async`, `_read`) and its SQL
dialect; the operations here are written once against the small `Tx` interface, with `?` placeholders.

Rules the operations keep:
- A message's state changes only in `_apply()`, which asks `hub.relay.lifecycle.next_state()` inside
  the write transaction that has the row locked, and appends the step to the timeline.
- The original bytes are written once (`blobs` kind "original") and never updated.
- Writes return only after their transaction has committed (SQLite: the batch containing them).
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from hub.relay import lifecycle
from hub.relay.lifecycle import Event, IllegalTransition, RetryPolicy, State

T = TypeVar("T")

SCHEMA_VERSION = 3
APPREC_LIMIT = timedelta(hours=96)  # HIS 80415 / HITS 1168: no AppRec 96 h after GenDate = alert
DEFAULT_LEASE = timedelta(minutes=5)
ORIGINAL = "original"
PAYLOAD = "payload"  # the decrypted KITH document of a received ebXML envelope

Row = dict[str, Any]


class StoreError(RuntimeError):
    pass


class NotFound(StoreError, KeyError):
    def __str__(self) -> str:
        return f"no message {self.args[0]!r}"


class LeaseLost(StoreError):
    """The node's claim on a message has expired and the message has moved on without it."""


class MsgIdTaken(StoreError):
    """The sender's KITH MsgId belongs to another message already (`advance(..., msg_id=...)`); nothing
    was written. `sha256` is the digest of that message's KITH document: equal means a duplicate."""

    def __init__(self, sender: str, kith_msg_id: str, message_id: str, sha256: str) -> None:
        super().__init__(f"MsgId {kith_msg_id} of sender {sender} belongs to message {message_id}")
        self.sender, self.kith_msg_id, self.message_id, self.sha256 = sender, kith_msg_id, message_id, sha256


class Tx(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int: ...
    # a statement whose outcome the operation does not read: a backend may send it with the next one that
    # waits for an answer, or with the commit (PostgreSQL: one round trip for them all, not one each)
    def write(self, sql: str, params: Sequence[Any] = ()) -> None: ...
    # a statement sent now whose rows are read when the returned function is called: PostgreSQL sends
    # it with the next statement that waits and reads both with that one wait (or with the commit's)
    def later(self, sql: str, params: Sequence[Any] = ()) -> Callable[[], list[Row]]: ...
    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None: ...


# --- records ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ErrorInfo:
    code: str
    text: str
    permanent: bool


@dataclass(frozen=True)
class MessageMeta:
    """What the relay learns about a message; every part optional (intake stores before it parses)."""

    direction: str | None = None  # "in" from the network, "out" to the network, "local" both ends local
    channel: str | None = None  # smtp, http, folder, submit, hub (generated)
    ebxml_message_id: str | None = None  # eb:MessageId of the envelope we received
    out_message_id: str | None = None  # eb:MessageId of the envelope we send onwards
    conversation_id: str | None = None
    cpa_id: str | None = None
    service: str | None = None
    action: str | None = None
    kith_msg_id: str | None = None  # MsgHead MsgInfo/MsgId (AppRec OriginalMsgId/Id points here)
    msg_type: str | None = None  # MsgInfo/Type or Message/Type, e.g. DIALOG_NOTAT, APPREC
    family: str | None = None
    version: str | None = None
    gen_date: datetime | None = None
    sender_her: str | None = None
    receiver_her: str | None = None
    max_retries: int | None = None  # from the CPA (None: HIS 1037 default)
    retry_interval_s: int | None = None
    expires_at: datetime | None = None  # eb:TimeToLive
    apprec_due_at: datetime | None = None  # default: gen_date + 96 h


META_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(MessageMeta))
# Columns a transition may set besides the state (never state, attempts or the lease).
TRANSITION_FIELDS = frozenset(META_FIELDS) | {"next_attempt_at", "apprec_status"}


@dataclass(frozen=True)
class Message:
    id: str  # full id, a time-ordered UUID
    short_id: str  # 10 characters for operators
    state: State
    attempts: int
    max_retries: int
    retry_interval_s: int
    size: int
    sha256: str  # of the original bytes
    created_at: datetime
    updated_at: datetime
    direction: str | None = None
    channel: str | None = None
    ebxml_message_id: str | None = None
    out_message_id: str | None = None
    conversation_id: str | None = None
    cpa_id: str | None = None
    service: str | None = None
    action: str | None = None
    kith_msg_id: str | None = None
    msg_type: str | None = None
    family: str | None = None
    version: str | None = None
    gen_date: datetime | None = None
    sender_her: str | None = None
    receiver_her: str | None = None
    expires_at: datetime | None = None
    apprec_due_at: datetime | None = None
    apprec_status: str | None = None
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_until: datetime | None = None
    last_error_code: str | None = None
    last_error_text: str | None = None
    last_error_permanent: bool | None = None
    parent_id: str | None = None

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.max_retries, interval=timedelta(seconds=self.retry_interval_s))

    @property
    def last_error(self) -> ErrorInfo | None:
        if self.last_error_code is None and self.last_error_text is None:
            return None
        return ErrorInfo(
            self.last_error_code or "", self.last_error_text or "", bool(self.last_error_permanent)
        )

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Message:
        # several times per transition: filled in directly, not through the frozen __init__'s 35
        # object.__setattr__ calls (a fifth of the cost); the fields and their defaults as __init__ has them
        if _MESSAGE_FIELDS.issuperset(row):
            kw = {**_MESSAGE_DEFAULTS, **row}
        else:
            kw = {**_MESSAGE_DEFAULTS, **{k: v for k, v in row.items() if k in _MESSAGE_FIELDS}}
        if len(kw) != len(_MESSAGE_FIELDS):
            raise TypeError(f"Message.from_row: missing {sorted(_MESSAGE_FIELDS - kw.keys())}")
        kw["state"] = _STATES.get(kw["state"]) or State(kw["state"])  # a dict lookup, not Enum.__call__
        if kw["last_error_permanent"] is not None:
            kw["last_error_permanent"] = bool(kw["last_error_permanent"])
        m = object.__new__(cls)
        m.__dict__.update(kw)
        return m


_MESSAGE_FIELDS = frozenset(f.name for f in fields(Message))  # from_row runs once per operation
_STATES: Mapping[Any, State] = State._value2member_map_  # type: ignore[assignment]
_MESSAGE_DEFAULTS = {f.name: f.default for f in fields(Message) if f.default is not MISSING}


@dataclass(frozen=True)
class TimelineEntry:
    seq: int
    at: datetime
    event: str
    from_state: str | None
    to_state: str
    reason: str
    actor: str


@dataclass(frozen=True)
class SeenRecord:
    """ebMS duplicate elimination: what we answered the first time, to answer a duplicate byte for byte."""

    message_id: str
    digest: str
    response: bytes
    created_at: datetime


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    at: datetime
    actor: str
    action: str
    target: str | None
    detail: str | None


@dataclass(frozen=True)
class Step:
    """One lifecycle event of several that `Store.advance` applies to a message in one commit.

    `claim`: the event is CLAIM under a lease of this length, held by the advancing actor (the relay
    delivers a message it has just validated without a second commit and a trip through claim_due).
    `artifacts`: derived blobs (kind -> bytes) written in the same commit, replacing ones of that kind.
    """

    event: Event | str
    reason: str = ""
    updates: Mapping[str, Any] | None = None
    error: ErrorInfo | None = None
    claim: timedelta | None = None
    artifacts: Mapping[str, bytes] | None = None


@dataclass(frozen=True)
class Swept:
    message: Message
    events: list[Event] = field(default_factory=list)


# --- ids and time ----------------------------------------------------------------------------------

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_ids() -> tuple[str, str]:
    """A time-ordered UUID (version 7 layout) and a short id from 50 of its random bits."""
    ms = time.time_ns() // 1_000_000
    rand = secrets.randbits(74)
    value = ((ms & ((1 << 48) - 1)) << 80) | (0x7 << 76) | ((rand >> 62) << 64) | (0b10 << 62)
    value |= rand & ((1 << 62) - 1)
    r50 = rand & ((1 << 50) - 1)
    short = "".join(_CROCKFORD[(r50 >> (5 * i)) & 31] for i in reversed(range(10)))
    return str(uuid.UUID(int=value)), short


def utcnow() -> datetime:
    return datetime.now(UTC)


def aware(dt: datetime | None, what: str = "time") -> datetime | None:
    if dt is None:
        return None
    if dt.tzinfo is None:
        raise ValueError(f"{what} must carry a time zone: {dt!r}")
    return dt.astimezone(UTC)


def _her(v: object) -> str | None:
    return None if v is None else str(v)


# --- schema ----------------------------------------------------------------------------------------

# {ts} time, {blob} bytes, {serial} auto-increment primary key: filled in per dialect.
MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE messages (
            id TEXT PRIMARY KEY,
            short_id TEXT NOT NULL UNIQUE,
            direction TEXT, channel TEXT,
            ebxml_message_id TEXT, out_message_id TEXT, conversation_id TEXT, cpa_id TEXT,
            service TEXT, action TEXT,
            kith_msg_id TEXT, msg_type TEXT, family TEXT, version TEXT, gen_date {ts},
            sender_her TEXT, receiver_her TEXT,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_retries INTEGER NOT NULL,
            retry_interval_s INTEGER NOT NULL,
            next_attempt_at {ts}, lease_owner TEXT, lease_until {ts},
            expires_at {ts}, apprec_due_at {ts}, apprec_status TEXT,
            last_error_code TEXT, last_error_text TEXT, last_error_permanent INTEGER,
            parent_id TEXT,
            size INTEGER NOT NULL, sha256 TEXT NOT NULL,
            created_at {ts} NOT NULL, updated_at {ts} NOT NULL
        )""",
        "CREATE INDEX messages_due ON messages (state, next_attempt_at)",
        "CREATE INDEX messages_ebxml ON messages (ebxml_message_id)",
        "CREATE INDEX messages_out ON messages (out_message_id)",
        "CREATE INDEX messages_kith ON messages (kith_msg_id)",
        "CREATE INDEX messages_receiver ON messages (receiver_her, created_at)",
        "CREATE INDEX messages_sender ON messages (sender_her, created_at)",
        "CREATE INDEX messages_created ON messages (created_at)",
        "CREATE INDEX messages_parent ON messages (parent_id)",
        """CREATE TABLE blobs (
            message_id TEXT NOT NULL REFERENCES messages (id),
            kind TEXT NOT NULL,
            data {blob} NOT NULL,
            sha256 TEXT NOT NULL,
            created_at {ts} NOT NULL,
            PRIMARY KEY (message_id, kind)
        )""",
        """CREATE TABLE events (
            seq {serial},
            message_id TEXT NOT NULL REFERENCES messages (id),
            at {ts} NOT NULL,
            event TEXT NOT NULL,
            from_state TEXT,
            to_state TEXT NOT NULL,
            reason TEXT NOT NULL DEFAULT '',
            actor TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX events_message ON events (message_id, seq)",
        """CREATE TABLE seen (
            message_id TEXT PRIMARY KEY,
            digest TEXT NOT NULL,
            response {blob} NOT NULL,
            created_at {ts} NOT NULL
        )""",
        """CREATE TABLE audit (
            seq {serial},
            at {ts} NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            target TEXT,
            detail TEXT
        )""",
    ],
    # issue 12: a KITH MsgId is unique per sender; the first accepted message with it owns it. The
    # primary key is the lookup (sender, MsgId); sha256 is of the KITH document (the payload of an
    # ebXML envelope), so an identical copy is told from a reuse without reading blobs.
    2: [
        """CREATE TABLE kith_ids (
            sender_her TEXT NOT NULL,
            kith_msg_id TEXT NOT NULL,
            message_id TEXT NOT NULL REFERENCES messages (id),
            sha256 TEXT NOT NULL,
            created_at {ts} NOT NULL,
            PRIMARY KEY (sender_her, kith_msg_id)
        )""",
        "CREATE INDEX kith_ids_message ON kith_ids (message_id)",
    ],
    # issue 17: smaller indexes on messages, each of them written for every relayed message.
    # - The other ids are NULL for most rows (an envelope's id only for network traffic, one direction
    #   each; parent_id only for an operator's resend): the NULL rows leave their indexes. `col = ?`
    #   implies `col IS NOT NULL`, so both planners use them for every lookup by these ids.
    # - The one index on state, (state, next_attempt_at) over every row, is split by state in two
    #   partial indexes that between them hold each row once: messages_due, the states claim_due,
    #   claim_received and sweep look in (a few in flight), and messages_state (state, created_at), the
    #   others (the million delivered and completed ones), for stats(), the operator's list by state and
    #   oldest() in the order they read. A state change still moves one entry of one index.
    # - sweep's AppRec deadline has a partial index: it read every awaiting_apprec row once a second.
    # Each WHERE is ORs of `state = '...'`, and every query that is to use one names its states the same
    # way (_state_in): SQLite proves `state = 'queued'` => `state = 'queued' OR ...` (and a query's OR
    # written as the index's), never `x = ?` or `x IN (...)` => `x IN (...)`. PostgreSQL proves either.
    3: [
        "DROP INDEX messages_ebxml",
        "DROP INDEX messages_out",
        "DROP INDEX messages_kith",
        "DROP INDEX messages_parent",
        "DROP INDEX messages_due",
        "CREATE INDEX messages_ebxml ON messages (ebxml_message_id) WHERE ebxml_message_id IS NOT NULL",
        "CREATE INDEX messages_out ON messages (out_message_id) WHERE out_message_id IS NOT NULL",
        "CREATE INDEX messages_kith ON messages (kith_msg_id) WHERE kith_msg_id IS NOT NULL",
        "CREATE INDEX messages_parent ON messages (parent_id) WHERE parent_id IS NOT NULL",
        "CREATE INDEX messages_due ON messages (state, next_attempt_at) WHERE {due_states}",
        "CREATE INDEX messages_state ON messages (state, created_at) WHERE {other_states}",
        "CREATE INDEX messages_apprec_due ON messages (state, apprec_due_at, created_at) "
        "WHERE state = 'awaiting_apprec'",
    ],
}
# The states of messages_due; every other state is in messages_state. A new State needs a migration
# that adds it to one of the two (tests/test_store_schema.py checks they cover State).
DUE_STATES = (State.RECEIVED, State.QUEUED, State.SENDING, State.AWAITING_ACK, State.RETRYING)
OTHER_STATES = tuple(s for s in State if s not in DUE_STATES)


def _state_in(states: Iterable[State | str]) -> str:
    """`(state = 'a' OR state = 'b')`, the states checked and in State's order: the form the partial
    indexes' WHERE has (the whole of one of them, or one branch per state)."""
    want = {State(s) for s in states}
    return "(" + (" OR ".join(f"state = '{s.value}'" for s in State if s in want) or "1 = 0") + ")"


_DUE_STATES_SQL = _state_in(DUE_STATES)
_OTHER_STATES_SQL = _state_in(OTHER_STATES)

# stats(): rows of (state, n), in one statement (one snapshot, so exact together). COMPLETED, the bulk of
# a store that has run a while (93% of bench_store_scale's 1M), is the total (state NULL) less the other
# states, each counted from its partial index without a look at the rest. A row whose state is no State
# would count as completed; only State values are written.
# SQLite: a lone `SELECT COUNT(*) FROM t` adds up an index's pages without reading its entries (EXPLAIN:
# the Count opcode), but not as a branch of a UNION ALL, so each count is a scalar subquery, each other
# state a COVERING INDEX search (1M: 6 ms; a GROUP BY over both partial indexes took 57 ms).
_STATS_DERIVED = State.COMPLETED
STATS_SUBQUERIES_SQL = " UNION ALL ".join(
    ["SELECT NULL AS state, (SELECT COUNT(*) FROM messages) AS n"]
    + [f"SELECT '{s.value}', (SELECT COUNT(*) FROM messages WHERE state = '{s.value}')"
       for s in State if s is not _STATS_DERIVED])
# PostgreSQL runs scalar subqueries one after another and a UNION ALL's branches at once (Parallel
# Append); `state IN (...)` is one index-only scan of messages_state where ORs are a BitmapOr that reads
# the heap. Index-only only for pages the visibility map says all-visible (VACUUM, autovacuum): 1M
# vacuumed 31 ms (GROUP BY over both indexes 43 ms); freshly loaded (no map) every count reads the heap
# whatever the shape: 105-120 ms (the GROUP BY 120-125).
STATS_BRANCHES_SQL = (
    "SELECT NULL AS state, COUNT(*) AS n FROM messages UNION ALL "
    f"SELECT state, COUNT(*) FROM messages WHERE {_DUE_STATES_SQL} GROUP BY state UNION ALL "
    "SELECT state, COUNT(*) FROM messages WHERE state IN ("
    + ", ".join(f"'{s.value}'" for s in OTHER_STATES if s is not _STATS_DERIVED) + ") GROUP BY state")

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS hub_schema (version INTEGER PRIMARY KEY, applied_at {ts} NOT NULL)"
)


def migrate(tx: Tx, types: Mapping[str, str], now: datetime) -> int:
    """Bring the schema to SCHEMA_VERSION; the caller holds the migration lock. Idempotent."""
    tx.execute(_VERSION_TABLE.format(**types))
    row = tx.one("SELECT MAX(version) AS v FROM hub_schema")
    have = (row or {}).get("v") or 0
    if have > SCHEMA_VERSION:
        raise StoreError(f"the store's schema version {have} is newer than this hub ({SCHEMA_VERSION})")
    for v in range(have + 1, SCHEMA_VERSION + 1):
        for stmt in MIGRATIONS[v]:
            tx.execute(stmt.format(**types, due_states=_DUE_STATES_SQL, other_states=_OTHER_STATES_SQL))
        tx.execute("INSERT INTO hub_schema (version, applied_at) VALUES (?, ?)", (v, now))
    return SCHEMA_VERSION


# --- the store -------------------------------------------------------------------------------------

_LEASED = frozenset({State.SENDING, State.RECEIVED})  # a delivery claim; an admission lease (processes)
# where an ebMS ack leads (and what may follow before a late mark_sent): nothing is left to wait for
_ACKNOWLEDGED = frozenset({State.DELIVERED, State.AWAITING_APPREC, State.APPREC_OVERDUE, State.COMPLETED})
_NO_DELIVERY_CLOCK = frozenset(State) - {State.QUEUED, State.RETRYING, State.AWAITING_ACK}
# Every OR branch starts with `state = constant` so each one is a search of messages_due (state, ...):
# the branch "(queued OR retrying) AND ..." nested one OR inside another and made SQLite scan the whole
# table, delivered and completed messages included, on every claim.
_DUE_SQL = """(
    (state = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= ?))
    OR (state = 'retrying' AND attempts < max_retries + 1
        AND (next_attempt_at IS NULL OR next_attempt_at <= ?))
    OR (state = 'awaiting_ack' AND attempts < max_retries + 1 AND next_attempt_at <= ?)
    OR (state = 'sending' AND attempts < max_retries + 1 AND lease_until <= ?)
) AND (expires_at IS NULL OR expires_at > ?)"""
# The same shape, so that every branch is a search of a partial index (messages_due, messages_apprec_due):
# `state IN (...)` implies neither index's WHERE for SQLite.
_TIMEOUT_SQL = """(
    (state = 'queued' AND expires_at <= ?)
    OR (state = 'retrying' AND (expires_at <= ? OR attempts >= max_retries + 1))
    OR (state = 'awaiting_ack'
        AND (expires_at <= ? OR (next_attempt_at <= ? AND attempts >= max_retries + 1)))
    OR (state = 'sending' AND lease_until <= ?)
    OR (state = 'awaiting_apprec' AND apprec_due_at <= ?)
)"""
_TIMEOUT_PARAMS = _TIMEOUT_SQL.count("?")


class Store(ABC):
    """One API over SQLite and PostgreSQL. Every `now` parameter defaults to the current UTC time."""

    lock_clause: str = ""  # " FOR UPDATE" where the database has row locks
    skip_locked_clause: str = ""
    # Who admits (checks and routes) a message born `received`, when several processes share the store
    # (hub.relay.processes): called with the storing actor, gives (node, lease) to write with the message
    # in its INSERT, or None to leave it for any process's `claim_received`. None: nobody holds it.
    birth_lease: Callable[[str], tuple[str, timedelta] | None] | None = None
    # PostgreSQL: a new message's short id is not checked with a wait for its INSERT's count: a clash
    # (50 random bits) fails the transaction at its commit and the backend runs it again with new ids
    short_id_clash_fails: bool = False
    # statements sent together cost one wait (PostgreSQL's pipeline): an advance with a MsgId sends the
    # MsgId's claim with the row lock's read. SQLite keeps the plain order (its writer's row copy answers
    # that read, and a write naming the messages table would make it forget its rows)
    pipelined: bool = False
    # stats()'s statement: a count per state as the database counts fastest (see STATS_SUBQUERIES_SQL)
    stats_sql: str = STATS_SUBQUERIES_SQL
    # SQL statements run through a Tx (reads and writes), for benchmarks: per message it is the cost the
    # store adds to the relay. Counted without a lock: a rare lost increment under contention is fine.
    statements: int = 0
    # the waits for a database server's answer (PostgreSQL: round trips; SQLite: none), likewise
    round_trips: int = 0

    # backend ---------------------------------------------------------------------------------------
    def observe_commits(self, fn: Callable[[float], None]) -> None:
        """Call `fn` with the seconds each commit takes (transaction and fsync; hub.metrics)."""
        self.__dict__.setdefault("_commit_observers", []).append(fn)

    def _committed(self, seconds: float) -> None:
        for fn in self.__dict__.get("_commit_observers", ()):
            try:
                fn(seconds)
            except Exception:  # noqa: BLE001 - an observer never fails a commit
                pass

    def oldest(self, states: Iterable[str]) -> datetime | None:
        """When the oldest message in one of `states` was created (None: there is none)."""
        row = self._read(lambda tx: tx.one(
            f"SELECT created_at FROM messages WHERE {_state_in(states)} ORDER BY created_at LIMIT 1"))
        return None if row is None else row["created_at"]

    @abstractmethod
    def _write(self, fn: Callable[[Tx], T]) -> T:
        """Run `fn` in a write transaction; return once that transaction has committed."""

    @abstractmethod
    async def _write_async(self, fn: Callable[[Tx], T]) -> T: ...

    @abstractmethod
    def _read(self, fn: Callable[[Tx], T]) -> T: ...

    def _read_one(self, sql: str, params: Sequence[Any]) -> Row | None:
        """One SELECT on its own. A lone statement reads one snapshot, so backends may run it without
        BEGIN/COMMIT (SQLite: two statements fewer; PostgreSQL: one round trip instead of three)."""
        return self._read(lambda tx: tx.one(sql, params))

    def _read_all(self, sql: str, params: Sequence[Any]) -> list[Row]:
        """One SELECT on its own, all its rows (see _read_one)."""
        return self._read(lambda tx: tx.all(sql, params))

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # intake ----------------------------------------------------------------------------------------
    def put_received(
        self,
        original: bytes,
        meta: MessageMeta | None = None,
        *,
        actor: str = "",
        reason: str = "",
        now: datetime | None = None,
        seen: tuple[str, str, bytes] | None = None,
    ) -> Message:
        """Store bytes exactly as received (state `received`); returns once durable.

        `seen` = (ebXML MessageId, digest, signal bytes) records duplicate elimination in the same commit.
        """
        return self._write(self._op_insert(original, meta, Event.ACCEPT, actor, reason, now, None, seen))

    async def aput_received(
        self,
        original: bytes,
        meta: MessageMeta | None = None,
        *,
        actor: str = "",
        reason: str = "",
        now: datetime | None = None,
        seen: tuple[str, str, bytes] | None = None,
    ) -> Message:
        op = self._op_insert(original, meta, Event.ACCEPT, actor, reason, now, None, seen)
        return await self._write_async(op)

    def put_generated(
        self, data: bytes, meta: MessageMeta | None = None, *, actor: str = "", reason: str = "",
        now: datetime | None = None,
    ) -> Message:
        """Store a message the hub composed itself (e.g. an AppRec it answers with), born `queued`."""
        return self._write(self._op_insert(data, meta, Event.GENERATE, actor, reason, now, None, None))

    def resend(self, ref: str, *, actor: str, reason: str = "", now: datetime | None = None) -> Message:
        """Operator resend: a new message (parent_id = the original, same bytes and meta), born `queued`."""

        def op(tx: Tx) -> Message:
            parent = self._locked(tx, ref)
            original = tx.one(
                "SELECT data FROM blobs WHERE message_id = ? AND kind = ?", (parent["id"], ORIGINAL)
            )
            assert original is not None
            fields = {k: parent[k] for k in META_FIELDS if k != "out_message_id"}
            if parent["out_message_id"] or parent["direction"] == "out":
                # the copy is a new ebXML message: its own MessageId, fixed before its first attempt as
                # validation fixes the original's (the peer's duplicate elimination would drop a reused one)
                fields["out_message_id"] = str(uuid.uuid4())
            meta = MessageMeta(**fields)
            t = aware(now) or utcnow()
            child = self._op_insert(bytes(original["data"]), meta, Event.RESEND, actor,
                                    reason or f"resend of {parent['short_id']}", t, parent["id"], None)(tx)
            # IllegalTransition here (a state that may not be resent) rolls the child back too
            self._apply(tx, parent, Event.RESENT, now=t, actor=actor,
                        reason=f"resent as {child.short_id}" + (f": {reason}" if reason else ""))
            return child

        return self._write(op)

    def _op_insert(
        self,
        data: bytes,
        meta: MessageMeta | None,
        event: Event,
        actor: str,
        reason: str,
        now: datetime | None,
        parent_id: str | None,
        seen: tuple[str, str, bytes] | None,
    ) -> Callable[[Tx], Message]:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("message content must be bytes, exactly as received")
        data = bytes(data)
        m = meta or MessageMeta()
        t = aware(now) or utcnow()
        state = lifecycle.birth_state(event)
        policy = RetryPolicy.from_cpa(
            m.max_retries, None if m.retry_interval_s is None else timedelta(seconds=m.retry_interval_s)
        )
        digest = hashlib.sha256(data).hexdigest()
        gen = aware(m.gen_date, "gen_date")
        due = aware(m.apprec_due_at, "apprec_due_at") or (gen + APPREC_LIMIT if gen else None)
        cols: dict[str, Any] = {k: getattr(m, k) for k in META_FIELDS}
        cols.update(
            gen_date=gen, apprec_due_at=due, expires_at=aware(m.expires_at, "expires_at"),
            sender_her=_her(m.sender_her), receiver_her=_her(m.receiver_her),
            max_retries=policy.retries, retry_interval_s=int(policy.interval.total_seconds()),
            state=state.value, attempts=0, size=len(data), sha256=digest, parent_id=parent_id,
            created_at=t, updated_at=t,
        )

        if state is State.RECEIVED and self.birth_lease is not None:
            held = self.birth_lease(actor)
            if held is not None:
                cols.update(lease_owner=held[0], lease_until=t + held[1])

        names = ["id", "short_id", *cols]
        insert = f"INSERT INTO messages ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"

        def op(tx: Tx) -> Message:
            while True:
                mid, short = new_ids()
                row = {"id": mid, "short_id": short, **cols}
                if self.short_id_clash_fails:
                    tx.write(insert, [row[n] for n in names])
                    break
                # a short id taken already (50 random bits: rare) inserts nothing; draw again
                if tx.execute(insert + " ON CONFLICT (short_id) DO NOTHING", [row[n] for n in names]) == 1:
                    break
            tx.write(_BLOB_INSERT, (mid, ORIGINAL, data, digest, t))
            self._event(tx, mid, t, event, None, state, reason, actor)
            if seen is not None:  # the first record wins; nobody reads this one back here
                tx.write(_SEEN_INSERT, (seen[0], seen[1], bytes(seen[2]), t))
            return Message.from_row(row)

        return op

    # lifecycle -------------------------------------------------------------------------------------
    def transition(
        self,
        ref: str,
        event: Event | str,
        *,
        reason: str = "",
        actor: str = "",
        now: datetime | None = None,
        updates: Mapping[str, Any] | None = None,
        error: ErrorInfo | None = None,
        lease_owner: str | None = None,
    ) -> Message:
        """Apply one lifecycle event (raises IllegalTransition, NotFound, LeaseLost).

        `updates` may set meta fields, next_attempt_at and apprec_status in the same commit.
        `lease_owner`: the node that claimed the message; refused if it no longer holds the claim.
        """
        return self._write(self._op_transition(ref, event, reason, actor, now, updates, error, lease_owner))

    async def atransition(
        self,
        ref: str,
        event: Event | str,
        *,
        reason: str = "",
        actor: str = "",
        now: datetime | None = None,
        updates: Mapping[str, Any] | None = None,
        error: ErrorInfo | None = None,
        lease_owner: str | None = None,
    ) -> Message:
        op = self._op_transition(ref, event, reason, actor, now, updates, error, lease_owner)
        return await self._write_async(op)

    def _op_transition(
        self,
        ref: str,
        event: Event | str,
        reason: str,
        actor: str,
        now: datetime | None,
        updates: Mapping[str, Any] | None,
        error: ErrorInfo | None,
        lease_owner: str | None,
    ) -> Callable[[Tx], Message]:
        bad = set(updates or {}) - TRANSITION_FIELDS
        if bad:
            raise ValueError(f"a transition cannot set {sorted(bad)}")
        t = aware(now) or utcnow()

        def op(tx: Tx) -> Message:
            row = self._locked(tx, ref)
            if lease_owner is not None:
                _check_lease(row, lease_owner)
            ch = dict(updates or {})
            if error is not None:
                ch.update(last_error_code=error.code, last_error_text=error.text,
                          last_error_permanent=int(error.permanent))
            return self._apply(tx, row, event, now=t, reason=reason, actor=actor, changes=ch)

        return op

    def advance(
        self, ref: str, steps: Sequence[Step], *, actor: str = "", now: datetime | None = None,
        lease_owner: str | None = None, seen: tuple[str, str, bytes] | None = None,
        msg_id: tuple[str, str, str] | None = None,
    ) -> list[Message]:
        """Apply `steps` to one message in order, in ONE commit: all of them or none (raises like
        `transition`). Returns the message after each step. A relay's message passes validated ->
        claimed and delivered -> awaiting its AppRec this way: one fsync per pair instead of two.
        `seen`: a `seen_put` (message_id, digest, response) made in the same commit.
        `msg_id`: (sender, KITH MsgId, sha256 of the KITH document) becomes this message's in the same
        commit; MsgIdTaken (nothing written) when another message owns it already."""
        return self._write(self._op_steps(ref, steps, actor, now, lease_owner, seen, msg_id))

    def advance_answered(
        self, ref: str, steps: Sequence[Step], *, seen: tuple[str, str, bytes], actor: str = "",
        now: datetime | None = None, lease_owner: str | None = None,
        msg_id: tuple[str, str, str] | None = None,
    ) -> tuple[list[Message], SeenRecord]:
        """`advance` with its `seen` record, and that record as the commit left it (the first written
        wins: an earlier one is returned, not `seen`): the caller need not read it back."""
        kept: list[Callable[[], list[Row]]] = []
        out = self._write(self._op_steps(ref, steps, actor, now, lease_owner, seen, msg_id, kept))
        rows = kept[-1]()  # the inserted record; none: one was there before, and it is the answer
        rec = _seen(rows[0]) if rows else self.seen_get(seen[0])
        assert rec is not None
        return out, rec

    def advance_many(
        self, items: Sequence[tuple[str, Sequence[Step]]], *, actor: str = "", now: datetime | None = None,
        lease_owner: str | None = None,
    ) -> list[list[Message] | Exception]:
        """`advance` for several messages whose writes share commits: each message's steps apply all or
        none, and a message that fails gets its exception in its place while the others commit."""
        return self._write_many([self._op_steps(ref, steps, actor, now, lease_owner) for ref, steps in items])

    def _write_many(self, ops: Sequence[Callable[[Tx], T]]) -> list[T | Exception]:
        """Backends that can queue writes (SQLite's writer) let them share one commit; default: in turn."""
        out: list[T | Exception] = []
        for op in ops:
            try:
                out.append(self._write(op))
            except Exception as exc:  # noqa: BLE001 - returned to the caller in the message's place
                out.append(exc)
        return out

    def _op_steps(self, ref: str, steps: Sequence[Step], actor: str, now: datetime | None,
                  lease_owner: str | None, seen: tuple[str, str, bytes] | None = None,
                  msg_id: tuple[str, str, str] | None = None,
                  kept: list[Callable[[], list[Row]]] | None = None,
                  ) -> Callable[[Tx], list[Message]]:
        for st in steps:
            bad = set(st.updates or {}) - TRANSITION_FIELDS
            if bad:
                raise ValueError(f"a transition cannot set {sorted(bad)}")
            if ORIGINAL in (st.artifacts or {}):
                raise ValueError("the original bytes are written once, at intake")
        t = aware(now) or utcnow()
        # the artefacts' bytes and digests made here, in the caller's thread, not in SQLite's one writer
        hashed = [None if not st.artifacts else
                  {k: (bytes(v), hashlib.sha256(v).hexdigest()) for k, v in st.artifacts.items()}
                  for st in steps]

        def op(tx: Tx) -> list[Message]:
            if msg_id is None or not self.pipelined:
                row = self._locked(tx, ref)
            else:
                # the MsgId claimed with the row's lock: one wait for both. By `ref` as the full id (the
                # relay's case); when nothing was inserted (taken, or `ref` is another id) _own_msg_id
                # below decides the usual way
                lock = tx.later(f"SELECT * FROM messages WHERE id = ?{self.lock_clause}", (ref,))
                claimed = tx.later(_KITH_CLAIM, (msg_id[0], msg_id[1], msg_id[2], t, ref))
                rows = lock()
                row = rows[0] if rows else self._locked(tx, ref)
            if lease_owner is not None:
                _check_lease(row, lease_owner)
            if msg_id is not None and not (self.pipelined and row["id"] == ref and claimed()):
                _own_msg_id(tx, row["id"], msg_id, t)  # first: a refusal must come before any write
            out: list[Message] = []
            # the steps' row changes and events are written together after the loop: 2 statements in all
            pending: list[tuple[dict[str, Any], tuple[Any, ...]]] = []
            arts: dict[str, tuple[bytes, str]] = {}
            for st, st_arts in zip(steps, hashed, strict=True):
                ch: dict[str, Any] = dict(st.updates or {})
                if st.error is not None:
                    ch.update(last_error_code=st.error.code, last_error_text=st.error.text,
                              last_error_permanent=int(st.error.permanent))
                reason = st.reason
                if st.claim is not None:
                    if row["expires_at"] is not None and row["expires_at"] <= t:
                        break  # past its TimeToLive: left for the sweep to expire, not claimed
                    ch.update(attempts=row["attempts"] + 1, lease_owner=actor, lease_until=t + st.claim)
                    reason = reason or f"attempt {row['attempts'] + 1} of {row['max_retries'] + 1}"
                m = self._apply(tx, row, st.event, now=t, reason=reason, actor=actor, changes=ch,
                                pending=pending)
                if st_arts:
                    arts.update(st_arts)
                out.append(m)
                row = _as_row(m)
            self._write_pending(tx, row["id"], pending)
            if arts:
                # one statement for all of them: a retry's prepared envelope replaces the one stored before
                tx.write(_BLOB_INSERT_INTO + ", ".join([_BLOB_VALUES] * len(arts)) + _BLOB_ON_CONFLICT,
                         [v for kind, (data, digest) in arts.items()
                          for v in (row["id"], kind, data, digest, t)])
            if seen is not None and kept is None:
                tx.write(_SEEN_INSERT, (seen[0], seen[1], bytes(seen[2]), t))
            elif seen is not None and kept is not None:
                # read with the commit's wait; a retried transaction appends again: the last one counts
                kept.append(tx.later(_SEEN_INSERT + " RETURNING *", (seen[0], seen[1], bytes(seen[2]), t)))
            return out

        return op

    def record_failure(
        self,
        ref: str,
        error: ErrorInfo,
        *,
        actor: str = "",
        now: datetime | None = None,
        lease_owner: str | None = None,
    ) -> Message:
        """A failed delivery attempt: the retry ladder (lifecycle.on_failure) picks the event."""
        t = aware(now) or utcnow()

        def op(tx: Tx) -> Message:
            row = self._locked(tx, ref)
            if lease_owner is not None:
                _check_lease(row, lease_owner)
            m = Message.from_row(row)
            d = lifecycle.on_failure(m.attempts, permanent=error.permanent, policy=m.policy, now=t,
                                     expires_at=m.expires_at)
            ch = {"next_attempt_at": d.next_attempt_at, "last_error_code": error.code,
                  "last_error_text": error.text, "last_error_permanent": int(error.permanent)}
            return self._apply(tx, row, d.event, now=t, reason=f"{error.code}: {error.text}; {d.reason}",
                               actor=actor, changes=ch)

        return self._write(op)

    def mark_sent(
        self, ref: str, *, node: str, now: datetime | None = None, out_message_id: str | None = None
    ) -> Message:
        """Transmitted: wait for the ebMS ack until now + RetryInterval (then the ladder resends).

        The peer's Acknowledgment may have been applied already (it came to the listener while the
        sending thread waited for its turn): the message is returned as it stands, not LeaseLost."""
        t = aware(now) or utcnow()

        def op(tx: Tx) -> Message:
            row = self._locked(tx, ref)
            if row["state"] in _ACKNOWLEDGED and out_message_id in (None, row["out_message_id"]):
                return Message.from_row(row)
            _check_lease(row, node)
            m = Message.from_row(row)
            ch: dict[str, Any] = {"next_attempt_at": lifecycle.ack_deadline(t, m.policy)}
            if out_message_id is not None:
                ch["out_message_id"] = out_message_id
            return self._apply(tx, row, Event.SENT, now=t, reason=f"attempt {m.attempts}", actor=node,
                               changes=ch)

        return self._write(op)

    def claim_due(
        self, node: str, limit: int, now: datetime | None = None, lease: timedelta = DEFAULT_LEASE
    ) -> list[Message]:
        """Move up to `limit` due messages to `sending` under a lease held by `node`.

        Due: queued, retrying whose time has come, awaiting_ack past its ack deadline, sending whose
        lease expired (its node crashed). Concurrent callers never get the same message.
        """
        t = aware(now) or utcnow()
        # a look first, outside any write: the worker polls (worker.poll_s) and mostly finds nothing due;
        # an empty claim took a write transaction (SQLite: the writer thread's lock, between real writes)
        if self._read_one(f"SELECT id FROM messages WHERE {_DUE_SQL} LIMIT 1", (t, t, t, t, t)) is None:
            return []

        def op(tx: Tx) -> list[Message]:
            rows = tx.all(
                f"SELECT * FROM messages WHERE {_DUE_SQL} "
                "ORDER BY COALESCE(next_attempt_at, created_at), created_at "
                f"LIMIT ?{self.skip_locked_clause}",
                (t, t, t, t, t, limit),
            )
            out = []
            for row in rows:
                evs = lifecycle.claim_events(
                    row["state"], now=t, attempts=row["attempts"], max_attempts=row["max_retries"] + 1,
                    next_attempt_at=row["next_attempt_at"], lease_until=row["lease_until"],
                    expires_at=row["expires_at"],
                )
                if not evs:
                    continue
                for ev in evs:
                    if ev is Event.CLAIM:
                        ch = {"attempts": row["attempts"] + 1, "lease_owner": node, "lease_until": t + lease}
                        why = f"attempt {row['attempts'] + 1} of {row['max_retries'] + 1}"
                    else:
                        ch, why = {}, _why(ev, row)
                    m = self._apply(tx, row, ev, now=t, reason=why, actor=node, changes=ch)
                    row = _as_row(m)
                out.append(m)
            return out

        return self._write(op)

    def claim_received(
        self, node: str, limit: int, *, lease: timedelta = DEFAULT_LEASE, now: datetime | None = None,
        own: bool = False,
    ) -> list[Message]:
        """Take up to `limit` `received` messages to admit under an admission lease held by `node`: the
        ones nobody holds and those whose holder's lease ran out (it crashed); `own`: also those `node`
        held before (it restarted). Not a state change: the message stays `received`, and the commit
        that records the verdict ends the lease. Concurrent callers never get the same message."""
        t = aware(now) or utcnow()
        where = "state = 'received' AND (lease_until IS NULL OR lease_until <= ?" + \
            (" OR lease_owner = ?)" if own else ")")
        params: list[Any] = [t, node] if own else [t]
        # a look first, outside any write: an idle process polling costs one read, not a write transaction
        if self._read_one(f"SELECT id FROM messages WHERE {where} LIMIT 1", params) is None:
            return []

        def op(tx: Tx) -> list[Message]:
            rows = tx.all(f"SELECT * FROM messages WHERE {where} ORDER BY created_at "
                          f"LIMIT ?{self.skip_locked_clause}", [*params, limit])
            if not rows:
                return []
            until = t + lease
            tx.write(f"UPDATE messages SET lease_owner = ?, lease_until = ? WHERE id IN "
                       f"({', '.join('?' * len(rows))})", [node, until, *(r["id"] for r in rows)])
            return [Message.from_row({**r, "lease_owner": node, "lease_until": until}) for r in rows]

        return self._write(op)

    def hold_received(self, ref: str, *, node: str, until: datetime) -> bool:
        """Keep holding a `received` message `node` holds until `until` (its check was deferred); False
        when it is no longer `node`'s to admit."""

        def op(tx: Tx) -> bool:
            return tx.execute("UPDATE messages SET lease_until = ? WHERE id = ? AND state = 'received' "
                              "AND lease_owner = ?", (until, ref, node)) == 1

        return self._write(op)

    def renew_lease(self, ref: str, *, node: str, lease: timedelta = DEFAULT_LEASE,
                    now: datetime | None = None) -> Message:
        t = aware(now) or utcnow()

        def op(tx: Tx) -> Message:
            row = self._locked(tx, ref)
            _check_lease(row, node)
            tx.write("UPDATE messages SET lease_until = ? WHERE id = ?", (t + lease, row["id"]))
            return Message.from_row({**row, "lease_until": t + lease})

        return self._write(op)

    def sweep(self, now: datetime | None = None, limit: int = 500, actor: str = "sweeper") -> list[Swept]:
        """Apply what time alone decides: TimeToLive, exhausted retries, expired leases, overdue AppRecs.

        Returns each changed message with its events, once (so the relay tells the sender once).
        """
        t = aware(now) or utcnow()
        look = f"SELECT id FROM messages WHERE {_TIMEOUT_SQL} LIMIT 1"
        if self._read_one(look, (t,) * _TIMEOUT_PARAMS) is None:
            return []  # a look first, as claim_due's: the worker sweeps every second

        def op(tx: Tx) -> list[Swept]:
            rows = tx.all(
                f"SELECT * FROM messages WHERE {_TIMEOUT_SQL} "
                f"ORDER BY updated_at LIMIT ?{self.skip_locked_clause}",
                (*(t,) * _TIMEOUT_PARAMS, limit),
            )
            out = []
            for row in rows:
                evs = lifecycle.timeout_events(
                    row["state"], now=t, attempts=row["attempts"], max_attempts=row["max_retries"] + 1,
                    next_attempt_at=row["next_attempt_at"], lease_until=row["lease_until"],
                    expires_at=row["expires_at"], apprec_due_at=row["apprec_due_at"],
                )
                if not evs:
                    continue
                for ev in evs:
                    m = self._apply(tx, row, ev, now=t, reason=_why(ev, row), actor=actor)
                    row = _as_row(m)
                out.append(Swept(m, evs))
            return out

        return self._write(op)

    def update_meta(self, ref: str, **changes: Any) -> Message:  # noqa: ANN401 - column values
        """Fill in what the relay learned after intake (ids, parties, TTL, policy). Never the state."""
        bad = set(changes) - set(META_FIELDS)
        if bad:
            raise ValueError(f"not a meta field: {sorted(bad)}")
        ch = _clean_meta(changes)
        if "max_retries" in ch or "retry_interval_s" in ch:  # None means "the HIS 1037 default"
            iv = ch.get("retry_interval_s")
            p = RetryPolicy.from_cpa(ch.get("max_retries"), None if iv is None else timedelta(seconds=iv))
            if "max_retries" in ch:
                ch["max_retries"] = p.retries
            if "retry_interval_s" in ch:
                ch["retry_interval_s"] = int(p.interval.total_seconds())

        def op(tx: Tx) -> Message:
            row = self._locked(tx, ref)
            c = dict(ch)
            if c.get("gen_date") and "apprec_due_at" not in c and row["apprec_due_at"] is None:
                c["apprec_due_at"] = c["gen_date"] + APPREC_LIMIT
            c["updated_at"] = utcnow()
            self._update(tx, row["id"], c)
            return Message.from_row({**row, **c})

        return self._write(op)

    # internals shared by the operations ------------------------------------------------------------
    def _locked(self, tx: Tx, ref: str) -> Row:
        row = tx.one(f"SELECT * FROM messages WHERE id = ?{self.lock_clause}", (ref,))
        if row is None:
            found = _find(tx, ref)
            if found is None:
                raise NotFound(ref)
            row = tx.one(f"SELECT * FROM messages WHERE id = ?{self.lock_clause}", (found["id"],))
            assert row is not None
        return row

    def _apply(
        self,
        tx: Tx,
        row: Row,
        event: Event | str,
        *,
        now: datetime,
        reason: str,
        actor: str,
        changes: Mapping[str, Any] | None = None,
        pending: list[tuple[dict[str, Any], tuple[Any, ...]]] | None = None,
    ) -> Message:
        """The one place a state changes. `pending`: the row's changes and the event are added to it, for
        the caller to write with those of the message's other steps (`_write_pending`), not written."""
        try:
            new = lifecycle.next_state(row["state"], event)
        except IllegalTransition as exc:
            raise IllegalTransition(row["state"], event, row["short_id"]) from exc
        ev = event if type(event) is Event else Event(event)
        ch: dict[str, Any] = _clean_meta(changes or {})
        if row["state"] in _LEASED and new != row["state"] and "lease_owner" not in ch:
            ch.update(lease_owner=None, lease_until=None)  # a claim (or an admission lease) ends
        if ev is Event.RETRY_NOW:
            ch["next_attempt_at"] = now
        elif ev is Event.CLAIM or new in _NO_DELIVERY_CLOCK:
            ch["next_attempt_at"] = None
        ch.update(state=new.value, updated_at=now)
        if pending is None:
            self._update(tx, row["id"], ch)
            self._event(tx, row["id"], now, ev, row["state"], new, reason, actor)
        else:
            pending.append((ch, _event_row(row["id"], now, ev, row["state"], new, reason, actor)))
        return Message.from_row({**row, **ch})

    def _write_pending(self, tx: Tx, mid: str, pending: list[tuple[dict[str, Any], tuple[Any, ...]]]) -> None:
        """Several steps of one message: one UPDATE with their changes merged in order, one INSERT of
        their events (in order: the timeline's seq follows the VALUES)."""
        if not pending:
            return
        merged: dict[str, Any] = {}
        for ch, _ev in pending:
            merged.update(ch)
        self._update(tx, mid, merged)
        tx.write(f"{_EVENT_INSERT} {', '.join([_EVENT_VALUES] * len(pending))}",
                   [v for _ch, ev in pending for v in ev])

    @staticmethod
    def _update(tx: Tx, mid: str, ch: Mapping[str, Any]) -> None:
        names = tuple(ch)
        sql = _UPDATES.get(names)
        if sql is None:  # a few dozen column sets in all: each statement's text made once
            sql = f"UPDATE messages SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?"
            if len(_UPDATES) < 1024:
                _UPDATES[names] = sql
        tx.write(sql, [*ch.values(), mid])

    @staticmethod
    def _event(tx: Tx, mid: str, at: datetime, event: Event, frm: str | None, to: State,
               reason: str, actor: str) -> None:
        tx.write(f"{_EVENT_INSERT} {_EVENT_VALUES}", _event_row(mid, at, event, frm, to, reason, actor))

    # KITH MsgId uniqueness (per sender) ------------------------------------------------------------
    def msg_id_owner(self, sender: str | int, kith_msg_id: str) -> tuple[Message, str] | None:
        """The message that owns `sender`'s MsgId, with the sha256 of its KITH document (one indexed
        lookup: the primary key of kith_ids)."""
        r = self._read_one(
            "SELECT m.*, k.sha256 AS kith_sha256 FROM kith_ids k JOIN messages m ON m.id = k.message_id "
            "WHERE k.sender_her = ? AND k.kith_msg_id = ?", (str(sender), kith_msg_id))
        return None if r is None else (Message.from_row(r), r["kith_sha256"])

    def mark_duplicate(self, ref: str, original: str, *, reason: str, actor: str = "",
                       updates: Mapping[str, Any] | None = None, now: datetime | None = None
                       ) -> tuple[Message, Message]:
        """`ref` is an identical copy of `original`: the copy ends `duplicate`, and the original's
        timeline records it (`duplicate_received`, no state change), in one commit."""
        t = aware(now) or utcnow()
        bad = set(updates or {}) - TRANSITION_FIELDS
        if bad:
            raise ValueError(f"a transition cannot set {sorted(bad)}")

        def op(tx: Tx) -> tuple[Message, Message]:
            copy = self._locked(tx, ref)
            orig = self._locked(tx, original)
            c = self._apply(tx, copy, Event.DUPLICATE, now=t, actor=actor, changes=dict(updates or {}),
                            reason=f"{reason}; the original is {orig['short_id']}")
            o = self._apply(tx, orig, Event.DUPLICATE_RECEIVED, now=t, actor=actor,
                            reason=f"{reason}; the copy {copy['short_id']} was not delivered again")
            return c, o

        return self._write(op)

    # blobs -----------------------------------------------------------------------------------------
    def put_artifact(self, ref: str, kind: str, data: bytes, *, now: datetime | None = None) -> None:
        """A derived artefact (signed+encrypted package, received AppRec, ...); replaces one of that kind."""
        if kind == ORIGINAL:
            raise ValueError("the original bytes are written once, at intake")
        data = bytes(data)
        t = aware(now) or utcnow()

        def op(tx: Tx) -> None:
            mid = self._locked(tx, ref)["id"]
            tx.write("DELETE FROM blobs WHERE message_id = ? AND kind = ?", (mid, kind))
            tx.write(_BLOB_INSERT, (mid, kind, data, hashlib.sha256(data).hexdigest(), t))

        self._write(op)

    def blob(self, ref: str, kind: str = ORIGINAL) -> bytes | None:
        # the relay asks by full id: one statement; short ids, ebXML ids and absent blobs go the long way
        r = self._read_one(_BLOB_SQL, (ref, kind))
        if r is not None:
            return bytes(r["data"])

        def op(tx: Tx) -> bytes | None:
            m = _find(tx, ref)
            if m is None:
                raise NotFound(ref)
            r = tx.one(_BLOB_SQL, (m["id"], kind))
            return None if r is None else bytes(r["data"])

        return self._read(op)

    def blob_kinds(self, ref: str) -> list[str]:
        def op(tx: Tx) -> list[str]:
            m = _find(tx, ref)
            if m is None:
                raise NotFound(ref)
            return [r["kind"] for r in tx.all("SELECT kind FROM blobs WHERE message_id = ? ORDER BY kind",
                                              (m["id"],))]

        return self._read(op)

    # duplicate elimination -------------------------------------------------------------------------
    def seen_get(self, message_id: str) -> SeenRecord | None:
        r = self._read_one("SELECT * FROM seen WHERE message_id = ?", (message_id,))  # one statement
        return None if r is None else _seen(r)

    def seen_records(self, message_ids: Sequence[str]) -> dict[str, SeenRecord]:
        """The records of several keys at once (one statement, one snapshot), by key; absent: not seen."""
        rows = self._read_all(
            f"SELECT * FROM seen WHERE message_id IN ({', '.join('?' * len(message_ids))})", message_ids)
        return {r["message_id"]: _seen(r) for r in rows}

    def seen_put(
        self, message_id: str, digest: str, response: bytes, *, now: datetime | None = None
    ) -> SeenRecord:
        """Remember the signal answered to `message_id`; the first record wins and is returned."""
        t = aware(now) or utcnow()
        return self._write(lambda tx: self._seen_insert(tx, message_id, digest, bytes(response), t))

    async def aseen_put(self, message_id: str, digest: str, response: bytes,
                        *, now: datetime | None = None) -> SeenRecord:
        t = aware(now) or utcnow()
        data = bytes(response)
        return await self._write_async(lambda tx: self._seen_insert(tx, message_id, digest, data, t))

    @staticmethod
    def _seen_insert(tx: Tx, message_id: str, digest: str, response: bytes, t: datetime) -> SeenRecord:
        # the inserted row comes back with the INSERT; only a record there before is read (all():
        # the statement runs to its end before the commit)
        rows = tx.all(_SEEN_INSERT + " RETURNING *", (message_id, digest, response, t))
        r = rows[0] if rows else tx.one("SELECT * FROM seen WHERE message_id = ?", (message_id,))
        assert r is not None
        return _seen(r)

    def purge_seen(self, before: datetime) -> int:
        """Forget duplicate-elimination records older than the CPA's PersistDuration."""
        b = aware(before)
        return self._write(lambda tx: tx.execute("DELETE FROM seen WHERE created_at < ?", (b,)))

    # queries ---------------------------------------------------------------------------------------
    def get(self, ref: str) -> Message | None:
        """By full id, short id, ebXML MessageId (ours or theirs) or KITH MsgId; newest match wins."""
        r = self._read_one(_BY_ID_SQL, (ref, ref.lower()))
        if r is None:
            r = self._read_one(_BY_OTHER_ID_SQL, (ref, ref, ref))
        return None if r is None else Message.from_row(r)

    def by_out_message_id(self, message_id: str) -> Message | None:
        """The message we sent onwards as ebXML `message_id` (an ack's RefToMessageId): one indexed
        lookup, where get() first tries the id columns."""
        r = self._read_one("SELECT * FROM messages WHERE out_message_id = ?", (message_id,))
        return None if r is None else Message.from_row(r)

    def by_prefix(self, prefix: str, limit: int = 2) -> list[Message]:
        """Messages whose short id or full id starts with `prefix` (letters, digits, '-' only)."""
        if not prefix or not all(c.isascii() and (c.isalnum() or c == "-") for c in prefix):
            return []
        rows = self._read(lambda tx: tx.all(
            "SELECT * FROM messages WHERE short_id LIKE ? OR id LIKE ? ORDER BY created_at DESC LIMIT ?",
            (prefix.lower() + "%", prefix.lower() + "%", limit)))
        return [Message.from_row(r) for r in rows]

    def require(self, ref: str) -> Message:
        m = self.get(ref)
        if m is None:
            raise NotFound(ref)
        return m

    def find_by_kith_msg_id(self, kith_msg_id: str) -> list[Message]:
        """Every message with this MsgId, newest first (a resend shares its original's MsgId)."""
        rows = self._read(lambda tx: tx.all(
            "SELECT * FROM messages WHERE kith_msg_id = ? ORDER BY created_at DESC, id DESC", (kith_msg_id,)))
        return [Message.from_row(r) for r in rows]

    def timeline(self, ref: str) -> list[TimelineEntry]:
        def op(tx: Tx) -> list[TimelineEntry]:
            m = _find(tx, ref)
            if m is None:
                raise NotFound(ref)
            rows = tx.all("SELECT * FROM events WHERE message_id = ? ORDER BY seq", (m["id"],))
            return [TimelineEntry(r["seq"], r["at"], r["event"], r["from_state"], r["to_state"], r["reason"],
                                  r["actor"]) for r in rows]

        return self._read(op)

    def list_messages(
        self,
        *,
        state: str | Iterable[str] | None = None,
        receiver: str | int | None = None,
        sender: str | int | None = None,
        msg_type: str | None = None,
        since: datetime | None = None,
        limit: int = 100,
    ) -> list[Message]:
        """Newest first."""
        where, params = _filters(
            state=state, receiver=receiver, sender=sender, msg_type=msg_type, since=since
        )
        sql = f"SELECT * FROM messages{where} ORDER BY created_at DESC, id DESC LIMIT ?"
        return [Message.from_row(r) for r in self._read(lambda tx: tx.all(sql, [*params, limit]))]

    def overdue_apprecs(self, now: datetime | None = None, after: timedelta = APPREC_LIMIT) -> list[Message]:
        """Delivered messages still without an AppRec `after` their GenDate (creation time if unknown),
        and every message the relay has flagged `apprec_overdue` (so `stats` and this list agree)."""
        cutoff = (aware(now) or utcnow()) - after
        rows = self._read(lambda tx: tx.all(
            "SELECT * FROM messages WHERE state = 'apprec_overdue' OR (state = 'delivered' AND "
            "COALESCE(gen_date, created_at) <= ?) OR (state = 'awaiting_apprec' AND COALESCE(gen_date, "
            "created_at) <= ?) ORDER BY COALESCE(gen_date, created_at)", (cutoff, cutoff)))
        return [Message.from_row(r) for r in rows]

    def counts_before(self, before: datetime) -> dict[str, int]:
        """Messages per state last changed before `before` (what a purge would weigh)."""
        rows = self._read(lambda tx: tx.all(
            "SELECT state, COUNT(*) AS n FROM messages WHERE updated_at < ? GROUP BY state",
            (aware(before),)))
        return {r["state"]: int(r["n"]) for r in rows}

    def stats(self) -> dict[str, int]:
        """Messages per state; every state is present."""
        counts = {r["state"]: int(r["n"]) for r in self._read_all(self.stats_sql, ())}
        total = counts.pop(None)
        counts[_STATS_DERIVED.value] = total - sum(counts.values())
        return {s.value: counts.get(s.value, 0) for s in State}  # GROUP BY leaves out the empty ones

    def purge(self, before: datetime, *, actor: str, force: bool = False) -> int:
        """Delete final messages last changed before `before`, with blobs and timeline; audited.

        Never touches messages still in progress. Undelivered, failed, expired and overdue ones need a
        person's attention and are kept unless `force`.
        """
        b = aware(before)
        keep = set(State) - lifecycle.FINAL - {State.APPREC_OVERDUE}
        if not force:
            keep |= lifecycle.NEEDS_ATTENTION
        states = sorted(s.value for s in set(State) - keep)

        def op(tx: Tx) -> int:
            ids = [r["id"] for r in tx.all(
                f"SELECT id FROM messages WHERE {_state_in(states)} AND updated_at < ?", [b])]
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                qs = ", ".join("?" * len(chunk))
                for table, col in (("blobs", "message_id"), ("events", "message_id"),
                                   ("kith_ids", "message_id"), ("messages", "id")):
                    tx.execute(f"DELETE FROM {table} WHERE {col} IN ({qs})", chunk)
            _audit(tx, actor, "purge", None,
                   f"{len(ids)} messages last changed before {b.isoformat()}; states {','.join(states)}"
                   + ("; forced" if force else ""), utcnow())
            return len(ids)

        return self._write(op)

    # audit -----------------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str | None = None, detail: str | None = None,
              *, now: datetime | None = None) -> None:
        """Record who did what (e.g. revealed national ids of a message); durable on return."""
        t = aware(now) or utcnow()
        self._write(lambda tx: _audit(tx, actor, action, target, detail, t))

    def audit_log(self, *, limit: int = 100, since: datetime | None = None,
                  target: str | None = None) -> list[AuditEntry]:
        """Newest first."""
        where, params = [], []
        if since is not None:
            where.append("at >= ?")
            params.append(aware(since))
        if target is not None:
            where.append("target = ?")
            params.append(target)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        rows = self._read(lambda tx: tx.all(sql + " ORDER BY seq DESC LIMIT ?", [*params, limit]))
        return [
            AuditEntry(r["seq"], r["at"], r["actor"], r["action"], r["target"], r["detail"]) for r in rows
        ]


# --- helpers ---------------------------------------------------------------------------------------

def _check_lease(row: Row, node: str) -> None:
    if row["state"] != State.SENDING or row["lease_owner"] != node:
        raise LeaseLost(
            f"message {row['short_id']}: {node} no longer holds it "
            f"(state {row['state']}, lease holder {row['lease_owner']})"
        )


_BLOB_SQL = "SELECT data FROM blobs WHERE message_id = ? AND kind = ?"
_UPDATES: dict[tuple[str, ...], str] = {}  # Store._update's statements by the columns they set
_BLOB_INSERT = "INSERT INTO blobs (message_id, kind, data, sha256, created_at) VALUES (?, ?, ?, ?, ?)"
_SEEN_INSERT = ("INSERT INTO seen (message_id, digest, response, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (message_id) DO NOTHING")
_KITH_CLAIM = ("INSERT INTO kith_ids (sender_her, kith_msg_id, message_id, sha256, created_at) "
               "SELECT ?, ?, id, ?, ? FROM messages WHERE id = ? "
               "ON CONFLICT (sender_her, kith_msg_id) DO NOTHING RETURNING message_id")
_BLOB_INSERT_INTO = "INSERT INTO blobs (message_id, kind, data, sha256, created_at) VALUES "
_BLOB_VALUES = "(?, ?, ?, ?, ?)"
_BLOB_ON_CONFLICT = (" ON CONFLICT (message_id, kind) DO UPDATE SET data = excluded.data, "
                     "sha256 = excluded.sha256, created_at = excluded.created_at")
_EVENT_INSERT = "INSERT INTO events (message_id, at, event, from_state, to_state, reason, actor) VALUES"
_EVENT_VALUES = "(?, ?, ?, ?, ?, ?, ?)"


def _event_row(mid: str, at: datetime, event: Event, frm: str | None, to: State, reason: str,
               actor: str) -> tuple[Any, ...]:
    return (mid, at, event.value, None if frm is None else str(frm), to.value, reason or "", actor or "")
_BY_ID_SQL = "SELECT * FROM messages WHERE id = ? OR short_id = ?"
_BY_OTHER_ID_SQL = (
    "SELECT * FROM messages WHERE ebxml_message_id = ? OR out_message_id = ? OR kith_msg_id = ? "
    "ORDER BY created_at DESC, id DESC LIMIT 1"
)


def _own_msg_id(tx: Tx, mid: str, key: tuple[str, str, str], t: datetime) -> None:
    sender, kith_msg_id, digest = key
    # no SELECT first: the insert is the check (a concurrent owner on PostgreSQL is waited for)
    if tx.execute("INSERT INTO kith_ids (sender_her, kith_msg_id, message_id, sha256, created_at) "
                  "VALUES (?, ?, ?, ?, ?) ON CONFLICT (sender_her, kith_msg_id) DO NOTHING",
                  (sender, kith_msg_id, mid, digest, t)) == 1:
        return
    r = tx.one("SELECT message_id, sha256 FROM kith_ids WHERE sender_her = ? AND kith_msg_id = ?",
               (sender, kith_msg_id))
    if r is not None and r["message_id"] != mid:  # the same message again (admitted twice): its own
        raise MsgIdTaken(sender, kith_msg_id, r["message_id"], r["sha256"])


def _find(tx: Tx, ref: str) -> Row | None:
    r = tx.one(_BY_ID_SQL, (ref, ref.lower()))
    if r is not None:
        return r
    return tx.one(_BY_OTHER_ID_SQL, (ref, ref, ref))


def _filters(**f: Any) -> tuple[str, list[Any]]:  # noqa: ANN401
    where: list[str] = []
    params: list[Any] = []
    st = f.get("state")
    if st is not None:
        # _state_in takes each through State(): an unknown name is a usage error, not an empty answer
        where.append(_state_in([st] if isinstance(st, str) else st))
    for key, col in (("receiver", "receiver_her"), ("sender", "sender_her"), ("msg_type", "msg_type")):
        if f.get(key) is not None:
            where.append(f"{col} = ?")
            params.append(str(f[key]))
    if f.get("since") is not None:
        where.append("created_at >= ?")
        params.append(aware(f["since"]))
    return (" WHERE " + " AND ".join(where) if where else ""), params


def _clean_meta(ch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(ch)
    for k in ("sender_her", "receiver_her"):
        if k in out:
            out[k] = _her(out[k])
    for k, v in out.items():
        if isinstance(v, datetime):
            out[k] = aware(v, k)
    return out


def _as_row(m: Message) -> Row:
    r = dict(m.__dict__)  # a Message's fields, and only those (from_row and __init__ alike)
    r["state"] = m.state.value
    return r


def _why(ev: Event, row: Row) -> str:
    return {
        Event.RETRY_DUE: "no ebMS acknowledgment within RetryInterval",
        Event.LEASE_EXPIRED: f"lease of {row.get('lease_owner')} expired",
        Event.TTL_EXPIRED: "TimeToLive passed before delivery",
        Event.RETRIES_EXHAUSTED: f"{row['attempts']} attempts made, none acknowledged",
        Event.APPREC_TIMEOUT: "no AppRec within the time limit",
    }.get(ev, ev.value)


def _seen(r: Row) -> SeenRecord:
    return SeenRecord(r["message_id"], r["digest"], bytes(r["response"]), r["created_at"])


def _audit(tx: Tx, actor: str, action: str, target: str | None, detail: str | None, t: datetime) -> None:
    tx.write("INSERT INTO audit (at, actor, action, target, detail) VALUES (?, ?, ?, ?, ?)",
               (t, actor, action, target, detail))
