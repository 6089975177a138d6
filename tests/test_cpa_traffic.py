"""CPA-driven security and packaging, against NAV's real CPA (its certificates swapped for the test
PKI's, since we hold no NAV keys): plain payloads where isConfidential="none", encryption where required,
gzip inside CMS, CPA versions chosen by time, SHA-1 only where allowed, CMS as DER, PEM and S/MIME."""

from __future__ import annotations

import base64
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree

from hub.codes import EbmsError
from hub.ebxml import compression
from hub.ebxml.cpa import (
    CPPA_NS,
    CpaRepository,
    NoCpa,
    check_against_cpa,
    load_cpa,
    plan_send,
)
from hub.ebxml.envelope import ManifestRef, MessageHeader, Party, build_envelope, new_id, serialize
from hub.ebxml.errors import LOC
from hub.ebxml.mime import PLAIN_TYPE, build_package, new_cid, parse_package
from hub.ebxml.msh import CmsCrypto, Delivery, LocalParty, Msh, Peer, Peers
from hub.ebxml.signature import RSA_SHA1, SHA1, sign_envelope
from hub.security import cms
from hub.security.pki import load_identity

NAV_CPA = "navikt_nav-qass-31162.xml"
PARTNER, NAV = "8090595", "79768"  # the pharmacy partner (Utleverer) and NAV in that CPA
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # inside the CPA's window (2025-09-03 .. 2026-08-28)
C = f"{{{CPPA_NS}}}"


def nav_cpa(reference: Path, partner_sign, partner_enc, nav_sign, nav_enc, *,  # noqa: ANN001
            edit=None, start: str | None = None, end: str | None = None) -> bytes:  # noqa: ANN001
    """NAV's real CPA with test-PKI certificates in place of its own (and optional one-point edits)."""
    root = etree.fromstring((reference / "cpa" / NAV_CPA).read_bytes())
    certs = {"Partner_cert_sign_partner": partner_sign, "Partner_cert_crypt_partner": partner_enc,
             "NAV_default_sign_cert": nav_sign, "NAV_default_crypt_cert": nav_enc}
    for el in root.iter(f"{C}Certificate"):
        cert = certs.get(el.get(f"{C}certId"))
        if cert is not None:
            x = el.find(".//{http://www.w3.org/2000/09/xmldsig#}X509Certificate")
            x.text = base64.b64encode(cert.public_bytes(Encoding.DER)).decode()
    if start:
        root.find(f"{C}Start").text = start
    if end:
        root.find(f"{C}End").text = end
    if edit:
        edit(root)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


@pytest.fixture(scope="module")
def parties(pki):  # noqa: ANN001, ANN201
    from hub.security.pki import load_identity

    gp, lab, hub_ = (load_identity(pki.dir, n) for n in ("gp", "lab", "hub"))
    partner = LocalParty(PARTNER, gp.sign_cert, gp.sign_key, list(gp.decryption_keys))
    nav = LocalParty(NAV, lab.sign_cert, lab.sign_key, list(lab.decryption_keys))
    return partner, nav, gp, lab, hub_


def repo_of(*cpas: bytes) -> CpaRepository:
    return CpaRepository([load_cpa(d, f"v{i}") for i, d in enumerate(cpas)])


def egenandel_request(partner: LocalParty, payload: bytes, *, encrypt_for=None, at: datetime = NOW,  # noqa: ANN001
                      cpa_id: str = "nav:qass:31162", method: str | None = None,
                      digest: str | None = None,
                      names: tuple[str, str, str, str] = ("HarBorgerEgenandelFritak", "EgenandelForesporsel",
                                                          "Utleverer", "Frikortregister")) -> bytes:
    """NAV's HTTP sync request as its senders build it: SyncReply, one payload part, plain XML unless
    `encrypt_for` is given. Built here without the Msh's sending side."""
    service, action, from_role, to_role = names
    h = MessageHeader(Party.her(PARTNER, from_role), Party.her(NAV, to_role), cpa_id, new_id(),
                      service, action, new_id(), at, service_type="string")
    cid = new_cid("sender")
    part = cms.encrypt(payload, [encrypt_for]) if encrypt_for is not None else payload
    root = build_envelope(h, sync_reply=True, manifest=[ManifestRef("cid:" + cid)])
    kw = {"signature_method": method, "digest_method": digest} if method else {}
    sign_envelope(root, partner.sign_key, partner.sign_cert, {cid: part}, **kw)  # type: ignore[arg-type]
    return build_package(serialize(root), [(cid, part)], soap_base64=False,
                         payload_type=PLAIN_TYPE if encrypt_for is None else
                         "application/pkcs7-mime; smime-type=enveloped-data")


