"""The family table: lookups, our schema files, and agreement with the official schemas and examples."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from lxml import etree

from hub.messages import families as fam
from hub.paths import SCHEMAS_DIR, shared_dir

XS = "http://www.w3.org/2001/XMLSchema"
SKIP_DIRS = ("Behandlerkravmelding", "NPRbehandlerkravmelding", "KommunikasjonAvEPJ-innhold")


def _schema_facts(path: Path) -> tuple[str | None, set[str]]:
    root = etree.parse(str(path)).getroot()
    return root.get("targetNamespace"), {e.get("name") for e in root.iterfind(f"{{{XS}}}element")}


def test_keys_are_unique_and_every_family_is_found_by_key_and_namespace() -> None:
    keys = [f.key for f in fam.FAMILIES]
    assert len(keys) == len(set(keys))
    for f in fam.FAMILIES:
        assert fam.by_key(f.name, f.version) is f
        assert fam.by_key(f.name.upper(), f.version) is f
        assert fam.by_namespace(f.namespace, f.mig_version) is f
        assert f.carrier in ("msghead", "own", "self")


def test_unknown_lookups_give_none() -> None:
    assert fam.by_namespace("urn:example:nothing") is None
    assert fam.by_key("Dialogmelding", "9.9") is None
    assert fam.elin_k_message("Dialogmelding", "9.9") is None


def test_names_fold_accents_and_spaces() -> None:
    f = fam.by_key("melding_om_fravar", "1.5")
    assert f is not None and f.name == "Melding om fravær"
    ascii_name = fam.by_key("Helseopplysninger ved soknad", "1.6")
    assert ascii_name is fam.by_key("Helseopplysninger ved søknad", "1.6")


def test_henvisning_09_and_091_share_a_namespace_and_migversion_decides() -> None:
    h09, h091 = fam.by_key("Henvisning", "0.9"), fam.by_key("Henvisning", "0.91")
    assert h09 and h091 and h09.namespace == h091.namespace
    assert fam.by_namespace(h09.namespace, "v0.9 2003-10-13") is h09
    assert fam.by_namespace(h09.namespace, "v0.91 2004-08-30") is h091
    assert fam.by_namespace(h09.namespace, " v0.91 ") is h091  # date part varies in practice
    assert fam.by_namespace(h09.namespace, "v0.9") is h09
    assert h09.own_xsd != h091.own_xsd


def test_required_families_are_covered() -> None:
    wanted = {
        ("MsgHead", "1.2"), ("AppRec", "1.0"), ("AppRec", "1.1"), ("Dialogmelding", "1.0"),
        ("Dialogmelding", "1.1"), ("Epikrise", "1.0"), ("Epikrise", "1.1"), ("Epikrise", "1.2"),
        ("Henvisning", "0.9"), ("Henvisning", "0.91"),
        ("Henvisning", "1.0"), ("Henvisning", "1.1"), ("Henvisning", "2.0"), ("Rekvisisjon", "1.5"),
        ("Rekvisisjon", "1.6"), ("Svarrapport", "1.2"), ("Svarrapport", "1.3"), ("Svarrapport", "1.4"),
        ("Melding om fravær", "1.5"),
    }
    for plo in ("Innleggelsesrapport", "Utskrivningsrapport", "Helseopplysninger til lege",
                "Helseopplysninger ved søknad", "Medisinske opplysninger", "Orientering om tjenestetilbud",
                "Pasientlogistikk"):
        wanted |= {(plo, "1.5"), (plo, "1.6")}
    have = {(f.name, f.version) for f in fam.FAMILIES}
    assert wanted <= have, wanted - have


@pytest.mark.parametrize("family", fam.FAMILIES, ids=lambda f: f.key)
def test_own_xsd_exists_with_the_family_namespace_and_root(family: fam.Family) -> None:
    assert family.own_xsd
    path = SCHEMAS_DIR / family.own_xsd
    assert path.is_file()
    ns, roots = _schema_facts(path)
    assert ns == family.namespace
    assert family.root in roots
    assert fam.by_own_xsd(family.own_xsd) is family


def test_own_families_name_their_parties() -> None:
    for f in fam.FAMILIES:
        has_paths = bool(f.sender_path and f.receiver_path)
        assert has_paths == (f.carrier == "own"), f.key


@pytest.mark.parametrize("family", fam.FAMILIES, ids=lambda f: f.key)
def test_official_xsd_agrees_on_namespace_and_root(reference: Path, family: fam.Family) -> None:
    ns, roots = _schema_facts(reference / "xsd" / family.official_xsd)
    assert ns == family.namespace
    assert family.root in roots


def _documents(reference: Path) -> list[tuple[Path, etree._Element, etree._Element, str]]:
    """(file, document root, family root element, message type) for every covered official example."""
    out = []
    base = reference / "samples" / "ehelse-examples"
    for path in sorted(base.rglob("*.xml")):
        if any(d in path.parts for d in SKIP_DIRS):
            continue
        root = etree.parse(str(path)).getroot()
        if etree.QName(root).namespace == fam.MSGHEAD_NS:
            msg_type = root.find("{*}MsgInfo/{*}Type").get("V")
            for payload in root.iterfind(".//{*}Content/*"):
                if etree.QName(payload).namespace != fam.BASE64_NS:
                    out.append((path, root, payload, msg_type))
        else:
            type_el = root.find("{*}Type")
            out.append((path, root, root, type_el.get("V") if type_el is not None else ""))
    return out


def test_every_official_example_maps_back_to_its_family(reference: Path) -> None:
    docs = _documents(reference)
    assert len(docs) >= 140
    seen: set[str] = set()
    for path, _doc, el, msg_type in docs:
        q = etree.QName(el)
        f = fam.by_namespace(q.namespace or "", el.findtext("{*}MIGversion"))
        assert f is not None, path.name
        assert f.root == q.localname, path.name
        assert msg_type in f.msg_types, (path.name, msg_type, f.key)
        seen.add(f.key)
    # every payload family with an official example was met
    assert {"Dialogmelding:1.0", "Dialogmelding:1.1", "Henvisning:2.0", "Epikrise:1.1", "Epikrise:1.2",
            "Henvisning:1.0", "Henvisning:1.1", "Rekvisisjon:1.5", "Rekvisisjon:1.6", "Svarrapport:1.3",
            "Svarrapport:1.4", "Pasientlogistikk:1.5", "Pasientlogistikk:1.6", "Utskrivningsrapport:1.6",
            "Helseopplysninger til lege:1.5", "Helseopplysninger ved søknad:1.6"} <= seen


def test_sender_and_receiver_paths_find_the_parties_in_the_examples(reference: Path) -> None:
    checked = 0
    for path, _doc, el, _t in _documents(reference):
        f = fam.by_namespace(etree.QName(el).namespace or "", el.findtext("{*}MIGversion"))
        assert f is not None
        if f.carrier != "own":
            continue
        ns = {"k": f.namespace}
        sender = el.xpath(f.sender_path, namespaces=ns)
        receiver = el.xpath(f.receiver_path, namespaces=ns)
        assert len(sender) == 1 and len(receiver) == 1, path.name
        assert sender[0] is not receiver[0]
        # the organisation is identified (HER-id or similar) and named
        for party in (sender[0], receiver[0]):
            assert party.findtext("k:Id", namespaces=ns), path.name
        checked += 1
    assert checked >= 60


def test_plo_payload_examples_are_for_the_nursing_families(reference: Path) -> None:
    plo = [d for d in _documents(reference) if "plo" in d[0].parts and d[0].parts[-3] != "test"]
    assert len(plo) >= 40
    for path, _doc, el, _t in plo:
        f = fam.by_namespace(etree.QName(el).namespace or "")
        assert f is not None and f.carrier == "msghead", path
        assert f.version in path.parts[-3].replace("_", "."), path


# --- ELIN-k ---------------------------------------------------------------------------------------


def test_elin_k_has_the_eleven_message_rows() -> None:
    assert len(fam.ELIN_K_MESSAGES) == 11
    for (name, version), m in fam.ELIN_K_MESSAGES.items():
        assert (m.name, m.version) == (name, version)
        assert m.family.own_xsd  # every row maps to a family we validate
        assert fam.elin_k_message(name, version) is m
    rows = fam.ELIN_K_MESSAGES
    assert fam.elin_k_message("svarrapport patologi", "1.2") is rows[("Svarrapport Patologi", "1.2")]
    assert fam.elin_k_message("Rekvisisjon Rontgen", "1.3") is rows[("Rekvisisjon Røntgen", "1.3")]


def test_elin_k_rows_match_the_matrix_csv() -> None:
    shared = shared_dir()
    csv_path = shared / "conformance" / "elin-k-2007-matrix.csv" if shared else None
    if csv_path is None or not csv_path.is_file():
        pytest.skip("the ELIN-k matrix is not present")
    with csv_path.open(encoding="utf-8") as fh:
        rows = {(r["message"], r["version"]) for r in csv.DictReader(fh)}
    assert rows <= set(fam.ELIN_K_MESSAGES)
    assert len(rows) >= 10  # the CSV has approved cells for ten of the eleven message rows


def test_elin_k_rows_without_a_schema_of_their_own_say_why() -> None:
    for m in fam.ELIN_K_MESSAGES.values():
        own_number = (m.family_name, m.family_version) == (m.name.split()[0], m.version)
        if not own_number and m.name != "Applikasjons-kvittering":
            assert m.note, m.name


def _moved(path: Path, family: fam.Family) -> etree._Element:
    """An official example moved into another version's namespace (for the discriminators)."""
    root = etree.parse(str(path)).getroot()
    for el in root.iter():
        if isinstance(el.tag, str):
            el.tag = f"{{{family.namespace}}}{etree.QName(el).localname}"
    return root


