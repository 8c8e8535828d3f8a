"""The report of a run: `metrics.json` rendered as `report.md` and one self-contained `report.html`.

Both are made from one list of blocks (headings, paragraphs, lists, tables, figures, collapsible sections),
in this order:

1. **What this run found**: one plain sentence per row of the AE-vs-VAE table (metric `comparison_table`, a
   list of row dicts with Aspect, AE, VAE, Evidence, Verdict and optionally Claims, the ids a row rests on, later
   notebooks' included: see `row_claims`), each naming the claims the row rests on with
   their measured effect, interval and verdict (holds / does not hold / inconclusive). Generated from the
   ledger: a claim that carries a three-way verdict record (`effect`, `ci_low`, `ci_high`, `p_value`,
   `n_seeds`, `test`, `verdict`; see `claim_stats`) is shown with it, an older yes/no claim with its `holds`.
   Without a comparison table, one sentence per examined claim.
2. **For this data**: the measured answer to "AE or VAE?" per goal (exact reconstruction, new samples, anomaly
   scores, features for few labels), each from the examined claims that `GOAL_CLAIMS` maps to it, with their
   effect, interval and verdict; a goal whose claims a notebook skipped (metric `skipped_claims`, e.g. a dataset
   without labels) or did not run says so. Shown for every run, Fashion-MNIST included.
3. **Key figures**: the PNGs notebooks recorded with `aestudy.claims.record_figure` (ledger key `figures`)
   or, as before, listed in metric `figures`; embedded as data URIs in the HTML, linked from the markdown.
4. The AE-vs-VAE table with its verdicts written as sentences.
5. **Claims** per notebook: each claim id links to the cell that checks it in the executed notebook, rendered
   to HTML next to the report (`<notebook>.html#cell-id=<cell id>`, the anchors nbconvert writes).
6. Timings, then configuration and environment in one collapsible `<details>` section at the end.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from aestudy.atomic import atomic_write
from aestudy.claims import VERDICT_SIGNS, compact

COMPARISON_METRIC = "comparison_table"
# Further rows of the seed's table that other notebooks measure (notebook 05: GANs, scaling, semi-supervised).
EXTRA_ROW_METRICS: tuple[str, ...] = ("limits_table",)
FIGURES_METRIC = "figures"  # metric: a list of PNG paths (older notebooks)
FIGURES_KEY = "figures"  # ledger entry key written by claims.record_figure: [{"name", "path", "caption"}]
CONFIG_METRICS: tuple[str, ...] = ("config", "watermark")  # go to the closing configuration section
CLAIM_COLUMNS: tuple[str, ...] = ("id", "statement", "kind", "measured", "verdict")
VERDICTS: tuple[str, ...] = ("holds", "does not hold", "inconclusive")
STAT_FIELDS: tuple[str, ...] = ("effect", "ci_low", "ci_high", "p_value", "n_seeds", "test", "verdict", "alpha",
                                 "replicates", "min_effect", "reason")
# Where a three-way verdict record may sit in a claim: at its top level or in one of these sub-dicts.
STAT_CONTAINERS: tuple[str, ...] = ("stats", "comparison", "compare", "measured")
FINDINGS_ID = "findings"
# What the report's per-notebook times are, since each notebook's watermark shows a shorter wall time of its own.
RUNNER_TIME_NOTE = ("Each notebook's time here is the runner's wall time: from starting its kernel to saving the "
                    "executed notebook. The notebook's own watermark (`wall_time_s`) counts only from its `Study` "
                    "setup to its watermark cell, so it is shorter by the kernel start, the imports and the save.")
FINDING_VALUES = 4  # measured values quoted per claim in a finding (the claims table has them all)
# The figures the report shows first, in this order (names given to `record_figure` / `study.figure`); any
# other recorded figure is folded below them. See the issue that asked for them: prior samples of AE, AE + GMM,
# VAE (and GAN) side by side; reconstruction pairs; the rate-distortion curve; FID with intervals; ROC curves;
# the 2-D latent scatter.
KEY_FIGURES: tuple[str, ...] = ("prior_samples", "reconstruction_pairs", "rate_distortion", "fid_intervals",
                                "roc_curves", "latent_scatter_2d")

# "For this data": which examined claims answer "AE or VAE?" for which goal, and the model each favours when it
# holds. The one table of this mapping; a claim id that no notebook records any more simply shows as "not run".
SKIPPED_METRIC = "skipped_claims"  # metric: [{"id", "reason"}] — claims a notebook did not record, and why
FEATURES_METRIC = "fid_features"  # metric: {"name", "description"} — the feature space of the run's FID scores
FOR_THIS_DATA_ID = "for-this-data"
# Each member: (claim id, the model it favours when it holds, the model its effect favours when it points the
# other way). A claim against the VAE (04.ood-likelihood-failure: the VAE's likelihood ranks OOD images as more
# likely) favours the AE's score when it holds.
GOAL_CLAIMS: tuple[tuple[str, tuple[tuple[str, str, str], ...]], ...] = (
    ("exact reconstruction", (("03.ae-reconstructs-better", "AE", "VAE"), ("03.vae-outputs-blurrier", "AE", "VAE"))),
    ("new samples", (("03.vae-samples-beat-ae-prior", "VAE", "AE"), ("03.vae-gmm-beats-ae-gmm", "VAE", "AE + GMM"),
                     ("03.ex-post-density-closes-gap", "AE + GMM ex post", "VAE"))),
    ("anomaly scores", (("04.likelihood-beats-recon-error", "VAE", "AE"),
                        ("04.vae-elbo-beats-recon-across-classes", "VAE", "AE"),
                        ("04.ood-likelihood-failure", "AE", "VAE"))),
    ("features for few labels", (("04.vae-beats-ae-few-labels", "VAE", "AE"),)),
)

_CSS = """body{font-family:system-ui,sans-serif;max-width:72rem;margin:2rem auto;padding:0 1rem;color:#222;
line-height:1.45}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3} .holds{color:#11651b} .fails{color:#a31515} .inconclusive{color:#8a5a00}
#findings{background:#f7f9fc;border:1px solid #d8e0ea;border-radius:6px;padding:.2rem 1.2rem 1rem}
#findings li{margin:.45rem 0}
figure{margin:1rem 0 1.5rem} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}
details{margin:1rem 0} summary{cursor:pointer;font-weight:600}"""


@dataclass(frozen=True)
class Block:
    """One piece of the report.

    kind: `h1`-`h3` (content: text), `p` (text with `**bold**`, `` `code` `` and `[links](url)`), `list`
    (a list of such texts), `table` (a DataFrame), `figure` (a PNG path), `figures` (a list of (path,
    caption) pairs shown side by side) or `details` (a collapsible section: content is a list of Blocks,
    caption its summary line). `anchor` gives a heading or list an HTML id.
    """

    kind: str
    content: Any
    caption: str = ""
    anchor: str = ""


# ----------------------------------------------------------------------------------------- verdicts


def claim_stats(claim: Mapping[str, Any]) -> dict[str, Any]:
    """A claim's three-way verdict record (`effect`, `ci_low`, `ci_high`, `p_value`, `n_seeds`, `test`,
    `verdict`), wherever it sits: the claim's top level or its `stats`/`comparison`/`compare`/`measured`
    dict. Empty when the claim has only a yes/no `holds`."""
    for source in (claim, *(claim.get(key) for key in STAT_CONTAINERS)):
        if isinstance(source, Mapping) and source.get("verdict") in VERDICTS:
            return {name: source[name] for name in STAT_FIELDS if name in source}
    return {}


def claim_verdict(claim: Mapping[str, Any]) -> str:
    """`holds`, `does not hold` or `inconclusive`: the three-way verdict when recorded, else from `holds`."""
    stats = claim_stats(claim)
    if stats:
        return str(stats["verdict"])
    return "holds" if claim.get("holds") else "does not hold"


def verdict(claim: Mapping[str, Any]) -> str:
    """The claim's verdict with its qualifiers: `does not hold (enforced; <sanity problems>)`."""
    notes = list(claim.get("sanity") or [])
    word = "does not hold" if notes else claim_verdict(claim)  # failed sanity checks: never "holds"
    if word == "does not hold" and claim.get("enforced"):
        notes.insert(0, "enforced")
    return word + (f" ({'; '.join(notes)})" if notes else "")


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:+.3g}" if value else "0"