def receive(nav: LocalParty, repo: CpaRepository | None, data: bytes, peers: Peers | None = None):  # noqa: ANN201
    got: list[Delivery] = []
    msh = Msh([nav], cpas=repo, peers=peers, handoff=got.append)
    return msh.receive(data, NOW, transport="http"), got


DOC = b'<?xml version="1.0" encoding="UTF-8"?><EgenandelForesporsel>12345678901</EgenandelForesporsel>'


def _set_confidential(value: str):  # noqa: ANN202
    def edit(root: etree._Element) -> None:
        for b in root.iter(f"{C}ThisPartyActionBinding"):
            if b.get(f"{C}action") == "EgenandelForesporsel":
                b.find(f"{C}BusinessTransactionCharacteristics").set(f"{C}isConfidential", value)
    return edit


def test_plain_payload_accepted_where_the_cpa_says_isconfidential_none(reference: Path, parties):  # noqa: ANN001
    partner, nav, gp, lab, _ = parties
    repo = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert))
    out, got = receive(nav, repo, egenandel_request(partner, DOC))
    assert out.status == "delivered", out.errors
    assert out.sync and out.response_kind == "ack"
    assert list(got[0].payloads.values()) == [DOC]
    # the same request encrypted is accepted as well ("none" asks for nothing, forbids nothing)
    out, got = receive(nav, repo, egenandel_request(partner, DOC, encrypt_for=lab.enc_cert))
    assert out.status == "delivered" and list(got[0].payloads.values()) == [DOC]


# "transient-and-persistent" is the schema's spelling (persistenceLevel.type); the reversed one is tolerated
@pytest.mark.parametrize("confidential", ["transient", "persistent", "transient-and-persistent",
                                          "persistent-and-transient"])
def test_plain_payload_refused_where_the_cpa_requires_encryption(reference: Path, parties, confidential):  # noqa: ANN001
    partner, nav, gp, lab, _ = parties
    repo = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert,
                           edit=_set_confidential(confidential)))
    out, got = receive(nav, repo, egenandel_request(partner, DOC))
    assert out.status == "rejected" and not got
    (e,) = out.errors
    assert e.code == EbmsError.SECURITY_FAILURE and e.location == LOC["manifest_ref"] + "[1]"
    assert "not encrypted" in e.description and "nav:qass:31162" in e.description
    assert out.response_kind == "error" and out.sync  # the MessageError goes back on the HTTP exchange
    out, got = receive(nav, repo, egenandel_request(partner, DOC, encrypt_for=lab.enc_cert))
    assert out.status == "delivered"


def test_without_a_cpa_payloads_must_be_encrypted(parties):  # noqa: ANN001
    partner, nav, gp, lab, _ = parties
    peers = Peers({PARTNER: Peer(PARTNER, gp.sign_cert, gp.enc_cert, "https://partner.test/ebxml")})
    names = ("S-DIALOG_NOTAT", "DIALOG_NOTAT", "DIALOG_NOTATsender", "DIALOG_NOTATreceiver")
    plain = egenandel_request(partner, DOC, cpa_id=f"{NAV}_{PARTNER}", names=names)
    out, _ = receive(nav, None, plain, peers)
    assert [e.code for e in out.errors] == [EbmsError.SECURITY_FAILURE], out.errors
    assert "without a CPA" in out.errors[0].description
    out, got = receive(nav, None, egenandel_request(partner, DOC, cpa_id=f"{NAV}_{PARTNER}", names=names,
                                                    encrypt_for=lab.enc_cert), peers)
    assert out.status == "delivered" and list(got[0].payloads.values()) == [DOC]


def test_gzip_inside_cms_is_recognised_by_content(reference: Path, parties):  # noqa: ANN001
    """NAV gzips the document and encrypts the result; no MIME header says so."""
    partner, nav, gp, lab, _ = parties
    repo = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert))
    zipped = subprocess.run(["gzip", "-c"], input=DOC, capture_output=True, check=True).stdout  # not ours
    out, got = receive(nav, repo, egenandel_request(partner, zipped, encrypt_for=lab.enc_cert))
    assert out.status == "delivered" and list(got[0].payloads.values()) == [DOC]
    # a part that starts like gzip but is cut short is refused, not delivered as garbage
    out, got = receive(nav, repo, egenandel_request(partner, zipped[:-12], encrypt_for=lab.enc_cert))
    assert out.status == "rejected" and out.errors[0].code == EbmsError.MIME_PROBLEM
    assert "truncated" in out.errors[0].description


