"""Every fixture message validates against the official KITH schemas (plain lxml, local files only).

Independent of hub.validation on purpose: the official pack in ../shared/reference/xsd is the oracle.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from hub.fixtures.broken import build_broken
from hub.fixtures.builder import build_all

MSGHEAD_NS = "http://www.kith.no/xmlstds/msghead/2006-05-24"
# Rules whose broken files must still be schema-valid: the defect is a business rule, not the XSD.
BUSINESS_RULES = {
    "msgid.missing",
    "msgid.uuid",
    "msgid.unique",
    "gendate.future",
    "ident.type",
    "ident.her",
    "code.value",
    "type.namespace",
    "receiver.missing",
    "sender.missing",
    "patient.fnr-missing",
    "patient.fnr-invalid",
    "patient.name-missing",
    "patient.insufficient",
}


class _LocalResolver(etree.Resolver):
    """Resolve every schemaLocation (http:// or relative) to the local file of the same name; never fetch."""

    def __init__(self, xsd_dir: Path) -> None:
        super().__init__()
        self.xsd_dir = xsd_dir

    def resolve(self, url: str, pubid: str | None, context: object):  # noqa: ANN201
        local = self.xsd_dir / url.rsplit("/", 1)[-1]
        return self.resolve_filename(str(local), context) if local.exists() else None


class OfficialSchemas:
    def __init__(self, xsd_dir: Path) -> None:
        self.xsd_dir = xsd_dir
        self.by_ns: dict[str, str] = {}
        for f in sorted(xsd_dir.glob("*.xsd")):
            m = re.search(rb'targetNamespace="([^"]+)"', f.read_bytes())
            # Henvisning 0.9 and 0.91 share a namespace; the hub carries 0.91.
            if m and f.name != "Henvisning-v0.9.xsd":
                self.by_ns.setdefault(m.group(1).decode(), f.name)
        self._cache: dict[tuple[str, ...], etree.XMLSchema] = {}

    def schema(self, namespaces: set[str]) -> etree.XMLSchema:
        key = tuple(sorted(namespaces))
        if key not in self._cache:
            imports = "".join(f'<xs:import namespace="{n}" schemaLocation="{self.by_ns[n]}"/>' for n in key)
            driver = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
            parser = etree.XMLParser(no_network=True, resolve_entities=False)
            parser.resolvers.add(_LocalResolver(self.xsd_dir))
            doc = etree.fromstring(driver.encode(), parser, base_url=str(self.xsd_dir / "driver.xsd"))
            self._cache[key] = etree.XMLSchema(etree.ElementTree(doc))
        return self._cache[key]

    def errors(self, data: bytes) -> list[str]:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
        namespaces = {etree.QName(root).namespace or ""}
        if etree.QName(root).namespace == MSGHEAD_NS:
            # RefDoc/Content is processContents="strict": the payload's schema must be loaded too.
            for content in root.iter(f"{{{MSGHEAD_NS}}}Content"):
                namespaces |= {etree.QName(c).namespace or "" for c in content.iterchildren(etree.Element)}
        unknown = namespaces - set(self.by_ns)
        if unknown:
            return [f"no official schema for {sorted(unknown)}"]
        schema = self.schema(namespaces)
        if schema.validate(etree.ElementTree(root)):
            return []
        return [f"{e.line}: {e.message}" for e in schema.error_log]


@pytest.fixture(scope="module")
def official(reference: Path) -> OfficialSchemas:
    return OfficialSchemas(reference / "xsd")


MESSAGES = build_all(1)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_fixture_message_is_valid_against_official_schemas(official: OfficialSchemas, name: str) -> None:
    assert official.errors(MESSAGES[name]) == []


def test_other_seeds_and_variants_are_valid_too(official: OfficialSchemas) -> None:
    for name, data in build_all(4).items():
        assert official.errors(data) == [], name


def test_oracle_rejects_a_broken_message(official: OfficialSchemas) -> None:
    # The oracle itself must be able to fail, or the tests above would prove nothing.
    data = (
        MESSAGES["epikrise-1.2.xml"]
        .replace(b"<MsgId>", b"<MsgIdent>", 1)
        .replace(b"</MsgId>", b"</MsgIdent>", 1)
    )
    assert official.errors(data)


SCHEMA_CASES = [c for c in build_broken(1) if c.rule == "xsd" or c.rule in BUSINESS_RULES]


def test_every_business_rule_has_a_schema_valid_case() -> None:
    assert {c.rule for c in SCHEMA_CASES} == BUSINESS_RULES | {"xsd"}


@pytest.mark.parametrize("case", SCHEMA_CASES, ids=lambda c: c.name)
def test_broken_xsd_cases_fail_and_business_cases_pass_the_schema(official: OfficialSchemas, case) -> None:
    if case.rule == "xsd":
        assert official.errors(case.data), "a schema-violation case must break the official schema"
    else:
        # One defect per file: a business-rule case must not also be a schema violation.
        assert official.errors(case.data) == []
        for companion in case.companions.values():
            assert official.errors(companion) == []


def test_every_fixture_message_is_valid_against_our_schemas() -> None:
    """Our own XSDs (schemas/, chosen through hub.messages.families) accept every fixture too."""
    from hub.messages.families import by_namespace
    from hub.paths import SCHEMAS_DIR

    cache: dict[tuple[tuple[str, str], ...], etree.XMLSchema] = {}
    for name, data in MESSAGES.items():
        root = etree.fromstring(data)
        parts = [root]
        if etree.QName(root).namespace == MSGHEAD_NS:
            parts += [
                c for ct in root.iter(f"{{{MSGHEAD_NS}}}Content") for c in ct.iterchildren(etree.Element)
            ]
        files = set()
        for el in parts:
            ns = etree.QName(el).namespace or ""
            family = by_namespace(ns, el.findtext("{*}MIGversion"))
            assert family is not None and family.own_xsd, (name, ns)
            files.add((ns, family.own_xsd))
        key = tuple(sorted(files))
        if key not in cache:
            imports = "".join(f'<xs:import namespace="{n}" schemaLocation="{f}"/>' for n, f in key)
            driver = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
            parser = etree.XMLParser(no_network=True, resolve_entities=False)
            parser.resolvers.add(_LocalResolver(SCHEMAS_DIR))
            doc = etree.fromstring(driver.encode(), parser, base_url=str(SCHEMAS_DIR / "driver.xsd"))
            cache[key] = etree.XMLSchema(etree.ElementTree(doc))
        schema = cache[key]
        assert schema.validate(etree.ElementTree(root)), (name, [e.message for e in schema.error_log][:3])
