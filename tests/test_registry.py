"""Schema registry: URL and relative imports resolved locally, pack precedence, compile-once, no network."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from lxml import etree

from hub.messages.families import MSGHEAD_NS
from hub.paths import SCHEMAS_DIR
from hub.validation.registry import SchemaError, SchemaRegistry, add_configured_pack, configured_packs

DIALOG_10 = "http://www.kith.no/xmlstds/dialog/2006-10-11"
APPREC_10 = "http://www.kith.no/xmlstds/apprec/2004-11-21"
HENV_OLD = "http://www.kith.no/xmlstds/henvisning/2003-10-13"


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """A guard: any socket connect during the test fails loudly."""

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


def _pack(tmp: Path, files: dict[str, str]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (tmp / name).write_text(text, encoding="utf-8")
    return tmp


# A tiny pack in the official style: imports by http:// URL and by a relative path of another folder.
_MAIN = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:c="urn:test:common"
  targetNamespace="urn:test:main" elementFormDefault="qualified">
  <xs:import namespace="urn:test:common" schemaLocation="http://www.kith.no/xmlstds/common-test.xsd"/>
  <xs:import namespace="urn:test:other" schemaLocation="../../felles/other-test.xsd"/>
  <xs:element name="Main"><xs:complexType><xs:sequence>
    <xs:element name="Code" type="c:Code"/>
  </xs:sequence></xs:complexType></xs:element>
</xs:schema>"""
_COMMON = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:test:common">
  <xs:simpleType name="Code"><xs:restriction base="xs:string"><xs:pattern value="[A-Z]+"/>
  </xs:restriction></xs:simpleType>
</xs:schema>"""
_OTHER = """<?xml version="1.0"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:test:other">
  <xs:element name="Other" type="xs:string"/>
</xs:schema>"""


def test_url_and_relative_imports_resolve_to_local_files(tmp_path: Path, no_network: None) -> None:
    pack = _pack(tmp_path / "pack", {"main.xsd": _MAIN, "common-test.xsd": _COMMON, "other-test.xsd": _OTHER})
    reg = SchemaRegistry([pack], ours=None)
    ref = reg.locate("urn:test:main")
    assert ref is not None and ref.path.name == "main.xsd" and ref.official
    schema = reg.schema_for([ref])
    good = etree.fromstring(b'<Main xmlns="urn:test:main"><Code>ABC</Code></Main>')
    bad = etree.fromstring(b'<Main xmlns="urn:test:main"><Code>abc</Code></Main>')
    assert schema.validate(good)
    assert not schema.validate(bad)  # the imported type's pattern is in force: the import was loaded
    asked = dict(reg.resolved)
    assert asked["http://www.kith.no/xmlstds/common-test.xsd"] == str(pack / "common-test.xsd")
    assert any(url.endswith("felles/other-test.xsd") and local == str(pack / "other-test.xsd")
               for url, local in reg.resolved)


def test_missing_import_fails_to_compile_instead_of_fetching(tmp_path: Path, no_network: None) -> None:
    pack = _pack(tmp_path / "pack", {"main.xsd": _MAIN, "other-test.xsd": _OTHER})  # common-test.xsd absent
    reg = SchemaRegistry([pack], ours=None)
    with pytest.raises(SchemaError):
        reg.schema_for([reg.locate("urn:test:main")])
    assert ("http://www.kith.no/xmlstds/common-test.xsd", None) in reg.resolved


def test_compiled_once_per_combination() -> None:
    reg = SchemaRegistry([])
    head, dialog = reg.locate(MSGHEAD_NS), reg.locate(DIALOG_10)
    first = reg.schema_for([head, dialog])
    assert reg.schema_for([dialog, head]) is first  # order does not matter
    assert reg.compiles == 1
    reg.schema_for([reg.locate(APPREC_10)])
    assert reg.compiles == 2


def test_ours_cover_every_family_namespace() -> None:
    from hub.messages.families import FAMILIES

    reg = SchemaRegistry([])
    for f in FAMILIES:
        ref = reg.locate(f.namespace, f.mig_version)
        assert ref is not None and ref.source == "ours" and ref.path.name == f.own_xsd, f.key


def test_henvisning_09_and_091_told_apart_by_migversion() -> None:
    reg = SchemaRegistry([])
    assert reg.locate(HENV_OLD, "v0.9 2003-10-13").path.name == "Henvisning-v0.9.xsd"
    assert reg.locate(HENV_OLD, "v0.91 2004-08-30").path.name == "Henvisning-v0.91.xsd"


def test_official_pack_takes_precedence_and_compiles_offline(reference: Path, no_network: None) -> None:
    reg = SchemaRegistry([reference / "xsd"])
    head = reg.locate(MSGHEAD_NS)
    assert head.official and head.path.parent == (reference / "xsd").resolve()
    # MsgHead imports xmldsig by http:// URL; Dialogmelding 1.0 imports kith.xsd relatively.
    schema = reg.schema_for([head, reg.locate(DIALOG_10)])
    sample = next((reference / "samples/ehelse-examples/Dialogmelding/Dialogmelding-v1-0").glob("*.xml"))
    assert schema.validate(etree.parse(str(sample)))
    # A namespace only the pack has (Behandlerkrav) is located there; ours still serve what it lacks.
    assert reg.covers("http://www.kith.no/xmlstds/bkm/2006-12-20")
    assert not SchemaRegistry([]).covers("http://www.kith.no/xmlstds/bkm/2006-12-20")


def test_every_official_schema_compiles_without_network(reference: Path, no_network: None) -> None:
    reg = SchemaRegistry([reference / "xsd"], ours=None)
    for ns in reg.coverage():
        reg.schema_for([reg.locate(ns)])
    assert reg.compiles == len(reg.coverage())
    # libxml2 fetches in C, past the socket guard: so prove every http:// import was mapped locally.
    remote = [(u, f) for u, f in reg.resolved if u.startswith("http")]
    assert remote and all(f is not None and Path(f).is_file() for _, f in remote)


def test_pack_without_the_namespace_falls_back_to_ours(tmp_path: Path) -> None:
    pack = _pack(tmp_path / "pack", {"other-test.xsd": _OTHER})
    reg = SchemaRegistry([pack])
    assert reg.locate("urn:test:other").source == str(pack.resolve())
    assert reg.locate(MSGHEAD_NS).source == "ours"
    assert reg.coverage()["urn:test:other"] == [str(pack.resolve())]


def test_configured_packs_from_settings_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_HOME", str(tmp_path / "home"))
    a = _pack(tmp_path / "a", {"other-test.xsd": _OTHER})
    b = _pack(tmp_path / "b", {"common-test.xsd": _COMMON})
    monkeypatch.setenv("HUB_SCHEMA_PACKS", str(b))
    assert configured_packs() == [b]
    add_configured_pack(a)
    add_configured_pack(a)  # idempotent
    assert configured_packs() == [b, a.resolve()]
    with pytest.raises(SchemaError):
        add_configured_pack(tmp_path / "nothing-here")
    reg = SchemaRegistry.default()
    assert reg.covers("urn:test:other") and reg.covers("urn:test:common") and reg.covers(MSGHEAD_NS)


def test_our_schemas_dir_is_the_project_one() -> None:
    assert (SCHEMAS_DIR / "MsgHead-v1_2.xsd").is_file()
