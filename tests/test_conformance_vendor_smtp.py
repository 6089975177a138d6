"""A vendor's own system under test over ebXML on SMTP: `hub conformance run --endpoint mailto:… --smtp …`.

The vendor's message service is tests/conformance_vendor_msh.py in a process of its own with an SMTP
listener on 127.0.0.1 (`--smtp`): the runner mails its packages there (`--smtp`, the vendor's mail
server) and takes the vendor's Acknowledgments, MessageErrors and AppRecs on its own SMTP listener
(`--listen`; the vendor process uses it as its mail relay). Real SMTP both ways, no mocks. A correct
vendor passes; one that mails no ebMS signals back fails exactly the ebMS cases. A CPA given whole with
`--cpa` decides: its endpoints (the test centre's mailbox too) and its isConfidential="none" are
followed; a CPA of another party is a usage error.
"""

from __future__ import annotations

import email
import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree
from test_conformance_vendor_ebms import _cases, vendor  # noqa: F401 - vendor: a fixture
from typer.testing import CliRunner

from hub.cli.main import app
from hub.conformance import vendor_ebms as ve
from hub.conformance.profiles import load_profile, load_profiles
from hub.conformance.trust import TEST_CENTRE, network_pki
from hub.conformance.vendor_ebms import SECURITY_FAILURE, agreement
from hub.ebxml.cpa import CPPA_NS

C = f"{{{CPPA_NS}}}"
EB = "{http://www.oasis-open.org/committees/ebxml-msg/schema/msg-header-2_0.xsd}"


