"""Our own schemas in schemas/: they compile, accept the official examples and reject what the
official schemas reject on the parts we model strictly."""

from __future__ import annotations

import copy
import functools
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import xmlschema
from lxml import etree

from hub.messages import families as fam
from hub.paths import SCHEMAS_DIR

XS = "http://www.w3.org/2001/XMLSchema"
OWN_XSDS = sorted(p.name for p in SCHEMAS_DIR.glob("*.xsd"))
# Families whose examples are out of our scope (billing, NPR, EPJ extract).
SKIP_DIRS = ("Behandlerkravmelding", "NPRbehandlerkravmelding", "KommunikasjonAvEPJ-innhold")


# --- wrapper schemas: MsgHead compiled together with its payloads ------------------------------------


def _wrapper(imports: tuple[tuple[str, str], ...]) -> bytes:
    body = "".join(f'<xs:import namespace="{ns}" schemaLocation="{loc}"/>' for ns, loc in imports)
    return f'<xs:schema xmlns:xs="{XS}">{body}</xs:schema>'.encode()


@functools.cache
def own_schema(imports: tuple[tuple[str, str], ...]) -> etree.XMLSchema:
    doc = etree.fromstring(_wrapper(imports), base_url=str(SCHEMAS_DIR / "_wrapper.xsd"))
    return etree.XMLSchema(doc)


class _PackResolver(etree.Resolver):
    """The official schemas import each other by URL: map every location to the pack's file."""

    def __init__(self, xsd_dir: Path) -> None:
        super().__init__()
        self.xsd_dir = xsd_dir

    def resolve(self, url, pubid, context):  # noqa: ANN001, ANN201 - lxml's signature
        local = self.xsd_dir / url.rsplit("/", 1)[-1]
        return self.resolve_filename(str(local), context) if local.is_file() else None


@functools.cache
def official_schema(xsd_dir: Path, imports: tuple[tuple[str, str], ...]) -> etree.XMLSchema:
    parser = etree.XMLParser(no_network=True)
    parser.resolvers.add(_PackResolver(xsd_dir))
    doc = etree.fromstring(_wrapper(imports), parser, base_url=str(xsd_dir / "_wrapper.xsd"))
    return etree.XMLSchema(doc)


def schema_imports(root: etree._Element, official: bool = False) -> tuple[tuple[str, str], ...] | None:
    """(namespace, file) pairs to validate this document; None when a part is not ours to cover."""
    q = etree.QName(root)
    family = fam.by_namespace(q.namespace or "", root.findtext("{*}MIGversion"))
    if family is None:
        return None
    pairs = {(family.namespace, family.official_xsd if official else family.own_xsd)}
    if family.carrier == "self" and family.root == "MsgHead":
        for payload in root.iterfind(f".//{{{fam.MSGHEAD_NS}}}Content/*"):
            ns = etree.QName(payload).namespace or ""
            if ns == fam.BASE64_NS:
                if official:
                    pairs.add((ns, "kith-base64.xsd"))
                continue
            pf = fam.by_namespace(ns)
            if pf is None or pf.own_xsd is None:
                return None
            pairs.add((ns, pf.official_xsd if official else pf.own_xsd))
    return tuple(sorted(pairs))  # type: ignore[arg-type]


def validates_own(root: etree._Element) -> tuple[bool, str]:
    imports = schema_imports(root)
    assert imports is not None
    schema = own_schema(imports)
    ok = schema.validate(root)
    return ok, "; ".join(str(e) for e in list(schema.error_log)[:3])


def validates_official(reference: Path, root: etree._Element) -> bool:
    imports = schema_imports(root, official=True)
    assert imports is not None
    return official_schema(reference / "xsd", imports).validate(root)


def examples(reference: Path) -> list[Path]:
    base = reference / "samples" / "ehelse-examples"
    out = [p for p in sorted(base.rglob("*.xml")) if not any(d in p.parts for d in SKIP_DIRS)]
    return out + sorted(reference.glob("samples/ksfiks_app-rec_1.0_*.xml"))


