"""The fixture corpus against our own Validator: valid messages pass, each broken file fails as declared."""

from __future__ import annotations

import pytest

from hub.fixtures.broken import BrokenCase, build_broken
from hub.fixtures.builder import build_all
from hub.validation.validate import Validator


def test_every_fixture_message_is_valid_in_one_run() -> None:
    # One validator for the whole corpus: also proves no two fixtures share a MsgId.
    validator = Validator(unique_msgid=True)
    for name, data in build_all(1).items():
        result = validator.validate_bytes(data, name)
        assert result.valid, (name, [(p.rule, p.text) for p in result.errors])


@pytest.mark.parametrize("case", build_broken(1), ids=lambda c: c.name)
def test_broken_case_fails_with_exactly_its_code_and_rule(case: BrokenCase) -> None:
    validator = Validator(**{k: v for k, v in case.options.items() if k in ("max_bytes", "unique_msgid")})
    for name in case.options.get("preceded_by", []):
        first = validator.validate_bytes(case.companions[name], name)
        assert first.valid, (name, [(p.rule, p.text) for p in first.errors])
    extra = {}
    if "max_bytes" in case.options:
        extra["max_bytes"] = case.options["max_bytes"]
    result = validator.validate_bytes(case.data, case.name, **extra)
    errors = result.errors
    assert errors, f"{case.name} was accepted; expected {case.code} {case.rule}"
    first = errors[0]
    exact_first = (first.code, first.rule) == (case.code, case.rule)
    only_code = {p.code for p in errors} == {case.code} and case.rule in {p.rule for p in errors}
    assert exact_first or only_code, [(p.code, p.rule, p.text) for p in errors]
