"""Shared test fixtures: the optional reference material and the optional PostgreSQL server."""

from __future__ import annotations

from pathlib import Path

import pytest

from hub.paths import reference_dir


@pytest.fixture(scope="session")
def reference() -> Path:
    """`../shared/reference`, or skip: the official oracles are not part of this repository."""
    ref = reference_dir()
    if ref is None:
        pytest.skip("../shared/reference is not present; official-oracle tests skipped")
    return ref