def stats_phrase(stats: Mapping[str, Any]) -> str:
    """`effect +0.12 (95% CI +0.05 to +0.19), p = 0.003, 5 seeds, Welch t-test` from a verdict record (the
    interval's level is 1 − `alpha` when the record has one, else 95%)."""
    parts = []
    if "effect" in stats:
        level = f"{1 - stats['alpha']:.0%}" if isinstance(stats.get("alpha"), (int, float)) else "95%"
        has_interval = all(isinstance(stats.get(k), (int, float)) for k in ("ci_low", "ci_high"))
        minimum = (f"; min effect {stats['min_effect']:.3g}" if isinstance(stats.get("min_effect"), (int, float))
                   else "")
        interval = (f" ({level} CI {_number(stats['ci_low'])} to {_number(stats['ci_high'])}{minimum})"
                    if has_interval else f" (no interval: too few seeds{minimum})" if "ci_low" in stats
                    else f" ({minimum[2:]})" if minimum else "")
        parts.append(f"effect {_number(stats['effect'])}{interval}")
    if isinstance(stats.get("p_value"), (int, float)):
        parts.append(f"p = {stats['p_value']:.2g}")
    test = str(stats.get("test") or "")
    if stats.get("n_seeds") is not None:  # None: a test over images (DeLong, McNemar), not over seeds
        seeds, unit = stats["n_seeds"], stats.get("replicates") or "seeds"  # timing rounds, held-out classes...
        if isinstance(seeds, (list, tuple)) and test.startswith("one-sample"):  # one arm against a fixed value
            seeds = seeds[0]
        counts = " vs ".join(map(str, seeds)) if isinstance(seeds, (list, tuple)) else str(seeds)
        parts.append(f"{counts} {unit}")
    if test and test.lower() != "none":
        parts.append(test)
    text = ", ".join(parts)
    if stats.get("verdict") == "inconclusive" and stats.get("reason") and isinstance(stats.get("p_value"),
                                                                                     (int, float)):
        text += f"; inconclusive because {stats['reason']}"  # why a result with an interval decides nothing
    return text


def evidence_phrase(claim: Mapping[str, Any], *, limit: int | None = None) -> str:
    """The numbers a verdict rests on: the verdict record's effect and interval, else the measured values
    (the first `limit` of them) marked as a yes/no decision without an interval."""
    stats = claim_stats(claim)
    if stats and "effect" in stats:
        return stats_phrase(stats)
    measured = dict(claim.get("measured") or {})
    shown = compact(dict(list(measured.items())[:limit]) if limit is not None else measured)
    if limit is not None and len(measured) > limit:
        shown += ", …"
    return (f"measured {shown}; " if shown else "") + "no interval recorded"


def claim_sentence(claim: Mapping[str, Any]) -> str:
    """A verdict cell as a sentence, e.g. `Does not hold (enforced): measured beta=4; no interval recorded.`."""
    text = verdict(claim)
    return f"{text[0].upper()}{text[1:]}: {evidence_phrase(claim)}."


def _verdict_class(text: str) -> str:
    lowered = str(text).lower().lstrip("*")
    if lowered.startswith(("holds", "does not hold", "inconclusive", "mixed")):
        return {"h": "holds", "d": "fails", "i": "inconclusive", "m": "inconclusive"}[lowered[0]]
    return ""


# ----------------------------------------------------------------------------------------- links to cells


def _output_text(cell: Any) -> str:
    """The text a code cell's outputs show: streams, and the plain/markdown/HTML renderings of results."""
    parts = []
    for output in cell.get("outputs", []):
        text = output.get("text")
        if text is not None:
            parts.append(text if isinstance(text, str) else "".join(text))
        for mime in ("text/plain", "text/markdown", "text/html"):
            value = (output.get("data") or {}).get(mime)
            if value is not None:
                parts.append(value if isinstance(value, str) else "".join(value))
    return "\n".join(parts)


