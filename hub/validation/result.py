"""The verdict on one message: what it is, who it is from and to, and every problem found."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Problem:
    """One thing wrong with a message.

    code: the AppRec error code (code list 8221) the receiver answers with, e.g. T02.
    rule: our stable rule id (`xsd`, `xml.dtd`, `msgid.uuid`, ...), never renamed once published.
    """

    code: str
    rule: str
    text: str
    line: int | None = None
    column: int | None = None
    xpath: str | None = None
    severity: str = "error"  # error | warning (warnings do not make a message invalid)
    detail: str | None = None  # optional explanation (xmlschema: reason, expected elements)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ValidationResult:
    file: str
    family: str | None = None  # e.g. "Dialogmelding"
    version: str | None = None  # e.g. "1.1"
    type: str | None = None  # MsgInfo/Type or Message/Type value, e.g. DIALOG_NOTAT
    namespace: str | None = None
    sender: str | None = None  # HER-id of the sending communication party (deepest level)
    receiver: str | None = None  # HER-id of the receiving communication party (deepest level)
    msg_id: str | None = None
    gen_date: str | None = None
    problems: list[Problem] = field(default_factory=list)
    # hub.messages.info.MessageInfo of the message (parties with names, copy receivers, patient ids).
    info: Any = field(default=None, repr=False, compare=False)

    @property
    def valid(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "valid": self.valid,
            "type": self.type,
            "family": self.family,
            "version": self.version,
            "namespace": self.namespace,
            "sender": self.sender,
            "receiver": self.receiver,
            "msg_id": self.msg_id,
            "errors": [p.to_dict() for p in self.problems],
        }
