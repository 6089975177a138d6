"""The Validator: one message in, a ValidationResult out (what it is, who from/to, every problem).

Fast path: hub.xmlsafe parse, one cached lxml schema per namespace combination, business rules over
the same tree. xmlschema is used only on demand to explain failures (hub.validation.explain).
A Validator instance is one run; with unique_msgid it also requires MsgIds to be unique within it (off by
default: uniqueness belongs to one sender's traffic, which the relay checks, not to a folder of files;
acceptance-test packs reuse a MsgId across the variants of one case).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from lxml import etree

from hub.messages.families import FAMILIES, MSGHEAD_NS
from hub.messages.info import MessageInfo, Scan, findtext, ns_of, payload_elements, scan_info
from hub.validation import rules
from hub.validation.catalog import rule
from hub.validation.plain import element_at, plain
from hub.validation.registry import SchemaError, SchemaRef, SchemaRegistry, default_registry
from hub.validation.result import Problem, ValidationResult
from hub.xmlsafe import DEFAULT_MAX_BYTES, XmlInputError, parse_bytes

_XML_RULES = {
    "empty": "xml.empty",
    "not-xml": "xml.not-xml",
    "not-well-formed": "xml.not-well-formed",
    "encoding": "xml.encoding",
    "dtd-forbidden": "xml.dtd",
    "too-large": "xml.too-large",
}
_DATE_TAIL = re.compile(r"/\d{4}-\d{2}-\d{2}$")
_KNOWN_STEMS = {_DATE_TAIL.sub("", f.namespace) for f in FAMILIES}
_CLARK = re.compile(r"\{[^}]*\}")
_Plan = tuple[list[SchemaRef], etree.XMLSchema]
_MAX_PLANS = 1024  # plan keys hold MIGversion texts from untrusted messages: keep the memo bounded
_new_result = object.__new__


def _problem(rule_id: str, text: str, **where: object) -> Problem:
    r = rule(rule_id)
    return Problem(r.code, r.id, text, severity=r.severity, **where)  # type: ignore[arg-type]


def _unknown_ns_rule(ns: str) -> str:
    """ns.version when the namespace is a known standard's with another date, else ns.unknown."""
    return "ns.version" if _DATE_TAIL.sub("", ns) in _KNOWN_STEMS and ns else "ns.unknown"


