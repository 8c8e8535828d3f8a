"""The study's figures: each function draws on `ax` (a new one when None) and returns it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.axes import Axes
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullLocator

from aestudy.data import UNLABELLED
from aestudy.errors import ConfigError

NATS = "nats / image"
# The printed size of one image tile in every sample grid (issue 19: tiles of 0.4-0.8 inch were too small to judge
# a sample by; at 1.1 inch a 28×28 image shows each pixel as a visible square on a laptop screen).
TILE_INCHES = 1.1
MAX_FIGURE_WIDTH = 18.0  # inches: wider figures are shrunk by JupyterLab, which would undo TILE_INCHES
# One colour per model across the whole series (issue 19): every plot of a model takes its colour from here through
# `model_palette`, so the AE is the same blue in 01's curves, 03's bars and 05's ladder. A variant shares its
# family's hue only when it never appears beside it; ex-post samplers and data get their own.
_COLORBLIND = sns.color_palette("colorblind", 10)
MODEL_COLOURS: dict[str, tuple[float, float, float]] = {
    "AE": _COLORBLIND[0], "VAE": _COLORBLIND[1], "DAE": _COLORBLIND[2], "DVAE": _COLORBLIND[3],
    "β-VAE": _COLORBLIND[4], "GAN": _COLORBLIND[5], "AE + GMM ex post": _COLORBLIND[6],
    "VAE + GMM ex post": _COLORBLIND[8], "M2": _COLORBLIND[9], "CVAE": _COLORBLIND[9],
    "PCA": (0.55, 0.55, 0.55), "raw pixels": (0.3, 0.3, 0.3), "data": (0.0, 0.0, 0.0),
    # Not the palette's grey: the linear AE is drawn beside PCA's grey, and the point is to tell them apart.
    "linear AE": (0.45, 0.15, 0.5), "mlp AE": _COLORBLIND[0], "conv AE": _COLORBLIND[9],
}
MODEL_COLORS = MODEL_COLOURS  # the older spelling, kept for callers
INACTIVE_COLOUR = _COLORBLIND[7]  # the palette's grey: what a figure greys out (inactive latent units)

ImageLike = torch.Tensor | np.ndarray
DecodeFn = Callable[[torch.Tensor], ImageLike]


def set_theme() -> None:
    """Apply the study's seaborn theme (white grid, notebook context, colour-blind palette)."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams["image.cmap"] = "gray"
    # Outside legends (latent scatter) and multi-panel figures need the layout engine to leave them room.
    plt.rcParams["figure.constrained_layout.use"] = True


