"""Where the project's own data lives, and where the optional shared reference material is."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SCHEMAS_DIR = PROJECT_DIR / "schemas"
FIXTURES_DIR = PROJECT_DIR / "fixtures"


def shared_dir() -> Path | None:
    """The `shared/` folder beside the checkout (or $HUB_SHARED), if it exists."""
    env = os.environ.get("HUB_SHARED")
    candidates = [Path(env)] if env else []
    candidates.append(PROJECT_DIR.parent / "shared")
    for c in candidates:
        if c.is_dir():
            return c
    return None


def reference_dir() -> Path | None:
    s = shared_dir()
    if s and (s / "reference").is_dir():
        return s / "reference"
    return None