def test_the_cpa_package_decides_compression_and_the_receiver_unpacks(reference: Path, parties):  # noqa: ANN001
    """OppgjorsKontroll/Oppgjorskrav: NAV's package is x-gzip inside pkcs7-mime, so we gzip then encrypt."""
    partner, nav, gp, lab, _ = parties
    repo = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert))
    plan = plan_send(repo, PARTNER, NAV, NOW, "OppgjorsKontroll", "Oppgjorskrav")
    assert plan.compress and plan.encrypt and plan.endpoints == ["mailto://mottak-qass@test-es.nav.no"]
    out = Msh([partner], cpas=repo).send(from_her=PARTNER, to_her=NAV, payload=DOC, now=NOW,
                                         service="OppgjorsKontroll", action="Oppgjorskrav")
    (part,) = parse_package(out.data).parts.values()
    inner = cms.decrypt(part, lab.decryption_keys)
    assert compression.is_gzip(inner)
    assert subprocess.run(["gzip", "-dc"], input=inner, capture_output=True, check=True).stdout == DOC
    got: list[Delivery] = []
    res = Msh([nav], cpas=repo, handoff=got.append).receive(out.data, NOW, transport="smtp")
    assert res.status == "delivered" and list(got[0].payloads.values()) == [DOC]


def test_the_channel_bound_to_the_action_is_used(reference: Path, parties):  # noqa: ANN001
    """NAV binds SMTP for Oppgjorskrav and HTTP (sync) for EgenandelForesporsel."""
    _, _, gp, lab, _ = parties
    repo = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert))
    http = plan_send(repo, PARTNER, NAV, NOW, "HarBorgerEgenandelFritak", "EgenandelForesporsel")
    assert http.endpoints == ["https://nhn-gw-q.nav.no:9443/ebxml/msh"] and http.protocol == "HTTP"
    assert http.sync_reply_mode == "signalsAndResponse" and not http.ack_requested
    smtp = plan_send(repo, PARTNER, NAV, NOW, "OppgjorsKontroll", "Oppgjorskrav")
    assert smtp.protocol == "SMTP" and smtp.ack_requested and smtp.sync_reply_mode == "none"
    # endpoints of type error/login are not where messages are delivered
    def add_endpoints(root: etree._Element) -> None:
        for tr in root.iter(f"{C}Transport"):
            if tr.get(f"{C}transportId") == "NAV_transportHttp":
                rc = tr.find(f"{C}TransportReceiver")
                first = rc.find(f"{C}Endpoint")
                for kind in ("login", "error"):
                    first.addprevious(etree.Element(f"{C}Endpoint", {f"{C}uri": f"https://nav.test/{kind}",
                                                                    f"{C}type": kind}))
    repo2 = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert,
                            edit=add_endpoints))
    p = plan_send(repo2, PARTNER, NAV, NOW, "HarBorgerEgenandelFritak", "EgenandelForesporsel")
    assert p.endpoints == ["https://nhn-gw-q.nav.no:9443/ebxml/msh"]
    assert p.error_endpoints == ["https://nav.test/error"]


