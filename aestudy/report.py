"""The report of a run: `metrics.json` rendered as `report.md` and a self-contained `report.html`.

Both are made from one list of blocks (headings, paragraphs, tables, figures): every notebook's claims
(id, statement, kind, measured, verdict), the AE-vs-VAE table a notebook recorded as metric
`comparison_table` (a list of row dicts), scalar metrics, per-notebook wall times and the environment.
PNG files a notebook recorded as metric `figures` are linked from the markdown and embedded in the HTML.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from aestudy.claims import compact

COMPARISON_METRIC = "comparison_table"
FIGURES_METRIC = "figures"
CLAIM_COLUMNS: tuple[str, ...] = ("id", "statement", "kind", "measured", "verdict")

_CSS = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} td.holds{color:#11651b} td.fails{color:#a31515;font-weight:600}
figure{margin:1rem 0} figure img{max-width:100%} figcaption{font-size:.85rem;color:#555}"""


@dataclass(frozen=True)
class Block:
    """One piece of the report: a heading (`h1`-`h3`), a paragraph (`p`), a `table` or a `figure`."""

    kind: str
    content: Any
    caption: str = ""


def verdict(claim: Mapping[str, Any]) -> str:
    """`holds`, or `does not hold` (+ `enforced` / the sanity problems)."""
    if claim.get("holds"):
        return "holds"
    notes = list(claim.get("sanity") or [])
    if claim.get("enforced"):
        notes.insert(0, "enforced")
    return "does not hold" + (f" ({'; '.join(notes)})" if notes else "")


def claims_frame(entry: Mapping[str, Any]) -> pd.DataFrame:
    """One notebook's claims as rows of id, statement, kind, measured, verdict."""
    rows = [{"id": c.get("id"), "statement": c.get("statement"), "kind": c.get("kind"),
             "measured": compact(c.get("measured") or {}), "verdict": verdict(c)}
            for c in entry.get("claims", [])]
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def scalar_metrics_frame(entry: Mapping[str, Any]) -> pd.DataFrame:
    """One notebook's metrics that are single numbers, strings or booleans."""
    rows = [{"metric": name, "value": value} for name, value in entry.get("metrics", {}).items()
            if isinstance(value, (int, float, str, bool)) and name not in (COMPARISON_METRIC, FIGURES_METRIC)]
    return pd.DataFrame(rows, columns=["metric", "value"])