@pytest.mark.parametrize(
    ("row", "pattern", "expected"),
    [
        ("Svarrapport Mikrobiologi", "Svar_mikrobiologi_*", True),
        ("Svarrapport Mikrobiologi", "Svar_patologi_*", False),
        ("Svarrapport Patologi", "Svar_patologi_*", True),
        ("Svarrapport Patologi", "Svar_radiologi_*", False),
        ("Svarrapport Radiologi", "Svar_radiologi_*", True),
        ("Svarrapport Radiologi", "Svar_biokjemi_*", False),
        ("Svarrapport Medisinsk biokjemi", "Svar_biokjemi_*", True),
        ("Svarrapport Medisinsk biokjemi", "Svar_mikrobiologi_*", False),
    ],
)
def test_svarrapport_discipline_discriminators(
    reference: Path, row: str, pattern: str, expected: bool
) -> None:
    m = next(m for m in fam.ELIN_K_MESSAGES.values() if m.name == row)
    folder = reference / "samples/ehelse-examples/Svarrapport/Svarrapport-v-1-3"
    files = sorted(folder.glob(pattern + ".xml"))
    assert files
    for path in files:
        assert m.matches(_moved(path, m.family)) is expected, path.name


def test_rekvisisjon_discriminators(reference: Path) -> None:
    lab = fam.ELIN_K_MESSAGES[("Rekvisisjon Medisinsk biokjemi", "1.0")]
    rtg = fam.ELIN_K_MESSAGES[("Rekvisisjon Røntgen", "1.3")]
    files = sorted((reference / "samples/ehelse-examples/Rekvisisjon/Rekvisisjon-v-1-5").glob("*.xml"))
    for path in files:
        is_lab = "_lab_" in path.name
        assert lab.matches(_moved(path, lab.family)) is is_lab, path.name
        assert rtg.matches(_moved(path, rtg.family)) is not is_lab, path.name


