"""Results as markdown tables, a JSON file, a seaborn figure and the README's results section (atomic writes)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aestudy.atomic import atomic_write, atomic_write_json

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"

Column = tuple[str, str, Callable[[Any], str]]


def fmt(digits: int = 2, suffix: str = "") -> Callable[[Any], str]:
    """A formatter for numbers (blank for None/NaN) with `digits` decimals."""
    def f(value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return f"{value:,.{digits}f}{suffix}"
        return str(value)
    return f


def text(value: Any) -> str:
    """str(value), blank for None."""
    return "" if value is None else str(value)


def md_table(rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> str:
    """A markdown table: one line per row, one column per (key, header, formatter)."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(f(row.get(k)) for k, _, f in columns) + " |")
    return "\n".join(lines)


def _mean_sd(cell: dict[str, Any] | None, digits: int = 2) -> str:
    if not cell or cell.get("mean") is None:
        return ""
    return f"{cell['mean']:.{digits}f} ± {cell['sd']:.{digits}f}"


def throughput_md(row: dict[str, Any]) -> str:
    """Row 1: s/epoch, samples/s, × floors and time relative to aestudy's."""
    floors = row["floors"]
    loops = [{**r, "own": f"{r['x_own_floor']:.2f} ({r['own_floor']})" if r["own_floor"] != "fp32" else ""}
             for r in row["loops"]]
    lines = [md_table(loops, [
        ("label", "loop", text), ("s_per_epoch", "s/epoch (median)", fmt(2)),
        ("range", "rounds (min–max)", text), ("samples_per_s", "samples/s", fmt(0)),
        ("x_floor", "× fp32 floor", fmt(2)), ("own", "× own floor", text),
        ("aestudy_speedup", "time ÷ aestudy's", fmt(2)), ("first_epoch_s", "1st epoch s", fmt(2)),
        ("load1", "load", fmt(1)),
    ])]
    lines.append("")
    lines.append(md_table(list(floors.values()), [
        ("label", "matmul floor", text), ("s_per_epoch", "s/epoch (median)", fmt(2)),
        ("gflops_per_s", "GFLOP/s", fmt(0)), ("gflop_per_epoch", "GFLOP/epoch", fmt(0)),
    ]))
    backend = row["matmul_backend"]
    lines.append("")
    lines.append(f"Floors are timed after every run (MKL fp32) or after the runs on them (oneDNN fp32), medians. "
                 f"`aestudy.precision` chose: {backend['backend']} ({backend['reason']}). \"load\" is the 1-minute "
                 "load average during the runs (2 cores).")
    target = row["target"]
    lines.append(f"Targets: aestudy's default epoch ≤ {target['ratio']:.1f}× the MKL fp32 floor — measured "
                 f"{target['measured']:.2f}× ({'met' if target['met'] else 'missed'}); ≥ {target['speedup']:.0f}× "
                 "faster than " + ", ".join(f"{k} (measured {v:.2f}×)" for k, v in target["peers"].items())
                 + f" ({'met' if target['speedup_met'] else 'missed'}).")
    if row.get("profile"):
        lines.append("")
        lines.append("Where aestudy's step goes (torch.profiler, one short epoch; profiling adds overhead):")
        lines.append("")
        lines.append(md_table(row["profile"]["parts"], [
            ("part", "part", text), ("ms_per_step", "ms/step", fmt(2)), ("share", "share", fmt(0, " %")),
        ]))
        lines.append("")
        lines.append(f"GEMMs inside the step: {row['profile']['gemm_gflops_per_s']:.0f} GFLOP/s "
                     f"(the fp32 floor: {floors['fp32']['gflops_per_s']:.0f} GFLOP/s).")
    return "\n".join(lines)


def batched_md(row: dict[str, Any]) -> str:
    """The batched-seeds row: fit_many stacked vs one after the other."""
    rows = [{"how": name, **summary} for name, summary in row["summary"].items()]
    return (f"{row['models']} seeds × {row['epochs']} epochs on {row['samples']:,} images, {row['threads']} thread(s), "
            f"median of {row['rounds']} interleaved rounds, fresh caches (validation-free data; checkpoint writes "
            "included):\n\n"
            + md_table(rows, [("how", "fit_many", text), ("wall_s", "wall s (whole call)", fmt(1)),
                              ("last_epoch_s", "last epoch, all models, s", fmt(2)), ("load1", "load", fmt(1))])
            + f"\n\nSpeed-up of batching: {row['speedup_wall']:.2f}× (whole call), {row['speedup_epoch']:.2f}× "
              f"(an epoch). Largest weight difference between the two sides' models: {row['max_weight_diff']:.1e} "
              "(float rounding: the same models).")


