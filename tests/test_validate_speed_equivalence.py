"""The validator's shortcuts say "clean" only when the full rules would find nothing.

rules.check skips ident_rules/code_rules when _ident_scan/_codes_clean say so; hcp_party and
msghead_party read children in one loop. Mutated fixtures exercise the places where they could differ.
"""

from __future__ import annotations

import copy
import random

import pytest
from lxml import etree

from hub.fixtures.builder import build_all
from hub.validation import rules

OID = rules.OID
MESSAGES = build_all(1)
_VALUES = ["HER", " HER ", "ENH", "FNR", "XYZ", "", "J", "X", "1", "9", "P", "XML", "\u00a0HER", "0", "abc"]
_S = [OID + "9051", OID + "8116", OID + "3101", OID + "7304", OID + "8279", "9051", "", OID + "9999",
      "x" + OID + "9051"]


def _mutants(data: bytes, seed: int, count: int) -> list[etree._Element]:
    rng = random.Random(seed)
    base = etree.fromstring(data)
    out = []
    for _ in range(count):
        root = copy.deepcopy(base)
        els = [e for e in root.iter() if isinstance(e.tag, str)]
        for _ in range(rng.randint(1, 3)):
            el = rng.choice(els)
            op = rng.randrange(5)
            if op == 0:
                el.set("V", rng.choice(_VALUES))
            elif op == 1:
                el.set("S", rng.choice(_S))
            elif op == 2 and len(el) == 0:
                el.text = rng.choice(_VALUES)
            elif op == 3:
                el.attrib.pop("V", None)
            else:
                el.insert(0, etree.Comment("c"))
        out.append(root)
    return out


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_clean_shortcuts_never_hide_a_finding(name: str) -> None:
    for root in [etree.fromstring(MESSAGES[name]), *_mutants(MESSAGES[name], sum(name.encode()), 40)]:
        typed = rules._ident_scan(root)
        if typed is not None:
            assert not rules.ident_rules(root)
        if rules._codes_clean(root, typed):
            assert not rules.code_rules(root)
        # Without the TypeId count the S query runs in full: it must agree with the shortcut.
        assert rules._codes_clean(root) == rules._codes_clean(root, typed)


def test_listed_s_outside_typeid_is_still_checked() -> None:
    root = etree.fromstring(
        f'<Message><Ident><Id>1</Id><TypeId V="HER" S="{OID}9051"/></Ident>'
        f'<Sex V="7" S="{OID}3101"/></Message>'.encode()
    )
    typed = rules._ident_scan(root)
    assert typed == 1
    assert not rules._codes_clean(root, typed)
    assert [p.rule for p in rules.code_rules(root)] == ["code.value"]
