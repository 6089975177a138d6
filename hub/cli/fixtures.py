"""`hub fixtures build [DIR]`: write the fixture corpus (valid messages, broken variants, manifest)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hub.paths import FIXTURES_DIR

fixtures_app = typer.Typer(help="Synthetic test messages: valid ones of every family and broken variants.")


def write_corpus(target: Path, seed: int = 1) -> tuple[int, int]:
    """Write DIR/messages/*.xml, DIR/broken/*.xml and DIR/broken/manifest.json; returns the counts."""
    from hub.fixtures.broken import build_broken, manifest
    from hub.fixtures.builder import build_all

    messages_dir, broken_dir = target / "messages", target / "broken"
    for d in (messages_dir, broken_dir):
        d.mkdir(parents=True, exist_ok=True)
        # Stale files from an older builder would make the corpus differ from what the builder makes.
        for old in d.glob("*.xml"):
            old.unlink()
    messages = build_all(seed)
    for name, data in messages.items():
        (messages_dir / name).write_bytes(data)
    cases = build_broken(seed)
    for case in cases:
        (broken_dir / case.name).write_bytes(case.data)
        for name, data in case.companions.items():
            (broken_dir / name).write_bytes(data)
    text = json.dumps(manifest(cases), indent=2, ensure_ascii=False) + "\n"
    (broken_dir / "manifest.json").write_text(text, encoding="utf-8")
    return len(messages), len(cases)


@fixtures_app.command("build")
def build_cmd(
    directory: Path = typer.Argument(None, help="Target folder (default: the project's fixtures/)."),
    seed: int = typer.Option(1, help="Seed: the same seed always gives the same bytes."),
) -> None:
    """Write DIR/messages/*.xml, DIR/broken/*.xml and DIR/broken/manifest.json."""
    target = directory or FIXTURES_DIR
    n_msg, n_broken = write_corpus(target, seed)
    typer.echo(f"{n_msg} messages -> {target / 'messages'}; {n_broken} broken cases -> {target / 'broken'}")


def register(app: typer.Typer) -> None:
    app.add_typer(fixtures_app, name="fixtures")
