"""The approval matrix: systems x message/version x S/M -> approval month, computed from the evidence.

A cell is approved in the month of its first passing run after its last failing one (a failed retest
withdraws an approval until a later pass). It is stale — it needs re-testing — when the rule set or the
message version's definition changed since that run, or the system's profile names another release.
An approval whose run still has manual criteria open (a person has to confirm display, print or import)
is marked "(*)", the way the 2007 table marks such cells.

The HTML page keeps the evidence of every session, failed ones included, and says which campaign,
when it was made and by which hub version.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from hub.conformance.catalogue import message_types
from hub.conformance.evidence import Evidence, Run
from hub.conformance.profiles import CATEGORIES, CATEGORY_ORDER, Profile, month_key, slugify


@dataclass(frozen=True)
class Cell:
    system: str
    category: str
    message: str  # "Epikrise:1.0"
    direction: str
    approved: str  # MM.YY
    run_id: int
    stale: bool = False
    stale_reason: str = ""
    manual_open: int = 0  # manual criteria of the approving run not yet confirmed by a person

    @property
    def name(self) -> str:
        return self.message.rsplit(":", 1)[0]

    @property
    def version(self) -> str:
        return self.message.rsplit(":", 1)[1]


def compute(evidence: Evidence, profiles: dict[str, Profile], *, campaign: str | None = None,
            ruleset: str | None = None, fingerprints: dict[str, str] | None = None) -> dict[tuple, Cell]:
    """(system, message, direction) -> Cell for every approved cell."""
    if ruleset is None or fingerprints is None:
        from hub.conformance.runner import message_fingerprint, ruleset_fingerprint

        ruleset = ruleset or ruleset_fingerprint()
        fingerprints = fingerprints or {mt.key: message_fingerprint(mt) for mt in message_types()}
    by_cell: dict[tuple, list[Run]] = {}
    for r in evidence.runs(campaign=campaign):
        by_cell.setdefault((r.system, r.message, r.direction), []).append(r)
    cells: dict[tuple, Cell] = {}
    for key, runs in by_cell.items():
        runs.sort(key=lambda r: (month_key(r.month), r.id))
        approval: Run | None = None
        for r in runs:
            if r.verdict != "pass":
                approval = None
            elif approval is None:
                approval = r
        if approval is None:
            continue
        reasons = []
        if approval.ruleset != ruleset:
            reasons.append("rule set changed")
        if fingerprints.get(approval.message, approval.message_fp) != approval.message_fp:
            reasons.append("message version changed")
        prof = profiles.get(approval.system)
        if prof and prof.version != approval.system_version:
            reasons.append(f"system release {approval.system_version} -> {prof.version}")
        cells[key] = Cell(approval.system, approval.category, approval.message, approval.direction,
                          approval.month, approval.id, bool(reasons), ", ".join(reasons),
                          len(evidence.open_manual(approval.id)))
    return cells


MANUAL_MARK = "(*)"
STALE_MARK = "!"
LEGEND = f"{MANUAL_MARK} = manual criteria still open; {STALE_MARK} = needs re-testing (stale)"


def _systems(profiles: dict[str, Profile], cells: dict[tuple, Cell], all_systems: bool) -> list[Profile]:
    used = {c.system for c in cells.values()}
    chosen = [p for p in profiles.values() if all_systems or p.name in used]
    return sorted(chosen, key=lambda p: (CATEGORY_ORDER.index(p.category), p.her_id))


def _rows(cells: dict[tuple, Cell]) -> list[tuple[str, str]]:
    """(message key, direction) rows in the order of the 2007 table; only message types in use
    beyond the ELIN-k ones (PLO rows appear when PLO cells exist)."""
    used = {(c.message, c.direction) for c in cells.values()}
    rows = []
    for mt in message_types():
        if mt.group != "elin-k" and not any(m == mt.key for m, _ in used):
            continue
        rows += [(mt.key, d) for d in ("S", "M")]
    return rows


def to_csv(cells: dict[tuple, Cell]) -> str:
    """The shape of conformance/elin-k-2007-matrix.csv, plus stale, manual criteria still open and the
    run whose evidence approved the cell (`hub conformance matrix --format html` shows it as #run-N)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["message", "version", "direction", "system", "approved", "stale", "manual_open", "run_id"])
    order = {k: i for i, k in enumerate(_rows(cells))}
    for c in sorted(cells.values(), key=lambda c: (order.get((c.message, c.direction), 999), c.system)):
        w.writerow([c.name, c.version, c.direction, c.system, c.approved, "yes" if c.stale else "",
                    c.manual_open or "", c.run_id])
    return out.getvalue()


def to_json(cells: dict[tuple, Cell]) -> str:
    return json.dumps([{**asdict(c), "name": c.name, "version": c.version} for c in cells.values()],
                      ensure_ascii=False, indent=2)


def grid(cells: dict[tuple, Cell], profiles: dict[str, Profile],
         all_systems: bool = True) -> tuple[list[Profile], list[tuple[str, str, list[Cell | None]]]]:
    systems = _systems(profiles, cells, all_systems)
    rows = [(m, d, [cells.get((p.name, m, d)) for p in systems]) for m, d in _rows(cells)]
    return systems, rows


def to_rich(cells: dict[tuple, Cell], profiles: dict[str, Profile], all_systems: bool = True,
            width: int | None = None) -> object:
    """The grid as the 2007 table draws it; when a console of `width` columns cannot show it (15
    system columns need ~200), one compact table per category with short system codes and a legend,
    or, if even that is too wide, a list of approved cells per system."""
    full = _full_grid(cells, profiles, all_systems)
    if width is None or _fits(full, width):
        return full
    compact = _by_category(cells, profiles, all_systems)
    if all(_fits(t, width) for t in compact.renderables if hasattr(t, "columns")):
        return compact
    return _per_system(cells, profiles, all_systems)


def _fits(renderable: object, width: int) -> bool:
    from rich.console import Console

    probe = Console(width=10_000, file=_Null(), color_system=None)
    return probe.measure(renderable).minimum <= width  # type: ignore[arg-type]


class _Null:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass


def _code(p: Profile, i: int) -> str:
    """Short column code of a system: category letter + number (P1, S2, L3, O1), as in a legend."""
    return {"gp": "P", "hospital": "S", "lab": "L", "nursing": "O"}.get(p.category, "X") + str(i)


def _by_category(cells: dict[tuple, Cell], profiles: dict[str, Profile], all_systems: bool) -> object:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    systems, rows = grid(cells, profiles, all_systems)
    parts: list[object] = [Text("Godkjente systemer (standarder)", style="bold")]
    for cat in CATEGORY_ORDER:
        idx = [i for i, p in enumerate(systems) if p.category == cat]
        if not idx:
            continue
        codes = {i: _code(systems[i], n) for n, i in enumerate(idx, 1)}
        t = Table(title=CATEGORIES[cat], title_justify="left", header_style="bold", pad_edge=False)
        t.add_column("Melding, versjon, S/M", overflow="fold")
        for i in idx:
            t.add_column(codes[i], justify="center", no_wrap=True)
        for m, d, row in rows:
            mine = [row[i] for i in idx]
            if any(mine):  # only the rows this category has approvals in
                name, version = m.rsplit(":", 1)
                t.add_row(f"{name} {version} {d}", *[_short_cell(c) for c in mine])
        if t.row_count:  # the legend under its table: one system a line, never split
            parts += [t, Text("\n".join(f"  {codes[i]} = {systems[i].name}" for i in idx), style="dim")]
    parts.append(Text(LEGEND, style="dim"))
    return Group(*parts)


def _short_cell(c: Cell | None) -> str:
    if c is None:
        return ""
    return c.approved + (MANUAL_MARK if c.manual_open else "") + (STALE_MARK if c.stale else "")


def _per_system(cells: dict[tuple, Cell], profiles: dict[str, Profile], all_systems: bool) -> object:
    from rich.console import Group
    from rich.text import Text

    systems, _rows_ = grid(cells, profiles, all_systems)
    order = {k: i for i, k in enumerate(_rows(cells))}
    parts: list[object] = [Text("Godkjente systemer (standarder)", style="bold")]
    for p in systems:
        mine = sorted((c for c in cells.values() if c.system == p.name),
                      key=lambda c: order.get((c.message, c.direction), 999))
        parts.append(Text(f"{p.name} ({p.category_label})", style="bold"))
        parts += [Text(f"  {c.name} {c.version} {c.direction}: {_short_cell(c)}") for c in mine] or \
            [Text("  -", style="dim")]
    parts.append(Text(LEGEND, style="dim"))
    return Group(*parts)


def _full_grid(cells: dict[tuple, Cell], profiles: dict[str, Profile], all_systems: bool) -> object:
    from rich.table import Table

    systems, rows = grid(cells, profiles, all_systems)
    t = Table(title="Godkjente systemer (standarder)", header_style="bold", show_lines=False,
              caption=LEGEND if any(c.stale or c.manual_open for c in cells.values()) else None)
    t.add_column("Melding, versjon")
    t.add_column("S/M")
    for p in systems:
        t.add_column(f"{p.name}\n[dim]{p.category_label}[/]", justify="center")
    for m, d, row in rows:
        name, version = m.rsplit(":", 1)
        t.add_row(f"{name} {version}" if d == "S" else "", d,
                  *[_rich_cell(c) for c in row])
    return t


def _rich_cell(c: Cell | None) -> str:
    if c is None:
        return ""
    manual = f" {MANUAL_MARK}" if c.manual_open else ""
    return c.approved + manual + (" [yellow](stale)[/]" if c.stale else "")


def _xml_block(data: bytes) -> str:
    return f"<pre>{html.escape(data.decode('utf-8', errors='replace'))}</pre>"


def to_html(cells: dict[tuple, Cell], profiles: dict[str, Profile], evidence: Evidence,
            all_systems: bool = True, *, campaign: str | None = None, now: datetime | None = None) -> str:
    """One self-contained page: which campaign, when, which hub; the grid (each approval links to the
    run that approved it); every session of the campaign, failed ones included, with its evidence
    (anchored #run-N: cases, errors found, the messages exchanged)."""
    from hub import __version__

    systems, rows = grid(cells, profiles, all_systems)
    e = html.escape
    runs = sorted(evidence.runs(campaign=campaign), key=lambda r: (month_key(r.month), r.id))
    shown = {r.id for r in runs} | {c.run_id for c in cells.values()}
    runs += [evidence.run(i) for i in sorted(shown - {r.id for r in runs})]
    approving = {c.run_id: c for c in cells.values()}
    names = campaign or ", ".join(sorted({r.campaign for r in runs if r.campaign})) or "single runs"
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    cats = [(cat, [p for p in systems if p.category == cat]) for cat in CATEGORY_ORDER]
    cats = [(c, ps) for c, ps in cats if ps]
    head1 = "".join(f'<th colspan="{len(ps)}">{e(CATEGORIES[c])}</th>' for c, ps in cats)
    head2 = "".join(f'<th class="sys">{e(p.name)}</th>' for _, ps in cats for p in ps)
    body = []
    for m, d, row in rows:
        name, version = m.rsplit(":", 1)
        tds = []
        for c in row:
            if c is None:
                tds.append("<td></td>")
                continue
            cls = "stale" if c.stale else "ok"
            notes = ([f"needs re-testing: {c.stale_reason}"] if c.stale else []) + \
                ([f"{c.manual_open} manual criteria still open"] if c.manual_open else [])
            title = f' title="{e("; ".join(notes))}"' if notes else ""
            mark = f" {MANUAL_MARK}" if c.manual_open else ""
            tds.append(f'<td class="{cls}"{title}><a href="#run-{c.run_id}">{e(c.approved)}</a>{mark}</td>')
        label = f"<td>{e(name)}</td><td>{e(version)}</td>" if d == "S" else "<td></td><td></td>"
        body.append(f"<tr>{label}<td>{d}</td>{''.join(tds)}</tr>")
    listing = "".join(
        f'<tr class="{e(r.verdict or "")}"><td>{e(r.month)}</td><td>{e(r.system)}</td><td>{e(r.message)}</td>'
        f"<td>{e(r.direction)}</td><td>{e(r.transport)}</td><td>{e(r.verdict or 'unfinished')}"
        f"{' (approval)' if r.id in approving else ''}</td>"
        f'<td><a href="#run-{r.id}">run {r.id}</a></td></tr>'
        for r in runs)
    sections = [_run_section(evidence, r, approving.get(r.id)) for r in runs]
    style = ("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #999;padding:2px 6px}th.sys{writing-mode:vertical-rl}"
             "td.ok{background:#cfc}td.stale{background:#ffc}"
             "tr.fail td{background:#fcc}tr.skip td{color:#888}pre{background:#f4f4f4;font-size:11px}")
    return (f'<!DOCTYPE html><html lang="no"><head><meta charset="utf-8"><title>Teststatus</title>'
            f"<style>{style}</style></head><body><h1>Teststatus for ulike systemer</h1>"
            f'<p id="about">Campaign: {e(names)}. Made {e(when)} by hub {e(__version__)}. '
            f"{len(runs)} sessions, {sum(r.verdict == 'fail' for r in runs)} failed. {e(LEGEND)}.</p>"
            f'<table id="matrix"><tr><th colspan="3">Inndeling og navn på system</th>{head1}</tr>'
            f"<tr><th>Melding</th><th>Versjon</th><th>S/M</th>{head2}</tr>{''.join(body)}</table>"
            f'<h2>Sessions</h2><table id="sessions"><tr><th>month</th><th>system</th><th>message</th>'
            f"<th>S/M</th><th>transport</th><th>verdict</th><th>evidence</th></tr>{listing}</table>"
            f"<h2>Evidence</h2>{''.join(sections)}</body></html>")


def _run_section(evidence: Evidence, run: Run, cell: Cell | None) -> str:
    e = html.escape
    if cell is not None:
        outcome = f"approved {e(cell.approved)}" + (f" (stale: {e(cell.stale_reason)})" if cell.stale else "")
        if cell.manual_open:
            outcome += f" {MANUAL_MARK} {cell.manual_open} manual criteria still open"
    else:
        outcome = e(run.verdict or "unfinished")
    items = []
    for cr in evidence.cases(run.id):
        errs = "".join(f"<li>{e(str(x.get('code')))} {e(str(x.get('rule')))}: {e(str(x.get('text')))}</li>"
                       for x in cr.errors)
        items.append(f'<tr class="{e(cr.verdict)}"><td>{e(cr.case_id)}</td><td>{e(cr.title)}</td>'
                     f"<td>{e(cr.source)}</td><td>{e(cr.verdict)}</td><td>{e(cr.expected or '')}</td>"
                     f"<td>{e(cr.observed or '')}<ul>{errs}</ul></td></tr>")
    msgs = "".join(
        f"<details><summary>{e(x.case_id)} {e(x.flow)} {e(x.name)} (sha256 {x.sha256[:12]})</summary>"
        f"{_xml_block(evidence.blob(x.sha256))}</details>" for x in evidence.exchanges(run.id))
    return (f'<section id="run-{run.id}"><h3>{e(run.month)} {e(run.system)} — {e(run.message)} '
            f"{e(run.direction)}: {outcome}</h3>"
            f"<p>Run {run.id}, release {e(run.system_version)}, transport {e(run.transport)}, rule set "
            f"{e(run.ruleset)}, message definition {e(run.message_fp)}, campaign {e(run.campaign or '-')}, "
            f"started {e(run.started_at)}</p>"
            f"<table><tr><th>case</th><th>title</th><th>source</th><th>verdict</th><th>expected</th>"
            f"<th>observed</th></tr>{''.join(items)}</table>{msgs}</section>")


def system_anchor(name: str) -> str:
    return f"system-{slugify(name)}"