def test_tilbakemelding_pa_henvisning_needs_the_referral_reference(reference: Path) -> None:
    row = fam.ELIN_K_MESSAGES[("Tilbakemelding på henvisning", "0.9")]
    assert row.family.key == "Epikrise:1.0"
    path = reference / "samples/ehelse-examples/Epikrise/Epikrise_v1-1/epikrise_v1.1_n.xml"
    root = _moved(path, row.family)
    ns = {"k": row.family.namespace}
    has_servreq = bool(root.xpath("k:ServRprt/k:ServReq", namespaces=ns))
    assert row.matches(root) is has_servreq
    servrprt = root.find("k:ServRprt", ns)
    if has_servreq:
        for el in servrprt.findall("k:ServReq", ns):
            servrprt.remove(el)
        assert not row.matches(root)
    else:
        servrprt.insert(8, etree.Element(f"{{{row.family.namespace}}}ServReq"))
        assert row.matches(root)
    # the plain Epikrise row makes no such demand
    assert fam.ELIN_K_MESSAGES[("Epikrise", "1.0")].matches(root)


def test_henvisning_091_row_checks_migversion() -> None:
    row = fam.ELIN_K_MESSAGES[("Henvisning", "0.91")]
    ns = row.family.namespace
    text = f'<Message xmlns="{ns}"><MIGversion>v0.91 2004-08-30</MIGversion></Message>'
    doc = etree.fromstring(text.encode())
    assert row.matches(doc)
    doc[0].text = "v0.9 2003-10-13"
    assert not row.matches(doc)