def fit_profile_md(row: dict[str, Any]) -> str:
    """The whole-fit profile: where a fresh process's train_or_load goes."""
    if row.get("status") != "run":
        return f"Whole-fit profile: {row.get('status')}."
    return (f"`train_or_load` in a fresh process ({row['samples']:,} training + {row['val_samples']:,} validation "
            f"images, {row['epochs']} epochs, {row['threads']} thread(s), load {row['load1']:.1f}); process start and "
            f"imports {row['process_start_and_imports_s']:.1f} s and data loading {row['data_load_s']:.2f} s before "
            f"it; the call itself {row['train_or_load_s']:.1f} s (cProfile adds overhead):\n\n"
            + md_table(row["parts"], [("part", "part", text), ("seconds", "s", fmt(2)),
                                      ("share", "share", fmt(0, " %"))]))


def quality_md(row: dict[str, Any]) -> str:
    """Row 2: test −ELBO and IS-NLL after the same epochs, mean ± sd over seeds, and aestudy − peer."""
    rows = [{**r, "neg_elbo_ms": _mean_sd(r["neg_elbo"]), "is_nll_ms": _mean_sd(r["is_nll"]),
             "vs": r.get("vs_aestudy", "")} for r in row["loops"]]
    return (f"After {row['epochs']} epochs, {row['seeds']} seeds (nats per image, lower is better; BCE on grey "
            f"levels, so −ELBO and IS-NLL are comparable across loops, not likelihoods); IS-NLL with "
            f"k = {row['is_nll_k']:,} on the first {row['is_nll_images']:,} test images.\n\n"
            + md_table(rows, [("label", "loop", text), ("neg_elbo_ms", "test −ELBO", text),
                              ("is_nll_ms", "IS-NLL", text), ("train_loss", "last train loss", fmt(2)),
                              ("vs", "−ELBO vs aestudy (diff ± s.e.)", text)]))


def evaluation_md(row: dict[str, Any]) -> str:
    """Row 3: IS-NLL seconds and memory, memory vs k, agreement with pythae."""
    lines = [md_table(row["runs"], [
        ("what", "run", text), ("images", "images", fmt(0)), ("k", "k", fmt(0)), ("chunk_size", "chunk", fmt(0)),
        ("seconds", "seconds", fmt(1)), ("seconds_per_10k", "s per 10k images", fmt(0)),
        ("peak_extra_mib", "peak extra MiB", fmt(0)), ("nll", "IS-NLL", fmt(2)), ("load1", "load", fmt(1)),
    ])]
    t = row["target"]
    lines.append("")
    how = "measured" if t["measured_on"] >= t["images"] else f"measured on {t['measured_on']:,} images, scaled"
    lines.append(f"Target: k = {t['k']:,} on {t['images']:,} images ≤ {t['seconds']:.0f} s — {t['measured']:.0f} s "
                 f"({how}; {'met' if t['met'] else 'missed'}). Memory at a fixed chunk: "
                 f"{row['memory_ratio']:.2f}× from k = {row['memory_ks'][0]:,} to {row['memory_ks'][1]:,}.")
    v = row.get("vs_reference")
    if v:
        lines.append(f"Defaults vs the reference estimator on the same images and draws: {v['speedup']:.2f}× as fast; "
                     f"per-image difference {v['mean_diff']:+.1e} ± {v['diff_sem']:.1e} nats (largest "
                     f"{v['max_abs_diff']:.1e}), against a Monte-Carlo s.e. of the mean NLL of {v['nll_sem']:.2f}.")
    a = row.get("pythae")
    if a:
        lines.append(f"pythae `get_nll` vs aestudy `is_nll` (k = {a['k']:,}, {a['images']} images, per image): "
                     f"{a['pythae_nll']:.2f} vs {a['aestudy_nll']:.2f} nats, paired difference "
                     f"{a['mean_diff']:.2f} ± {a['diff_sem']:.2f} (s.e.) — "
                     f"{'agree within 3 s.e.' if a['within_3_sem'] else 'DISAGREE beyond 3 s.e.'}; pythae "
                     f"{a['pythae_seconds']:.1f} s vs aestudy {a['aestudy_seconds']:.1f} s "
                     f"(pythae ≈ {a['pythae_seconds_per_10k']:.0f} s per 10k images).")
    return "\n".join(lines)


def scaling_md(row: dict[str, Any]) -> str:
    """Row 4: epoch time against training-set size, batch size and latent size."""
    fit = row["size_fit"]
    return ("\n\n".join([
        md_table(row["points"], [("axis", "axis", text), ("value", "value", fmt(0)),
                                 ("s_per_epoch", "s/epoch", fmt(2)), ("s_per_60k", "s per 60k", fmt(2)),
                                 ("x_floor", "× fp32 floor", fmt(2))]),
        f"Size: {fit['slope_s_per_10k']:.3f} s per 10k images + {fit['intercept_s']:.3f} s, R² = {fit['r2']:.4f}. "
        f"Batch- and latent-size points train on {row['subset']:,} images, scaled to 60k.",
    ]))


