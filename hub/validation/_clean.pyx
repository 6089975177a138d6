# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""One C-level walk over a parsed message answering: could ident_rules or code_rules find anything?

The Python clean tests (rules._ident_scan, rules._codes_clean) make an element proxy for every TypeId
and run an XPath over every S attribute; here libxml2's nodes are read in place through lxml's public
C API (lxml.includes.etreepublic), so a valid message's check costs one pass and no proxies.

The answer may only err towards "maybe": True promises that both rules find nothing; False sends the
caller to the rules themselves, which decide. Hence the simplifications below are all one-sided:
values are stripped of ASCII whitespace only (str.strip removes more, so a value found in a list here
is found there too), and any node shape the rules read differently (several text nodes, an attribute
value that is not one text node) answers False.
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport strcmp

cimport lxml.includes.etreepublic as cetree
from lxml.includes.tree cimport (XML_CDATA_SECTION_NODE, XML_ELEMENT_NODE, XML_TEXT_NODE, xmlAttr,
                                 xmlNode)

cetree.import_lxml__etree()

cdef const char* _EMPTY = ""

cdef inline bint _is_ws(char c) noexcept nogil:
    # the ASCII characters str.strip() removes
    return c == 32 or (9 <= c <= 13) or (28 <= c <= 31)


cdef object _stripped(const char* p):
    """p without leading/trailing ASCII whitespace, as str; None for NULL."""
    if p == NULL:
        return None
    cdef Py_ssize_t start = 0, end = 0
    while p[end] != 0:
        end += 1
    while start < end and _is_ws(p[start]):
        start += 1
    while end > start and _is_ws(p[end - 1]):
        end -= 1
    return PyUnicode_DecodeUTF8(p + start, end - start, "replace")


cdef inline const char* _attr_value(xmlAttr* a, bint* odd) noexcept:
    """The value of an attribute that is one text node ("" when empty); NULL and *odd set otherwise."""
    cdef xmlNode* t = a.children
    if t == NULL:
        return _EMPTY
    if t.type != XML_TEXT_NODE or t.next != NULL or t.content == NULL:
        odd[0] = True
        return NULL
    return <const char*>t.content


cdef const char* _text(xmlNode* el, bint* odd) noexcept:
    """lxml's el.text or "" when it is at most one text node; NULL and *odd set when it is several."""
    cdef xmlNode* t = el.children
    if t == NULL or (t.type != XML_TEXT_NODE and t.type != XML_CDATA_SECTION_NODE):
        return _EMPTY
    if t.next != NULL and (t.next.type == XML_TEXT_NODE or t.next.type == XML_CDATA_SECTION_NODE):
        odd[0] = True
        return NULL
    return <const char*>t.content if t.content != NULL else _EMPTY


cdef inline bint _named(xmlNode* n, const char* local) noexcept:
    return n != NULL and n.type == XML_ELEMENT_NODE and strcmp(<const char*>n.name, local) == 0


cdef bint _her_ok(xmlNode* holder) noexcept:
    """The first child named Id (any namespace) holds a positive integer of ASCII digits."""
    cdef xmlNode* c = holder.children
    cdef bint odd = False
    cdef bint nonzero = False
    cdef const char* p
    while c != NULL:
        if _named(c, b"Id"):
            p = _text(c, &odd)
            if odd:
                return False
            while _is_ws(p[0]):
                p += 1
            while p[0] >= 48 and p[0] <= 57:
                if p[0] != 48:
                    nonzero = True
                p += 1
            while _is_ws(p[0]):
                p += 1
            return nonzero and p[0] == 0
        c = c.next
    return False


cdef bint _ident_ok(xmlNode* n, object s, object value, dict ident_by_s, frozenset org_codes,
                    frozenset person_codes):
    """ident_rules has nothing to say about the TypeId/TypeOffId `n` (S `s`, value `value`)."""
    cdef xmlNode* holder = n.parent
    cdef xmlNode* owner
    if holder == NULL or holder.type != XML_ELEMENT_NODE:
        return True  # the root: ident_rules skips it
    if strcmp(<const char*>holder.name, b"AdditionalId") == 0:
        return True
    if s:
        codes = ident_by_s.get(s)
        if codes is None:
            return False
    else:
        owner = holder.parent if strcmp(<const char*>holder.name, b"Ident") == 0 else holder
        if owner != NULL and owner.type == XML_ELEMENT_NODE and (
                _named(owner, b"Organisation") or _named(owner, b"Inst") or _named(owner, b"Dept")):
            codes = org_codes
        else:
            codes = person_codes
    if value not in codes:
        return False
    return value != "HER" or _her_ok(holder)


def clean(root, dict code_by_s, dict ident_by_s, frozenset org_codes, frozenset person_codes,
          dict fixed, tuple fixed_locals) -> bool:
    """True only if ident_rules(root) and code_rules(root) both find nothing.

    code_by_s: S (OID + list) -> codes, for coded elements; ident_by_s: S -> codes for TypeIds;
    org_codes/person_codes: TypeId lists by place (9051, 8116); fixed: (namespace, local name) -> codes
    of the elements code_rules checks by place when they carry no S (any parent: a superset);
    fixed_locals: those local names as bytes, to test before building a key.
    """
    cdef cetree._Element top = root
    cdef xmlNode* start = top._c_node
    while start.parent != NULL and start.parent.type == XML_ELEMENT_NODE:
        start = start.parent  # code_rules' XPath reads the whole document, whichever element it is given
    cdef xmlNode* n = start
    cdef xmlAttr* a
    cdef xmlAttr* s_attr
    cdef xmlAttr* v_attr
    cdef bint odd = False
    cdef bint typeid
    cdef const char* name
    cdef const char* sv
    cdef const char* vv
    cdef bytes k
    while n != NULL:
        if n.type == XML_ELEMENT_NODE:
            s_attr = v_attr = NULL
            a = n.properties
            while a != NULL:
                if a.ns == NULL:
                    name = <const char*>a.name
                    if name[0] == 83 and name[1] == 0:  # "S"
                        s_attr = a
                    elif name[0] == 86 and name[1] == 0:  # "V"
                        v_attr = a
                a = a.next
            name = <const char*>n.name
            typeid = strcmp(name, b"TypeId") == 0 or strcmp(name, b"TypeOffId") == 0
            if typeid:
                sv = _attr_value(s_attr, &odd) if s_attr != NULL else _EMPTY
                vv = _attr_value(v_attr, &odd) if v_attr != NULL else _text(n, &odd)
                if odd:
                    return False
                if not _ident_ok(n, PyUnicode_DecodeUTF8(sv, len(sv), "replace"), _stripped(vv), ident_by_s,
                                 org_codes, person_codes):
                    return False
            elif v_attr != NULL:
                vv = _attr_value(v_attr, &odd)
                sv = _attr_value(s_attr, &odd) if s_attr != NULL else _EMPTY
                if odd:
                    return False
                codes = None
                if sv[0] != 0:
                    codes = code_by_s.get(PyUnicode_DecodeUTF8(sv, len(sv), "replace"))
                else:
                    for k in fixed_locals:
                        if strcmp(name, <const char*>k) == 0:
                            codes = fixed.get(((<bytes>n.ns.href).decode("utf-8", "replace")
                                               if n.ns != NULL else "", name.decode("utf-8", "replace")))
                            break
                if codes is not None and _stripped(vv) not in codes:
                    return False
            if n.children != NULL:
                n = n.children
                continue
        # next in document order, never above the start
        while n != start and n.next == NULL:
            n = n.parent
        if n == start:
            break
        n = n.next
    return True