def claim_cells(nb: Any, claim_ids: Iterable[str]) -> dict[str, str]:
    """The id of the code cell that checks each claim in an executed notebook (`nbformat` node).

    A claim belongs to the first code cell whose outputs show its verdict line (`aestudy.claims.verdict_line`:
    "✓ ID: …", "✗ ID: …" or "? ID: …" at the start of a line) — not to an earlier cell that merely names the id,
    e.g. a list of claims to skip. Failing that (a notebook run before verdict lines existed), the first code cell
    whose source holds the id as a string literal, then the first whose outputs print it. Ids found nowhere are
    left out.
    """
    cells = [c for c in nb.cells if c.cell_type == "code" and c.get("id")]
    shown = {c["id"]: _output_text(c) for c in cells}
    signs = "".join(VERDICT_SIGNS.values())
    found: dict[str, str] = {}
    for claim_id in claim_ids:
        line = re.compile(rf"^[{re.escape(signs)}] {re.escape(claim_id)}:", re.MULTILINE)
        literals = (f'"{claim_id}"', f"'{claim_id}'")
        cell = next((c for c in cells if line.search(shown[c["id"]])), None)
        if cell is None:
            cell = next((c for c in cells if any(lit in c.source for lit in literals)), None)
        if cell is None:
            cell = next((c for c in cells if claim_id in json.dumps(c.get("outputs", []))), None)
        if cell is not None:
            found[claim_id] = cell["id"]
    return found


# The cell a claim link points at is outlined, so the reader sees which one it is.
_TARGET_CSS = ".jp-Cell:target{outline:3px solid #e8a33d;outline-offset:4px;border-radius:2px}"


def render_notebook_html(notebook: Path, out: Path) -> None:
    """The executed notebook as HTML (nbconvert's lab template: each cell's div has id `cell-id=<id>`)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    body = body.replace("</head>", f"<style>{_TARGET_CSS}</style></head>", 1)
    atomic_write(out, lambda handle: handle.write(body.encode("utf-8")))


@dataclass
class NotebookLinks:
    """Where a run's claims live: per notebook the rendered page (relative to the run folder) and cell ids."""

    pages: dict[str, str] = field(default_factory=dict)
    cells: dict[str, tuple[str, str]] = field(default_factory=dict)  # claim id -> (notebook, cell id)

    def notebook(self, name: str) -> str | None:
        """The rendered page of notebook `name` (relative URL), if any."""
        return self.pages.get(name)

    def claim(self, claim_id: str) -> str | None:
        """The URL of the cell checking `claim_id` (`page#cell-id=…`), else its notebook's page, else None."""
        if claim_id in self.cells:
            name, cell = self.cells[claim_id]
            return f"{self.pages[name]}#cell-id={cell}"
        return None


def notebook_links(metrics: Mapping[str, Any], run_dir: Path, *, render: bool = True) -> NotebookLinks:
    """Render each executed notebook of the run to `<stem>.html` beside it and locate its claims' cells.

    A notebook that is missing or cannot be rendered gets no page (its claims are shown without links);
    `render=False` only links pages that already exist.
    """
    import nbformat

    links = NotebookLinks()
    for name, entry in metrics.get("notebooks", {}).items():
        executed = run_dir / str(entry.get("file") or f"{name}.ipynb")
        page = executed.with_suffix(".html")
        if not executed.is_file():
            continue
        try:
            nb = nbformat.read(str(executed), as_version=4)
            if render:
                render_notebook_html(executed, page)
        # A notebook that failed half-way can be any shape; the report must still be written without its page.
        except Exception as exc:  # noqa: BLE001
            print(f"note: could not render {executed.name} to HTML ({type(exc).__name__}: {exc}); the report "
                  "links its claims to nothing", file=sys.stderr)
            continue
        if not page.is_file():
            continue
        links.pages[name] = page.relative_to(run_dir).as_posix()
        ids = [str(c.get("id")) for c in entry.get("claims", [])]
        links.cells.update({cid: (name, cell) for cid, cell in claim_cells(nb, ids).items()})
    return links


def _claim_ref(claim_id: str, links: NotebookLinks | None) -> str:
    url = links.claim(claim_id) if links else None
    return f"[{claim_id}]({url})" if url else f"`{claim_id}`"


# ----------------------------------------------------------------------------------------- findings


def _all_claims(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(c.get("id")): c for entry in metrics.get("notebooks", {}).values() for c in entry.get("claims", [])}


def row_claims(row: Mapping[str, Any], claims: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, int]]:
    """The claims a table row rests on, as (id, +1 supports the row's text / −1 contradicts it).

    From the row's `Claims` entry when present (ids, or dicts with `id` and `sign`), else every known claim id
    named in its Verdict or Evidence text; one followed by "(against the row)" contradicts it.
    """
    given = row.get("Claims") or row.get("claims")
    if isinstance(given, Sequence) and not isinstance(given, str):
        pairs = []
        for item in given:
            if isinstance(item, Mapping):
                pairs.append((str(item.get("id")), -1 if (item.get("sign") or 1) < 0 else 1))
            else:
                pairs.append((str(item), 1))
        return [(cid, sign) for cid, sign in pairs if cid in claims]
    text = f"{row.get('Verdict', '')} ; {row.get('Evidence', '')}"
    spans: dict[str, tuple[int, int, int]] = {}  # id -> (start, end, sign)
    for claim_id in sorted(claims, key=len, reverse=True):  # longest first: ids may prefix one another
        for match in re.finditer(rf"(?<![\w.-]){re.escape(claim_id)}(?![\w-])", text):
            if any(start <= match.start() < end for start, end, _ in spans.values()):
                continue
            tail = text[match.end():].split(";", 1)[0]
            spans[claim_id] = (match.start(), match.end(), -1 if "against the row" in tail else 1)
            break
    return [(cid, span[2]) for cid, span in sorted(spans.items(), key=lambda item: item[1][0])]