class Validator:
    """Validate KITH messages against the registry's schemas and the business rules.

    registry: default = ours + configured packs (+ `packs`, which take precedence).
    now: the clock for GenDate checks (tests pin it); None = the wall clock at each call.
    unique_msgid: report a MsgId used by an earlier message of this run (msgid.unique).
    """

    def __init__(self, registry: SchemaRegistry | None = None, *, packs: Iterable[Path | str] = (),
                 max_bytes: int = DEFAULT_MAX_BYTES, now: datetime | None = None,
                 business_rules: bool = True, unique_msgid: bool = False) -> None:
        packs = list(packs)
        if registry is None:
            registry = SchemaRegistry.default(packs) if packs else default_registry()
        self.registry = registry
        self.max_bytes = max_bytes
        self.now = now
        self.business_rules = business_rules
        self.unique_msgid = unique_msgid
        self._seen: dict[str, str] = {}  # MsgId -> file that used it first in this run

    # --- public -----------------------------------------------------------------------------------------

    def validate_bytes(self, data: bytes, name: str = "<bytes>", *, max_bytes: int | None = None
                       ) -> ValidationResult:
        try:
            tree = parse_bytes(data, max_bytes=max_bytes or self.max_bytes)
        except XmlInputError as exc:
            result = ValidationResult(file=name)
            result.problems.append(_problem(_XML_RULES.get(exc.kind, "xml.not-well-formed"), exc.message,
                                            line=exc.line, column=exc.column))
            return result
        root = tree.getroot()
        info, scan = scan_info(root, typeids=rules.fast_clean_missing())
        result = self._result(name, info)
        plan = self._plan(info, root, scan)
        if plan is not None:
            refs: list[SchemaRef] | None = plan[0]
        else:
            refs = self._schema_refs(info, root, result)
            if refs is None:
                self._columns(data, result)
                return result
        mig = _mig_problem(info, root, scan)
        if mig is not None:
            result.problems.append(mig)
        if refs:
            if result.family is None:
                result.family = refs[-1].path.stem  # a pack-only standard: name it by its schema file
            self._schema(refs, tree, data, result, plan[1] if plan is not None else None)
            if mig is not None:
                _fold_follow_ons(mig, result)
        if self.business_rules and info.family is not None:
            mid = info.msg_id
            uuid = rules.is_uuid(mid) if mid else False  # asked once for the MsgId rules and uniqueness
            result.problems += rules.check_list(info, root, now=self.now, seen=scan.typeids, msg_id_ok=uuid)
            if mid and uuid and self.unique_msgid:
                self._unique(mid, root, name, result)
        if result.problems:
            self._columns(data, result)
        return result

    def validate_path(self, path: Path) -> ValidationResult:
        try:
            data = path.read_bytes()
        except OSError as exc:
            return ValidationResult(str(path), problems=[_problem("xml.empty", f"cannot read: {exc}")])
        return self.validate_bytes(data, str(path))

    def validate_paths(self, paths: Iterable[Path | str]) -> list[ValidationResult]:
        """Files, or folders searched recursively for *.xml, in sorted order."""
        return [self.validate_path(p) for p in expand_paths(paths)]

    # --- steps -------------------------------------------------------------------------------------------

    @staticmethod
    def _result(name: str, info: MessageInfo) -> ValidationResult:
        """ValidationResult(file=name, ...what info says...), set in one step instead of field by field."""
        family, sender, receiver = info.family, info.sender, info.receiver
        result = _new_result(ValidationResult)
        result.__dict__ = {
            "file": name, "family": family.name if family else None,
            "version": family.version if family else None, "type": info.type, "namespace": info.namespace,
            "sender": sender.communication_her_id if sender else None,  # = info.sender_her
            "receiver": receiver.communication_her_id if receiver else None,
            "msg_id": info.msg_id, "gen_date": info.gen_date, "problems": [], "info": info,
        }
        return result

    @staticmethod
    def _plan_key(info: MessageInfo, root: etree._Element, scan: Scan) -> tuple[object, ...]:
        """What _schema_refs decides on: the root's namespace and MIGversion, each new payload namespace's.

        Extraction already read the root's MIGversion, the payload elements and the main payload's one.
        """
        ns = info.root_namespace
        payloads: list[tuple[str, str | None]] = []
        if ns == MSGHEAD_NS:
            seen = {ns}
            for el in payload_elements(root) if scan.payloads is None else scan.payloads:
                pns = ns_of(el)
                if pns not in seen:
                    seen.add(pns)
                    mig = scan.payload_mig if el is scan.payload else findtext(el, "{*}MIGversion")
                    payloads.append((pns, mig))
        return ns, scan.root_mig or info.mig_version, tuple(payloads)

    def _plan(self, info: MessageInfo, root: etree._Element, scan: Scan) -> _Plan | None:
        """Refs and compiled schema for this kind of message, remembered per registry once they worked."""
        plans = self.registry.plans
        key = self._plan_key(info, root, scan)
        hit = plans.get(key)
        if hit is not None or len(plans) >= _MAX_PLANS:
            return hit
        refs = self._schema_refs(info, root, ValidationResult(file=""))
        if not refs:
            return None  # a missing schema: the slow path records the problem each time
        try:
            schema = self.registry.schema_for(refs)
        except SchemaError:
            return None
        plans[key] = (refs, schema)
        return plans[key]

    def _schema_refs(self, info: MessageInfo, root: etree._Element, result: ValidationResult
                     ) -> list[SchemaRef] | None:
        """The schema files this message needs; None (with a problem recorded) when one is missing."""
        ns = info.root_namespace
        mig = root.findtext("{*}MIGversion") or info.mig_version
        head = self.registry.locate(ns, mig)
        if head is None:
            rid = _unknown_ns_rule(ns)
            result.problems.append(_problem(rid, f"no schema for namespace {ns or '(none)'!r} "
                                                 f"(root element {info.root})", line=root.sourceline,
                                            xpath=f"/{info.root}"))
            return None
        refs = [head]
        if ns == MSGHEAD_NS:
            seen = {ns}
            for el in payload_elements(root):
                pns = etree.QName(el).namespace or ""
                if pns in seen:
                    continue
                seen.add(pns)
                ref = self.registry.locate(pns, el.findtext("{*}MIGversion"))
                if ref is None:
                    result.problems.append(_problem(
                        "ns.payload-unknown", f"MsgHead carries a payload in namespace {pns or '(none)'!r} "
                        "that no schema covers", line=el.sourceline, xpath=rules.xpath_of(el)))
                    return None
                refs.append(ref)
        return refs

    def _schema(self, refs: list[SchemaRef], tree: etree._ElementTree, data: bytes,
                result: ValidationResult, schema: etree.XMLSchema | None = None) -> None:
        if schema is None:
            try:
                schema = self.registry.schema_for(refs)
            except SchemaError as exc:
                result.problems.append(_problem("ns.version", f"schema cannot be compiled: {exc}"))
                return
        if schema.validate(tree):
            return
        for e in schema.error_log:
            # libxml2's path has its own prefixes (/*/*[2]/p6:Konsultasjon/*): walk it, name it by names.
            el = element_at(tree, e.path) if e.path else None
            xpath = rules.xpath_of(el) if el is not None else None
            result.problems.append(_problem("xsd", plain(_CLARK.sub("", e.message)), line=e.line or None,
                                            xpath=xpath))

    def _unique(self, mid: str, root: etree._Element, name: str, result: ValidationResult) -> None:
        """MsgId `mid` (a UUID) not used before in this run."""
        key = mid.strip().lower().replace("-", "")
        first = self._seen.get(key)
        if first is None:
            self._seen[key] = name
            return
        el = next(root.iter(f"{{{MSGHEAD_NS}}}MsgId", "{*}MsgId", "{*}Id"), None)
        result.problems.append(_problem("msgid.unique", f"MsgId {mid} was already used by {first}",
                                        line=el.sourceline if el is not None else None,
                                        xpath=rules.xpath_of(el) if el is not None else None))

    @staticmethod
    def _columns(data: bytes, result: ValidationResult) -> None:
        """Column of the element a problem names: lxml reports lines only; look for its start tag."""
        lines: list[bytes] | None = None
        for p in result.problems:
            if p.column or not p.line or not p.xpath:
                continue
            if lines is None:
                lines = data.split(b"\n")
            if p.line > len(lines):
                continue
            local = p.xpath.rsplit("/", 1)[-1].split("[", 1)[0].encode()
            m = re.search(rb"<(?:[\w.-]+:)?" + re.escape(local) + rb"[\s/>]", lines[p.line - 1])
            p.column = m.start() + 1 if m else None


