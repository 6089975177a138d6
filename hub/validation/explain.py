"""Explain schema failures with xmlschema: the reason and what was expected, per failing element.

Only for documents that already failed the lxml fast path (xmlschema is ~10x slower). Imports are
mapped to local files with the registry's rule (same base name, never the network: allow="local").
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import xmlschema
from lxml import etree

from hub.validation.registry import SchemaRef, SchemaRegistry
from hub.validation.result import ValidationResult

_CACHE: dict[tuple[Path, ...], xmlschema.XMLSchema] = {}
_LOCK = threading.Lock()


def _mapper(directories: Sequence[Path]) -> object:
    def uri_mapper(url: str) -> str:
        name = url.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
        for d in directories:
            if (d / name).is_file():
                return (d / name).as_uri()
        return url  # left as is: allow="local" refuses anything remote

    return uri_mapper


def xmlschema_for(registry: SchemaRegistry, refs: Sequence[SchemaRef]) -> xmlschema.XMLSchema:
    key = tuple(sorted({r.path for r in refs}))
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is None:
            dirs = list(dict.fromkeys([*(p.parent for p in key), *(s.directory for s in registry.sources)]))
            hit = xmlschema.XMLSchema([str(p) for p in key], uri_mapper=_mapper(dirs), allow="local")
            _CACHE[key] = hit
    return hit


def explain(registry: SchemaRegistry, refs: Sequence[SchemaRef], data: bytes) -> list[dict[str, object]]:
    """Every xmlschema validation error: path, line (if known), reason, expected elements."""
    schema = xmlschema_for(registry, refs)
    out = []
    for err in schema.iter_errors(_resource(data)):
        expected = getattr(err, "expected", None)
        out.append({
            "path": err.path,
            "line": getattr(err, "sourceline", None),
            "reason": err.reason,
            "expected": [getattr(e, "local_name", None) or str(e) for e in expected] if expected else [],
        })
    return out


def _resource(data: bytes) -> xmlschema.XMLResource:
    from io import BytesIO

    return xmlschema.XMLResource(BytesIO(data), allow="none", defuse="always")


def explain_result(registry: SchemaRegistry, data: bytes, result: ValidationResult) -> None:
    """Attach xmlschema's reason to each `xsd` problem of `result` (matched by line, else in order)."""
    xsd = [p for p in result.problems if p.rule == "xsd"]
    info = result.info
    if not xsd or info is None:
        return
    from hub.messages.info import payload_elements

    refs = [registry.locate(info.root_namespace, info.mig_version)]
    if info.carrier == "msghead" and info.payload is not None:
        root = info.payload.getroottree().getroot()
        refs += [registry.locate(etree.QName(el).namespace or "", el.findtext("{*}MIGversion"))
                 for el in payload_elements(root)]
    found = [r for r in refs if r is not None]
    try:
        explained = explain(registry, found, data)
    except (xmlschema.XMLSchemaException, OSError) as exc:
        for p in xsd:
            p.detail = f"(no explanation: {exc})"
        return
    by_line = {e["line"]: e for e in explained if e["line"]}
    for i, p in enumerate(xsd):
        e = by_line.get(p.line) or (explained[i] if i < len(explained) else None)
        if e:
            exp = f"; expected {', '.join(e['expected'])}" if e["expected"] else ""
            p.detail = f"{e['reason']}{exp}"