def row_verdict(pairs: Sequence[tuple[str, int]], claims: Mapping[str, Mapping[str, Any]]) -> str:
    """`holds` (every claim supports the row), `does not hold` (every one contradicts it), `inconclusive`
    (none settles it) or `mixed` (some support, some contradict or do not settle it)."""
    support = []
    for claim_id, sign in pairs:
        word = claim_verdict(claims[claim_id])
        support.append(0 if word == "inconclusive" else sign if word == "holds" else -sign)
    if all(s > 0 for s in support):
        return "holds"
    if all(s < 0 for s in support):
        return "does not hold"
    if all(s == 0 for s in support):
        return "inconclusive"
    return "mixed"


def _claim_clause(claim_id: str, sign: int, claims: Mapping[str, Mapping[str, Any]],
                  links: NotebookLinks | None) -> str:
    claim = claims[claim_id]
    against = " (a claim against the row)" if sign < 0 else ""
    statement = str(claim.get("statement") or "").rstrip(".")
    return (f"“{statement}”{against} {claim_verdict(claim)} ({_claim_ref(claim_id, links)}: "
            f"{evidence_phrase(claim, limit=FINDING_VALUES)})")


def row_caveat(row: Mapping[str, Any]) -> str:
    """The caveat a notebook attached to a table row's verdict (its optional `Caveat` field, e.g. notebook 05's
    `limits.blur_caveat_note`), without a closing full stop; "" when it has none (older ledgers lack the field)."""
    value = row.get("Caveat")
    if not isinstance(value, str):  # absent, or NaN where a merged table's other rows have the column
        return ""
    return value.strip().rstrip(".")


def row_sentence(row: Mapping[str, Any], claims: Mapping[str, Mapping[str, Any]],
                 links: NotebookLinks | None = None) -> str:
    """One plain sentence for one row of the AE-vs-VAE table: its verdict (with the row's caveat, `row_caveat`,
    when the notebook attached one), the claims behind it (each with its effect, interval and verdict) and the
    evidence the row quotes."""
    aspect = str(row.get("Aspect") or row.get("aspect") or "?")
    pairs = row_claims(row, claims)
    evidence = f"; this run measured {str(row['Evidence']).rstrip('.')}" if row.get("Evidence") else ""
    caveat = row_caveat(row)
    if pairs:
        word = row_verdict(pairs, claims)
        shown = f"**{word}** (caveat: {caveat})" if caveat else f"**{word}**"
        clauses = " and ".join(_claim_clause(cid, sign, claims, links) for cid, sign in pairs)
        return f"**{aspect}** — {shown}: {clauses}{evidence}."
    settled = str(row.get("Verdict") or "settled by no claim").rstrip(".")
    if settled.startswith("by construction"):
        settled = "true " + settled
    if caveat and "caveat:" not in settled:
        settled += f" (caveat: {caveat})"
    return f"**{aspect}** — {settled}{evidence}."


def claim_finding(claim: Mapping[str, Any], links: NotebookLinks | None = None) -> str:
    """One sentence for one claim (used when the run has no AE-vs-VAE table)."""
    statement = str(claim.get("statement") or "").rstrip(".")
    return (f"“{statement}” **{claim_verdict(claim)}** ({_claim_ref(str(claim.get('id')), links)}: "
            f"{evidence_phrase(claim, limit=FINDING_VALUES)}).")


def findings(metrics: Mapping[str, Any], links: NotebookLinks | None = None) -> list[str]:
    """The "What this run found" sentences: one per AE-vs-VAE table row, else one per examined claim."""
    claims = _all_claims(metrics)
    table = comparison_frame(metrics)
    if table is not None:
        return [row_sentence(row, claims, links) for row in table.to_dict("records")]
    examined = [c for c in claims.values() if c.get("kind") == "examined"]
    return [claim_finding(c, links) for c in examined or claims.values()]


def comparison_with_sentences(table: pd.DataFrame, claims: Mapping[str, Mapping[str, Any]],
                              links: NotebookLinks | None = None) -> pd.DataFrame:
    """The AE-vs-VAE table with each Verdict cell rewritten as a sentence over the row's claims, the row's caveat
    (`row_caveat`) beside its verdict word."""
    table = table.copy()
    if "Verdict" not in table.columns:
        return table
    cells = []
    for row in table.to_dict("records"):
        pairs = row_claims(row, claims)
        if not pairs:
            cells.append(str(row.get("Verdict") or ""))
            continue
        clauses = "; ".join(f"“{str(claims[cid].get('statement') or '').rstrip('.')}” {claim_verdict(claims[cid])} "
                            f"({_claim_ref(cid, links)}{', against the row' if sign < 0 else ''})"
                            for cid, sign in pairs)
        word = row_verdict(pairs, claims)
        caveat = row_caveat(row)
        word += f" (caveat: {caveat})" if caveat else ""
        cells.append(f"{word[0].upper()}{word[1:]}: {clauses}.")
    table["Verdict"] = cells
    # the caveat is in the Verdict cell now; a Caveat column would be empty for most rows
    return table.drop(columns=[c for c in ("Claims", "claims", "Caveat") if c in table.columns])


# ----------------------------------------------------------------------------------------- for this data


def skipped_claims(metrics: Mapping[str, Any]) -> dict[str, str]:
    """Claim id -> why a notebook of the run did not record it (its metric `skipped_claims`)."""
    found: dict[str, str] = {}
    for entry in metrics.get("notebooks", {}).values():
        for item in entry.get("metrics", {}).get(SKIPPED_METRIC) or []:
            if isinstance(item, Mapping) and item.get("id"):
                found[str(item["id"])] = str(item.get("reason") or "skipped")
    return found