def test_two_versions_of_one_cpa_select_by_time(reference: Path, parties):  # noqa: ANN001
    """A renewed CPA keeps its id; the partner's signing certificate changed with the renewal."""
    partner, nav, gp, lab, hub_ = parties
    old = nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert,
                  start="2025-09-03T12:09:25Z", end="2026-01-31T23:59:59Z",
                  edit=lambda r: r.find(f"{C}Status").set(f"{C}value", "agreed"))
    new = nav_cpa(reference, hub_.sign_cert, hub_.enc_cert, lab.sign_cert, lab.enc_cert,
                  start="2026-02-01T00:00:00Z", end="2027-01-31T23:59:59Z",
                  edit=lambda r: r.find(f"{C}Status").set(f"{C}value", "agreed"))
    for order in ((old, new), (new, old)):  # file order does not matter
        repo = repo_of(*order)
        assert len(repo.versions("nav:qass:31162")) == 2
        jan, mar = datetime(2026, 1, 10, tzinfo=UTC), NOW
        assert repo.get("nav:qass:31162", jan).start.month == 9
        assert repo.get("nav:qass:31162", mar).start.month == 2
        # a January message signed with the then-agreed certificate passes; in March it must be the new one
        jan_msg = egenandel_request(partner, DOC, at=jan)
        from hub.ebxml.envelope import parse_envelope

        env = parse_envelope(parse_package(jan_msg).soap)
        assert check_against_cpa(env, repo, gp.sign_cert)[1] == []
        mar_env = parse_envelope(parse_package(egenandel_request(partner, DOC, at=mar)).soap)
        (e,) = check_against_cpa(mar_env, repo, gp.sign_cert)[1]
        assert e.code == EbmsError.SECURITY_FAILURE
        assert check_against_cpa(mar_env, repo, hub_.sign_cert)[1] == []
        # outside both windows: the error names every version's window
        late_msg = egenandel_request(partner, DOC, at=datetime(2027, 6, 1, tzinfo=UTC))
        (e,) = check_against_cpa(parse_envelope(parse_package(late_msg).soap), repo, gp.sign_cert)[1]
        assert e.code == EbmsError.INCONSISTENT
        assert "2026-01-31" in e.description and "2027-01-31" in e.description


def test_an_agreed_version_wins_over_a_proposed_one(reference: Path, parties):  # noqa: ANN001
    _, _, gp, lab, hub_ = parties
    proposed = nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert,
                       start="2026-02-01T00:00:00Z")  # the real one says "proposed"
    agreed = nav_cpa(reference, hub_.sign_cert, hub_.enc_cert, lab.sign_cert, lab.enc_cert,
                     start="2025-10-01T00:00:00Z",
                     edit=lambda r: r.find(f"{C}Status").set(f"{C}value", "agreed"))
    repo = repo_of(proposed, agreed)
    assert repo.get("nav:qass:31162", NOW).status == "agreed"
    assert repo.between(PARTNER, NAV, NOW).status == "agreed"


def test_sha1_envelopes_refused_unless_allowed(reference: Path, parties):  # noqa: ANN001
    partner, nav, gp, lab, _ = parties
    repo = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert))
    sha1 = egenandel_request(partner, DOC, method=RSA_SHA1, digest=SHA1)
    out, got = receive(nav, repo, sha1)
    assert out.status == "rejected" and not got
    assert out.errors[0].code == EbmsError.SECURITY_FAILURE and "SHA-1" in out.errors[0].description
    # allowed for the peer (register setting)...
    peers = Peers({PARTNER: Peer(PARTNER, gp.sign_cert, gp.enc_cert, allow_sha1=True)})
    out, got = receive(nav, repo, sha1, peers)
    assert out.status == "delivered", out.errors

    # ...or by a CPA that names rsa-sha1 for the sender's signatures (as NHN's CPP templates still do)
    def sha1_cpa(root: etree._Element) -> None:
        for el in root.iter(f"{C}SignatureAlgorithm"):
            el.text = RSA_SHA1
        for el in root.iter(f"{C}HashFunction"):
            el.text = SHA1
    repo1 = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert, edit=sha1_cpa))
    out, _ = receive(nav, repo1, sha1)
    assert out.status == "delivered", out.errors


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("form", ["DER", "PEM", "SMIME"])
def test_cms_from_openssl_in_every_output_form(parties, tmp_path: Path, pki, form: str):  # noqa: ANN001
    _, _, _, lab, _ = parties
    (tmp_path / "doc.xml").write_bytes(DOC)
    enc = pki.dir / "parties" / "lab" / "enc.pem"
    subprocess.run(["openssl", "cms", "-encrypt", "-binary", "-aes256", "-in", str(tmp_path / "doc.xml"),
                    "-outform", form, "-out", str(tmp_path / "doc.p7m"), str(enc)], check=True)
    data = (tmp_path / "doc.p7m").read_bytes()
    assert cms.looks_like_cms(data)
    assert cms.decrypt(data, lab.decryption_keys) == DOC
    assert CmsCrypto().decrypt(data, lab.decryption_keys) == DOC


def _lab_enc():  # noqa: ANN202
    from hub.security.testing import shared_test_pki

    return load_identity(shared_test_pki().dir, "lab").enc_cert


