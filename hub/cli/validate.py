"""`hub validate PATH...` and `hub schemas add|list`: judge messages, manage official schema packs."""

from __future__ import annotations

from pathlib import Path

import typer

from hub.cli.common import fail, print_json, print_table
from hub.messages.info import Party
from hub.privacy import mask_text
from hub.validation.registry import SchemaError, SchemaRegistry, add_configured_pack, configured_packs
from hub.validation.result import ValidationResult
from hub.xmlsafe import DEFAULT_MAX_BYTES

schemas_app = typer.Typer(help="Official schema packs: folders of XSDs that take precedence over ours.")


def _party_line(p: Party) -> str:
    """Kattskinnet legesenter [ENH 971318864, HER 56704] / August September [HPR 9144897, HER 369767]"""
    parts = []
    for level, name, ids in p.levels():
        tags = ", ".join([f"{t or '?'} {v}" for t, v in ids]
                         + [f"{t or '?'} (empty)" for lv, t in p.empty_ids if lv == level])
        parts.append(" ".join(x for x in (name or "(no name)", f"[{tags}]" if tags else "") if x))
    return " / ".join(parts) or "(empty)"


def _parties(r: ValidationResult) -> list[tuple[str, Party]]:
    info = r.info
    if info is None:
        return []
    out = [(role, p) for role, p in (("sender", info.sender), ("receiver", info.receiver)) if p is not None]
    return out + [("copy", p) for p in info.copy_receivers]


def _human(r: ValidationResult) -> str:
    what = " ".join(x for x in (r.family, r.version) if x) or "unknown"
    lines = [
        f"{r.file}: {'valid' if r.valid else 'INVALID'}",
        f"  {what}" + (f" ({r.type})" if r.type else ""),
        f"  {r.sender or '?'} -> {r.receiver or '?'}  MsgId {r.msg_id or '-'}",
    ]
    lines += [f"  {role + ':':9} {_party_line(p)}" for role, p in _parties(r)]
    for p in r.problems:
        where = f"{p.line or '-'}:{p.column or '-'}"
        sev = "" if p.severity == "error" else f" [{p.severity}]"
        lines.append(f"  {p.code} {p.rule}{sev} {where} {p.xpath or '-'} {p.text}")
        if p.detail:
            lines.append(f"      {p.detail}")
    return "\n".join(lines)


def _json(r: ValidationResult) -> dict:
    parties = _parties(r)
    return {
        "file": r.file,
        "valid": r.valid,
        "family": r.family,
        "type": r.type,
        "version": r.version,
        "sender": r.sender,
        "receiver": r.receiver,
        "msg_id": r.msg_id,
        "parties": {
            "sender": next((p.to_dict() for role, p in parties if role == "sender"), None),
            "receiver": next((p.to_dict() for role, p in parties if role == "receiver"), None),
            "copy_receivers": [p.to_dict() for role, p in parties if role == "copy"],
        },
        "errors": [
            {"code": p.code, "rule": p.rule, "severity": p.severity, "line": p.line, "column": p.column,
             "xpath": p.xpath, "text": p.text, "detail": p.detail}
            for p in r.problems
        ],
    }


def _masked(value: object) -> object:
    """Every string in a JSON value with national identity numbers masked (hub.privacy)."""
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v) for v in value]
    return value


def validate(
    paths: list[Path] = typer.Argument(..., help="Message files or folders (searched for *.xml)."),
    as_json: bool = typer.Option(False, "--json", help="A JSON list for scripts."),
    schemas: list[Path] = typer.Option(None, "--schemas", help="Official schema pack folder (repeatable)."),
    max_bytes: int = typer.Option(DEFAULT_MAX_BYTES, "--max-bytes", min=1, help="Size limit per message."),
    explain: bool = typer.Option(False, "--explain", help="Explain schema errors with xmlschema (slower)."),
    unique_msgid: bool = typer.Option(False, "--unique-msgid",
                                      help="Also report a MsgId that an earlier file of this run used."),
    reveal: bool = typer.Option(False, "--reveal", help="Show fødselsnumre/D-numre instead of masking them."),
) -> None:
    """Validate messages: schema and business rules, each problem with its AppRec code.

    Exit 0 when all are valid (warnings allowed), 1 when some are not, 2 on usage errors. National
    identity numbers (fødselsnummer, D-nummer) are masked in the output unless --reveal.
    """
    from hub.validation.validate import Validator, expand_paths

    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        fail(f"no such file or folder: {', '.join(missing)}")
    try:
        validator = Validator(packs=schemas or (), max_bytes=max_bytes, unique_msgid=unique_msgid)
    except SchemaError as exc:
        fail(str(exc))
        raise
    files = expand_paths(paths)
    if not files:
        fail("no *.xml files found")
    results = [validator.validate_path(f) for f in files]
    if explain:
        from hub.validation.explain import explain_result

        for f, r in zip(files, results, strict=True):
            explain_result(validator.registry, f.read_bytes(), r)
    if as_json:
        out = [_json(r) for r in results]
        print_json(out if reveal else [{**_masked(o), "file": o["file"]} for o in out])  # type: ignore[dict-item]
    else:
        for r in results:
            text = _human(r)
            typer.echo(text if reveal else mask_text(text))
        bad = sum(not r.valid for r in results)
        typer.echo(f"{len(results)} message(s): {len(results) - bad} valid, {bad} invalid")
    raise typer.Exit(0 if all(r.valid for r in results) else 1)


@schemas_app.command("add")
def schemas_add(directory: Path = typer.Argument(..., help="Folder of official XSDs.")) -> None:
    """Record an official schema pack in settings.json (it takes precedence over our schemas)."""
    try:
        d = add_configured_pack(directory)
        covered = len(SchemaRegistry([d], ours=None).coverage())
    except SchemaError as exc:
        fail(str(exc))
        raise
    typer.echo(f"added {d} ({covered} namespaces)")


@schemas_app.command("list")
def schemas_list(
    schemas: list[Path] = typer.Option(None, "--schemas", help="Extra pack folder (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="JSON for scripts."),
) -> None:
    """Which namespaces are covered, and by which source (the first one listed wins)."""
    try:
        reg = SchemaRegistry.default(schemas or ())
    except SchemaError as exc:
        fail(str(exc))
        raise
    cov = reg.coverage()
    if as_json:
        print_json({"packs": [str(p) for p in [*(schemas or []), *configured_packs()]], "namespaces": cov})
        return
    print_table("Schema coverage", ["namespace", "used", "also in"],
                [(ns, srcs[0], ", ".join(srcs[1:])) for ns, srcs in cov.items()])


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.add_typer(schemas_app, name="schemas")