def goal_answer(rows: Sequence[tuple[str, ...]]) -> str:
    """The answer for one goal from its claims' (verdict, favoured model[, model its effect leans to]) rows.

    The model every holding claim favours — with "on k of n claims (…)" when the goal's other claims do not hold
    or are inconclusive, so one holding claim never reads as the whole answer; "mixed (…)" when holding claims
    favour different models, or when a claim that does not hold or is inconclusive has its effect pointing to
    another model (a VAE claim whose effect favours the AE never lets the answer read "VAE"); "no clear
    difference" when none holds and at least one does not hold; "undecided" when all are inconclusive; "not
    measured" without any recorded claim. The third element (None when the claim has no effect) is the model
    the claim's point estimate favours.
    """
    if not rows:
        return "not measured"
    favoured = list(dict.fromkeys(row[1] for row in rows if row[0] == "holds"))
    if len(favoured) == 1:
        holding = sum(row[0] == "holds" for row in rows)
        leaning = Counter(row[2] for row in rows
                          if row[0] != "holds" and len(row) > 2 and row[2] and row[2] != favoured[0])
        if leaning:
            against = " and ".join(f"{n} claim{'s' if n > 1 else ''} not holding whose effect favours {model}"
                                   for model, n in leaning.items())
            return f"mixed ({favoured[0]} on {holding} holding claim{'s' if holding > 1 else ''}; {against})"
        if holding == len(rows):
            return favoured[0]
        rest = Counter(row[0] for row in rows if row[0] != "holds")
        others = ", ".join(f"{n} {word}" for word, n in sorted(rest.items()))
        return f"{favoured[0]}, on {holding} of {len(rows)} claims ({others})"
    if favoured:
        return f"mixed ({' and '.join(favoured)})"
    if any(row[0] == "does not hold" for row in rows):
        return "no clear difference"
    return "undecided"


def effect_leaning(claim: Mapping[str, Any], favoured: str, opposite: str) -> str | None:
    """The model a claim's point estimate favours: `favoured` for an effect > 0 (the claim's direction,
    `aestudy.stats.compare`), `opposite` for one < 0, None without a finite non-zero effect."""
    effect = claim_stats(claim).get("effect")
    if not isinstance(effect, int | float) or effect != effect or effect == 0:
        return None
    return favoured if effect > 0 else opposite


def for_this_data(metrics: Mapping[str, Any], links: NotebookLinks | None = None) -> pd.DataFrame:
    """The "For this data" table: one row per goal of `GOAL_CLAIMS` with its answer and, per claim, its verdict
    with effect and interval (or why it was skipped, or that its notebook did not run).

    Columns: Goal, Answer, Evidence. Generated from the ledger only; nothing is written by hand.
    """
    claims, skipped = _all_claims(metrics), skipped_claims(metrics)
    rows = []
    for goal, members in GOAL_CLAIMS:
        decided, parts = [], []
        for claim_id, model, opposite in members:
            if claim_id in claims:
                word = claim_verdict(claims[claim_id])
                decided.append((word, model, effect_leaning(claims[claim_id], model, opposite)))
                parts.append(f"{_claim_ref(claim_id, links)} (favours {model} when it holds): **{word}**, "
                             f"{evidence_phrase(claims[claim_id], limit=2)}")
            elif claim_id in skipped:
                parts.append(f"{_claim_ref(claim_id, links)}: skipped ({skipped[claim_id]})")
            else:
                parts.append(f"{_claim_ref(claim_id, links)}: not run")
        answer = goal_answer(decided)
        if not decided and any(cid in skipped for cid, *_ in members):
            answer = "skipped: " + "; ".join(dict.fromkeys(skipped[cid] for cid, *_ in members if cid in skipped))
        rows.append({"Goal": goal, "Answer": answer, "Evidence": "; ".join(parts)})
    return pd.DataFrame(rows, columns=["Goal", "Answer", "Evidence"])


def for_this_data_blocks(metrics: Mapping[str, Any], links: NotebookLinks | None = None) -> list[Block]:
    """The "For this data" heading, what data it is, the goal table and the run's skipped claims and FID space."""
    configs = [entry.get("metrics", {}).get("config") or {} for entry in metrics.get("notebooks", {}).values()]
    data = next((c.get("data") or c.get("dataset") for c in configs if c.get("data") or c.get("dataset")), None)
    smoke = (" A smoke run checks that everything runs: with the smoke profile's 2 seeds per arm (a decisive verdict "
             "needs 3, `aestudy.stats.MIN_DECISIVE_REPLICATES`) its answers are inconclusive.")
    blocks = [Block("h2", "For this data", anchor=FOR_THIS_DATA_ID),
              Block("p", f"AE or VAE for `{data or '?'}`, goal by goal, from this run's examined claims (the model a "
                         "holding claim favours; its effect and 95% interval)."
                         + (smoke if metrics.get("profile") == "smoke" else "")),
              Block("table", for_this_data(metrics, links))]
    skipped = skipped_claims(metrics)
    if skipped:
        blocks.append(Block("p", "Claims not recorded in this run: " + "; ".join(
            f"`{cid}` ({reason})" for cid, reason in skipped.items()) + "."))
    features = [entry.get("metrics", {}).get(FEATURES_METRIC) for entry in metrics.get("notebooks", {}).values()]
    names = {str(f.get("name")): str(f.get("description") or "") for f in features if isinstance(f, Mapping)}
    for name, description in names.items():
        blocks.append(Block("p", f"Sample scores use **{name}**" + (f": {description}" if description else "") + "."))
    return blocks


# ----------------------------------------------------------------------------------------- tables


def claims_frame(entry: Mapping[str, Any], links: NotebookLinks | None = None) -> pd.DataFrame:
    """One notebook's claims as rows of id (linked to its cell), statement, kind, verdict sentence."""
    rows = [{"id": _claim_ref(str(c.get("id")), links) if links else c.get("id"), "statement": c.get("statement"),
             "kind": c.get("kind"), "verdict": claim_sentence(c)}
            for c in entry.get("claims", [])]
    return pd.DataFrame(rows, columns=["id", "statement", "kind", "verdict"])


def scalar_metrics_frame(entry: Mapping[str, Any]) -> pd.DataFrame:
    """One notebook's metrics that are single numbers, strings or booleans."""
    rows = [{"metric": name, "value": value} for name, value in entry.get("metrics", {}).items()
            if isinstance(value, (int, float, str, bool)) and name not in (COMPARISON_METRIC, FIGURES_METRIC)]
    return pd.DataFrame(rows, columns=["metric", "value"])