def parse(path: Path) -> etree._Element:
    return etree.parse(str(path)).getroot()


# --- compile ----------------------------------------------------------------------------------------


def test_there_is_a_schema_for_every_family() -> None:
    assert {f.own_xsd for f in fam.FAMILIES} <= set(OWN_XSDS)
    assert len(OWN_XSDS) >= 40


@pytest.mark.parametrize("name", OWN_XSDS)
def test_own_schema_compiles_with_lxml_and_xmlschema(name: str) -> None:
    path = SCHEMAS_DIR / name
    etree.XMLSchema(etree.parse(str(path)))
    xmlschema.XMLSchema10(str(path))


@pytest.mark.parametrize("name", OWN_XSDS)
def test_imports_are_relative_file_names(name: str) -> None:
    doc = etree.parse(str(SCHEMAS_DIR / name))
    for imp in doc.iterfind(f".//{{{XS}}}import"):
        loc = imp.get("schemaLocation") or ""
        assert loc and "/" not in loc and (SCHEMAS_DIR / loc).is_file(), (name, loc)


def test_msghead_content_is_strict_like_the_official() -> None:
    doc = etree.parse(str(SCHEMAS_DIR / "MsgHead-v1_2.xsd"))
    content = doc.find(f".//{{{XS}}}complexType[@name='Content']//{{{XS}}}any")
    assert content is not None and content.get("processContents") == "strict"