def test_not_cms_says_which_shapes_are_read():
    from hub.security.errors import SecurityError

    with pytest.raises(SecurityError) as exc:
        cms.to_der(b"<xml/>")
    assert "DER" in str(exc.value) and "PEM" in str(exc.value) and "S/MIME" in str(exc.value)
    # a plain document that happens to start with "0" (0x30, a DER SEQUENCE tag) is not taken for CMS
    assert not cms.looks_like_cms(b"0;plain;csv\n") and cms.looks_like_cms(cms.encrypt(b"x", [_lab_enc()]))


def test_register_cpa_wrapper_and_its_empty_answer(reference: Path):
    cpa_text = (reference / "cpa" / NAV_CPA).read_text(encoding="utf-8")
    from xml.sax.saxutils import escape

    wrapped = ('<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>'
               '<GetCpaXmlResponse xmlns="http://register.nhn.no/CPAService"><GetCpaXmlResult>'
               f'<CpaXmlDetails>{escape(cpa_text.split("?>", 1)[1])}</CpaXmlDetails>'
               '</GetCpaXmlResult></GetCpaXmlResponse></s:Body></s:Envelope>').encode()
    assert load_cpa(wrapped).cpa_id == "nav:qass:31162"
    empty = (b'<GetCpaXmlResult xmlns="http://register.nhn.no/CPAService" '
             b'xmlns:i="http://www.w3.org/2001/XMLSchema-instance">'
             b'<CpaXmlDetails i:nil="true"/></GetCpaXmlResult>')
    with pytest.raises(NoCpa) as exc:
        load_cpa(empty, "register answer for 79768/8090595")
    assert "no CPA for this pair" in str(exc.value)


def test_compression_is_bounded():
    bomb = compression.compress(b"\0" * (2 * 1024 * 1024))
    with pytest.raises(compression.CompressionError):
        compression.decompress(bomb, max_bytes=1024 * 1024)
    assert compression.decompress(bomb) == b"\0" * (2 * 1024 * 1024)
    two = compression.compress(b"a") + compression.compress(b"b")
    assert compression.decompress(two) == b"ab"  # concatenated members, as gzip(1) reads them
    assert compression.unwrap(b"<x/>") == (b"<x/>", False)




@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
@pytest.mark.parametrize("form", ["PEM", "SMIME"])
def test_hub_decrypt_reads_pem_and_smime(pki, tmp_path: Path, form: str):  # noqa: ANN001
    from typer.testing import CliRunner

    from hub.cli.main import app

    (tmp_path / "doc.xml").write_bytes(DOC)
    subprocess.run(["openssl", "cms", "-encrypt", "-binary", "-aes256", "-in", str(tmp_path / "doc.xml"),
                    "-outform", form, "-out", str(tmp_path / "doc.p7m"),
                    str(pki.dir / "parties" / "lab" / "enc.pem")], check=True)
    r = CliRunner().invoke(app, ["decrypt", str(tmp_path / "doc.p7m"), "--pki", str(pki.dir),
                                 "--party", "lab", "-o", str(tmp_path / "out.xml")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out.xml").read_bytes() == DOC


def test_hub_decrypt_gunzips_on_request(pki, parties, tmp_path: Path):  # noqa: ANN001
    from typer.testing import CliRunner

    from hub.cli.main import app

    _, _, _, lab, _ = parties
    (tmp_path / "m.p7m").write_bytes(cms.encrypt(compression.compress(DOC), [lab.enc_cert]))
    base = ["decrypt", str(tmp_path / "m.p7m"), "--pki", str(pki.dir), "--party", "lab"]
    r = CliRunner().invoke(app, [*base, "-o", str(tmp_path / "a")])
    assert r.exit_code == 0 and "gzip" in r.output and compression.is_gzip((tmp_path / "a").read_bytes())
    r = CliRunner().invoke(app, [*base, "--gunzip", "-o", str(tmp_path / "b")])
    assert r.exit_code == 0 and (tmp_path / "b").read_bytes() == DOC


def test_sha1_kith_documents_refused_s01_unless_the_peer_allows(pki, parties):  # noqa: ANN001
    """The same setting for documents: the relay's KITH signature check asks the register."""
    from hub.relay import pipeline as pl
    from hub.relay.kith_signature import KithSignatureCheck
    from hub.security.certs import CertificateValidator
    from hub.security.pki import load_intermediates, load_trust_anchors
    from hub.security.xmldsig import sign_enveloped

    _, _, gp, _, _ = parties
    doc = sign_enveloped(b"<MsgHead><MsgInfo/></MsgHead>", gp.sign_key, gp.sign_cert, algorithm="rsa-sha1")
    validator = CertificateValidator(load_trust_anchors(pki.dir), load_intermediates(pki.dir))
    facts = pl.Facts(sender_her=82001, gen_date=datetime.now(UTC))
    allowed: set[int] = set()
    check = KithSignatureCheck(lambda her: gp.sign_cert, validator, lambda her: her in allowed)
    f = check.check(doc, facts)
    assert f is not None and f.code == "S01" and "SHA-1" in f.text
    allowed.add(82001)
    assert check.check(doc, facts) is None


def unsigned(root: etree._Element) -> None:
    """A CPA edit: no envelope signature asked for, for any action."""
    for b in root.iter(f"{C}BusinessTransactionCharacteristics"):
        b.set(f"{C}isNonRepudiationRequired", "false")
        b.set(f"{C}isAuthenticated", "none")


def test_unsigned_envelope_only_where_the_cpa_asks_for_no_signature(reference: Path, parties):  # noqa: ANN001
    partner, nav, gp, lab, _ = parties

    from hub.ebxml.envelope import parse_envelope
    from hub.xmlsafe import parse_bytes

    signed = egenandel_request(partner, DOC)
    pkg = parse_package(signed)
    root = parse_bytes(pkg.soap).getroot()
    sig = root.find(".//{http://www.w3.org/2000/09/xmldsig#}Signature")
    sig.getparent().remove(sig)
    bare = build_package(serialize(root), list(pkg.parts.items()), soap_base64=False, payload_type=PLAIN_TYPE)
    assert not parse_envelope(parse_package(bare).soap).signed
    out, _ = receive(nav, repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert)),
                     bare)
    assert out.status == "rejected" and (EbmsError.SECURITY_FAILURE, LOC["signature"]) in {
        (e.code, e.location) for e in out.errors}
    relaxed = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert,
                              edit=unsigned))
    out, got = receive(nav, relaxed, bare)
    assert out.status == "delivered" and list(got[0].payloads.values()) == [DOC]