def table_metrics(entry: Mapping[str, Any], *, skip: Iterable[str] = ()) -> list[tuple[str, pd.DataFrame]]:
    """A notebook's structured metrics as tables: lists of row dicts as they are, dicts as key/value rows."""
    skipped = {COMPARISON_METRIC, FIGURES_METRIC, *EXTRA_ROW_METRICS, *skip}
    tables = []
    for name, value in entry.get("metrics", {}).items():
        if name in skipped:
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
    """The AE-vs-VAE table (the last notebook that recorded `comparison_table`) with the rows other notebooks add
    (`EXTRA_ROW_METRICS`, e.g. notebook 05's GAN, scaling and semi-supervised rows), or None."""
    entries = [entry.get("metrics", {}) for entry in metrics.get("notebooks", {}).values()]
    tables = [m[COMPARISON_METRIC] for m in entries if isinstance(m.get(COMPARISON_METRIC), list)]
    extra = [row for m in entries for name in EXTRA_ROW_METRICS if isinstance(m.get(name), list) for row in m[name]]
    rows = [row for row in (tables[-1] if tables else []) + extra if isinstance(row, Mapping)]
    if not rows:
        return None
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return pd.DataFrame(rows, columns=columns)


def claim_counts(claims: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """How many claims hold, do not hold and are inconclusive."""
    counts = dict.fromkeys(VERDICTS, 0)
    for claim in claims:
        counts[claim_verdict(claim)] += 1
    return counts


def _kinds_sentence(claims: Iterable[Mapping[str, Any]], not_holding: list[Mapping[str, Any]]) -> str:
    """What the counts mix: examined textbook statements (reported whichever way they fall) and asserted
    invariants (identities and implementation checks that stop the run when they fail, "enforced")."""
    claims = list(claims)
    asserted = sum(c.get("kind") == "asserted" for c in claims)
    failed = sum(bool(c.get("enforced")) for c in not_holding)
    examined = sum(c.get("kind") == "examined" for c in claims)
    parts = []
    if examined:
        parts.append(f"{examined} examined statement{'s' * (examined != 1)} (reported whichever way they fall)")
    if asserted:
        parts.append(f"{asserted} asserted invariant{'s' * (asserted != 1)} ({'none' if failed == 0 else failed} "
                     "failed)")
    other = len(claims) - examined - asserted
    if other:
        parts.append(f"{other} of no stated kind")
    return ("Of these: " + "; ".join(parts) + ".") if parts else ""


def timings_frame(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Per notebook: status, wall time in seconds, number of claims and how many hold."""
    rows = []
    for name, entry in metrics.get("notebooks", {}).items():
        claims = entry.get("claims", [])
        wall = entry.get("wall_s")
        counts = claim_counts(claims)
        rows.append({"notebook": name, "status": entry.get("status", "?"),
                     # fixed one decimal: the generic 4-significant-digit cell format would print 3.0 s as
                     # "3" and a long full-profile run (12345.6 s) as "1.235e+04"
                     "wall time (s)": None if wall is None else f"{float(wall):.1f}",
                     "claims": len(claims), "hold": counts["holds"], "inconclusive": counts["inconclusive"]})
    return pd.DataFrame(rows, columns=["notebook", "status", "wall time (s)", "claims", "hold", "inconclusive"])


def environment_frame(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """The environment flattened to `key: value` rows (package versions, device, kernel, git, seeds...)."""
    rows: list[dict[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        else:
            rows.append({"key": prefix, "value": value if isinstance(value, (int, float, str, bool))
                         or value is None else json.dumps(value)})

    env = {key: value for key, value in (metrics.get("environment") or {}).items() if key != "parameters"}
    walk("", env)
    return pd.DataFrame(rows, columns=["key", "value"])


def parameters_frame(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """Every notebook's effective parameters: one row per parameter, one column per notebook."""
    per_notebook = (metrics.get("environment") or {}).get("parameters") or {
        name: entry.get("parameters") or {} for name, entry in metrics.get("notebooks", {}).items()}
    names = list(dict.fromkeys(p for params in per_notebook.values() for p in params))
    rows = [{"parameter": p, **{nb: json.dumps(params[p]) if p in params else "" for nb, params in
                               per_notebook.items()}} for p in names]
    return pd.DataFrame(rows, columns=["parameter", *per_notebook])


@dataclass(frozen=True)
class FigureItem:
    """One recorded figure: its notebook, name (file stem), PNG path and caption."""

    notebook: str
    name: str
    path: Path
    caption: str


def figure_items(metrics: Mapping[str, Any], run_dir: Path) -> list[FigureItem]:
    """Every existing figure the notebooks recorded, in notebook order and recording order.

    Figures from `record_figure` are relative to the notebook's ledger folder (`run_dir/metrics` in a run);
    paths in metric `figures` are absolute or relative to the run folder or the notebooks folder.
    """
    bases = [run_dir / "metrics", run_dir, Path((metrics.get("environment") or {}).get("notebooks_dir") or run_dir)]
    found: list[FigureItem] = []
    for notebook, entry in metrics.get("notebooks", {}).items():
        listed = [(str(f.get("path")), str(f.get("name")), str(f.get("caption") or f.get("name")))
                  for f in entry.get(FIGURES_KEY) or [] if isinstance(f, Mapping)]
        legacy = entry.get("metrics", {}).get(FIGURES_METRIC) or []
        listed += [(str(f), Path(str(f)).stem, Path(str(f)).stem)
                   for f in (legacy if isinstance(legacy, list) else [legacy])]
        for path_text, name, caption in listed:
            path = Path(path_text)
            candidates = [path] if path.is_absolute() else [base / path for base in bases]
            existing = next((c for c in candidates if c.is_file()), None)
            if existing is not None and all(existing != seen.path for seen in found):
                found.append(FigureItem(notebook, name, existing, caption))
    return found


def split_key_figures(figures: Sequence[FigureItem]) -> tuple[list[FigureItem], list[FigureItem]]:
    """(the key figures in KEY_FIGURES order, the others). Without any key figure, all of them are key."""
    key = sorted((f for f in figures if f.name in KEY_FIGURES), key=lambda f: KEY_FIGURES.index(f.name))
    if not key:
        return list(figures), []
    return key, [f for f in figures if f.name not in KEY_FIGURES]


# ----------------------------------------------------------------------------------------- the report


def _duration(seconds: float) -> str:
    """`16 min 49 s`, `1 h 02 min 05 s` or `42 s`."""
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min {secs:02d} s"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


def device_phrase(metrics: Mapping[str, Any]) -> str:
    """The device's name in the report header, with every change of a kernel's torch threads during the run.

    The runner names the device at the start ("AMD EPYC (1 torch thread per notebook, 2 at a time)"); once no
    further notebook starts, the kernels still running share the cores a finished one freed, and each change is
    in `metrics["thread_changes"]` (`aestudy.runner.run`). Those are appended, e.g. "…, 2 at a time;
    05_limits_and_scale got 2 threads from 16 min 49 s, when 04_applications had ended", so the header does not
    contradict a notebook's own watermark.
    """
    name = str(((metrics.get("environment") or {}).get("device") or {}).get("name") or "?")
    name = re.sub(r"\b1 torch threads\b", "1 torch thread", name)  # runs named before the grammar fix
    changes = [c for c in metrics.get("thread_changes") or [] if isinstance(c, Mapping)]
    if not changes:
        return name

    def stem(notebook: Any) -> str:
        return ", ".join(Path(part.strip()).stem for part in str(notebook).split(","))

    tail = "; ".join(
        f"{stem(c.get('notebook'))} got {c.get('threads')} torch thread{'' if c.get('threads') == 1 else 's'} "
        f"from {_duration(float(c.get('elapsed_s') or 0))}, when {stem(c.get('after'))} had ended"
        for c in changes)
    return f"{name[:-1]}; {tail})" if name.endswith(")") else f"{name} ({tail})"


def report_blocks(metrics: Mapping[str, Any], run_dir: Path, links: NotebookLinks | None = None) -> list[Block]:
    """The report's content, in order (see the module docstring)."""
    notebooks = metrics.get("notebooks", {})
    claims = _all_claims(metrics)
    counts = claim_counts(claims.values())
    not_holding = [c for c in claims.values() if claim_verdict(c) == "does not hold"]
    env = metrics.get("environment") or {}
    device = env.get("device") or {}
    git = env.get("git") or {}
    status = metrics.get("status", "?")
    inconclusive = f", {counts['inconclusive']} inconclusive" if counts["inconclusive"] else ""
    blocks = [
        Block("h1", f"aestudy run {metrics.get('run', run_dir.name)}"),
        Block("p", f"Status: **{status}**{'' if status == 'complete' else ' (incomplete run)'} · profile "
                   f"`{metrics.get('profile')}` · device `{device.get('resolved')}` ({device_phrase(metrics)}) · "
                   f"started {metrics.get('started')} · finished {metrics.get('finished') or '—'} · git "
                   f"`{(git.get('commit') or '?')[:12]}`{' (dirty)' if git.get('dirty') else ''}"),
        Block("p", f"{len(claims)} claims recorded: {counts['holds']} hold, {counts['does not hold']} do not"
                   f"{inconclusive}. " + _kinds_sentence(claims.values(), not_holding)),
        Block("h2", "What this run found", anchor=FINDINGS_ID),
        Block("list", findings(metrics, links) or ["No claims were recorded."], anchor=FINDINGS_ID),
        Block("p", "Each finding names the claims its row rests on: with a verdict record, its effect, 95% "
                   "interval, p-value, seeds and test; decided yes/no without an interval, its first measured "
                   "values. Each claim id links to the cell that checks it in the executed notebook."),
    ]
    blocks += for_this_data_blocks(metrics, links)
    key, more = split_key_figures(figure_items(metrics, run_dir))
    if key:
        blocks += [Block("h2", "Key figures", anchor="figures"),
                   Block("figures", [(f.path, f"{f.notebook}: {f.caption}") for f in key])]
    if more:
        blocks.append(Block("details", [Block("figures", [(f.path, f"{f.notebook}: {f.caption}") for f in more])],
                            caption=f"{len(more)} more figure{'s' if len(more) > 1 else ''}"))
    comparison = comparison_frame(metrics)
    if comparison is not None:
        blocks += [Block("h2", "AE vs VAE: what we measured", anchor="table"),
                   Block("table", comparison_with_sentences(comparison, claims, links))]
    blocks.append(Block("h2", "Claims", anchor="claims"))
    for name, entry in notebooks.items():
        wall = entry.get("wall_s")
        timing = "" if wall is None else f", {float(wall):.1f} s runner wall time"
        blocks.append(Block("h3", f"{name} ({entry.get('status', '?')}{timing})"))
        page = links.notebook(name) if links else None
        if page:
            blocks.append(Block("p", f"The executed notebook: [{page}]({page})"))
        if entry.get("error"):
            error = entry["error"]
            blocks.append(Block("p", f"Failed in cell [{error.get('cell')}]: `{error.get('ename')}: "
                                     f"{error.get('evalue')}`"))
        frame = claims_frame(entry, links)
        blocks.append(Block("table", frame) if len(frame) else Block("p", "No claims recorded."))
        measurements: list[Block] = []
        scalars = scalar_metrics_frame(entry)
        if len(scalars):
            measurements.append(Block("table", scalars, caption="metrics"))
        measurements += [Block("table", table, caption=metric)
                         for metric, table in table_metrics(entry, skip=CONFIG_METRICS)]
        if measurements:
            blocks.append(Block("details", measurements, caption=f"Every measurement {name} recorded"))
    blocks += [Block("h2", "Timings")]
    if metrics.get("series_wall_s") is not None:
        jobs = metrics.get("jobs") or 1
        blocks.append(Block("p", f"The series took {float(metrics['series_wall_s']):.0f} s of wall time, "
                                 + ("one notebook at a time." if jobs == 1 else
                                    f"{jobs} notebooks at a time (each notebook's wall time below overlaps "
                                    "others', so they add up to more).")))
    blocks.append(Block("table", timings_frame(metrics), caption=RUNNER_TIME_NOTE))
    closing: list[Block] = [Block("table", parameters_frame(metrics), caption="parameters of each notebook")]
    for name, entry in notebooks.items():
        for metric in CONFIG_METRICS:
            value = entry.get("metrics", {}).get(metric)
            if value is not None:
                closing += [Block("table", table, caption=f"{name}: {metric}")
                            for _, table in table_metrics({"metrics": {metric: value}})]
    closing.append(Block("table", environment_frame(metrics), caption="environment"))
    blocks.append(Block("details", closing, caption="Configuration and environment", anchor="environment"))
    return blocks


# ----------------------------------------------------------------------------------------- markdown


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
    """The blocks as markdown (figures linked relative to the run folder; `<details>` for folded sections)."""
    parts = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            parts.append("#" * int(block.kind[1]) + " " + block.content)
        elif block.kind == "p":
            parts.append(block.content)
        elif block.kind == "list":
            parts.append("\n".join(f"- {item}" for item in block.content))
        elif block.kind == "table":
            parts.append((f"*{block.caption}*\n\n" if block.caption else "") + markdown_table(block.content))
        elif block.kind == "figure":
            parts.append(f"![{block.caption}]({Path(os.path.relpath(block.content, run_dir)).as_posix()})")
        elif block.kind == "figures":
            parts.append("\n\n".join(f"![{caption}]({Path(os.path.relpath(path, run_dir)).as_posix()})"
                                     for path, caption in block.content))
        elif block.kind == "details":
            # GitHub renders markdown inside <details> when blank lines separate it from the tags.
            inner = render_markdown(block.content, run_dir).strip()
            parts.append(f"<details>\n<summary>{html.escape(block.caption)}</summary>\n\n{inner}\n\n</details>")
    return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------------------- HTML

_INLINE = re.compile(r"\*\*|`|\[([^\]\n]+)\]\(([^)\s]+)\)")


def _inline_markdown(text: str) -> str:
    """HTML for text using `**bold**`, `` `code` `` and `[text](url)` (all the report's prose needs)."""
    out, bold, code, position = [], False, False, 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[position:match.start()]))
        position = match.end()
        token = match.group(0)
        if token == "`":
            out.append("</code>" if code else "<code>")
            code = not code
        elif code:
            out.append(html.escape(token))
        elif token == "**":
            out.append("</strong>" if bold else "<strong>")
            bold = not bold
        else:
            out.append(f'<a href="{html.escape(match.group(2))}">{_inline_markdown(match.group(1))}</a>')
    out.append(html.escape(text[position:]))
    if code:
        out.append("</code>")
    if bold:
        out.append("</strong>")
    return "".join(out)


