"""Schema registry: message namespace (+ MIGversion) -> compiled lxml schema, compiled once per process.

Sources, in order of precedence: official schema packs (folders of XSDs as the standards body
publishes them; from `--schemas`, $HUB_SCHEMA_PACKS and `hub schemas add`), then our own `schemas/`.
Official schemas import each other by http:// URL and by relative paths of their original folders;
every schemaLocation is resolved to the file of the same base name in a known source. Nothing is
ever fetched: an import that no source holds makes the compile fail.

MsgHead's RefDoc/Content is processContents="strict", so a MsgHead validates only with its payload's
schema loaded too: `schema_for` compiles a small wrapper that imports every needed namespace and
caches it per combination.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from hub import config
from hub.messages.families import Family, by_namespace
from hub.paths import SCHEMAS_DIR

ENV_PACKS = "HUB_SCHEMA_PACKS"
SETTINGS_KEY = "schema_packs"
XSD_NS = "http://www.w3.org/2001/XMLSchema"
_TARGET_NS = re.compile(rb'targetNamespace\s*=\s*["\']([^"\']+)["\']')


class SchemaError(Exception):
    """A schema could not be compiled (missing import, broken XSD)."""


@dataclass
class SchemaSource:
    """One folder of XSDs. `official` packs use the family table's official file names."""

    directory: Path
    official: bool
    label: str
    files_by_ns: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def scan(cls, directory: Path, *, official: bool, label: str | None = None) -> SchemaSource:
        src = cls(directory.resolve(), official, label or str(directory))
        for f in sorted(src.directory.glob("*.xsd")):
            # A regex over the head is enough to index and avoids parsing 64 files at start-up.
            m = _TARGET_NS.search(f.read_bytes()[:8192])
            if m:
                src.files_by_ns.setdefault(m.group(1).decode(), []).append(f.name)
        return src

    def file_for(self, namespace: str, family: Family | None) -> str | None:
        files = self.files_by_ns.get(namespace)
        if not files:
            return None
        if family is not None:
            wanted = family.official_xsd if self.official else family.own_xsd
            if wanted in files:
                return wanted
            if len(files) > 1:
                return None  # several versions share the namespace and the family's own is absent
        return files[0]


@dataclass(frozen=True)
class SchemaRef:
    """The file that defines one namespace, and where it came from."""

    namespace: str
    path: Path
    source: str  # label of the source ("ours" or the pack folder)
    official: bool
    family: Family | None


class _LocalResolver(etree.Resolver):
    """Every schemaLocation -> the local file of the same base name; never the network."""

    def __init__(self, directories: Sequence[Path], log: list[tuple[str, str | None]]) -> None:
        super().__init__()
        self.directories = list(directories)
        self.log = log  # (url asked for, local file given or None): proof that nothing went remote

    def resolve(self, url: str | None, pubid: str | None, context: object) -> object:
        name = (url or "").replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        for d in self.directories:
            local = d / name
            if name and local.is_file():
                self.log.append((url or "", str(local)))
                return self.resolve_filename(str(local), context)
        self.log.append((url or "", None))
        # Not held locally: hand libxml2 an unparsable stand-in so the compile fails instead of fetching.
        return self.resolve_string(f"<!-- {name} is not in any schema source -->", context)


def configured_packs() -> list[Path]:
    """Packs from $HUB_SCHEMA_PACKS (os.pathsep-separated) and settings.json, in that order."""
    packs = [Path(p) for p in os.environ.get(ENV_PACKS, "").split(os.pathsep) if p.strip()]
    packs += [Path(p) for p in config.load_settings().get(SETTINGS_KEY, [])]
    return packs


def add_configured_pack(directory: Path) -> Path:
    """Record a pack in settings.json (idempotent). Returns the absolute folder recorded."""
    d = directory.resolve()
    if not d.is_dir() or not any(d.glob("*.xsd")):
        raise SchemaError(f"{directory} is not a folder of .xsd files")
    settings = config.load_settings()
    packs = [p for p in settings.get(SETTINGS_KEY, []) if Path(p) != d]
    settings[SETTINGS_KEY] = [str(d), *packs]  # the newest pack first: it takes precedence
    config.save_settings(settings)
    return d