def free_port() -> int:
    """A port for the runner's SMTP listener, known before the vendor process starts (its mail relay)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_vendor(vendor):  # noqa: ANN001, ANN201, F811 - vendor: the fixture of test_conformance_vendor_ebms
    """The vendor over SMTP: (its mailto: endpoint, its SMTP server, the runner's listener, root)."""

    def start(*flags: str) -> tuple[str, str, int, Path]:
        port = free_port()
        line, root = vendor("--smtp", str(port), *flags)
        url, server = line.split()
        return url, server, port, root

    return start


def _run(tmp_path: Path, *args: str) -> tuple[int, dict | None, str]:
    res = CliRunner().invoke(app, ["conformance", "run", "--profile", str(tmp_path / "ebxml-epj.toml"),
                                   "--timeout", "4", "--json", *args],
                             env={"HUB_HOME": str(tmp_path / "home")})
    report = json.loads(res.stdout) if res.exit_code in (0, 1) else None
    return res.exit_code, report, res.output


def received(root: Path) -> list[tuple[str, str | None, list[str]]]:
    """The mails the vendor took: (To, the ebXML To HER-id, content types of the parts after the SOAP
    part: the payloads; none for a signal)."""
    out = []
    for f in sorted((root / "received").glob("*.eml")):
        m = email.message_from_bytes(f.read_bytes())
        parts = [p for p in m.walk() if not p.is_multipart()]
        soap = etree.fromstring(parts[0].get_payload(decode=True))
        to = soap.find(f".//{EB}To/{EB}PartyId")
        out.append((m["To"], to.text if to is not None else None, [p.get_content_type() for p in parts[1:]]))
    return out


def senders(root: Path) -> list[str]:
    return [email.message_from_bytes(f.read_bytes())["From"] for f in (root / "received").glob("*.eml")]


def _failed(report: dict) -> dict[str, str]:
    return {k: c["observed"] for k, c in _cases(report).items() if c["verdict"] == "fail"}


def test_a_correct_vendor_msh_over_smtp_passes(tmp_path, smtp_vendor):
    url, server, port, root = smtp_vendor()
    code, report, out = _run(tmp_path, "--endpoint", url, "--smtp", server, "--listen", str(port),
                             "--cpp", str(root / "cpp.xml"))
    assert report is not None, out
    cases = _cases(report)
    assert code == 0, _failed(report)
    assert cases["M.ebms-ack"]["verdict"] == "pass"
    assert cases["M.ebms-duplicate"]["observed"] == "Acknowledgment, Acknowledgment; 1 AppRec(s)"
    assert cases["M.ebms-tampered"]["observed"] == f"MessageError {SECURITY_FAILURE}; 0 AppRec(s)"
    assert [c["verdict"] for c in report["cells"]] == ["pass", "pass"]
    assert cases["S.ebxml"]["verdict"] == cases["S.signature"]["verdict"] == "pass"
    cpa = (root / "cpa.xml").read_text(encoding="utf-8")
    # the CPA binds both over SMTP: the vendor's mailbox, and the test centre's (the default --mailbox)
    assert url in cpa and "mailto:ebms-runner@conformance.test" in cpa and ">HTTP<" not in cpa
    # what went over the wire: mail to the vendor's mailbox, every payload to it encrypted as the CPA
    # made from the CPP says
    mails = received(root)
    assert mails and all(to == url.removeprefix("mailto:") for to, _, _ in mails)
    payloads = [kinds for _, her, kinds in mails if her == "87110" and kinds]
    assert payloads and all(kinds == ["application/pkcs7-mime"] for kinds in payloads), payloads


def test_a_vendor_msh_that_mails_no_signals_fails_the_ebms_cases(tmp_path, smtp_vendor):
    url, server, port, root = smtp_vendor("--mute")
    code, report, out = _run(tmp_path, "--endpoint", url, "--smtp", server, "--listen", str(port),
                             "--cpp", str(root / "cpp.xml"), "--direction", "M", "--timeout", "3")
    assert report is not None, out
    cases = _cases(report)
    assert code == 1
    assert set(_failed(report)) == {"M.ebms-ack", "M.ebms-duplicate", "M.ebms-tampered"}, _failed(report)
    assert "transmission 1: none" in cases["M.ebms-duplicate"]["findings"][0]["text"]
    assert cases["M.ebms-tampered"]["observed"] == "none; 0 AppRec(s)"
    # the business level still works over mail: the AppRecs came, only the message service is at fault
    assert cases["M.valid"]["verdict"] == "pass"


def _given_cpa(tmp_path: Path, root: Path, *, her: str = "87110") -> Path:
    """A CPA as a test centre hands one out, made from the vendor's CPP and then edited by hand: the
    test centre at another mailbox, no encryption (isConfidential="none"), and (`her`) the system's
    party, or another one."""
    profile = load_profile(tmp_path / "ebxml-epj.toml")
    pki = network_pki(tmp_path / "home" / "conformance" / "pki", {**load_profiles(), profile.name: profile})
    now = datetime.now(UTC)
    ours = ve.test_centre_party(pki.identity(TEST_CENTRE), 86001, "mailto:testsenter@conformance.test")
    tree = etree.fromstring(agreement(f"given_{her}", ours, (root / "cpp.xml").read_bytes(),
                                      now - timedelta(days=1), now + timedelta(days=30)))
    for b in tree.iter(f"{C}ThisPartyActionBinding"):
        btc = b.find(f"{C}BusinessTransactionCharacteristics")
        if btc is None:
            btc = etree.Element(f"{C}BusinessTransactionCharacteristics")
            b.insert(0, btc)
        btc.set(f"{C}isConfidential", "none")
    # and no pkcs7-mime layer in the packages (a sender follows it): their composites hold the document
    for enc in list(tree.iter(f"{C}Encapsulation")):
        inner = enc.find(f"{C}Constituent").get(f"{C}idref")
        for ref in tree.iter(f"{C}Constituent"):
            if ref.get(f"{C}idref") == enc.get(f"{C}id"):
                ref.set(f"{C}idref", inner)
        enc.getparent().remove(enc)
    for pid in tree.iter(f"{C}PartyId"):
        if pid.text == "87110":
            pid.text = her
    out = tmp_path / f"given-{her}.xml"
    out.write_bytes(etree.tostring(tree, xml_declaration=True, encoding="UTF-8"))
    return out


def test_a_cpa_given_whole_decides_endpoints_and_encryption(tmp_path, smtp_vendor):
    url, server, port, root = smtp_vendor()
    given = _given_cpa(tmp_path, root)
    # no --endpoint and no --mailbox: the CPA names both (the profile's endpoint is HTTP, not used)
    code, report, out = _run(tmp_path, "--cpa", str(given), "--smtp", server, "--listen", str(port),
                             "--direction", "M")
    assert report is not None, out
    assert code == 0, _failed(report)
    assert (root / "cpa.xml").read_bytes() == given.read_bytes()  # what the vendor installed
    # the runner mailed from the CPA's mailbox, and the vendor's AppRecs and signals reached it there (a
    # listener for another address refuses them); every business message under the CPA went out in
    # clear, as isConfidential="none" says
    mails = received(root)
    assert mails and all(sender == "testsenter@conformance.test" for sender in senders(root))
    payloads = [kinds for _, her, kinds in mails if her == "87110" and kinds]
    assert payloads and all(kinds == ["application/xml"] for kinds in payloads), payloads
    assert _cases(report)["M.ebms-duplicate"]["verdict"] == "pass"


def test_a_cpa_of_another_party_or_without_a_relay_is_a_usage_error(tmp_path, smtp_vendor):
    url, server, port, root = smtp_vendor()
    wrong = _given_cpa(tmp_path, root, her="87999")
    code, report, out = _run(tmp_path, "--cpa", str(wrong), "--smtp", server, "--direction", "M")
    assert code == 2 and report is None
    assert "does not bind" in out and "HER 87110" in out, out
    # a mailto: endpoint needs somewhere to submit the mail
    code, _, out = _run(tmp_path, "--endpoint", url, "--cpp", str(root / "cpp.xml"), "--direction", "M")
    assert code == 2 and "--smtp" in out, out
    # an endpoint that disagrees with the given CPA
    code, _, out = _run(tmp_path, "--cpa", str(_given_cpa(tmp_path, root)), "--endpoint",
                        "mailto:other@vendor.test", "--smtp", server, "--direction", "M")
    assert code == 2 and "the CPA decides" in out, out
    assert not (root / "received").exists()  # nothing was sent


def test_starttls_to_the_vendors_mail_server_with_smtp_ca(tmp_path, smtp_vendor):
    """The vendor's SMTP server requires STARTTLS: with --smtp-ca (the test PKI's anchors) the runner's
    mail goes over verified TLS and the cell passes; anchors the server's certificate does not chain to
    end the run with a clear error (exit 2), nothing delivered."""
    url, server, port, root = smtp_vendor("--starttls")
    pki = tmp_path / "home" / "conformance" / "pki"
    code, _, out = _run(tmp_path, "--endpoint", url, "--smtp", server, "--listen", str(port),
                        "--cpp", str(root / "cpp.xml"), "--smtp-ca", str(pki / "ca" / "rogue.pem"),
                        "--direction", "M")
    assert code == 2 and "could not be submitted to" in out and "--smtp-ca" in out, out
    assert not (root / "received").exists()
    code, report, out = _run(tmp_path, "--endpoint", url, "--smtp", server, "--listen", str(port),
                             "--cpp", str(root / "cpp.xml"), "--smtp-ca", str(pki / "trust" / "anchors.pem"),
                             "--direction", "M")
    assert report is not None, out
    assert code == 0, _failed(report)
    assert _cases(report)["M.ebms-duplicate"]["verdict"] == "pass"
    assert len(list((root / "received").glob("*.eml"))) > 5
