"""Interactive figures for the notebooks: controls that re-render a PNG figure, static without a frontend.

Every builder returns a `StudyWidget` (an `ipywidgets.VBox` with CSS class `aestudy-widget`) holding its
controls and an `Output`; its main control carries the class `aestudy-main-control`. The figure is drawn
on a `matplotlib.figure.Figure` that pyplot never sees (so no figure can leak), saved as PNG and put into
`Output.outputs` directly: the image is then part of the widget's state with or without a frontend
(papermill, nbval, pytest), and each re-render replaces it in one step.
"""

from __future__ import annotations

import base64
import io
import math
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import numpy as np
from matplotlib.figure import Figure

from aestudy.errors import ConfigError
from aestudy.plots import DecodeFn, ImageLike, decode_images, image_grid, image_rows, latent_scatter, to_numpy

WIDGET_CLASS = "aestudy-widget"
MAIN_CONTROL_CLASS = "aestudy-main-control"
DPI = 90

Draw = Callable[[Figure, dict[str, Any]], None]
ImagesFn = Callable[..., Mapping[str, ImageLike]]


class StudyWidget(widgets.VBox):
    """Controls above an Output showing a figure; displayed, it also carries that figure as a static PNG."""

    output: widgets.Output
    main_control: widgets.ValueWidget

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget view plus the current PNG, which viewers without widget support show instead."""
        bundle = super()._repr_mimebundle_(**kwargs)
        png = png_of(self.output)
        if bundle is not None and png is not None:
            bundle["image/png"] = base64.b64encode(png).decode("ascii")
        return bundle


def png_of(out: widgets.Output) -> bytes | None:
    """The PNG bytes shown in `out`, or None when it shows no image (e.g. an error)."""
    images = [o["data"]["image/png"] for o in out.outputs if "image/png" in o.get("data", {})]
    return base64.b64decode(images[-1]) if images else None


def render_png(draw: Draw, values: dict[str, Any], *, figsize: tuple[float, float] = (8.0, 4.0)) -> bytes:
    """Draw `values` on a fresh pyplot-free Figure and return it as PNG bytes."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    draw(fig, values)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    return buf.getvalue()