class SchemaRegistry:
    """Namespace (+ MIGversion) -> schema file -> compiled lxml XMLSchema, cached per combination."""

    def __init__(self, packs: Iterable[Path | str] = (), *, ours: Path | None = SCHEMAS_DIR) -> None:
        self.sources: list[SchemaSource] = []
        seen: set[Path] = set()
        for p in packs:
            d = Path(p).resolve()
            if d in seen:
                continue
            if not d.is_dir():
                raise SchemaError(f"schema pack {p} is not a folder")
            seen.add(d)
            self.sources.append(SchemaSource.scan(d, official=True))
        if ours is not None and ours.is_dir():
            self.sources.append(SchemaSource.scan(ours, official=False, label="ours"))
        self._cache: dict[tuple[Path, ...], etree.XMLSchema] = {}
        self._located: dict[tuple[str, str | None], SchemaRef | None] = {}
        # (root namespace, MIGversion, ((payload namespace, MIGversion), ...)) -> refs and their schema:
        # the validator's per-message plan, so a message of a known kind costs one lookup (hub.validation).
        self.plans: dict[tuple[object, ...], tuple[list[SchemaRef], etree.XMLSchema]] = {}
        self._lock = threading.Lock()
        self.compiles = 0  # how many wrappers were compiled: tests prove compile-once with it
        self.resolved: list[tuple[str, str | None]] = []  # every schemaLocation and its local file

    @classmethod
    def default(cls, extra_packs: Iterable[Path | str] = ()) -> SchemaRegistry:
        """Ours plus the configured packs; `extra_packs` (e.g. --schemas) take precedence over both."""
        return cls([*extra_packs, *configured_packs()])

    # --- lookup -------------------------------------------------------------------------------------

    def locate(self, namespace: str, mig_version: str | None = None) -> SchemaRef | None:
        key = (namespace, mig_version)
        if key not in self._located:  # sources never change after construction: remember answers
            self._located[key] = self._locate(namespace, mig_version)
        return self._located[key]

    def _locate(self, namespace: str, mig_version: str | None) -> SchemaRef | None:
        family = by_namespace(namespace, mig_version)
        for src in self.sources:
            name = src.file_for(namespace, family)
            if name:
                return SchemaRef(namespace, src.directory / name, src.label, src.official, family)
        return None

    def covers(self, namespace: str) -> bool:
        return any(namespace in s.files_by_ns for s in self.sources)

    def coverage(self) -> dict[str, list[str]]:
        """namespace -> labels of the sources holding it (first one wins)."""
        out: dict[str, list[str]] = {}
        for s in self.sources:
            for ns in s.files_by_ns:
                out.setdefault(ns, []).append(s.label)
        return dict(sorted(out.items()))

    # --- compile ------------------------------------------------------------------------------------

    def schema_for(self, refs: Sequence[SchemaRef]) -> etree.XMLSchema:
        """One compiled schema covering every file in `refs` (a MsgHead and its payloads), cached."""
        key = tuple(sorted({r.path for r in refs}))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        with self._lock:
            hit = self._cache.get(key)
            if hit is None:
                hit = self._compile(key)
                self._cache[key] = hit
        return hit

    def _compile(self, files: tuple[Path, ...]) -> etree.XMLSchema:
        # Imports resolve first beside the importing files, then in every source by precedence.
        dirs = list(dict.fromkeys([*(f.parent for f in files), *(s.directory for s in self.sources)]))
        parser = etree.XMLParser(no_network=True, load_dtd=False, resolve_entities=True, huge_tree=False)
        parser.resolvers.add(_LocalResolver(dirs, self.resolved))
        if len(files) == 1:
            doc = etree.parse(str(files[0]), parser)
        else:
            imports = "".join(
                f'<xs:import namespace="{_target_ns(f)}" schemaLocation="{f.as_uri()}"/>' for f in files
            )
            wrapper = f'<xs:schema xmlns:xs="{XSD_NS}">{imports}</xs:schema>'
            # A base URL of its own: the wrapper must not look like it imports itself.
            base = (files[0].parent / "_hub_wrapper.xsd").as_uri()
            doc = etree.ElementTree(etree.fromstring(wrapper.encode(), parser, base_url=base))
        try:
            schema = etree.XMLSchema(doc)
        except etree.XMLSchemaParseError as exc:
            raise SchemaError(f"cannot compile {', '.join(f.name for f in files)}: {exc}") from None
        self.compiles += 1
        return schema


_NS_CACHE: dict[Path, str] = {}


def _target_ns(path: Path) -> str:
    ns = _NS_CACHE.get(path)
    if ns is None:
        m = _TARGET_NS.search(path.read_bytes()[:8192])
        ns = m.group(1).decode() if m else ""
        _NS_CACHE[path] = ns
    return ns


_DEFAULT: SchemaRegistry | None = None
_DEFAULT_KEY: tuple[str, ...] | None = None


def default_registry() -> SchemaRegistry:
    """The process-wide registry (ours + configured packs): compiled schemas are shared by every run."""
    global _DEFAULT, _DEFAULT_KEY
    key = tuple(str(p) for p in configured_packs())
    if _DEFAULT is None or key != _DEFAULT_KEY:
        _DEFAULT, _DEFAULT_KEY = SchemaRegistry.default(), key
    return _DEFAULT