def test_sync_reply_only_on_a_channel_that_has_one(reference: Path, parties):  # noqa: ANN001
    """NAV binds EgenandelForesporsel to its HTTP channel (signalsAndResponse): SyncReply is right there;
    bound to the SMTP channel (syncReplyMode none) the same request is Inconsistent."""
    partner, nav, gp, lab, _ = parties

    def to_smtp(root: etree._Element) -> None:
        for b in root.iter(f"{C}ThisPartyActionBinding"):
            ch = b.find(f"{C}ChannelId")
            if b.get(f"{C}action") == "EgenandelForesporsel" and ch.text == "NAV_SyncHttpChannelB1":
                ch.text = "NAV_asyncSMTPChannelA2"
    out, _ = receive(nav, repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert,
                                          edit=to_smtp)), egenandel_request(partner, DOC))
    assert [(e.code, e.location) for e in out.errors] == [(EbmsError.INCONSISTENT, LOC["sync_reply"])]
    assert "NAV_asyncSMTPChannelA2" in out.errors[0].description


def test_of_two_bound_channels_the_one_over_the_transport(reference: Path, parties):  # noqa: ANN001
    """An action bound to NAV's HTTP and SMTP channels: the sender's transport picks the channel, and
    with it the endpoint, acknowledgment and sync behaviour."""
    partner, _, gp, lab, _ = parties

    def both(root: etree._Element) -> None:
        for b in root.iter(f"{C}ThisPartyActionBinding"):
            ch = b.find(f"{C}ChannelId")
            if b.get(f"{C}action") == "EgenandelForesporsel" and ch.text == "NAV_SyncHttpChannelB1":
                extra = etree.Element(f"{C}ChannelId")
                extra.text = "NAV_asyncSMTPChannelA2"
                ch.addnext(extra)
    repo = repo_of(nav_cpa(reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert, edit=both))
    args = (repo, PARTNER, NAV, NOW, "HarBorgerEgenandelFritak", "EgenandelForesporsel")
    assert plan_send(*args).protocol == "HTTP"  # the first bound one without a transport asked for
    smtp = plan_send(*args, "SMTP")
    assert smtp.endpoints == ["mailto://mottak-qass@test-es.nav.no"] and smtp.ack_requested
    http = plan_send(*args, "HTTP")
    assert http.endpoints == ["https://nhn-gw-q.nav.no:9443/ebxml/msh"] and not http.ack_requested
    out = Msh([partner], cpas=repo).send(from_her=PARTNER, to_her=NAV, payload=DOC, now=NOW,
                                         service="HarBorgerEgenandelFritak", action="EgenandelForesporsel",
                                         protocol="SMTP")
    assert out.endpoints == smtp.endpoints and b"AckRequested" in parse_package(out.data).soap