def _image_output(png: bytes) -> dict[str, Any]:
    """An nbformat display_data output holding a PNG."""
    data = {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": "<aestudy figure>"}
    return {"output_type": "display_data", "data": data, "metadata": {}}


def _error_output(exc: BaseException) -> dict[str, Any]:
    """An nbformat error output for an exception raised while re-rendering."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)).splitlines()
    return {"output_type": "error", "ename": type(exc).__name__, "evalue": str(exc), "traceback": tb}


def assemble(
    controls: Mapping[str, widgets.ValueWidget],
    draw: Draw,
    *,
    main: str,
    layout: widgets.Box | None = None,
    figsize: tuple[float, float] = (8.0, 4.0),
) -> StudyWidget:
    """Wire `controls` to `draw`: render once now (errors raise), then again on every value change."""
    out = widgets.Output()

    def render() -> None:
        values = {name: c.value for name, c in controls.items()}
        out.outputs = (_image_output(render_png(draw, values, figsize=figsize)),)

    def on_change(_change: dict[str, Any]) -> None:
        # A failure after construction is shown where the figure was (a kernel would only log it).
        try:
            render()
        except Exception as exc:
            out.outputs = (_error_output(exc),)

    render()
    for control in controls.values():
        control.observe(on_change, names="value")
    box = StudyWidget([layout or widgets.HBox(list(controls.values())), out])
    box.output, box.main_control = out, controls[main]
    box.add_class(WIDGET_CLASS)
    controls[main].add_class(MAIN_CONTROL_CLASS)
    return box


def _rows_figsize(rows: Mapping[str, ImageLike]) -> tuple[float, float]:
    """A figure size that gives each image of labelled rows about 0.7 inch."""
    cols = max(len(v) for v in rows.values())
    return max(0.7 * cols, 3.0) + 1.5, 0.7 * len(rows) + 0.9


def _draw_rows(fig: Figure, rows: Mapping[str, ImageLike], *, xlabel: str = "", title: str | None = None) -> None:
    """Labelled image rows on `fig`, resized to fit them."""
    fig.set_size_inches(*_rows_figsize(rows))
    image_rows(rows, ax=fig.subplots(), xlabel=xlabel, title=title)


def _slider(description: str, lo: float, hi: float, value: float, steps: int = 100) -> widgets.FloatSlider:
    """A float slider over [lo, hi] that re-renders on release (keyboard steps re-render each time)."""
    return widgets.FloatSlider(value=float(np.clip(value, lo, hi)), min=lo, max=hi, step=(hi - lo) / steps,
                               description=description, continuous_update=False, readout_format=".2f")


def latent_explorer(
    decode_fn: DecodeFn,
    codes: ImageLike,
    labels: ImageLike,
    *,
    class_names: Sequence[str] | None = None,
    bounds: tuple[tuple[float, float], tuple[float, float]] | None = None,
    max_points: int = 2000,
    seed: int = 0,
) -> StudyWidget:
    """Sliders z₁, z₂ over a 2-D latent: the decoded image beside the latent scatter with the point marked."""
    z, y = to_numpy(codes), to_numpy(labels).astype(int)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ConfigError(f"latent_explorer needs 2-D codes (N, 2); got {z.shape}.")
    if bounds is None:
        bounds = ((z[:, 0].min(), z[:, 0].max()), (z[:, 1].min(), z[:, 1].max()))
    (x0, x1), (y0, y1) = ((float(a), float(b)) for a, b in bounds)
    # A random subset keeps each redraw fast; the full set adds no information to the picture.
    keep = np.random.default_rng(seed).permutation(len(z))[:max_points]
    controls = {"z1": _slider("z₁", x0, x1, (x0 + x1) / 2), "z2": _slider("z₂", y0, y1, (y0 + y1) / 2)}

    def draw(fig: Figure, v: dict[str, Any]) -> None:
        ax_scatter, ax_image = fig.subplots(1, 2, width_ratios=(1.6, 1.0))
        latent_scatter(z[keep], y[keep], class_names=class_names, ax=ax_scatter, s=5)
        ax_scatter.plot(v["z1"], v["z2"], "X", ms=14, color="black", mec="white", mew=1.5)
        image = decode_images(decode_fn, [[v["z1"], v["z2"]]])
        image_grid(image, nrow=1, ax=ax_image, title=f"decoded z = ({v['z1']:.2f}, {v['z2']:.2f})")

    return assemble(controls, draw, main="z1", figsize=(10.0, 4.0))


def choice_viewer(
    options: Mapping[str, Callable[[Figure], None]],
    *,
    description: str = "show",
    value: str | None = None,
    figsize: tuple[float, float] = (9.0, 4.0),
) -> StudyWidget:
    """A dropdown of labels; each label's `render_fn(fig)` draws its figure (on `fig`, not through pyplot)."""
    if not options:
        raise ConfigError("choice_viewer needs at least one option (label -> render_fn).")
    labels = list(options)
    if value is not None and value not in options:
        raise ConfigError(f"value={value!r} is not an option; valid values: {', '.join(map(str, labels))}.")
    dropdown = widgets.Dropdown(options=labels, value=value or labels[0], description=description)
    return assemble({"choice": dropdown}, lambda fig, v: options[v["choice"]](fig), main="choice",
                    figsize=figsize)


def latent_traversal(
    decode_fn: DecodeFn,
    *,
    latent_dim: int,
    order: Sequence[int] | None = None,
    base_z: ImageLike | None = None,
    span: float = 3.0,
    max_sliders: int = 8,
) -> StudyWidget:
    """One slider per latent dimension (the first `max_sliders` of `order`, e.g. sorted by KL) → decoded image."""
    order = list(range(latent_dim)) if order is None else [int(d) for d in order]
    base = np.zeros(latent_dim) if base_z is None else to_numpy(base_z).reshape(-1)
    if base.shape != (latent_dim,) or any(not 0 <= d < latent_dim for d in order) or span <= 0:
        raise ConfigError(f"latent_traversal needs base_z of shape ({latent_dim},), order within "
                          f"0..{latent_dim - 1} and span > 0; got base_z {base.shape}, order {order}, span {span}.")
    dims = order[:max_sliders]
    controls = {f"z{d}": _slider(f"z[{d}]", -span, span, base[d], steps=40) for d in dims}

    def draw(fig: Figure, v: dict[str, Any]) -> None:
        z = base.copy()
        for d in dims:
            z[d] = v[f"z{d}"]
        image_grid(decode_images(decode_fn, z[None]), nrow=1, ax=fig.subplots(), title="decoded image")

    sliders = widgets.VBox(list(controls.values()))
    return assemble(controls, draw, main=f"z{dims[0]}", layout=sliders, figsize=(3.0, 3.0))


def pair_interpolation(
    interp_fn: Callable[[int, int], Mapping[str, ImageLike]], *, n_images: int, first: int = 0, second: int = 1
) -> StudyWidget:
    """Two sliders choosing test images i and j → `interp_fn(i, j)`'s strips (name -> images), one per model."""
    if n_images < 2 or not (0 <= first < n_images and 0 <= second < n_images):
        raise ConfigError(f"pair_interpolation needs n_images ≥ 2 and first, second in 0..n_images-1; "
                          f"got n_images={n_images}, first={first}, second={second}.")
    controls = {name: widgets.IntSlider(value=value, min=0, max=n_images - 1, description=label,
                                        continuous_update=False)
                for name, value, label in (("i", first, "image A"), ("j", second, "image B"))}

    def draw(fig: Figure, v: dict[str, Any]) -> None:
        _draw_rows(fig, interp_fn(v["i"], v["j"]), xlabel="position along the latent path, t = 0 → 1",
                   title=f"test image {v['i']} → test image {v['j']}")

    return assemble(controls, draw, main="i")


def sample_viewer(
    sample_fn: Callable[[int, float], Mapping[str, ImageLike]],
    *,
    n: int = 16,
    max_n: int = 64,
    temperature: float = 1.0,
    temperature_range: tuple[float, float] = (0.1, 2.0),
) -> StudyWidget:
    """Sliders for the number and temperature of prior samples → `sample_fn(n, t)`'s grids, one per model."""
    lo, hi = temperature_range
    if not (1 <= n <= max_n and 0 < lo < hi):
        raise ConfigError(f"sample_viewer needs 1 ≤ n ≤ max_n and 0 < temperature_range[0] < [1]; "
                          f"got n={n}, max_n={max_n}, temperature_range={temperature_range}.")
    controls = {
        "n": widgets.IntSlider(value=n, min=1, max=max_n, description="samples", continuous_update=False),
        "temperature": _slider("temperature", lo, hi, temperature, steps=int(round((hi - lo) / 0.05))),
    }

    def draw(fig: Figure, v: dict[str, Any]) -> None:
        grids = sample_fn(v["n"], v["temperature"])
        fig.set_size_inches(3.2 * len(grids), 3.4)
        axes = np.atleast_1d(fig.subplots(1, len(grids)))
        for ax, (name, images) in zip(axes, grids.items(), strict=True):
            image_grid(images, nrow=math.ceil(math.sqrt(v["n"])), ax=ax, title=f"{name}, t = {v['temperature']:.2f}")

    return assemble(controls, draw, main="temperature")


def noise_viewer(
    render_fn: Callable[[float], Mapping[str, ImageLike]],
    *,
    levels: Sequence[float],
    value: float | None = None,
    description: str = "noise level",
) -> StudyWidget:
    """A slider over noise `levels` → `render_fn(level)`'s image rows (e.g. noisy / AE / DAE / VAE)."""
    if not levels or (value is not None and value not in levels):
        raise ConfigError(f"noise_viewer needs a non-empty list of levels and a value among them; "
                          f"got levels={list(levels)}, value={value}.")
    slider = widgets.SelectionSlider(options=[(f"{level:g}", level) for level in levels],
                                     value=levels[0] if value is None else value,
                                     description=description, continuous_update=False)

    def draw(fig: Figure, v: dict[str, Any]) -> None:
        _draw_rows(fig, render_fn(v["level"]), title=f"{description} = {v['level']:g}")

    return assemble({"level": slider}, draw, main="level")



def selection_viewer(
    render_fn: Callable[[Any], Mapping[str, ImageLike]],
    *,
    options: Sequence[Any],
    value: Any = None,
    description: str = "show",
) -> StudyWidget:
    """A slider over `options` (e.g. the rungs of a data ladder, or class names) → `render_fn(option)`'s image rows.

    Raises:
        ConfigError: when `options` is empty or `value` is not one of them.
    """
    if not options or (value is not None and value not in options):
        raise ConfigError(f"selection_viewer needs a non-empty list of options and a value among them; "
                          f"got options={list(options)}, value={value!r}.")
    slider = widgets.SelectionSlider(options=[(str(o), o) for o in options],
                                     value=options[0] if value is None else value, description=description,
                                     continuous_update=False)

    def draw(fig: Figure, v: dict[str, Any]) -> None:
        _draw_rows(fig, render_fn(v["choice"]), title=f"{description}: {v['choice']}")

    return assemble({"choice": slider}, draw, main="choice")
