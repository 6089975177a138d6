"""Logging for the relay and the commands: stdlib logging, UTC timestamps, text or JSON lines.

Every state change of a message is logged by `log_state` (logger `hub.relay.state`): at INFO, and at
WARNING when a person may have to act (retrying, undelivered, failed, expired, apprec_overdue), so
that those show even without `-v`. Identity numbers are masked in every line (hub.privacy).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from hub.privacy import mask_text

STATE_LOGGER = "hub.relay.state"
WARNING_STATES = frozenset({"retrying", "undelivered", "failed", "expired", "apprec_overdue"})
# record attributes that log_state adds and the JSON format carries as fields
FIELDS = ("message_id", "short_id", "state", "event", "msg_type", "sender", "receiver", "attempts", "node")

_state_log = logging.getLogger(STATE_LOGGER)


class TextFormatter(logging.Formatter):
    """`2026-12-05T07:42:25.123Z WARNING hub.relay.state: ...`"""

    converter = time.gmtime

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _iso(record.created)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, and the message's fields when it has them."""

    def format(self, record: logging.LogRecord) -> str:
        d: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname, "logger": record.name,
                             "message": record.getMessage()}
        for k in FIELDS:
            v = getattr(record, k, None)
            if v is not None:
                d[k] = v
        if record.exc_info:
            d["exc"] = self.formatException(record.exc_info)
        return json.dumps(d, ensure_ascii=False, default=str)


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_handler: logging.Handler | None = None


def setup(level: str | int = "warning", fmt: str = "text", stream: IO[str] | None = None) -> logging.Handler:
    """The hub's log to `stream` (stderr) at `level`, as text or JSON lines; replaces an earlier setup."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    h = logging.StreamHandler(stream or sys.stderr)
    h.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(h)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # their INFO lines are per connection (psycopg.pool: per store operation), not per message
    for noisy in ("mail.log", "aiosmtpd", "asyncio", "psycopg.pool"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    _handler = h
    return h


def enabled(level: int) -> bool:
    return _state_log.isEnabledFor(level)


def log_state(what: str, m: Any, detail: str = "", node: str | None = None) -> None:  # noqa: ANN401
    """Log one step of a message (a hub.store.Message): WARNING for the states needing attention."""
    state = getattr(getattr(m, "state", None), "value", None) or str(getattr(m, "state", ""))
    level = logging.WARNING if what in WARNING_STATES or (what == state and state in WARNING_STATES) \
        else logging.INFO
    if not _state_log.isEnabledFor(level):
        return
    attempts = f" (attempt {m.attempts} of {m.max_retries + 1})" if what in ("retrying", "undelivered") \
        and getattr(m, "max_retries", None) is not None else ""
    text = mask_text(f"{m.short_id} {what}: {m.msg_type or '?'} {m.sender_her or '?'} -> "
                     f"{m.receiver_her or '?'}{attempts}" + (f": {detail}" if detail else ""))
    _state_log.log(level, "%s", text, extra={
        "message_id": m.id, "short_id": m.short_id, "state": state, "event": what, "msg_type": m.msg_type,
        "sender": m.sender_her, "receiver": m.receiver_her, "attempts": m.attempts, "node": node})


def state_listener(node: str) -> Callable[[str, Any, str], None]:
    """A relay Tap listener that logs every step (see log_state)."""

    def listen(what: str, m: Any, detail: str) -> None:  # noqa: ANN401
        log_state(what, m, detail, node)

    return listen