def test_committed_schemas_equal_the_generator_output() -> None:
    spec = importlib.util.spec_from_file_location("schemas_generate", SCHEMAS_DIR / "generate.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen  # dataclasses look their module up while the module runs
    try:
        spec.loader.exec_module(gen)
    finally:
        del sys.modules[spec.name]
    rendered = gen.rendered()
    assert sorted(rendered) == OWN_XSDS
    for name, text in rendered.items():
        assert (SCHEMAS_DIR / name).read_text(encoding="utf-8") == text, name


def test_wrapper_rejects_payload_of_unknown_namespace_in_content() -> None:
    """Content is strict: a payload whose schema is not compiled in must fail."""
    doc = etree.fromstring(
        f"""<MsgHead xmlns="{fam.MSGHEAD_NS}"><MsgInfo><Type V="DIALOG_NOTAT"/>
        <MIGversion>v1.2 2006-05-24</MIGversion>
        <GenDate>2024-01-01T10:00:00</GenDate><MsgId>6f1d2c3e-1111-4a4a-9b9b-123456789abc</MsgId>
        <Sender><Organisation><OrganisationName>A</OrganisationName><Ident><Id>1</Id><TypeId V="HER"/></Ident>
        </Organisation></Sender><Receiver><Organisation><OrganisationName>B</OrganisationName><Ident><Id>2</Id>
        <TypeId V="HER"/></Ident></Organisation></Receiver></MsgInfo><Document><RefDoc><MsgType V="XML"/>
        <Content><x:Unknown xmlns:x="urn:example:unknown"/></Content></RefDoc></Document>
        </MsgHead>""".encode()
    )
    only_msghead = own_schema(((fam.MSGHEAD_NS, "MsgHead-v1_2.xsd"),))
    assert not only_msghead.validate(doc)
    content = doc.find(".//{*}Content")
    assert content is not None
    content.remove(content[0])
    assert only_msghead.validate(doc), only_msghead.error_log


# --- accept every official example ------------------------------------------------------------------


def test_own_schemas_accept_every_official_example(reference: Path) -> None:
    paths = examples(reference)
    failures = []
    checked = 0
    for path in paths:
        root = parse(path)
        if schema_imports(root) is None:
            continue
        checked += 1
        ok, why = validates_own(root)
        if not ok:
            failures.append(f"{path.name}: {why}")
    assert checked >= 140
    assert not failures, failures


def test_xmlschema_agrees_on_one_example_per_family(reference: Path) -> None:
    """The second engine sees our schemas the same way (one example per payload namespace)."""
    seen: set[tuple[tuple[str, str], ...]] = set()
    for path in examples(reference):
        root = parse(path)
        imports = schema_imports(root)
        if imports is None or imports in seen:
            continue
        seen.add(imports)
        schema = xmlschema.XMLSchema10(_wrapper(imports).decode(), base_url=str(SCHEMAS_DIR))
        errors = list(schema.iter_errors(str(path)))
        assert not errors, (path.name, str(errors[0])[:400])
    assert len(seen) >= 25


def _renamespace(root: etree._Element, old: str, new: str) -> etree._Element:
    for el in root.iter():
        if isinstance(el.tag, str) and etree.QName(el).namespace == old:
            el.tag = f"{{{new}}}{etree.QName(el).localname}"
    etree.cleanup_namespaces(root)
    return root


# Versions without an official example: a neighbour's examples moved into their namespace. Where the
# official schema of that version accepts the result, ours must too.
# `drop`: elements the newer version added, removed before the move.
NEIGHBOURS = [
    ("AppRec", "1.0", "1.1", "samples/ksfiks_app-rec_1.0_*.xml", ()),
    ("Epikrise", "1.1", "1.0", "samples/ehelse-examples/Epikrise/Epikrise_v1-1/*.xml",
     ("ComMethod", "InfItem")),
    ("Svarrapport", "1.3", "1.2", "samples/ehelse-examples/Svarrapport/Svarrapport-v-1-3/*.xml", ()),
    ("Rekvisisjon", "1.5", "1.4", "samples/ehelse-examples/Rekvisisjon/Rekvisisjon-v-1-5/*.xml", ()),
]


@pytest.mark.parametrize(("name", "have", "want", "pattern", "drop"), NEIGHBOURS)
def test_versions_without_examples_accept_what_the_official_accepts(
    reference: Path, name: str, have: str, want: str, pattern: str, drop: tuple[str, ...]
) -> None:
    src, dst = fam.by_key(name, have), fam.by_key(name, want)
    assert src and dst
    accepted_by_official = 0
    for path in sorted(reference.glob(pattern)):
        root = parse(path)
        for el in [e for e in root.iter() if isinstance(e.tag, str) and etree.QName(e).localname in drop]:
            if el.getparent() is not None:
                el.getparent().remove(el)
        root = _renamespace(root, src.namespace, dst.namespace)
        mig = root.find("{*}MIGversion")
        if mig is not None and dst.mig_version:
            mig.text = dst.mig_version
        if not validates_official(reference, root):
            continue
        accepted_by_official += 1
        ok, why = validates_own(root)
        assert ok, (path.name, why)
    assert accepted_by_official >= 1


# --- reject what the official schemas reject --------------------------------------------------------


def _remove(path: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        hits = root.findall(path)
        assert hits, path
        for el in hits:
            parent = el.getparent()
            assert parent is not None
            parent.remove(el)

    return mutate


def _swap_next(path: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        el = root.find(path)
        assert el is not None, path
        nxt = el.getnext()
        while nxt is not None and not isinstance(nxt.tag, str):
            nxt = nxt.getnext()
        assert nxt is not None
        nxt.addnext(el)

    return mutate


def _set_text(path: str, text: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        el = root.find(path)
        assert el is not None, path
        el.text = text

    return mutate


def _set_attr(path: str, name: str, value: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        el = root.find(path)
        assert el is not None, path
        el.set(name, value)

    return mutate


def _root_namespace(ns: str) -> Callable[[etree._Element], None]:
    def mutate(root: etree._Element) -> None:
        root.tag = f"{{{ns}}}{etree.QName(root).localname}"

    return mutate


def _append(path: str, tag_local: str) -> Callable[[etree._Element], None]:
    """An element the model does not allow, in the parent's namespace."""

    def mutate(root: etree._Element) -> None:
        el = root.find(path)
        assert el is not None, path
        etree.SubElement(el, f"{{{etree.QName(el).namespace}}}{tag_local}")

    return mutate


E = "samples/ehelse-examples/"
DIALOG = E + "Dialogmelding/Dialogmelding-v1-0/Dialogmelding_foresporsel_PLO_v1-0.xml"
DIALOG11 = E + "Dialogmelding/Dialogmelding-v1-1/Helsefaglig_dialog.xml"
APPREC = "samples/ksfiks_app-rec_1.0_example-ok.xml"
EPI12 = E + "Epikrise/Epikrise_v1-2/epikrise_v1.2_n.xml"
EPI11 = E + "Epikrise/Epikrise_v1-1/epikrise_v1.1_n.xml"
HENV11 = E + "Henvisning/Henvisning_v1-1/henvisning_v1.1_n.xml"
HENV10 = E + "Henvisning/Henvisning_v1-0/henvisning_v1.0_n.xml"
HENV20 = E + "Henvisning/Henvisning_v2-0/Henvisning_ny_tilstand_v2-0_Ny.xml"
REK16 = E + "Rekvisisjon/Rekvisisjon-v-1-6/Rekvisisjon_lab_v1-6_Ny.xml"
SVAR14 = E + "Svarrapport/Svarrapport-v-1-4/Svar_biokjemi_v1-4_Ny.xml"
SVAR13 = E + "Svarrapport/Svarrapport-v-1-3/Svar_mikrobiologi_gruppert_v1-3_Ny.xml"
LOG15 = E + "plo/1_5/Pasientlogistikk_dodsfall-v1_5/Pasientlogistikk_Innlagt_pasient_v1-5_Ny.xml"
ORI16 = E + "plo/1_6/orientering_om_tjenestetilbud_1_6_mottak/Orientering_om_tjenestetilbud_v1-6_Ny.xml"
UTS16 = E + "plo/1_6/utskrivningsrapport_1.6_mottak/Utskrivningsrapport_v1-6_Ny.xml"
INN15 = E + "plo/1_5/Innleggelsesrapport-v1_5/Innleggelsesrapport_v1-5_Ny.xml"

MUTATIONS: list[tuple[str, str, Callable[[etree._Element], None]]] = [
    ("msghead: no MsgId", DIALOG, _remove("{*}MsgInfo/{*}MsgId")),
    ("msghead: GenDate and MsgId swapped", DIALOG, _swap_next("{*}MsgInfo/{*}GenDate")),
    ("msghead: Type after MIGversion", DIALOG, _swap_next("{*}MsgInfo/{*}Type")),
    ("msghead: bad GenDate", DIALOG, _set_text("{*}MsgInfo/{*}GenDate", "2019-13-45T10:00:00")),
    ("msghead: wrong root namespace", DIALOG, _root_namespace("http://www.kith.no/xmlstds/msghead/2005-11-22")),
    ("msghead: no Receiver", DIALOG, _remove("{*}MsgInfo/{*}Receiver")),
    ("msghead: no Sender", DIALOG11, _remove("{*}MsgInfo/{*}Sender")),
    ("msghead: Ident without TypeId", DIALOG,
     _remove("{*}MsgInfo/{*}Receiver/{*}Organisation/{*}Ident/{*}TypeId")),
    ("msghead: no Document", DIALOG, _remove("{*}Document")),
    ("msghead: RefDoc without MsgType", DIALOG, _remove("{*}Document/{*}RefDoc/{*}MsgType")),
    ("msghead: unknown MsgInfo child", DIALOG, _append("{*}MsgInfo", "Priority")),
    ("msghead: ConversationRef half", DIALOG11, _remove("{*}MsgInfo/{*}ConversationRef/{*}RefToParent")),
    ("dialog 1.0: Foresporsel without TypeForesp", DIALOG, _remove(".//{*}Foresporsel/{*}TypeForesp")),
    ("dialog 1.1: Notat without TemaKodet", DIALOG11, _remove(".//{*}Notat/{*}TemaKodet")),
    ("dialog 1.1: unknown element", DIALOG11, _append(".//{*}Dialogmelding", "Vedlegg")),
    ("apprec: no Status", APPREC, _remove("{*}Status")),
    ("apprec: no OriginalMsgId/Id", APPREC, _remove("{*}OriginalMsgId/{*}Id")),
    ("apprec: bad GenDate", APPREC, _set_text("{*}GenDate", "19.06.2020")),
    ("apprec: no Sender", APPREC, _remove("{*}Sender")),
    ("apprec: Inst Id before Name", APPREC, _swap_next("{*}Sender/{*}HCP/{*}Inst/{*}Name")),
    ("epikrise 1.2: no Requester", EPI12, _remove("{*}ServRprt/{*}Requester")),
    ("epikrise 1.2: no MsgId", EPI12, _remove("{*}MsgId")),
    ("epikrise 1.2: bad GenDate", EPI12, _set_attr("{*}GenDate", "V", "08.03.2019")),
    ("epikrise 1.1: no ServProvider", EPI11, _remove("{*}ServRprt/{*}ServProvider")),
    ("epikrise 1.1: no Patient", EPI11, _remove("{*}ServRprt/{*}Patient")),
    ("henvisning 1.1: no ServProvider", HENV11, _remove("{*}ServReq/{*}ServProvider")),
    ("henvisning 1.1: HCP without Inst", HENV11, _remove("{*}ServReq/{*}Requester/{*}HCP/{*}Inst")),
    ("henvisning 1.0: no ReqServ-era Diagnosis", HENV10, _remove("{*}ServReq/{*}Diagnosis")),
    ("henvisning 1.0: wrong root namespace", HENV10, _root_namespace("http://www.kith.no/xmlstds/henvisning/2012-02-15")),
    ("henvisning 2.0: no DocumentId", HENV20, _remove(".//{*}Henvisning/{*}DocumentId")),
    ("henvisning 2.0: no ReqServ", HENV20, _remove(".//{*}Henvisning/{*}ReqServ")),
    ("rekvisisjon 1.6: no ServProvider", REK16, _remove("{*}ServReq/{*}ServProvider")),
    ("rekvisisjon 1.6: patient without OffId", REK16, _remove("{*}ServReq/{*}Patient/{*}OffId")),
    ("rekvisisjon 1.6: no Type", REK16, _remove("{*}Type")),
    ("svarrapport 1.4: no Requester", SVAR14, _remove("{*}ServReport/{*}Requester")),
    ("svarrapport 1.4: no MsgDescr", SVAR14, _remove("{*}ServReport/{*}MsgDescr")),
    ("svarrapport 1.4: no ServProvId", SVAR14, _remove("{*}ServReport/{*}ServProvId")),
    ("svarrapport 1.3: no ServReport", SVAR13, _remove("{*}ServReport")),
    ("plo log 1.5: no InformasjonOmForsendelsen", LOG15,
     _remove(".//{*}Pasientlogistikk/{*}InformasjonOmForsendelsen")),
    ("plo log 1.5: hendelse without time", LOG15,
     _remove(".//{*}TidsfestetHendelse/{*}TidspunktForHendelse")),
    ("plo orientering 1.6: no EksisterendeTjeneste", ORI16, _remove(".//{*}EksisterendeTjeneste")),
    ("plo utskrivning 1.6: no TypeInnholdIMelding", UTS16, _remove(".//{*}TypeInnholdIMelding")),
    ("plo innleggelse 1.5: Forsendelsesstatus missing", INN15, _remove(".//{*}Forsendelsesstatus")),
]


@pytest.mark.parametrize(("label", "sample", "mutate"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_own_schemas_reject_what_the_official_rejects(
    reference: Path, label: str, sample: str, mutate: Callable[[etree._Element], None]
) -> None:
    original = parse(reference / sample)
    assert validates_official(reference, original)
    assert validates_own(original)[0]
    root = copy.deepcopy(original)
    mutate(root)
    ns = etree.QName(root).namespace or ""
    if fam.by_namespace(ns) is None:  # a root namespace nobody knows: no schema can accept it
        assert not own_schema(schema_imports(original) or ()).validate(root)
        assert not official_schema(reference / "xsd", schema_imports(original, True) or ()).validate(root)
        return
    assert not validates_official(reference, root), f"{label}: the official schema accepts the mutation"
    assert not validates_own(root)[0], f"{label}: our schema accepts what the official rejects"
