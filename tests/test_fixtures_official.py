"""Every fixture message validates against the official KITH schemas (plain lxml, local files only).

Independent of hub.validation on purpose: the official pack in ../shared/reference/xsd is the oracle.
Also: the builder makes a message of every ELIN-k 2007 matrix row, valid officially and with ours.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from hub.fixtures.broken import build_broken
from hub.fixtures.builder import build, build_all, build_elin_k
from hub.messages.families import ELIN_K_MESSAGES, MatrixMessage, by_namespace

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


def _mig_token(el: etree._Element) -> str | None:
    """The version token of an element's MIGversion child ("v0.9 2003-10-13" -> "v0.9")."""
    words = (el.findtext("{*}MIGversion") or "").split()
    return words[0] if words else None


class OfficialSchemas:
    def __init__(self, xsd_dir: Path) -> None:
        self.xsd_dir = xsd_dir
        self.by_ns: dict[str, str] = {}
        # Namespaces several schema files share (Henvisning 0.9 and 0.91): the file per version token
        # of the schema's own `Version: "v0.9 ..."` header; the message's MIGversion picks one.
        self.by_version: dict[tuple[str, str], str] = {}
        for f in sorted(xsd_dir.glob("*.xsd")):
            text = f.read_bytes()
            m = re.search(rb'targetNamespace="([^"]+)"', text)
            if not m:
                continue
            ns = m.group(1).decode()
            v = re.search(rb'Version: "(v[0-9.]+) ', text)
            if v:
                self.by_version[(ns, v.group(1).decode())] = f.name
            # Henvisning 0.9 and 0.91 share a namespace; without a MIGversion to go by, 0.91.
            if f.name != "Henvisning-v0.9.xsd":
                self.by_ns.setdefault(ns, f.name)
        self._cache: dict[tuple[tuple[str, str], ...], etree.XMLSchema] = {}

    def file_for(self, el: etree._Element) -> str:
        ns = etree.QName(el).namespace or ""
        return self.by_version.get((ns, _mig_token(el) or ""), self.by_ns[ns])

    def schema(self, files: set[tuple[str, str]]) -> etree.XMLSchema:
        key = tuple(sorted(files))
        if key not in self._cache:
            imports = "".join(f'<xs:import namespace="{n}" schemaLocation="{f}"/>' for n, f in key)
            driver = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
            parser = etree.XMLParser(no_network=True, resolve_entities=False)
            parser.resolvers.add(_LocalResolver(self.xsd_dir))
            doc = etree.fromstring(driver.encode(), parser, base_url=str(self.xsd_dir / "driver.xsd"))
            self._cache[key] = etree.XMLSchema(etree.ElementTree(doc))
        return self._cache[key]

    def errors(self, data: bytes) -> list[str]:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))
        parts = [root]
        if etree.QName(root).namespace == MSGHEAD_NS:
            # RefDoc/Content is processContents="strict": the payload's schema must be loaded too.
            for content in root.iter(f"{{{MSGHEAD_NS}}}Content"):
                parts += list(content.iterchildren(etree.Element))
        unknown = {etree.QName(el).namespace or "" for el in parts} - set(self.by_ns)
        if unknown:
            return [f"no official schema for {sorted(unknown)}"]
        schema = self.schema({(etree.QName(el).namespace or "", self.file_for(el)) for el in parts})
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


_OWN_CACHE: dict[tuple[tuple[str, str], ...], etree.XMLSchema] = {}


def own_schema_errors(data: bytes) -> list[str]:
    """Errors of a message against our own XSDs (schemas/, chosen through hub.messages.families)."""
    from hub.messages.families import by_namespace
    from hub.paths import SCHEMAS_DIR

    root = etree.fromstring(data)
    parts = [root]
    if etree.QName(root).namespace == MSGHEAD_NS:
        parts += [c for ct in root.iter(f"{{{MSGHEAD_NS}}}Content") for c in ct.iterchildren(etree.Element)]
    files = set()
    for el in parts:
        ns = etree.QName(el).namespace or ""
        family = by_namespace(ns, el.findtext("{*}MIGversion"))
        if family is None or not family.own_xsd:
            return [f"no own schema for {ns}"]
        files.add((ns, family.own_xsd))
    key = tuple(sorted(files))
    if key not in _OWN_CACHE:
        imports = "".join(f'<xs:import namespace="{n}" schemaLocation="{f}"/>' for n, f in key)
        driver = f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>'
        parser = etree.XMLParser(no_network=True, resolve_entities=False)
        parser.resolvers.add(_LocalResolver(SCHEMAS_DIR))
        doc = etree.fromstring(driver.encode(), parser, base_url=str(SCHEMAS_DIR / "driver.xsd"))
        _OWN_CACHE[key] = etree.XMLSchema(etree.ElementTree(doc))
    schema = _OWN_CACHE[key]
    if schema.validate(etree.ElementTree(root)):
        return []
    return [f"{e.line}: {e.message}" for e in schema.error_log]


