"""Masking of Norwegian national identity numbers (fødselsnummer, D-nummer) in text and XML.

An identity number is 11 digits: the birth date DDMMYY and five more (individual number and two
mod-11 check digits). Variants we must also hide, since they name real or test persons:
- D-nummer: day + 40 (41-71);
- H-nummer and NAV's synthetic test numbers: month + 40 (41-52);
- Skatteetaten's synthetic (Tenor) test numbers: month + 80 (81-92).

We mask every 11-digit run whose first six digits are such a date, whether or not the check digits
are right: a mistyped number still identifies a person, and over-masking an operator's view costs
little while under-masking leaks health data. The birth date part stays visible ("010203*****") so
an operator can still tell two patients apart on the phone.

Pure functions, no I/O. Bytes are masked without decoding: the digits are ASCII in both encodings KITH
messages use (UTF-8 and ISO-8859-1), so the document's bytes stay otherwise identical.
"""

from __future__ import annotations

import re

from hub.ascii import is_ascii_digits

MASK = "*****"

# Every way people write one, never part of a longer run of digits: the date as DDMMYY or DD.MM.YY,
# then the five digits straight after it or after one space (also no-break), hyphen or dot:
# 07059943124, 070599 43124, 070599-43124, 070599.43124, 07.05.99 43124, 07.05.99-43124.
_DATE = r"[0-9]{6}|[0-9]{2}\.[0-9]{2}\.[0-9]{2}"
_TEXT = re.compile(rf"(?<![0-9])(?<![0-9]\.)({_DATE})([ \u00a0.-]?)([0-9]{{5}})(?![0-9])")
# bytes: the no-break space is C2 A0 in UTF-8 and A0 in ISO-8859-1
_BYTES = re.compile(rb"(?<![0-9])(?<![0-9]\.)(" + _DATE.encode()
                    + rb")( |\xc2\xa0|\xa0|[.-])?([0-9]{5})(?![0-9])")


def _plausible_date(first6: str) -> bool:
    first6 = first6.replace(".", "")
    day, month = int(first6[0:2]), int(first6[2:4])
    if 41 <= day <= 71:  # D-nummer
        day -= 40
    if 41 <= month <= 52:  # H-nummer, NAV synthetic
        month -= 40
    elif 81 <= month <= 92:  # Tenor synthetic
        month -= 80
    return 1 <= day <= 31 and 1 <= month <= 12


def looks_like_national_id(number: str) -> bool:
    """Whether an 11-digit string is shaped like a fødselsnummer or D-nummer (date part plausible)."""
    digits = re.sub(r"[ \u00a0.-]", "", number)
    return len(digits) == 11 and is_ascii_digits(digits) and _plausible_date(digits[:6])


def find_national_ids(text: str) -> list[str]:
    """The identity numbers in `text` (without spaces), in order of appearance."""
    return [m.group(1).replace(".", "") + m.group(3) for m in _TEXT.finditer(text)
            if _plausible_date(m.group(1))]


def mask_text(text: str) -> str:
    """`text` with the last five digits of every identity number replaced by `*****`."""

    def repl(m: re.Match[str]) -> str:
        return m.group(1) + m.group(2) + MASK if _plausible_date(m.group(1)) else m.group(0)

    return _TEXT.sub(repl, text)


def mask_bytes(data: bytes) -> bytes:
    """Like `mask_text` for a document's bytes (XML in UTF-8 or ISO-8859-1): element text, attributes."""

    def repl(m: re.Match[bytes]) -> bytes:
        if not _plausible_date(m.group(1).decode("ascii")):
            return m.group(0)
        return m.group(1) + (m.group(2) or b"") + MASK.encode("ascii")

    return _BYTES.sub(repl, data)
