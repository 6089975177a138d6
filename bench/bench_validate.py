"""Validator throughput on one core, against raw lxml and against xmllint per file.

Corpus: fixtures/messages/*.xml if present, else the official samples, else messages built in memory.
(a) raw lxml: parse + XSD validation with the very same compiled schemas (no rules, no info);
(b) `xmllint --noout --nonet --schema <the right xsd> file`, one process per file.
Prints `name: value` lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from lxml import etree

from hub.messages.families import MSGHEAD_NS
from hub.paths import FIXTURES_DIR, reference_dir
from hub.validation.registry import SchemaRef, SchemaRegistry
from hub.validation.validate import Validator

MIN_SECONDS = 1.5
XMLLINT_FILES = 40


def corpus() -> list[tuple[str, bytes]]:
    msgs = sorted((FIXTURES_DIR / "messages").glob("*.xml"))
    if msgs:
        return [(p.name, p.read_bytes()) for p in msgs]
    ref = reference_dir()
    if ref is not None:
        return [(p.name, p.read_bytes()) for p in sorted((ref / "samples/ehelse-examples").rglob("*.xml"))]
    from hub.fixtures.builder import build_all

    return sorted(build_all(1).items())


def refs_for(reg: SchemaRegistry, data: bytes) -> list[SchemaRef]:
    root = etree.fromstring(data)
    ns = etree.QName(root).namespace or ""
    refs = [reg.locate(ns, root.findtext("{*}MIGversion"))]
    if ns == MSGHEAD_NS:
        for c in root.iter(f"{{{MSGHEAD_NS}}}Content"):
            for el in c:
                refs.append(reg.locate(etree.QName(el).namespace or "", el.findtext("{*}MIGversion")))
    return [r for r in refs if r is not None]


def rate(fn: object, items: list) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        for it in items:
            fn(it)  # type: ignore[operator]
        n += len(items)
        elapsed = time.perf_counter() - t0
        if elapsed >= MIN_SECONDS:
            return n / elapsed


def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    reg = SchemaRegistry.default()
    msgs = corpus()
    prepared = [(name, data, reg.schema_for(refs_for(reg, data)), refs_for(reg, data)) for name, data in msgs]

    def ours(item: tuple) -> None:
        # A new Validator per pass would reset MsgId uniqueness; a fresh one per message keeps every
        # message valid and costs a dict: the figure is the per-message work.
        Validator(reg).validate_bytes(item[1], item[0])

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)

    def raw(item: tuple) -> None:
        item[2].validate(etree.ElementTree(etree.fromstring(item[1], parser)))

    # Sanity: every message of the corpus is valid both ways, or the comparison is meaningless.
    invalid = [n for n, d, s, _ in prepared if not Validator(reg).validate_bytes(d, n).valid]
    ours_rate = rate(ours, prepared)
    raw_rate = rate(raw, prepared)
    print(f"corpus_messages: {len(prepared)}")
    print(f"corpus_invalid: {len(invalid)}")
    print(f"validate_msgs_per_s: {ours_rate:.0f}")
    print(f"lxml_msgs_per_s: {raw_rate:.0f}")
    print(f"validate_vs_lxml: {ours_rate / raw_rate:.2f}")

    xmllint = shutil.which("xmllint")
    if xmllint is None:
        print("validate_vs_xmllint: n/a (xmllint not installed)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        for i, (name, data, _s, refs) in enumerate(prepared[:XMLLINT_FILES]):
            f = Path(tmp) / f"{i}-{name}"
            f.write_bytes(data)
            if len(refs) == 1:
                xsd = refs[0].path
            else:  # MsgHead + payload: a wrapper importing both, as the registry compiles
                xsd = Path(tmp) / f"{i}-wrapper.xsd"
                imports = "".join(f'<xs:import namespace="{r.namespace}" schemaLocation="{r.path.as_uri()}"/>'
                                  for r in refs)
                xsd.write_text(f'<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema">{imports}</xs:schema>')
            jobs.append((f, xsd))
        t0 = time.perf_counter()
        ok = 0
        for f, xsd in jobs:
            proc = subprocess.run([xmllint, "--noout", "--nonet", "--schema", str(xsd), str(f)],
                                  capture_output=True)
            ok += proc.returncode == 0
        lint_rate = len(jobs) / (time.perf_counter() - t0)
    print(f"xmllint_msgs_per_s: {lint_rate:.1f}")
    print(f"xmllint_valid: {ok}/{len(jobs)}")
    print(f"validate_vs_xmllint: {ours_rate / lint_rate:.1f}")


if __name__ == "__main__":
    main()