def test_every_fixture_message_is_valid_against_our_schemas() -> None:
    """Our own XSDs (schemas/, chosen through hub.messages.families) accept every fixture too."""
    for name, data in MESSAGES.items():
        assert own_schema_errors(data) == [], name


def test_henvisning_09_and_091_are_each_checked_with_their_own_official_schema(
    official: OfficialSchemas,
) -> None:
    # They share a namespace: MIGversion must pick the file, or 0.91's Booking would pass as 0.9.
    h09 = etree.fromstring(MESSAGES["henvisning-0.9.xml"])
    h091 = etree.fromstring(MESSAGES["henvisning-0.91.xml"])
    assert official.file_for(h09) == "Henvisning-v0.9.xsd"
    assert official.file_for(h091) == "Henvisning-v0.91.xsd"
    # A Booking (new in 0.91) after RefDoc/MsgType: valid in 0.91, a schema error in 0.9.
    booking = (
        b"<RefDoc><MsgType V=\"A\" DN=\"Vedlegg\"/><Booking><Name>Poliklinikk</Name><Id>1</Id>"
        b"<Appointment><StartDateTime V=\"2024-05-02T10:00:00\"/><EndDateTime V=\"2024-05-02T10:30:00\"/>"
        b"<ResourceId>R1</ResourceId><Index>1</Index><Service V=\"1\"/></Appointment></Booking></RefDoc>"
    )
    for name, mig, ok in (("henvisning-0.9.xml", b"v0.9 2003-10-13", False),
                          ("henvisning-0.9.xml", b"v0.91 2004-08-30", True)):
        data = MESSAGES[name].replace(b"v0.9 2003-10-13", mig)
        data = data.replace(b"<ReasonAsText>", booking + b"<ReasonAsText>", 1)
        assert (official.errors(data) == []) is ok, (mig, official.errors(data))


# --- ELIN-k 2007 matrix rows --------------------------------------------------------------------------
# Every row (hub.messages.families.ELIN_K_MESSAGES) names the family and version it is validated with
# and what tells its messages apart from the family's other rows (MatrixMessage.matches): the builder
# makes a message of each row that matches it, no other row, and validates officially and with ours.

ROWS = sorted(ELIN_K_MESSAGES)
SEEDS = (1, 2, 3, 4, 5, 6)


def _id(key: tuple[str, str]) -> str:
    return f"{key[0]} {key[1]}"


def _siblings(row: MatrixMessage) -> list[MatrixMessage]:
    """Other rows of the same family and version whose discriminator values differ from this row's."""
    return [
        m for m in ELIN_K_MESSAGES.values()
        if m is not row and (m.family_name, m.family_version) == (row.family_name, row.family_version)
        and m.discriminator_path and not set(m.discriminator_values) & set(row.discriminator_values)
    ]


def _family_root(data: bytes) -> etree._Element:
    """The document of the message's family: the payload in MsgHead's Content, else the root."""
    root = etree.fromstring(data)
    if etree.QName(root).namespace == MSGHEAD_NS:
        return next(root.iter(f"{{{MSGHEAD_NS}}}Content"))[0]
    return root


def test_there_are_eleven_rows() -> None:
    assert len(ROWS) == 11


@pytest.mark.parametrize("key", ROWS, ids=_id)
def test_row_message_matches_its_row_and_our_schemas(key: tuple[str, str]) -> None:
    row = ELIN_K_MESSAGES[key]
    for seed in SEEDS:
        data = build_elin_k(*key, seed=seed)
        root = _family_root(data)
        ns = etree.QName(root).namespace
        # The family table reads it as the row's family and version (Henvisning 0.9/0.91: MIGversion).
        assert by_namespace(ns or "", root.findtext("{*}MIGversion")) == row.family, (seed, ns)
        assert row.matches(root), (key, seed)
        for other in _siblings(row):
            assert not other.matches(root), (key, "also matches", other.name, seed)
        assert own_schema_errors(data) == [], (key, seed)


