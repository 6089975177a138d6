"""Validator throughput on one core, against raw lxml and against xmllint per file.

Corpus: fixtures/messages/*.xml if present, else the official samples, else messages built in memory.
(a) raw lxml: parse + XSD validation with the very same compiled schema objects the validator uses
    (checked: each is one of the registry's plans), no rules, no info;
(b) `xmllint --noout --nonet --schema <the right xsd> file`, one process per file.
Ours is measured twice: as installed, and with the compiled clean test switched off (the pure-Python
fallback of an install without a C compiler). Ours and (a) run in alternating short rounds in one
process, both warmed up first, and are timed in CPU seconds of the one pinned core: load from other
processes then shifts neither side against the other.
Prints `name: value` lines.
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from lxml import etree

from hub.messages.families import MSGHEAD_NS
from hub.paths import FIXTURES_DIR, reference_dir
from hub.validation import rules
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


def rates(fns: list[Callable[[tuple], object]], items: list) -> list[float]:
    """Messages per CPU second of each fn, measured in alternating rounds of one pass over `items`."""
    spent = [0.0] * len(fns)
    rounds = 0
    while min(spent) < MIN_SECONDS:
        for i, fn in enumerate(fns):
            t0 = time.thread_time()
            for it in items:
                fn(it)
            spent[i] += time.thread_time() - t0
        rounds += 1
    return [rounds * len(items) / t for t in spent]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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
    invalid += [n for n, d, s, _ in prepared if not s.validate(etree.parse(io.BytesIO(d), parser))]
    # The baseline must validate with the schema objects the validator itself picked, not look-alikes.
    theirs = {id(schema) for _refs, schema in reg.plans.values()}
    same = all(id(s) in theirs for _n, _d, s, _r in prepared)
    compiles = reg.compiles
    compiled = rules._clean
    ours_rate, raw_rate = rates([ours, raw], prepared)
    # The same without the compiled clean test (hub/validation/_clean.pyx): what an install without a C
    # compiler gets, and what the module buys.
    rules._clean = None
    try:
        pure_rate, raw_rate2 = rates([ours, raw], prepared)
    finally:
        rules._clean = compiled
    print(f"corpus_messages: {len(prepared)}")
    print(f"corpus_invalid: {len(invalid)}")
    print(f"same_schemas: {'yes' if same and reg.compiles == compiles else 'NO'}")
    print(f"compiled_clean_test: {'yes' if compiled is not None else 'no (not built)'}")
    print(f"validate_msgs_per_s: {ours_rate:.0f}")
    print(f"lxml_msgs_per_s: {raw_rate:.0f}")
    print(f"validate_vs_lxml: {ours_rate / raw_rate:.2f}")
    print(f"validate_pure_python_vs_lxml: {pure_rate / raw_rate2:.2f}")

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
        # CPU seconds as for ours: the children's (xmllint itself) plus ours spent spawning them.
        t0, c0 = time.thread_time(), _children_cpu()
        ok = 0
        for f, xsd in jobs:
            proc = subprocess.run([xmllint, "--noout", "--nonet", "--schema", str(xsd), str(f)],
                                  capture_output=True)
            ok += proc.returncode == 0
        lint_rate = len(jobs) / (time.thread_time() - t0 + _children_cpu() - c0)
    print(f"xmllint_msgs_per_s: {lint_rate:.1f}")
    print(f"xmllint_valid: {ok}/{len(jobs)}")
    print(f"validate_vs_xmllint: {ours_rate / lint_rate:.1f}")


if __name__ == "__main__":
    main()