def _colour_verdicts(markup: str) -> str:
    """Give bold verdict words (`<strong>holds</strong>`, …) their colour class."""
    for word in (*VERDICTS, "mixed"):
        markup = markup.replace(f"<strong>{word}</strong>", f'<strong class="{_verdict_class(word)}">{word}</strong>')
    return markup


def _html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    verdict_columns = {i for i, c in enumerate(frame.columns) if "verdict" in str(c).lower()}
    for row in frame.itertuples(index=False):
        cells = []
        for i, value in enumerate(row):
            text = _show(value)
            css = _verdict_class(text) if i in verdict_columns else ""
            cells.append(f'<td class="{css}">' if css else "<td>")
            cells[-1] += _inline_markdown(text) + "</td>"
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def _html_figure(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _html_blocks(blocks: Iterable[Block]) -> list[str]:
    body = []
    for block in blocks:
        anchor = f' id="{html.escape(block.anchor)}-heading"' if block.anchor else ""
        if block.kind in ("h1", "h2", "h3"):
            body.append(f"<{block.kind}{anchor}>{html.escape(block.content)}</{block.kind}>")
        elif block.kind == "p":
            body.append(f"<p>{_inline_markdown(block.content)}</p>")
        elif block.kind == "list":
            items = "\n".join(f"<li>{_colour_verdicts(_inline_markdown(item))}</li>" for item in block.content)
            body.append(f'<ul id="{html.escape(block.anchor)}">\n{items}\n</ul>' if block.anchor
                        else f"<ul>\n{items}\n</ul>")
        elif block.kind == "table":
            caption = f"<p><em>{html.escape(block.caption)}</em></p>" if block.caption else ""
            body.append(caption + _html_table(block.content))
        elif block.kind == "figure":
            body.append(_html_figure(block.content, block.caption))
        elif block.kind == "figures":
            body.append('<div class="figures">' + "".join(_html_figure(p, c) for p, c in block.content) + "</div>")
        elif block.kind == "details":
            opening = f'<details id="{html.escape(block.anchor)}">' if block.anchor else "<details>"
            body.append(f"{opening}<summary>{html.escape(block.caption)}</summary>\n"
                        + "\n".join(_html_blocks(block.content)) + "\n</details>")
    return body


def render_html(blocks: Sequence[Block]) -> str:
    """The blocks as one self-contained HTML page (figures embedded as base64 PNG data URIs, no scripts)."""
    title = next((b.content for b in blocks if b.kind == "h1"), "aestudy report")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>\n'
            "<body>\n" + "\n".join(_html_blocks(blocks)) + "\n</body></html>\n")


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def resolve_run_dir(run_dir: str | os.PathLike[str]) -> Path:
    """The run folder (following a `runs/latest` link); ConfigError when it holds no metrics.json."""
    from aestudy.errors import ConfigError

    folder = Path(run_dir)
    if folder.is_symlink():
        folder = folder.parent / os.readlink(folder)
    if not (folder / "metrics.json").is_file():
        raise ConfigError(f"{run_dir}: no metrics.json there; valid values: a run folder written by `aestudy run` "
                          "(e.g. runs/latest).")
    return folder


def write_report(run_dir: str | os.PathLike[str], *, render_notebooks: bool = True) -> tuple[Path, Path]:
    """Render `run_dir/metrics.json` into `report.md` and `report.html` (and each executed notebook into
    `<notebook>.html`, the target of the claim links); return the two report paths."""
    run_dir = resolve_run_dir(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    state_file = run_dir / "state.json"
    if "thread_changes" not in metrics and state_file.is_file():  # a run merged before metrics.json carried them
        metrics["thread_changes"] = json.loads(state_file.read_text(encoding="utf-8")).get("thread_changes") or []
    links = notebook_links(metrics, run_dir, render=render_notebooks)
    blocks = report_blocks(metrics, run_dir, links)
    md, page = run_dir / "report.md", run_dir / "report.html"
    _write_text(md, render_markdown(blocks, run_dir))
    _write_text(page, render_html(blocks))
    return md, page


