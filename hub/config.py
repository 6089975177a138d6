"""The hub's home folder (state, settings) and its small settings file.

HUB_HOME (default `./var`) holds the store, the test PKI of a demo, and `settings.json`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def home() -> Path:
    return Path(os.environ.get("HUB_HOME", "var"))


def settings_path() -> Path:
    return home() / "settings.json"


def load_settings() -> dict[str, Any]:
    p = settings_path()
    if not p.exists():
        return {}
    return json.loads(p.read_text(encoding="utf-8"))


def save_settings(settings: dict[str, Any]) -> None:
    p = settings_path()
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(p)  # atomic: a crash never leaves half a settings file