@pytest.mark.parametrize("key", ROWS, ids=_id)
def test_row_message_is_valid_against_the_official_schema(
    official: OfficialSchemas, key: tuple[str, str]
) -> None:
    row = ELIN_K_MESSAGES[key]
    for seed in SEEDS:
        data = build_elin_k(*key, seed=seed)
        root = etree.fromstring(data)
        if row.family.carrier == "own":
            assert official.file_for(root) == row.family.official_xsd, key
        assert official.errors(data) == [], (key, seed)


def test_discriminators_can_fail() -> None:
    """A radiology requisition is not a lab one, a pathology report not a microbiology one, ..."""
    lab = ELIN_K_MESSAGES[("Rekvisisjon Medisinsk biokjemi", "1.0")]
    rtg = ELIN_K_MESSAGES[("Rekvisisjon Røntgen", "1.3")]
    rtg_root = etree.fromstring(build("Rekvisisjon", "1.4", variant="radiologi"))
    lab_root = etree.fromstring(build("Rekvisisjon", "1.4"))
    assert rtg.matches(rtg_root) and not lab.matches(rtg_root)
    assert lab.matches(lab_root) and not rtg.matches(lab_root)
    # The 1.6 lab requisition says LAB: still the biochemistry row's value, but not of family 1.4.
    mbio = ELIN_K_MESSAGES[("Svarrapport Mikrobiologi", "1.2")]
    assert not mbio.matches(etree.fromstring(build("Svarrapport", "1.2", variant="patologi")))
    # Henvisning 0.91's row is told apart from 0.9 by MIGversion.
    h091 = ELIN_K_MESSAGES[("Henvisning", "0.91")]
    assert not h091.matches(etree.fromstring(build("Henvisning", "0.9")))
    assert h091.matches(etree.fromstring(build("Henvisning", "0.91")))
    # A Tilbakemelding must point back at the referral.
    reply = ELIN_K_MESSAGES[("Tilbakemelding på henvisning", "0.9")]
    root = etree.fromstring(build_elin_k(reply.name, reply.version))
    for el in root.xpath("k:ServRprt/k:ServReq", namespaces={"k": reply.family.namespace}):
        el.getparent().remove(el)
    assert not reply.matches(root)


def test_radiology_requisitions_use_every_modality_and_go_to_radiology() -> None:
    seen = set()
    for seed in range(1, 30):
        root = etree.fromstring(build("Rekvisisjon", "1.4", seed=seed, variant="radiologi"))
        seen.add(root.find("{*}ServReq/{*}MsgDescr").get("V"))
        assert root.findtext("{*}ServReq/{*}ServProvider/{*}HCP/{*}Inst/{*}Dept/{*}Id") == "81005"
        assert root.find("{*}ServReq/{*}ReqInvestigation/{*}Investigation/{*}Id").get("S") == (
            "2.16.578.1.12.4.1.1.7270"
        )
    assert seen == {"CT", "MR", "UL"}


def test_tilbakemelding_refers_to_the_given_referral() -> None:
    referral = etree.fromstring(build("Henvisning", "0.9", seed=2))
    ref_id = referral.findtext("{*}ServReq/{*}Id")
    ref_date = referral.find("{*}ServReq/{*}IssueDate").get("V")
    root = etree.fromstring(
        build_elin_k("Tilbakemelding på henvisning", "0.9", seed=2, referral=(ref_date, ref_id))
    )
    assert root.findtext("{*}ServRprt/{*}ServReq/{*}Id") == ref_id
    assert root.find("{*}ServRprt/{*}ServReq/{*}IssueDate").get("V") == ref_date
    assert root.findtext("{*}ServRprt/{*}MsgDescr") == "Tilbakemelding på henvisning"
    # From the outpatient clinic the GP referred to, back to the GP.
    assert root.findtext("{*}ServRprt/{*}ServProvider/{*}HCP/{*}Inst/{*}Dept/{*}Id") == "81002"
    assert root.findtext("{*}ServRprt/{*}Requester/{*}HCP/{*}Inst/{*}HCPerson/{*}Id") == "82002"


def test_build_elin_k_rejects_an_unknown_row() -> None:
    with pytest.raises(ValueError, match="no ELIN-k"):
        build_elin_k("Rekvisisjon Røntgen", "9.9")


def test_unknown_variants_are_refused() -> None:
    with pytest.raises(ValueError, match="variant"):
        build("Rekvisisjon", "1.4", variant="patologi")
    with pytest.raises(ValueError, match="variant"):
        build("Epikrise", "1.0", variant="henvisning")