def series_md(row: dict[str, Any]) -> str:
    """Row 5: per-notebook wall time of `aestudy run`, cold and warm."""
    if row.get("status") != "run":
        return f"Series: {row.get('status')}."
    rows = []
    for profile, runs in row.items():
        if not isinstance(runs, dict) or "cold" not in runs:
            continue
        names = sorted(set(runs["cold"].get("notebooks", {})) | set(runs["warm"].get("notebooks", {})))
        for name in names:
            rows.append({"profile": profile, "notebook": name, "cold": runs["cold"]["notebooks"].get(name),
                         "warm": runs["warm"].get("notebooks", {}).get(name)})
        rows.append({"profile": profile, "notebook": "total (incl. runner start)", "cold": runs["cold"].get("total_s"),
                     "warm": runs["warm"].get("total_s")})
        rows.append({"profile": profile, "notebook": "status",
                     "cold": runs["cold"]["status"], "warm": runs["warm"]["status"]})
    return md_table(rows, [("profile", "profile", text), ("notebook", "notebook", text),
                           ("cold", "cold s", fmt(1)), ("warm", "warm s", fmt(1))])


def summary_md(results: dict[str, Any]) -> str:
    """Every row that ran, as markdown, headed by machine, date, command and commit."""
    m = results["meta"]
    head = (f"Machine: {m['cpu']} {m.get('cpu_family', '')} ({m['cores']} cores), torch {m['torch']} "
            f"({m['capability']}, native bf16: "
            f"{m['bf16_native']}), {m['threads']} thread(s) ({m['threads_reason']}); load average "
            f"{m['load_start'][0]:.2f} at start, {m.get('load_end', [math.nan])[0]:.2f} at end (`uptime` at start: "
            f"{m.get('uptime', '')}; at end: {m.get('uptime_end', '')}).  \n"
            f"Date: {m['date']}; commit {m['commit']}; command `{m['command']}`; "
            f"wall time {m.get('wall_s', math.nan):.0f} s.")
    parts = [head]
    titles = {"throughput": ("1. Throughput", throughput_md), "quality": ("2. Quality at equal budget", quality_md),
              "batched": ("2b. Batched seeds (`fit_many`)", batched_md),
              "fit_profile": ("2c. A whole fit, end to end", fit_profile_md),
              "evaluation": ("3. Evaluation cost (IS-NLL)", evaluation_md),
              "scaling": ("4. Scaling", scaling_md), "series": ("5. The series (`aestudy run`)", series_md)}
    for key, (title, render) in titles.items():
        if key in results["rows"]:
            parts.append(f"### {title}\n\n{render(results['rows'][key])}")
    if "gpu" in results["rows"]:
        parts.append(f"### 6. GPU\n\n{results['rows']['gpu']['status']}.")
    return "\n\n".join(parts) + "\n"


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON atomically."""
    atomic_write_json(path, data, indent=2, default=str)


def update_readme(readme: Path, markdown: str) -> None:
    """Replace the README's results section (between the markers) with `markdown`, atomically."""
    content = readme.read_text()
    start, end = content.index(README_START) + len(README_START), content.index(README_END)
    text = content[:start] + "\n" + markdown + content[end:]
    atomic_write(readme, lambda handle: handle.write(text.encode("utf-8")))


def plot(results: dict[str, Any], path: Path) -> None:
    """Throughput per loop and the three scaling curves in one seaborn figure, saved atomically as PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    from aestudy.plots import set_theme

    set_theme()
    rows = results["rows"]
    panels = (["throughput"] if "throughput" in rows else []) + (["size", "batch", "latent"] if "scaling" in rows
                                                                 else [])
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False, layout="constrained")
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "throughput":
            df = pd.DataFrame([{"loop": r["label"], "s/epoch": s} for r in rows["throughput"]["loops"]
                               for s in r["rounds"]])
            sns.barplot(df, y="loop", x="s/epoch", ax=ax, estimator="median", errorbar=("pi", 100), color="C0")
            for kind, colour in (("fp32", "C3"), ("fp32_onednn", "C2")):
                floor = rows["throughput"]["floors"].get(kind)
                if floor:
                    ax.axvline(floor["s_per_epoch"], color=colour, ls="--", label=f"floor: {floor['label']}")
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=8)
            ax.set_title("Steady-state epoch (60k, batch 128)")
        else:
            points = [p for p in rows["scaling"]["points"] if p["axis"] == panel]
            scale = {id(p): 1.0 if panel == "size" else 60_000 / p["samples"] for p in points}
            df = pd.DataFrame([{"value": p["value"], "seconds": p[key] * scale[id(p)], "what": what}
                               for p in points for key, what in (("s_per_epoch", "aestudy fit"),
                                                                 ("floor_s", "fp32 matmul floor"))])
            sns.lineplot(df, x="value", y="seconds", hue="what", style="what", marker="o", ax=ax)
            ax.set_ylim(bottom=0)
            ax.legend(fontsize=8, title=None)
            if panel != "size":
                ax.set_xscale("log", base=2)
            ax.set_xlabel({"size": "training images", "batch": "batch size", "latent": "latent size"}[panel])
            ax.set_ylabel("s/epoch" if panel == "size" else "s per 60k images")
            ax.set_title(f"Epoch time vs {ax.get_xlabel()}")
    try:
        atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    finally:
        plt.close(fig)
