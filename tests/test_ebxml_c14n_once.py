"""One C14N of a received envelope serves both duplicate elimination and the signature's Reference URI=""
(hub.ebxml.signature._is_unsigned_c14n): wherever the shortcut is taken, its octets must be exactly
those the transforms give; where they would differ (actor filter dropping a header, a Signature with a
tail, a PI beside the root) it must not be taken. Checked on our envelopes and on the real NAV and
Sarepta envelopes in ../shared/reference."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

from hub.ebxml.dedup import content_digest, envelope_digest, unsigned_c14n
from hub.ebxml.envelope import DS_NS, SOAP_NS, parse_envelope, serialize
from hub.ebxml.errors import EbxmlError
from hub.ebxml.mime import parse_package
from hub.ebxml.msh import LocalParty, Msh, Peer, Peers
from hub.ebxml.signature import _is_unsigned_c14n, _same_document_digest, verify_envelope
from hub.security.pki import load_identity
from hub.security.testing import shared_test_pki

REF = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "ebxml"
NOW = datetime(2026, 1, 5, 10, 0, tzinfo=UTC)


def _ours(sync_reply: bool = False) -> tuple[bytes, dict[str, bytes]]:
    pki = shared_test_pki().dir
    gp, lab = load_identity(pki, "gp"), load_identity(pki, "lab")
    msh = Msh([LocalParty.of(gp)], peers=Peers({lab.her_id: Peer(lab.her_id, lab.sign_cert, lab.enc_cert,
                                                                 "mailto:lab@x.test")}))
    out = msh.send(from_her=gp.her_id, to_her=lab.her_id, payload=b"<doc/>", now=NOW,
                   message_type="DIALOG_NOTAT", sync_reply=sync_reply)
    pkg = parse_package(out.data)
    return pkg.soap, pkg.parts


def _signature(root: etree._Element) -> tuple[etree._Element, etree._Element]:
    sig = root.find(f"{{{SOAP_NS}}}Header/{{{DS_NS}}}Signature")
    assert sig is not None
    ref = next(r for r in sig.iter(f"{{{DS_NS}}}Reference") if r.get("URI") == "")
    return sig, ref


def _verify(root: etree._Element, parts: dict[str, bytes], c14n: bytes | None) -> object:
    try:
        v = verify_envelope(root, parts, unsigned_c14n=c14n)
        return (v.certificate, v.signature_method, v.references)
    except EbxmlError as e:
        return ("error", e.code, e.description, e.location)


def check(soap: bytes, parts: dict[str, bytes]) -> bool:
    """Both ways of reading Reference URI="" agree; returns whether the shortcut applies."""
    env = parse_envelope(soap)
    assert env.root is not None
    digest = envelope_digest(env, parts)
    assert digest == content_digest(env.root, parts)  # the duplicate digest is the same as before
    sig, ref = _signature(env.root)
    shortcut = _is_unsigned_c14n(env.root, sig, ref)
    if shortcut:
        assert env.unsigned_c14n == _same_document_digest(env.root, sig, ref)
    assert _verify(env.root, parts, env.unsigned_c14n) == _verify(env.root, parts, None)
    return shortcut


def test_our_envelope_takes_the_shortcut_and_verifies() -> None:
    soap, parts = _ours()
    assert check(soap, parts)
    env = parse_envelope(soap)
    envelope_digest(env, parts)
    assert verify_envelope(env.root, parts, unsigned_c14n=env.unsigned_c14n).references  # type: ignore[arg-type]


def test_a_changed_envelope_fails_either_way() -> None:
    soap, parts = _ours()
    changed = soap.replace(b"DIALOG_NOTAT</eb:Action>", b"DIALOG_NOTAX</eb:Action>")
    assert changed != soap
    assert check(changed, parts)
    env = parse_envelope(changed)
    with pytest.raises(EbxmlError, match="does not match"):
        verify_envelope(env.root, parts, unsigned_c14n=unsigned_c14n(env.root))  # type: ignore[arg-type]


def test_where_the_octets_differ_the_shortcut_is_not_taken() -> None:
    soap, parts = _ours()
    sync, sync_parts = _ours(sync_reply=True)  # SyncReply carries the actor the filter drops
    assert b"SyncReply" in sync
    assert not check(sync, sync_parts)
    root = etree.fromstring(soap)
    sig, _ = _signature(root)
    sig.tail = "\n  "
    assert not check(serialize(root), parts)
    with_pi = b'<?xml version="1.0" encoding="UTF-8"?>\n<?hub x?>' + soap.split(b"?>", 1)[1]
    assert not check(with_pi, parts)


@pytest.mark.skipif(not REF.is_dir(), reason="../shared/reference not present")
def test_real_envelopes_read_the_same_either_way() -> None:
    seen = 0
    for f in sorted(REF.glob("*.eml")):
        try:
            pkg = parse_package(f.read_bytes())
            env = parse_envelope(pkg.soap)
        except EbxmlError:
            continue
        if env.signed:
            check(pkg.soap, pkg.parts)
            seen += 1
    for f in sorted(REF.glob("*.xml")):
        data = f.read_bytes()
        if b"Signature" in data and b"Envelope" in data:
            try:
                check(data, {})
            except (EbxmlError, etree.XMLSyntaxError, StopIteration):
                continue
            seen += 1
    assert seen >= 2