def test_cpa_show_and_check_list_versions_and_say_which_applies(reference: Path, parties, tmp_path: Path):  # noqa: ANN001
    import json

    from typer.testing import CliRunner

    from hub.cli.main import app

    _, _, gp, lab, hub_ = parties
    agreed = {"edit": lambda r: r.find(f"{C}Status").set(f"{C}value", "agreed")}
    (tmp_path / "a-renewed.xml").write_bytes(nav_cpa(
        reference, hub_.sign_cert, hub_.enc_cert, lab.sign_cert, lab.enc_cert,
        start="2026-02-01T00:00:00Z", end="2027-01-31T23:59:59Z", **agreed))
    (tmp_path / "b-old.xml").write_bytes(nav_cpa(  # sorts last, but is not the one in force in March
        reference, gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert,
        start="2025-09-03T12:09:25Z", end="2026-01-31T23:59:59Z", **agreed))
    run = CliRunner().invoke
    for at, expected in (("2026-01-10T00:00:00Z", "b-old.xml"), ("2026-03-01T00:00:00Z", "a-renewed.xml")):
        r = run(app, ["cpa", "show", "nav:qass:31162", "--cpa-dir", str(tmp_path), "--at", at, "--json"])
        assert r.exit_code == 0, r.output
        d = json.loads(r.output)
        assert len(d["versions"]) == 2 and d["source"].endswith(expected)
        assert [Path(v["source"]).name for v in d["versions"] if v["applies"]] == [expected]
        r = run(app, ["cpa", "check", NAV, "--from", PARTNER, "--cpa-dir", str(tmp_path), "--at", at,
                      "--service", "OppgjorsKontroll", "--action", "Oppgjorskrav", "--json"])
        c = json.loads(r.output)
        assert c["source"].endswith(expected) and c["compress"] and c["encrypt"] and c["protocol"] == "SMTP"
    r = run(app, ["cpa", "show", "nav:qass:31162", "--cpa-dir", str(tmp_path), "--at",
                  "2026-03-01T00:00:00Z"])
    assert r.exit_code == 0 and "applies" in r.output and "not valid" in r.output


def test_we_send_unsigned_only_where_the_cpa_asks_for_no_signature(reference: Path, parties):  # noqa: ANN001
    """Sending follows the CPA too: signed by default, unsigned where it asks for no signature; either
    way the receiver delivers it and its Acknowledgment matches what we sent."""
    from hub.ebxml.envelope import parse_envelope

    partner, nav, gp, lab, _ = parties
    certs = (gp.sign_cert, gp.enc_cert, lab.sign_cert, lab.enc_cert)
    for edit, signed in ((None, True), (unsigned, False)):
        repo = repo_of(nav_cpa(reference, *certs, edit=edit))
        assert plan_send(repo, PARTNER, NAV, NOW, "OppgjorsKontroll", "Oppgjorskrav").sign is signed
        sender = Msh([partner], cpas=repo)
        out = sender.send(from_her=PARTNER, to_her=NAV, payload=DOC, now=NOW, service="OppgjorsKontroll",
                          action="Oppgjorskrav")
        assert parse_envelope(parse_package(out.data).soap).signed is signed
        assert (b"xmldsig#" in parse_package(out.data).soap) is signed
        got: list[Delivery] = []
        res = Msh([nav], cpas=repo, handoff=got.append).receive(out.data, NOW, transport="smtp")
        assert res.status == "delivered" and list(got[0].payloads.values()) == [DOC], res.errors
        assert res.response is not None
        ack = sender.receive(res.response, NOW, transport="smtp")
        assert ack.status == "signal" and not ack.errors and ack.matched is not None
        assert ack.matched.acked_at == NOW
    # the unsigned message under the CPA that requires a signature is refused, as a received one is
    strict = repo_of(nav_cpa(reference, *certs))
    res = Msh([nav], cpas=strict).receive(out.data, NOW, transport="smtp")
    assert res.status == "rejected" and any(e.code == EbmsError.SECURITY_FAILURE for e in res.errors)