def model_palette(names: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """Colours for `names`: each model's fixed colour from `MODEL_COLOURS`; names it does not list take, in order,
    the palette colours no listed name uses in this call (so they never collide with a model drawn beside them)."""
    unique = list(dict.fromkeys(names))
    taken = {MODEL_COLOURS[n] for n in unique if n in MODEL_COLOURS}
    spare = [c for c in _COLORBLIND if c not in taken] or list(_COLORBLIND)
    others = [n for n in unique if n not in MODEL_COLOURS]
    return {n: MODEL_COLOURS.get(n) or spare[others.index(n) % len(spare)] for n in unique}


def _axes(ax: Axes | None, figsize: tuple[float, float] = (6.0, 4.0)) -> Axes:
    """The given Axes, or the Axes of a new figure."""
    return plt.subplots(figsize=figsize)[1] if ax is None else ax


def to_numpy(x: Any) -> np.ndarray:
    """A tensor (any device, with or without grad) or array-like as a float numpy array."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


def _as_images(images: ImageLike) -> np.ndarray:
    """Grey images (N,1,H,W) or (N,H,W) as a float array (N,H,W); colour images (N,3,H,W) as (N,H,W,3)."""
    arr = to_numpy(images)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim == 4 and arr.shape[1] == 3:
        arr = arr.transpose(0, 2, 3, 1)  # matplotlib draws colour as (H, W, 3)
    if arr.ndim not in (3, 4) or (arr.ndim == 4 and arr.shape[-1] != 3):
        raise ConfigError(f"images must have shape (N, 1, H, W), (N, 3, H, W) or (N, H, W); got "
                          f"{tuple(to_numpy(images).shape)}.")
    return arr


def mosaic(images: ImageLike, *, nrow: int, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images (N,C,H,W) into one (rows·(H+p)+p, nrow·(W+p)+p) array (with a trailing 3 for colour),
    `nrow` images per row."""
    imgs = _as_images(images)
    if nrow < 1:
        raise ConfigError(f"nrow={nrow} must be ≥ 1.")
    n, h, w = imgs.shape[:3]
    ncol, rows = min(nrow, max(n, 1)), max(math.ceil(n / nrow), 1)
    out = np.full((rows * (h + padding) + padding, ncol * (w + padding) + padding, *imgs.shape[3:]), pad_value,
                  dtype=float)
    for k, img in enumerate(imgs):
        r, c = divmod(k, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        out[top : top + h, left : left + w] = img
    return out


def _show(ax: Axes, tiles: np.ndarray, **kwargs: Any) -> None:
    """Draw a mosaic with values in [0, 1]: grey levels in grey, (H, W, 3) arrays in colour."""
    colour = {} if tiles.ndim == 3 else {"cmap": "gray", "vmin": 0.0, "vmax": 1.0}
    ax.imshow(np.clip(tiles, 0.0, 1.0), interpolation="nearest", **colour, **kwargs)
    ax.grid(False)


def image_grid(
    images: ImageLike, *, nrow: int = 8, ax: Axes | None = None, title: str | None = None, padding: int = 2
) -> Axes:
    """Images (N,1,H,W) in [0, 1] as one mosaic with `nrow` images per row."""
    tiles = mosaic(images, nrow=nrow, padding=padding)
    n = len(_as_images(images))
    cols, rows = min(nrow, max(n, 1)), max(math.ceil(n / nrow), 1)
    if ax is None:  # room for the title and margins on top of the tiles themselves
        ax = plt.subplots(figsize=(min(TILE_INCHES * cols + 0.5, MAX_FIGURE_WIDTH), TILE_INCHES * rows + 0.8),
                          layout="constrained")[1]
    _show(ax, tiles)
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def sample_panels(grids: Mapping[str, ImageLike], *, nrow: int = 4, per_row: int | None = None,
                  tile: float = TILE_INCHES) -> plt.Figure:
    """One titled panel of images per entry of `grids` (name -> images (N,C,H,W) in [0, 1]), `nrow` images per panel
    row, `per_row` panels per figure row (default: as many as fit in `MAX_FIGURE_WIDTH`), each tile `tile` inches
    wide, so that samples stay large enough to judge however many sources sit side by side.

    Returns the Figure. Raises ConfigError for no grids, `nrow` or `per_row` < 1, or `tile` ≤ 0.
    """
    if not grids:
        raise ConfigError("grids must hold at least one name -> images entry.")
    if nrow < 1 or (per_row is not None and per_row < 1) or not tile > 0:
        raise ConfigError(f"nrow={nrow} and per_row={per_row} must be ≥ 1 and tile={tile} > 0.")
    arrays = {name: _as_images(images) for name, images in grids.items()}
    cols = min(nrow, max(len(a) for a in arrays.values()))
    rows = max(math.ceil(len(a) / nrow) for a in arrays.values())
    panel_w, panel_h = tile * cols + 0.5, tile * rows + 0.8  # + room for the title and the gaps
    per_row = min(per_row or max(int(MAX_FIGURE_WIDTH // panel_w), 1), len(arrays))
    lines = math.ceil(len(arrays) / per_row)
    fig, axes = plt.subplots(lines, per_row, figsize=(panel_w * per_row, panel_h * lines), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(arrays):]:
        ax.set_axis_off()
    for ax, (name, images) in zip(axes.flat, arrays.items(), strict=False):
        image_grid(images, nrow=nrow, ax=ax, title=name)
    return fig


def image_rows(
    rows: Mapping[str, ImageLike], *, ax: Axes | None = None, xlabel: str = "", title: str | None = None
) -> Axes:
    """Labelled rows of images: one row per name (rows may differ in length; short rows are padded)."""
    if not rows:
        raise ConfigError("rows must hold at least one name -> images entry.")
    arrays = {name: _as_images(imgs) for name, imgs in rows.items()}
    shapes = {a.shape[1:] for a in arrays.values()}
    if len(shapes) != 1:
        raise ConfigError(f"all rows must hold images of one size; got sizes {sorted(shapes)}.")
    shape, cols = shapes.pop(), max(len(a) for a in arrays.values())
    h = shape[0]
    blank = np.ones(shape)
    stacked = [img for a in arrays.values() for img in [*a, *[blank] * (cols - len(a))]]
    pad = 2
    ax = _axes(ax, (min(max(TILE_INCHES * cols, 3.0) + 1.5, MAX_FIGURE_WIDTH), TILE_INCHES * len(arrays) + 0.6))
    _show(ax, mosaic(np.stack(stacked), nrow=cols, padding=pad))
    ax.set_yticks([pad + (h + pad) * k + h / 2 for k in range(len(arrays))], list(arrays))
    ax.set_xticks([])
    ax.set_xlabel(xlabel)
    sns.despine(ax=ax, left=True, bottom=True)
    if title:
        ax.set_title(title)
    return ax


def reconstruction_pairs(
    originals: ImageLike, recons: ImageLike, *, n: int = 8, ax: Axes | None = None, title: str | None = None
) -> Axes:
    """The first `n` originals (top row) above their reconstructions (bottom row)."""
    return image_rows({"original": originals[:n], "reconstruction": recons[:n]}, ax=ax, title=title)


def interpolation_strips(rows: Mapping[str, ImageLike], *, ax: Axes | None = None, title: str | None = None) -> Axes:
    """One strip per model of images decoded along a latent path from t = 0 (left) to t = 1 (right)."""
    return image_rows(rows, ax=ax, xlabel="position along the latent path, t = 0 → 1", title=title)


def training_curves(
    history: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    columns: Sequence[str] = ("train_loss", "val_loss"),
    ax: Axes | None = None,
    ylabel: str = f"loss [{NATS}]",
) -> Axes:
    """Loss columns of one training history (or of several, by model name) against the epoch."""
    histories = {"": history} if isinstance(history, pd.DataFrame) else dict(history)
    colors = model_palette(list(histories))
    styles = ["-", "--", ":", "-."]
    ax = _axes(ax)
    for name, df in histories.items():
        missing = [c for c in ("epoch", *columns) if c not in df.columns]
        if missing:
            raise ConfigError(f"history {name!r} lacks columns {missing}; it has {list(df.columns)}.")
        for k, col in enumerate(columns):
            label = f"{name} {col}".strip()
            color = colors[name] if name else f"C{k}"
            ax.plot(df["epoch"], df[col], styles[k % len(styles)], marker="o", ms=4, color=color, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax


def latent_scatter(
    codes: ImageLike,
    labels: ImageLike,
    *,
    class_names: Sequence[str] | None = None,
    ax: Axes | None = None,
    s: float = 8.0,
    legend: bool = True,
) -> Axes:
    """2-D codes (N,2) as points coloured by class; unlabelled data (labels all -1, `aestudy.data.UNLABELLED`)
    is drawn in one colour without a legend."""
    z, y = to_numpy(codes), to_numpy(labels).astype(int)
    if z.ndim != 2 or z.shape[1] != 2 or len(y) != len(z):
        raise ConfigError(f"codes must be (N, 2) with N labels; got codes {z.shape}, labels {y.shape}.")
    if len(y) and bool((y == UNLABELLED).all()):
        ax = _axes(ax, (6.0, 5.0))
        ax.scatter(z[:, 0], z[:, 1], s=s, color=sns.color_palette("tab10")[0], linewidths=0)
        ax.set_xlabel("$z_1$ (latent units)")
        ax.set_ylabel("$z_2$ (latent units)")
        return ax
    names = list(class_names) if class_names is not None else [str(k) for k in range(y.max(initial=0) + 1)]
    hue = [names[k] for k in y]
    ax = _axes(ax, (6.0, 5.0))
    sns.scatterplot(x=z[:, 0], y=z[:, 1], hue=hue, hue_order=names, palette="tab10", s=s, linewidth=0,
                    legend=legend, ax=ax)
    ax.set_xlabel("$z_1$ (latent units)")
    ax.set_ylabel("$z_2$ (latent units)")
    if legend:
        sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), title="class", markerscale=2, frameon=False)
    return ax


def decode_images(decode_fn: DecodeFn, z: np.ndarray | torch.Tensor) -> np.ndarray:
    """Run `decode_fn` on latents (M,D) as a float32 tensor without gradients; images as (M,H,W)."""
    with torch.no_grad():
        return _as_images(decode_fn(torch.as_tensor(np.asarray(z), dtype=torch.float32)))


def manifold_grid(
    decode_fn: DecodeFn,
    *,
    bounds: tuple[tuple[float, float], tuple[float, float]],
    n: int = 15,
    ax: Axes | None = None,
) -> Axes:
    """Decode an n×n grid of 2-D latents spanning `bounds` into a mosaic drawn in latent coordinates."""
    (x0, x1), (y0, y1) = bounds
    if n < 2 or not (x0 < x1 and y0 < y1):
        raise ConfigError(f"manifold_grid needs n ≥ 2 and bounds ((xmin, xmax), (ymin, ymax)) with min < max; "
                          f"got n={n}, bounds={bounds}.")
    xs, ys = np.linspace(x0, x1, n), np.linspace(y1, y0, n)  # top row of the mosaic is the largest z_2
    grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)  # (n*n, 2), row-major from the top left
    tiles = mosaic(decode_images(decode_fn, grid), nrow=n, padding=0)
    dx, dy = (x1 - x0) / (n - 1) / 2, (y1 - y0) / (n - 1) / 2
    ax = _axes(ax, (6.0, 6.0))
    _show(ax, tiles, extent=(x0 - dx, x1 + dx, y0 - dy, y1 + dy))
    # Square tiles whatever the codes' box: one unit of z_2 is drawn (x-range / y-range) times as long as one of z_1.
    ax.set_aspect((x1 - x0) / (y1 - y0))
    ax.set_xlabel("$z_1$ (latent units)")
    ax.set_ylabel("$z_2$ (latent units)")
    return ax


def rate_distortion(df: pd.DataFrame, *, ax: Axes | None = None, annotate: bool = True) -> Axes:
    """Distortion against rate, one point per β (mean over repeats) and one line per model, β annotated."""
    missing = [c for c in ("beta", "rate", "distortion") if c not in df.columns]
    if missing:
        raise ConfigError(f"rate_distortion needs columns beta, rate, distortion; missing {missing}.")
    data = df.assign(model=df["model"] if "model" in df.columns else "VAE")
    points = data.groupby(["model", "beta"], sort=False)[["rate", "distortion"]].mean().reset_index()
    colors = model_palette(list(points["model"]))
    ax = _axes(ax)
    for name, g in points.groupby("model", sort=False):
        g = g.sort_values("beta")
        ax.plot(g["rate"], g["distortion"], "o-", color=colors[name], label=name)
        for row in g.itertuples() if annotate else ():
            ax.annotate(f"β={row.beta:g}", (row.rate, row.distortion), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
    ax.set_xlabel(f"rate  KL(q(z|x) ‖ p(z))  [{NATS}]")
    ax.set_ylabel(f"distortion  −E_q log p(x|z)  [{NATS}]")
    ax.legend()
    return ax


def roc_curves(curves: Mapping[str, tuple[Any, Any, float]], *, ax: Axes | None = None) -> Axes:
    """ROC curves (fpr, tpr, auc) by score name, with the chance diagonal."""
    colors = model_palette(list(curves))
    ax = _axes(ax, (5.0, 5.0))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(to_numpy(fpr), to_numpy(tpr), color=colors[name], label=f"{name} (AUROC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ":", color="0.5", label="chance (AUROC 0.5)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right")
    return ax


def metric_bars(df: pd.DataFrame, *, ax: Axes | None = None, ylabel: str | None = None) -> Axes:
    """Bars of a tidy (model, metric, value[, seed]) table: mean per model and metric, error bars ±1 sd over seeds."""
    missing = [c for c in ("model", "metric", "value") if c not in df.columns]
    if missing:
        raise ConfigError(f"metric_bars needs tidy columns model, metric, value; missing {missing}.")
    models = list(dict.fromkeys(df["model"]))
    metrics = list(dict.fromkeys(df["metric"]))
    ax = _axes(ax, (max(2.0 * len(metrics), 4.0), 4.0))
    sns.barplot(data=df, x="metric", y="value", hue="model", hue_order=models, order=metrics,
                palette=model_palette(models), errorbar="sd", capsize=0.1, ax=ax)
    ax.set_xlabel("metric" if len(metrics) > 1 else "")
    ax.set_ylabel(ylabel or (metrics[0] if len(metrics) == 1 else "value"))
    return ax


def line_vs(
    df: pd.DataFrame,
    x: str,
    y: str,
    hue: str | None = None,
    *,
    ax: Axes | None = None,
    logx: bool = False,
    logy: bool = False,
    xlabel: str | None = None,
    ylabel: str | None = None,
) -> Axes:
    """`y` against `x`, one line per `hue` level, mean ± 1 sd over repeated rows (e.g. seeds)."""
    missing = [c for c in (x, y, hue) if c is not None and c not in df.columns]
    if missing:
        raise ConfigError(f"line_vs: columns {missing} are not in the table; it has {list(df.columns)}.")
    palette = model_palette(list(dict.fromkeys(df[hue]))) if hue is not None else None
    ax = _axes(ax)
    sns.lineplot(data=df, x=x, y=y, hue=hue, palette=palette, marker="o", errorbar="sd", ax=ax)
    ax.set(xscale="log" if logx else "linear", yscale="log" if logy else "linear")
    xs = sorted(df[x].unique())
    if logx and len(xs) <= 12:  # label the measured sizes (2, 4, … 64) rather than powers of ten
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(ylabel or y)
    return ax


def active_units_title(variances: Any, kl: Any, *, threshold: float = 0.01) -> str:
    """The title of `kl_per_unit`, generated from the measurement: how many of the D units are active by the
    criterion the bars are coloured by, and what share of the total KL those units carry.

    `variances` (D,): Var_x E_q[z_d | x] per unit (`aestudy.metrics.active_units`), latent units²; `kl` (D,):
    mean KL(q(z_d|x) ‖ N(0, 1)) per unit, nats / image. Active: variance > `threshold` (Burda et al. 2016, §5.2).

    Raises:
        ConfigError: when `variances` and `kl` differ in length or are empty.
    """
    var, kl_ = to_numpy(variances).astype(float).ravel(), to_numpy(kl).astype(float).ravel()
    if var.size == 0 or var.size != kl_.size:
        raise ConfigError(f"active_units_title needs one variance and one KL per latent unit; got {var.size} "
                          f"variances and {kl_.size} KL values (pass metrics.active_units(...)[1] and kl_per_dim).")
    active = var > threshold
    total = float(kl_.sum())
    share = float(kl_[active].sum()) / total if total > 0 else 0.0
    return (f"{int(active.sum())} of {var.size} units active (Var_x E_q[z_d] > {threshold:g}, in colour),\n"
            f"carrying {share:.0%} of the KL ({total:.1f} {NATS})")


def kl_per_unit(kl: Any, variances: Any, *, threshold: float = 0.01, ax: Axes | None = None) -> Axes:
    """KL per latent unit as bars, sorted by KL, and that unit's Var_x E_q[z_d] as a dot on a log right axis with the
    threshold dashed; bar, dot and tick label of each unit are coloured by the active-unit criterion (the VAE's
    colour: active, Var_x E_q[z_d] > `threshold`; grey: inactive), so the title's count can be checked by eye, also
    for an active unit whose KL bar is too short to see (Burda et al. 2016, §5.2).

    `kl` (D,): nats / image per unit (`aestudy.metrics.kl_per_dim`); `variances` (D,): latent units²
    (`aestudy.metrics.active_units`). Title: `active_units_title`.

    Raises:
        ConfigError: when the two differ in length or are empty.
    """
    title = active_units_title(variances, kl, threshold=threshold)
    var, kl_ = to_numpy(variances).astype(float).ravel(), to_numpy(kl).astype(float).ravel()
    order = np.argsort(-kl_, kind="stable")
    ax = _axes(ax, (max(6.0, 0.45 * var.size), 4.0))
    active = var[order] > threshold
    on, off = MODEL_COLOURS["VAE"], INACTIVE_COLOUR
    colours = [on if a else off for a in active]
    x = np.arange(var.size)
    ax.bar(x, kl_[order], color=colours)
    ax.set_xticks(x, [str(int(d)) for d in order])
    for label, colour, a in zip(ax.get_xticklabels(), colours, active, strict=True):
        label.set_color(colour)
        label.set_fontweight("bold" if a else "normal")
    ax.set(xlabel="latent dimension (sorted by KL)", ylabel=f"KL [{NATS}]", title=title)
    right = ax.twinx()
    right.scatter(x, np.maximum(var[order], 1e-12), c=colours, edgecolors="black", linewidths=0.5, s=25, zorder=3)
    right.axhline(threshold, color="black", ls="--", lw=1, label=f"activity threshold {threshold:g}")
    right.set(yscale="log", ylabel="Var_x E_q[z_d]  [latent units²]")
    right.grid(False)
    handles = [Patch(color=on, label=f"active unit: KL bar (Var_x E_q[z_d] > {threshold:g})"),
               Patch(color=off, label="inactive unit: KL bar"),
               Line2D([], [], ls="", marker="o", markerfacecolor="white", markeredgecolor="black",
                      label="Var_x E_q[z_d] per unit (dots, right axis; coloured alike)"),
               *right.get_legend_handles_labels()[0]]
    # On the twin axis, which is drawn last: on `ax` its dots and threshold line would cross the legend.
    right.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9)
    return ax
