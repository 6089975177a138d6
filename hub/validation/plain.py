"""libxml2's schema errors in words a vendor can act on, at an element path a person can read.

libxml2 names the failing node by a positional path with its own prefixes (`/*/*[2]/p6:Konsultasjon/*`)
and says what went wrong in XSD terms ("is not a valid value of the local union type"). Here the path is
walked in the parsed tree and written by element names (`/MsgHead/Document/RefDoc/Content/...`), and the
message is rewritten: an empty value is called empty, a type is named by what it accepts, an unexpected
element is said to be out of place with what was expected instead. The original text stays available
(Problem.detail) for anyone who wants libxml2's words.
"""

from __future__ import annotations

import re

from lxml import etree

# XSD built-in types by what a person would call them.
_TYPE_WORDS = {
    "boolean": "true or false",
    "date": "a date (YYYY-MM-DD)",
    "dateTime": "a date and time (YYYY-MM-DDThh:mm:ss)",
    "time": "a time (hh:mm:ss)",
    "gYear": "a year (YYYY)",
    "gYearMonth": "a year and month (YYYY-MM)",
    "integer": "a whole number",
    "int": "a whole number",
    "long": "a whole number",
    "short": "a whole number",
    "positiveInteger": "a whole number above 0",
    "nonNegativeInteger": "a whole number, 0 or more",
    "decimal": "a decimal number",
    "double": "a number",
    "float": "a number",
    "anyURI": "a URI",
    "base64Binary": "base64 data",
    "token": "text",
    "string": "text",
    "ID": "an identifier (a name, not starting with a digit)",
    "IDREF": "a reference to an identifier in the document",
    "language": "a language code",
}

_STEP = re.compile(r"^(?:(?:[\w.-]+:)?([\w.-]+)|\*)(?:\[(\d+)\])?$")


def element_at(tree: etree._ElementTree, path: str) -> etree._Element | None:
    """The element libxml2's error path names, found by walking the tree (its prefixes mean nothing here).

    A step `*[n]` is the n-th element child, `p6:Name[n]` the n-th child named Name in any namespace;
    without [n], the first.
    """
    root = tree.getroot()
    steps = path.strip("/").split("/")
    if not steps or not steps[0]:
        return None
    node: etree._Element | None = None
    for i, step in enumerate(steps):
        m = _STEP.match(step)
        if m is None:
            return None
        local, index = m.group(1), int(m.group(2) or 1)
        if i == 0:
            if index != 1 or (local is not None and etree.QName(root).localname != local):
                return None
            node = root
            continue
        assert node is not None
        candidates = [c for c in node if isinstance(c.tag, str)
                      and (local is None or etree.QName(c).localname == local)]
        if len(candidates) < index:
            return None
        node = candidates[index - 1]
    return node


def _type_words(xsd_type: str) -> str:
    local = xsd_type.split(":")[-1]
    return _TYPE_WORDS.get(local, f"a value of type {local}")


def _expected(names: str) -> str:
    items = [n.strip() for n in names.split(",") if n.strip()]
    items = [re.sub(r"^##other\{[^}]*\}\*$", "an element of another namespace", n) for n in items]
    return items[0] if len(items) == 1 else "one of " + ", ".join(items)


_SUBJECT = re.compile(r"^Element '(?P<el>[^']+)'(?:, attribute '(?P<attr>[^']+)')?: (?P<rest>.*)$", re.S)


def plain(message: str) -> str:
    """libxml2's schema error text (namespaces already removed) in plain words."""
    msg = message.strip()
    m = _SUBJECT.match(msg)
    if m is None:
        if msg.startswith("No matching global declaration available for the validation root"):
            return "the root element is not one the schema of its namespace declares"
        return msg
    el, attr, rest = m.group("el"), m.group("attr"), m.group("rest").strip()
    what = f"{el}/@{attr}" if attr else el
    if rest.startswith("This element is not expected."):
        exp = re.search(r"Expected is (?:one of )?\( (.*) \)", rest)
        return f"{el} is not allowed here" + (f"; expected {_expected(exp.group(1))}" if exp else "")
    if rest.startswith("Missing child element(s)."):
        exp = re.search(r"Expected is (?:one of )?\( (.*) \)", rest)
        return f"{el} lacks a required child element" + (f": {_expected(exp.group(1))}" if exp else "")
    v = re.match(r"^'(?P<v>.*)' is not a valid value of the (?:atomic|list) type '(?P<t>[^']+)'", rest, re.S)
    if v:
        if not v.group("v").strip():
            return f"{what} is empty; it must hold {_type_words(v.group('t'))}"
        return f"{what}: {v.group('v')!r} is not {_type_words(v.group('t'))}"
    v = re.match(r"^'(?P<v>.*)' is not a valid value of the (?:local )?union type", rest, re.S)
    if v:
        if not v.group("v").strip():
            return f"{what} is empty"
        return f"{what}: {v.group('v')!r} has none of the forms this value allows"
    v = re.match(r"^\[facet 'enumeration'\] The value '(?P<v>.*)' is not an element of the set \{(?P<s>.*)\}",
                 rest, re.S)
    if v:
        allowed = ", ".join(x.strip().strip("'") for x in v.group("s").split(","))
        if not v.group("v").strip():
            return f"{what} is empty; allowed: {allowed}"
        return f"{what}: {v.group('v')!r} is not one of the allowed values ({allowed})"
    v = re.match(r"^\[facet 'pattern'\] The value '(?P<v>.*)' is not accepted by the pattern '(?P<p>.*)'",
                 rest, re.S)
    if v:
        if not v.group("v").strip():
            return f"{what} is empty; it must match {v.group('p')}"
        return f"{what}: {v.group('v')!r} does not have the required form ({v.group('p')})"
    v = re.match(r"^\[facet 'minLength'\] The value has a length of '0'", rest)
    if v:
        return f"{what} is empty"
    v = re.match(r"^\[facet '(?:maxLength|length|minLength)'\] The value has a length of '(\d+)'; this "
                 r"(exceeds|underruns|differs from) the allowed (?:maximum |minimum )?length of '(\d+)'",
                 rest)
    if v:
        word = {"exceeds": "at most", "underruns": "at least", "differs from": "exactly"}[v.group(2)]
        return f"{what} is {v.group(1)} characters long; it must be {word} {v.group(3)}"
    v = re.match(r"^The value '(?P<v>.*)' does not match the fixed value constraint '(?P<f>.*)'", rest, re.S)
    if v:
        return f"{what} must be {v.group('f')!r}, not {v.group('v')!r}"
    v = re.match(r"^The attribute '(?P<a>[^']+)' is required but missing", rest)
    if v:
        return f"{el} lacks its required attribute {v.group('a')}"
    v = re.match(r"^The attribute '(?P<a>[^']+)' is not allowed", rest)
    if v:
        return f"{el} may not have the attribute {v.group('a')}"
    if rest.startswith("Character content other than whitespace is not allowed"):
        return f"{el} may hold only elements, not text"
    if rest.startswith("Element content is not allowed, because the content type is a simple type"):
        return f"{el} may hold only a value, not elements"
    return f"{what}: {rest}"
