"""Input the relay refuses on sight (not ebXML, a DTD in the SOAP part, truncated MIME, ...) is kept:
its original bytes stored and at once `rejected` with the reason, so `hub queue list --state rejected`
shows it and `hub queue export` gives the bytes back. Every listener (SMTP, HTTP) records through here.
"""

from __future__ import annotations

from hub.relay.lifecycle import Event
from hub.store import ErrorInfo, Message, MessageMeta, Store


def record_rejected(store: Store, raw: bytes, *, channel: str, actor: str, code: str, text: str,
                    origin: str = "", sender_her: str | None = None) -> Message:
    """Store `raw` exactly as received and reject it with `code: text` (permanent: nothing to retry).
    `origin`: who handed it over (MAIL FROM, the HTTP peer), for the timeline."""
    meta = MessageMeta(direction="in", channel=channel, sender_her=sender_her)
    where = f" from {origin}" if origin else ""
    m = store.put_received(raw, meta, actor=actor, reason=f"unreadable input over {channel}{where}")
    return store.transition(m.id, Event.REJECT, actor=actor, reason=f"{code}: {text}",
                            error=ErrorInfo(code, text, True))
