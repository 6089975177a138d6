"""Masking of fødselsnummer / D-nummer in text and in real fixture messages."""

from __future__ import annotations

import random
from datetime import date

from lxml import etree

from hub.fixtures import build
from hub.fixtures.people import make_fnr, random_person, with_wrong_check_digits
from hub.privacy import find_national_ids, looks_like_national_id, mask_bytes, mask_text


def _ids(rng_seed: int) -> tuple[str, str]:
    rng = random.Random(rng_seed)
    fnr = make_fnr(date(1971, 5, 17), "2", rng)
    dnr = make_fnr(date(1988, 11, 3), "1", rng, d_number=True)
    return fnr, dnr


def test_fnr_and_dnr_are_masked_keeping_the_birth_date_part() -> None:
    fnr, dnr = _ids(1)
    assert dnr[0] in "4567"
    out = mask_text(f"pasient {fnr}, pårørende {dnr}.")
    assert out == f"pasient {fnr[:6]}*****, pårørende {dnr[:6]}*****."
    assert find_national_ids(f"a {fnr} b {dnr}") == [fnr, dnr]


def test_spaced_and_mistyped_numbers_are_masked_too() -> None:
    fnr, _ = _ids(2)
    wrong = with_wrong_check_digits(fnr)
    assert mask_text(f"{fnr[:6]} {fnr[6:]}") == f"{fnr[:6]} *****"
    assert mask_text(wrong) == wrong[:6] + "*****"  # still identifies a person


def test_synthetic_test_numbers_are_masked() -> None:
    # H-nummer / NAV synthetic (month + 40) and Tenor synthetic (month + 80)
    for n in ("01450212345", "17857612345", "41850212345"):
        assert looks_like_national_id(n), n
        assert mask_text(n) == n[:6] + "*****"


def test_other_numbers_are_left_alone() -> None:
    text = ("HER 8141253, org 974795787, tlf 41234567, konto 12345678903, "
            "12 digits 010203123456, date-less 99999912345, ts 20240301120000")
    assert mask_text(text) == text
    assert find_national_ids(text) == []
    assert not looks_like_national_id("3201021234")  # ten digits


def test_xml_bytes_keep_everything_but_the_digits() -> None:
    patient = random_person(random.Random(7))
    dnr_patient = random_person(random.Random(8), d_number=True)
    for p in (patient, dnr_patient):
        data = build("Dialogmelding", "1.1", seed=5, patient=p)
        assert p.ident is not None and p.ident.encode() in data
        masked = mask_bytes(data)
        assert p.ident.encode() not in masked
        assert (p.ident[:6] + "*****").encode() in masked
        assert len(masked) == len(data)
        etree.fromstring(masked)  # still well-formed
        # the only differences are masked digits
        diff = [(a, b) for a, b in zip(data, masked, strict=True) if a != b]
        assert diff and all(b == ord("*") and chr(a).isdigit() for a, b in diff)


def test_iso_8859_1_document_is_masked_without_decoding() -> None:
    fnr, _ = _ids(3)
    doc = (f'<?xml version="1.0" encoding="ISO-8859-1"?><P navn="Bjørn Øvrebø" id="{fnr}">'
           f"<Id>{fnr}</Id></P>").encode("iso-8859-1")
    masked = mask_bytes(doc)
    assert fnr.encode() not in masked
    assert masked.count(fnr[:6].encode() + b"*****") == 2
    assert "Bjørn Øvrebø".encode("iso-8859-1") in masked


def test_every_written_form_is_masked_in_text_and_bytes() -> None:
    fnr, dnr = _ids(3)
    d, n = fnr[:6], fnr[6:]
    dotted = f"{d[:2]}.{d[2:4]}.{d[4:]}"
    forms = {
        f"{d}{n}": f"{d}*****",
        f"{d} {n}": f"{d} *****",
        f"{d}-{n}": f"{d}-*****",
        f"{d}.{n}": f"{d}.*****",
        f"{d}\u00a0{n}": f"{d}\u00a0*****",
        f"{dotted} {n}": f"{dotted} *****",
        f"{dotted}-{n}": f"{dotted}-*****",
        f"{dnr[:6]}-{dnr[6:]}": f"{dnr[:6]}-*****",
    }
    for written, masked in forms.items():
        text = f"Pasient (fnr.{written}), se notat."
        assert mask_text(text) == f"Pasient (fnr.{masked}), se notat.", written
        assert find_national_ids(text) == [written.replace(".", "").replace(" ", "").replace("-", "")
                                           .replace("\u00a0", "")], written
        for enc in ("utf-8", "iso-8859-1"):
            want = f"Pasient (fnr.{masked}), se notat.".encode(enc)
            assert mask_bytes(text.encode(enc)) == want, (written, enc)
    # not identity numbers: longer runs, ISO dates with a number after, implausible dates
    for keep in (f"{d}{n}7", f"1{d}-{n}", "2026-07-05 12345", "999999-12345", "1.07.05.99 12345"):
        assert mask_text(keep) == keep, keep
