"""signature.sign_to_bytes (the Msh's signing of envelopes it built: SignedInfo and Signature from a
per-context template) gives exactly sign_envelope() + serialize(): RSA PKCS#1 v1.5 is deterministic, so
the bytes are compared whole, and the result verifies, here and with xmlsec1."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime

import pytest
from lxml import etree

from hub.ebxml import signature as sig
from hub.ebxml.envelope import (
    Acknowledgment,
    ErrorEntry,
    ErrorList,
    ManifestRef,
    MessageHeader,
    Party,
    RefDigest,
    build_envelope,
    build_envelope_bytes,
    parse_envelope,
    serialize,
)
from hub.ebxml.signature import RSA_SHA1, SHA1, sign_envelope, sign_to_bytes, verify_envelope
from hub.security.pki import load_identity
from hub.security.testing import shared_test_pki

NOW = datetime(2026, 1, 5, 10, 0, 0, 123000, tzinfo=UTC)


def header(**kw: object) -> MessageHeader:
    base = dict(from_party=Party.her("82001", "Fastlege"), to_party=Party.her("81001", "Sykehus"),
                cpa_id="82001_81001", conversation_id="c0nv-1", service="Dialogmelding", action="Notat",
                message_id="5e3c4b6a-1f1e-4c5e-9a55-3b2d2f8f0c11", timestamp=NOW)
    base.update(kw)
    return MessageHeader(**base)  # type: ignore[arg-type]


def envelopes() -> list[tuple[str, dict[str, object], dict[str, bytes]]]:
    """(name, build_envelope keywords, payloads by cid)."""
    refs = [RefDigest("", sig.SHA256, "q1b2c3=="), RefDigest("cid:a@b", sig.SHA256, "z9y8==")]
    errors = ErrorEntry("SecurityFailure", "Error", "/SOAP:Envelope", "bad <sig> & co")
    return [
        ("message", dict(header=header(), ack_requested=True, manifest=[ManifestRef("cid:p1@hub")]),
         {"p1@hub": b"\x00\x01payload" * 100}),
        ("two payloads, description", dict(header=header(description="Notat æøå <&> \"q\"",
                                                         duplicate_elimination=True,
                                                         time_to_live=NOW),
                                           manifest=[ManifestRef("cid:p1@hub"), ManifestRef("cid:p2@hub")]),
         {"p1@hub": b"one", "p2@hub": b"two"}),
        ("acknowledgment", dict(header=header(service="urn:oasis:names:tc:ebxml-msg:service",
                                              action="Acknowledgment", ref_to_message_id="m-1"),
                                acknowledgment=Acknowledgment(NOW, "m-1", refs)), {}),
        ("message error", dict(header=header(action="MessageError", ref_to_message_id="m-1"),
                               error_list=ErrorList("Error", [errors])), {}),
        ("party ids of other types", dict(header=header(from_party=Party([("HER", "1"), ("ENH", "9")], None),
                                                        to_party=Party([("unknown", "unknown")], None))), {}),
    ]


@pytest.fixture(scope="module")
def ident():  # noqa: ANN201
    return load_identity(shared_test_pki().dir, "gp")


@pytest.mark.parametrize("case", envelopes(), ids=lambda c: c[0])
@pytest.mark.parametrize("algs", [(sig.RSA_SHA256, sig.SHA256), (RSA_SHA1, SHA1)], ids=["sha256", "sha1"])
def test_the_same_bytes_as_sign_envelope_and_serialize(case, algs, ident, monkeypatch):
    _, kw, payloads = case
    method, digest = algs
    slow_root = build_envelope(**kw)  # type: ignore[arg-type]
    slow_refs = sign_envelope(slow_root, ident.sign_key, ident.sign_cert, payloads, signature_method=method,
                              digest_method=digest)
    fast_root = build_envelope(**kw)  # type: ignore[arg-type]
    before = serialize(fast_root)
    # these envelopes take the template: the general way is not called
    monkeypatch.setattr(sig, "sign_envelope", None)
    for _ in range(2):  # the template made, then used
        data, refs = sign_to_bytes(fast_root, ident.sign_key, ident.sign_cert, payloads,
                                   signature_method=method, digest_method=digest)
        assert data == serialize(slow_root)
        assert refs == slow_refs
    assert serialize(fast_root) == before  # left unsigned
    env = parse_envelope(data)
    v = verify_envelope(env.root, payloads, allow_sha1=True)  # type: ignore[arg-type]
    assert v.certificate == ident.sign_cert and v.references == refs


def test_what_the_template_does_not_cover_is_signed_the_general_way(ident):
    # SyncReply carries the actor the signature's XPath filter drops; xml:lang on the Envelope goes into
    # SignedInfo's C14N; a cid that serialisation and C14N write differently
    cases = []
    cases.append((build_envelope(header(), sync_reply=True), {}))
    root = build_envelope(header())
    root.set("{http://www.w3.org/XML/1998/namespace}lang", "no")
    cases.append((root, {}))
    cases.append((build_envelope(header(), manifest=[ManifestRef("cid:a>b")]), {"a>b": b"x"}))
    for root, payloads in cases:
        slow = etree.fromstring(serialize(root))
        slow_refs = sign_envelope(slow, ident.sign_key, ident.sign_cert, payloads)
        data, refs = sign_to_bytes(root, ident.sign_key, ident.sign_cert, payloads)
        assert data == serialize(slow) and refs == slow_refs
        env = parse_envelope(data)
        verify_envelope(env.root, payloads)  # type: ignore[arg-type]


@pytest.mark.skipif(shutil.which("xmlsec1") is None, reason="xmlsec1 not installed")
def test_xmlsec1_verifies_an_acknowledgment_signed_from_the_template(ident, tmp_path):
    kw = envelopes()[2][1]
    data, _ = sign_to_bytes(build_envelope(**kw), ident.sign_key, ident.sign_cert, {})  # type: ignore[arg-type]
    (tmp_path / "ack.xml").write_bytes(data)
    out = subprocess.run(["xmlsec1", "verify", "--enabled-reference-uris", "empty", "--insecure",
                          str(tmp_path / "ack.xml")], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "References (ok/all): 1/1" in out.stderr, out.stderr


def template_cases() -> list[tuple[str, dict[str, object]]]:
    """build_envelope keywords the template takes (no ErrorList, no SyncReply)."""
    refs = [RefDigest("", sig.SHA256, "q1b2c3=="), RefDigest("cid:a@b", sig.SHA256, "z9y8==")]
    # not "two payloads, description": its description needs escaping (test below)
    out = [(n, kw) for n, kw, _ in envelopes() if "error_list" not in kw and "description" not in n]
    out += [
        ("service type, no role, no cpa", dict(header=header(service_type="string", cpa_id=None,
                                                             from_party=Party.her("1", None)))),
        ("non-ASCII values", dict(header=header(description="Sykehuset Østfold – notat",
                                                to_party=Party.her("81001", "Sjukepleiar på post"),
                                                conversation_id="samtale-æøå"),
                                  manifest=[ManifestRef("cid:p@hub", "Vedlegg 1")])),
        ("acknowledgment without timestamp", dict(header=header(ref_to_message_id="m-2"),
                                                  acknowledgment=Acknowledgment(None, "m-2", refs[:1]))),
        ("no ids at all", dict(header=header(conversation_id=None, message_id=None, timestamp=None,
                                             service=None, action=None))),
    ]
    return out


@pytest.mark.parametrize("case", template_cases(), ids=lambda c: c[0])
def test_the_template_gives_the_envelope_and_its_c14n_as_build_envelope_does(case):
    _, kw = case
    root = build_envelope(**kw)  # type: ignore[arg-type]
    for _ in range(2):  # the shape's template made, then used
        built = build_envelope_bytes(**kw)  # type: ignore[arg-type]
        assert built is not None
        assert built.data == serialize(root) and built.c14n == etree.tostring(root, method="c14n")


def test_the_same_shape_with_other_values_fills_in_those(ident):
    a = build_envelope_bytes(header(message_id="id-1", timestamp=NOW, conversation_id="c-1"))
    b = build_envelope_bytes(header(message_id="id-2", timestamp=datetime(2027, 2, 3, 4, 5, 6, tzinfo=UTC),
                                    conversation_id="c-2"))
    assert a is not None and b is not None
    assert b.data == serialize(build_envelope(header(message_id="id-2", conversation_id="c-2",
                                                     timestamp=datetime(2027, 2, 3, 4, 5, 6, tzinfo=UTC))))
    assert b"id-1" in a.data and b"id-1" not in b.data and b"2027-02-03T04:05:06.000Z" in b.data


@pytest.mark.parametrize("value", ["a&b", "<x>", 'q"uote', "it's", "line\nbreak", "tab\t", ""])
def test_values_written_differently_or_empty_are_left_to_the_element_tree(value):
    assert build_envelope_bytes(header(cpa_id=value)) is None
    assert build_envelope_bytes(header(description=f"x{value}")) is None or not value
    # an empty attribute is written alike (URI=""); anything else of these is not
    empty_ok = build_envelope_bytes(header(from_party=Party([(value, "1")], None)))
    assert (empty_ok is not None) == (value == "")


@pytest.mark.parametrize("case", template_cases(), ids=lambda c: c[0])
def test_signing_a_template_envelope_gives_the_bytes_of_signing_the_tree(case, ident, monkeypatch):
    _, kw = case
    cids = [r.cid for r in kw.get("manifest") or []]  # type: ignore[attr-defined]
    payloads = {c: c.encode() * 10 for c in cids if c}
    slow, slow_refs = sign_to_bytes(build_envelope(**kw), ident.sign_key, ident.sign_cert, payloads)  # type: ignore[arg-type]
    built = build_envelope_bytes(**kw)  # type: ignore[arg-type]
    assert built is not None
    monkeypatch.setattr(sig, "sign_envelope", None)  # no tree is signed
    out = sig.sign_built(built, ident.sign_key, ident.sign_cert, payloads)
    assert out == (slow, slow_refs)
