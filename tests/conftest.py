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


@pytest.fixture(scope="session")
def pki():  # noqa: ANN201 - hub.security.testing.TestPki
    """One test PKI per session (CAs, party certificates, special certificates, CRL served on loopback)."""
    from hub.security.testing import shared_test_pki

    return shared_test_pki()


@pytest.fixture(scope="session")
def gp(pki):  # noqa: ANN001, ANN201
    from hub.security.pki import load_identity

    return load_identity(pki.dir, "gp")


@pytest.fixture(scope="session")
def lab(pki):  # noqa: ANN001, ANN201
    from hub.security.pki import load_identity

    return load_identity(pki.dir, "lab")
