"""ASCII-only tests for identifiers read from untrusted input."""

from __future__ import annotations


def is_ascii_digits(text: str) -> bool:
    """Only the digits 0-9, at least one. `str.isdigit()` also accepts '²' or '٣', which `int()` then
    refuses or reads as another number: a HER-id, fødselsnummer or Content-Length is ASCII."""
    return text.isascii() and text.isdigit()
