"""The KITH document's own signature (enveloped ds:Signature), checked against the sender's registered
certificate: a step wrapped around the inspector, so its findings (S01 signature, S02 certificate,
S03 revoked) reach the pipeline like any other; a CRL that cannot be fetched is no verdict (pending).

Dependencies are passed in: where a HER-id's registered signing certificate is, and the validator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from cryptography import x509
from lxml import etree

from hub.relay import pipeline as pl
from hub.security.certs import CertificateValidator
from hub.security.errors import SecurityError
from hub.security.xmldsig import DS, verify_enveloped

Inspector = Callable[[bytes, str], pl.Facts]


def parsed_root(facts: pl.Facts) -> etree._Element | None:
    """The document's root as the inspector (validation) parsed it, when it did: not parsed again."""
    info = getattr(facts.source, "info", None)
    payload = getattr(info, "payload", None)
    return payload.getroottree().getroot() if payload is not None else None


def kith_signature(data: bytes, root: etree._Element | None = None) -> bool:
    """Whether the document's root carries a ds:Signature (KITH documents are signed enveloped)."""
    if b"Signature" not in data:
        return False
    if root is None:
        try:
            root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
        except etree.XMLSyntaxError:
            return False
    return root.find(f"{{{DS}}}Signature") is not None


class KithSignatureCheck:
    def __init__(self, sign_cert: Callable[[int | None], x509.Certificate | None],
                 validator: CertificateValidator,
                 allow_sha1: Callable[[int | None], bool] = lambda her: False) -> None:
        self.sign_cert, self.validator, self.allow_sha1 = sign_cert, validator, allow_sha1

    def checked(self, inspect: Inspector) -> Inspector:
        """Wrap an inspector: a signed document must verify, signed by the sender's registered certificate."""

        def run(data: bytes, name: str) -> pl.Facts:
            facts = inspect(data, name)
            root = parsed_root(facts)
            if not kith_signature(data, root):
                return facts
            finding = self.check(data, facts, root)
            if finding is not None and finding.transient:  # no verdict yet: the pipeline defers it
                return replace(facts, pending=(finding,))
            return facts if finding is None else replace(facts, errors=(finding, *facts.errors))

        return run

    def check(self, data: bytes, facts: pl.Facts, root: etree._Element | None = None) -> pl.Finding | None:
        """`root`: the parsed document when at hand (verify_enveloped works on a copy of it)."""
        expected = self.sign_cert(facts.sender_her)
        try:
            v = verify_enveloped(root if root is not None else data,
                                 expected_certs=[expected] if expected is not None else [],
                                 allow_sha1=self.allow_sha1(facts.sender_her))
            self.validator.check(v.certificate, "sign", facts.gen_date)
        except SecurityError as e:
            # e.g. crl-unavailable: the revocation status is unknown now, not bad (issue #3)
            return pl.Finding(e.apprec_code, f"security.{e.kind}", e.message, transient=e.transient)
        except Exception as e:  # noqa: BLE001 - not XML the verifier can read: a broken signature
            return pl.Finding("S01", "security.signature-malformed", str(e))
        return None