def table_metrics(entry: Mapping[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    """A notebook's structured metrics as tables: lists of row dicts as they are, dicts as key/value rows."""
    tables = []
    for name, value in entry.get("metrics", {}).items():
        if name in (COMPARISON_METRIC, FIGURES_METRIC):
            continue
        if isinstance(value, list) and value and all(isinstance(row, Mapping) for row in value):
            columns = list(dict.fromkeys(key for row in value for key in row))
            tables.append((name, pd.DataFrame(value, columns=columns)))
        elif isinstance(value, Mapping) and value:
            rows = [{"key": key, "value": inner if isinstance(inner, (int, float, str, bool)) or inner is None
                     else json.dumps(inner)} for key, inner in value.items()]
            tables.append((name, pd.DataFrame(rows, columns=["key", "value"])))
    return tables


def comparison_frame(metrics: Mapping[str, Any]) -> pd.DataFrame | None:
    """The AE-vs-VAE table (the last notebook that recorded `comparison_table`), or None."""
    tables = [entry["metrics"][COMPARISON_METRIC] for entry in metrics.get("notebooks", {}).values()
              if isinstance(entry.get("metrics", {}).get(COMPARISON_METRIC), list)]
    if not tables or not tables[-1]:
        return None
    rows = [row for row in tables[-1] if isinstance(row, Mapping)]
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return pd.DataFrame(rows, columns=columns)


def timings_frame(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Per notebook: status, wall time in seconds, number of claims and how many hold."""
    rows = []
    for name, entry in metrics.get("notebooks", {}).items():
        claims = entry.get("claims", [])
        wall = entry.get("wall_s")
        rows.append({"notebook": name, "status": entry.get("status", "?"),
                     # fixed one decimal: the generic 4-significant-digit cell format would print 3.0 s as
                     # "3" and a long full-profile run (12345.6 s) as "1.235e+04"
                     "wall time (s)": None if wall is None else f"{float(wall):.1f}",
                     "claims": len(claims), "hold": sum(bool(c.get("holds")) for c in claims)})
    return pd.DataFrame(rows, columns=["notebook", "status", "wall time (s)", "claims", "hold"])


def environment_frame(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """The environment flattened to `key: value` rows (package versions, device, kernel, git, seeds...)."""
    rows: list[dict[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping) and prefix != "environment.parameters":
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            rows.append({"key": prefix, "value": value if isinstance(value, (int, float, str, bool))
                         or value is None else json.dumps(value)})

    env = {key: value for key, value in (metrics.get("environment") or {}).items() if key != "parameters"}
    walk("", env)
    return pd.DataFrame(rows, columns=["key", "value"])


def _figure_paths(metrics: Mapping[str, Any], run_dir: Path) -> list[tuple[str, Path]]:
    """(notebook, path) of every existing figure a notebook recorded (relative paths: run folder, notebooks)."""
    bases = [run_dir, Path((metrics.get("environment") or {}).get("notebooks_dir") or run_dir)]
    found = []
    for name, entry in metrics.get("notebooks", {}).items():
        figures = entry.get("metrics", {}).get(FIGURES_METRIC) or []
        for figure in figures if isinstance(figures, list) else [figures]:
            path = Path(str(figure))
            candidates = [path] if path.is_absolute() else [base / path for base in bases]
            existing = next((c for c in candidates if c.is_file()), None)
            if existing is not None:
                found.append((name, existing))
    return found


def report_blocks(metrics: Mapping[str, Any], run_dir: Path) -> list[Block]:
    """The report's content, in order."""
    notebooks = metrics.get("notebooks", {})
    claims = [c for entry in notebooks.values() for c in entry.get("claims", [])]
    failing = [c for c in claims if not c.get("holds")]
    env = metrics.get("environment") or {}
    device = env.get("device") or {}
    git = env.get("git") or {}
    status = metrics.get("status", "?")
    blocks = [
        Block("h1", f"aestudy run {metrics.get('run', run_dir.name)}"),
        Block("p", f"Status: **{status}**{'' if status == 'complete' else ' (incomplete run)'} · profile "
                   f"`{metrics.get('profile')}` · device `{device.get('resolved')}` ({device.get('name')}) · "
                   f"started {metrics.get('started')} · finished {metrics.get('finished') or '—'} · git "
                   f"`{(git.get('commit') or '?')[:12]}`{' (dirty)' if git.get('dirty') else ''}"),
        Block("p", f"{len(claims)} claims recorded: {len(claims) - len(failing)} hold, {len(failing)} do not "
                   f"({sum(bool(c.get('enforced')) for c in failing)} of those enforced)."),
    ]
    comparison = comparison_frame(metrics)
    if comparison is not None:
        blocks += [Block("h2", "AE vs VAE: what we measured"), Block("table", comparison)]
    blocks.append(Block("h2", "Claims"))
    for name, entry in notebooks.items():
        wall = entry.get("wall_s")
        timing = "" if wall is None else f", {float(wall):.1f} s"
        blocks.append(Block("h3", f"{name} ({entry.get('status', '?')}{timing})"))
        if entry.get("error"):
            error = entry["error"]
            blocks.append(Block("p", f"Failed in cell [{error.get('cell')}]: `{error.get('ename')}: "
                                     f"{error.get('evalue')}`"))
        frame = claims_frame(entry)
        blocks.append(Block("table", frame) if len(frame) else Block("p", "No claims recorded."))
        scalars = scalar_metrics_frame(entry)
        if len(scalars):
            blocks.append(Block("table", scalars, caption="metrics"))
        blocks += [Block("table", table, caption=metric) for metric, table in table_metrics(entry)]
    blocks += [Block("h2", "Timings"), Block("table", timings_frame(metrics))]
    figures = _figure_paths(metrics, run_dir)
    if figures:
        blocks.append(Block("h2", "Figures"))
        blocks += [Block("figure", path, caption=f"{name}: {path.name}") for name, path in figures]
    blocks += [Block("h2", "Environment"), Block("table", environment_frame(metrics))]
    return blocks


def _show(value: Any) -> str:
    """A table cell as text: floats to 4 significant digits, missing values empty."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _md_cell(value: Any) -> str:
    text = _show(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (pipes escaped, newlines flattened)."""
    header = "| " + " | ".join(_md_cell(c) for c in frame.columns) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def render_markdown(blocks: Iterable[Block], run_dir: Path) -> str:
    """The blocks as markdown (figures linked relative to the run folder)."""
    parts = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            parts.append("#" * int(block.kind[1]) + " " + block.content)
        elif block.kind == "p":
            parts.append(block.content)
        elif block.kind == "table":
            parts.append((f"*{block.caption}*\n\n" if block.caption else "") + markdown_table(block.content))
        elif block.kind == "figure":
            parts.append(f"![{block.caption}]({os.path.relpath(block.content, run_dir)})")
    return "\n\n".join(parts) + "\n"


def _inline_markdown(text: str) -> str:
    """HTML for a paragraph using only `**bold**` and `` `code` `` (all the report's prose needs)."""
    out, bold, code = [], False, False
    for piece in _split_markup(text):
        if piece == "**" and not code:
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
        elif piece == "`":
            out.append("</code>" if code else "<code>")
            code = not code
        else:
            out.append(html.escape(piece))
    return "".join(out)


def _split_markup(text: str) -> list[str]:
    pieces, current, i = [], "", 0
    while i < len(text):
        token = "**" if text.startswith("**", i) else "`" if text[i] == "`" else None
        if token:
            pieces += [current, token]
            current, i = "", i + len(token)
        else:
            current, i = current + text[i], i + 1
    return [p for p in [*pieces, current] if p]


def _html_table(frame: pd.DataFrame) -> str:
    table = frame.map(_show).to_html(index=False, escape=True, border=0)
    if "verdict" in frame.columns:
        table = table.replace("<td>holds</td>", '<td class="holds">holds</td>')
        table = table.replace("<td>does not hold", '<td class="fails">does not hold')
    return table


def render_html(blocks: Iterable[Block]) -> str:
    """The blocks as one self-contained HTML page (figures embedded as base64 PNG)."""
    body = []
    title = "aestudy report"
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            title = block.content if block.kind == "h1" else title
            body.append(f"<{block.kind}>{html.escape(block.content)}</{block.kind}>")
        elif block.kind == "p":
            body.append(f"<p>{_inline_markdown(block.content)}</p>")
        elif block.kind == "table":
            caption = f"<p><em>{html.escape(block.caption)}</em></p>" if block.caption else ""
            body.append(caption + _html_table(block.content))
        elif block.kind == "figure":
            data = base64.b64encode(Path(block.content).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{_CSS}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Render `run_dir/metrics.json` into `report.md` and `report.html`; return their paths."""
    run_dir = Path(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    blocks = report_blocks(metrics, run_dir)
    md, page = run_dir / "report.md", run_dir / "report.html"
    _write_text(md, render_markdown(blocks, run_dir))
    _write_text(page, render_html(blocks))
    return md, page