def _version_token(mig: str | None) -> str | None:
    """"v1.3 2008-12-01" -> "1.3"; None when the text names no version number."""
    words = (mig or "").split()
    token = words[0].lstrip("vV") if words else ""
    return token if token and token.replace(".", "").isdigit() and token[0].isdigit() else None


_MSGHEAD_VERSION = next(f.version for f in FAMILIES if f.namespace == MSGHEAD_NS)


def _mig_problem(info: MessageInfo, root: etree._Element, scan: Scan) -> Problem | None:
    """MIGversion that names another version than the standard of its namespace (ns.mig-version)."""
    if info.root_namespace == MSGHEAD_NS:
        mig, want, where = info.mig_version, _MSGHEAD_VERSION, "MsgInfo/MIGversion"
    elif info.family is not None:
        mig, want, where = scan.root_mig, info.family.version, "MIGversion"
    else:
        return None
    token = _version_token(mig)
    if token is None or token == want:
        return None
    el = next(root.iter("{*}MIGversion"), None)
    ns = info.root_namespace
    return _problem("ns.mig-version", f"{where} {mig!r} says version {token}, but the namespace {ns!r} is "
                    f"that of version {want}: write the namespace of the version the message follows "
                    "(or the MIGversion of the namespace's)", line=el.sourceline if el is not None else None,
                    xpath=rules.xpath_of(el) if el is not None else None)


def _fold_follow_ons(mig: Problem, result: ValidationResult) -> None:
    """With a MIGversion of another version, schema errors follow from it: say how many, not each."""
    xsd = [p for p in result.problems if p.rule == "xsd"]
    if xsd:
        result.problems[:] = [p for p in result.problems if p.rule != "xsd"]
        mig.text += f" ({len(xsd)} schema error(s) left out: they follow from validating against the " \
                    "namespace's version)"


def expand_paths(paths: Iterable[Path | str]) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() == ".xml"))
        else:
            out.append(p)
    return out
