"""Plots draw what they claim: the right number of artists, mosaics of the right size, labelled axes."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.image import AxesImage

from aestudy import plots
from aestudy.errors import ConfigError


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _images(n: int, h: int = 6, w: int = 5) -> torch.Tensor:
    """n distinct constant images (N,1,H,W): image k has value k/n everywhere."""
    return (torch.arange(n, dtype=torch.float32) / n).view(n, 1, 1, 1).expand(n, 1, h, w).clone()


def _only_image(ax) -> np.ndarray:
    (img,) = [a for a in ax.get_children() if isinstance(a, AxesImage)]
    return np.asarray(img.get_array())


def test_set_theme_gives_each_model_a_distinct_fixed_colour():
    plots.set_theme()
    names = ["AE", "VAE", "DAE", "β-VAE", "PCA"]
    pal = plots.model_palette(["VAE", "other", *names])
    assert [pal[n] for n in names] == [plots.MODEL_COLORS[n] for n in names]
    assert len(set(pal.values())) == len(pal) == 6


def test_mosaic_places_each_image_in_its_tile():
    tiles = plots.mosaic(_images(5), nrow=3, padding=2)
    assert tiles.shape == (2 * (6 + 2) + 2, 3 * (5 + 2) + 2)
    # image k sits at row k // 3, column k % 3; the unused sixth tile and the padding stay white
    for k in range(5):
        r, c = divmod(k, 3)
        np.testing.assert_allclose(tiles[2 + 8 * r : 8 + 8 * r, 2 + 7 * c : 7 + 7 * c], k / 5, rtol=1e-6)
    assert np.all(tiles[10:16, 16:21] == 1.0)
    assert np.all(tiles[:2] == 1.0)


def test_image_grid_draws_one_mosaic_and_accepts_arrays():
    ax = plots.image_grid(_images(10).numpy(), nrow=4, title="samples")
    assert _only_image(ax).shape == (3 * 8 + 2, 4 * 7 + 2)
    assert ax.get_title() == "samples"


def test_image_grid_rejects_other_shapes():
    with pytest.raises(ConfigError, match=r"images must have shape \(N, 1, H, W\), \(N, 3, H, W\) or \(N, H, W\); "
                                          r"got \(2, 2, 4, 4\)"):
        plots.image_grid(torch.zeros(2, 2, 4, 4))


def test_reconstruction_pairs_puts_originals_on_top():
    originals, recons = _images(10), 1 - _images(10)
    ax = plots.reconstruction_pairs(originals, recons, n=4)
    tiles = _only_image(ax)
    assert tiles.shape == (2 * 8 + 2, 4 * 7 + 2)
    assert np.all(tiles[2:8, 2:7] == originals[0, 0, 0, 0].item())
    assert np.all(tiles[10:16, 2:7] == recons[0, 0, 0, 0].item())
    assert [t.get_text() for t in ax.get_yticklabels()] == ["original", "reconstruction"]


def test_interpolation_strips_one_labelled_row_per_model():
    ax = plots.interpolation_strips({"AE": _images(7), "VAE": _images(7), "PCA": _images(7)})
    assert _only_image(ax).shape == (3 * 8 + 2, 7 * 7 + 2)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["AE", "VAE", "PCA"]
    assert "t = 0" in ax.get_xlabel()


def test_image_rows_rejects_mixed_image_sizes():
    with pytest.raises(ConfigError, match="all rows must hold images of one size"):
        plots.image_rows({"a": torch.zeros(2, 1, 4, 4), "b": torch.zeros(2, 1, 5, 5)})


def _history(offset: float) -> pd.DataFrame:
    epochs = np.arange(1, 6)
    return pd.DataFrame({"epoch": epochs, "train_loss": 300 / epochs + offset, "val_loss": 310 / epochs + offset})


def test_training_curves_one_line_per_model_and_column_with_units():
    ax = plots.training_curves({"AE": _history(0), "VAE": _history(5)})
    assert len(ax.lines) == 4
    assert ax.get_xlabel() == "epoch" and "nats / image" in ax.get_ylabel()
    ae_train = ax.lines[0]
    np.testing.assert_allclose(ae_train.get_ydata(), _history(0)["train_loss"])
    np.testing.assert_allclose(matplotlib.colors.to_rgb(ae_train.get_color()), plots.MODEL_COLORS["AE"])


def test_training_curves_single_history_and_missing_column():
    assert len(plots.training_curves(_history(0), columns=("val_loss",)).lines) == 1
    with pytest.raises(ConfigError, match=r"history '' lacks columns \['val_kl'\]"):
        plots.training_curves(_history(0), columns=("val_kl",))


def test_latent_scatter_one_point_per_code_coloured_by_class():
    codes, labels = torch.randn(50, 2), torch.arange(50) % 3
    ax = plots.latent_scatter(codes, labels, class_names=["a", "b", "c"])
    (points,) = ax.collections
    np.testing.assert_allclose(points.get_offsets(), codes.numpy(), rtol=1e-6)
    assert len({tuple(c) for c in points.get_facecolors()}) == 3
    assert ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "c"]


def test_latent_scatter_rejects_higher_dimensional_codes():
    with pytest.raises(ConfigError, match=r"codes must be \(N, 2\)"):
        plots.latent_scatter(torch.zeros(4, 3), torch.zeros(4))


def test_manifold_grid_decodes_a_grid_in_latent_coordinates():
    calls = []

    def decode(z: torch.Tensor) -> torch.Tensor:
        calls.append(z.clone())
        # pixel value encodes the latent: (z1 + 2) / 4 in the left half, (z2 + 1) / 2 in the right half
        left = ((z[:, 0] + 2) / 4).view(-1, 1, 1, 1).expand(-1, 1, 4, 2)
        right = ((z[:, 1] + 1) / 2).view(-1, 1, 1, 1).expand(-1, 1, 4, 2)
        return torch.cat([left, right], dim=3)

    ax = plots.manifold_grid(decode, bounds=((-2.0, 2.0), (-1.0, 1.0)), n=5)
    (z,) = calls
    assert z.shape == (25, 2) and z.dtype == torch.float32
    tiles = _only_image(ax)
    assert tiles.shape == (5 * 4, 5 * 4)
    # top-left tile is (z1, z2) = (xmin, ymax); bottom-right is (xmax, ymin)
    assert tiles[0, 0] == 0.0 and tiles[0, 3] == 1.0
    assert tiles[-1, -4] == 1.0 and tiles[-1, -1] == 0.0
    image = next(a for a in ax.get_children() if isinstance(a, AxesImage))
    np.testing.assert_allclose(image.get_extent(), (-2.5, 2.5, -1.25, 1.25))
    assert ax.get_xlabel() and ax.get_ylabel()


def test_manifold_grid_rejects_empty_bounds():
    with pytest.raises(ConfigError, match="bounds"):
        plots.manifold_grid(lambda z: z, bounds=((1.0, 1.0), (0.0, 1.0)))


def test_rate_distortion_one_annotated_point_per_beta_averaged_over_seeds():
    betas = [0.1, 0.5, 1.0, 4.0]
    df = pd.DataFrame(
        [{"beta": b, "seed": s, "rate": 40 / b + s, "distortion": 200 + 10 * b - s} for b in betas for s in (0, 1)]
    )
    ax = plots.rate_distortion(df)
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_xdata(), [40 / b + 0.5 for b in betas])
    np.testing.assert_allclose(line.get_ydata(), [200 + 10 * b - 0.5 for b in betas])
    assert sorted(t.get_text() for t in ax.texts) == sorted(f"β={b:g}" for b in betas)
    assert "nats / image" in ax.get_xlabel() and "nats / image" in ax.get_ylabel()


def test_rate_distortion_one_line_per_model_and_required_columns():
    df = pd.DataFrame({"beta": [1, 2, 1, 2], "rate": [3, 2, 4, 3], "distortion": [5, 6, 4, 5],
                       "model": ["VAE", "VAE", "β-VAE", "β-VAE"]})
    ax = plots.rate_distortion(df)
    assert len(ax.lines) == 2 and len(ax.texts) == 4
    with pytest.raises(ConfigError, match=r"missing \['rate'\]"):
        plots.rate_distortion(df.drop(columns="rate"))


def test_roc_curves_one_curve_per_score_plus_chance():
    curves = {"AE recon": ([0, 0.2, 1], [0, 0.7, 1], 0.75), "VAE −ELBO": ([0, 0.1, 1], [0, 0.8, 1], 0.85)}
    ax = plots.roc_curves(curves)
    assert len(ax.lines) == 3
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[:2] == ["AE recon (AUROC 0.750)", "VAE −ELBO (AUROC 0.850)"]
    assert ax.get_xlabel() == "false positive rate" and ax.get_ylabel() == "true positive rate"


def test_metric_bars_mean_bars_with_sd_error_bars_over_seeds():
    rng = np.random.default_rng(0)
    rows = [{"model": m, "metric": k, "seed": s, "value": rng.normal(loc)}
            for m, loc in (("AE", 1.0), ("VAE", 3.0)) for k in ("MSE", "PSNR") for s in range(4)]
    df = pd.DataFrame(rows)
    ax = plots.metric_bars(df, ylabel="value (mixed units)")
    bars = [p for p in ax.patches if p.get_height() != 0]
    assert len(bars) == 4
    stats = df.groupby(["model", "metric"], sort=False)["value"].agg(["mean", "std"])
    heights = sorted(p.get_height() for p in bars)
    np.testing.assert_allclose(heights, sorted(stats["mean"]))
    # each error bar (one polyline with its caps) spans mean ± sample sd (ddof=1)
    spans = sorted(np.nanmax(line.get_ydata()) - np.nanmin(line.get_ydata()) for line in ax.lines)
    np.testing.assert_allclose(spans, sorted(2 * stats["std"]))
    assert ax.get_ylabel() == "value (mixed units)"


def test_metric_bars_names_the_axis_after_a_single_metric():
    df = pd.DataFrame({"model": ["AE", "VAE"], "metric": ["PSNR [dB]"] * 2, "value": [20.0, 18.0]})
    assert plots.metric_bars(df).get_ylabel() == "PSNR [dB]"


def test_line_vs_one_line_per_hue_level_and_log_axis():
    df = pd.DataFrame({"k": [1, 10, 100] * 2, "bound": [-300, -290, -285, -310, -295, -288],
                       "model": ["VAE"] * 3 + ["PCA"] * 3})
    ax = plots.line_vs(df, "k", "bound", "model", logx=True, ylabel="IWAE bound [nats / image]")
    drawn = [line for line in ax.lines if len(line.get_xdata())]  # the legend's handles hold no data
    assert len(drawn) == 2
    np.testing.assert_array_equal(drawn[0].get_ydata(), [-300, -290, -285])
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "10", "100"]
    assert ax.get_xlabel() == "k" and ax.get_ylabel() == "IWAE bound [nats / image]"
    with pytest.raises(ConfigError, match=r"columns \['nope'\] are not in the table"):
        plots.line_vs(df, "k", "nope")


def test_plots_draw_on_the_given_axes():
    fig, axes = plt.subplots(1, 2)
    assert plots.image_grid(_images(4), nrow=2, ax=axes[1]) is axes[1]
    assert plots.training_curves(_history(0), ax=axes[0]) is axes[0]
    assert len(plt.get_fignums()) == 1


def test_colour_images_are_drawn_in_colour():
    """Issue 15: colour patches (N, 3, H, W) tile into an (…, 3) mosaic; grey ones stay 2-D."""
    from aestudy import plots

    rgb = torch.zeros(5, 3, 4, 4)
    rgb[:, 0] = 1.0  # pure red
    tiles = plots.mosaic(rgb, nrow=3, padding=1)
    assert tiles.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert tiles[1:5, 1:5].tolist() == [[[1.0, 0.0, 0.0]] * 4] * 4
    assert plots.mosaic(torch.zeros(5, 1, 4, 4), nrow=3, padding=1).shape == (11, 16)
    ax = plots.image_rows({"data": rgb[:2], "model": rgb[:3]})
    assert ax.images[0].get_array().shape == (2 * 6 + 2, 3 * 6 + 2, 3)
    with pytest.raises(ConfigError, match=r"images must have shape \(N, 1, H, W\), \(N, 3, H, W\)"):
        plots.mosaic(torch.zeros(2, 2, 4, 4), nrow=2)


# --- issue 19: one palette per model, square manifold tiles ------------------------------------------------------

# Models that appear side by side in one figure somewhere in the series: each set needs distinct colours.
SHOWN_TOGETHER = [("AE", "VAE", "DAE", "β-VAE"), ("AE", "DAE", "VAE", "DVAE"), ("linear AE", "mlp AE", "PCA"),
                  ("GAN", "VAE", "VAE + GMM ex post", "AE + GMM ex post", "data"), ("AE", "VAE", "PCA", "raw pixels"),
                  ("M2", "AE", "VAE", "PCA", "raw pixels")]


@pytest.mark.parametrize("names", SHOWN_TOGETHER)
def test_models_shown_together_have_distinct_fixed_colours(names):
    pal = plots.model_palette(list(names))
    assert [pal[n] for n in names] == [plots.MODEL_COLOURS[n] for n in names]
    assert len({pal[n] for n in names}) == len(names)
    # Distinct to the eye, not only as tuples (reader 10: linear AE and PCA were two greys 0.03 apart).
    rgb = np.array([pal[n] for n in names])
    gaps = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(len(names), 1)]
    assert gaps.min() >= 0.15, dict(zip(names, map(tuple, rgb.round(2)), strict=True))


def test_a_model_keeps_its_colour_whatever_else_is_drawn():
    alone = plots.model_palette(["VAE"])["VAE"]
    assert plots.model_palette(["AE", "unknown", "VAE"])["VAE"] == alone == plots.MODEL_COLOURS["VAE"]
    pal = plots.model_palette(["AE", "new model", "another"])
    assert len(set(pal.values())) == 3 and plots.MODEL_COLOURS["AE"] not in (pal["new model"], pal["another"])


def test_a_model_drawn_through_line_vs_takes_its_colour():
    df = pd.DataFrame({"x": [1, 2, 1, 2], "y": [1.0, 2.0, 3.0, 4.0], "model": ["GAN", "GAN", "DVAE", "DVAE"]})
    ax = plots.line_vs(df, "x", "y", hue="model")
    colours = {tuple(matplotlib.colors.to_rgb(line.get_color())) for line in ax.lines}
    assert {plots.MODEL_COLOURS["GAN"], plots.MODEL_COLOURS["DVAE"]} <= {tuple(c) for c in colours}


@pytest.mark.parametrize("bounds", [((-2.0, 2.0), (-1.0, 1.0)), ((0.0, 1.0), (-30.0, 30.0))])
def test_manifold_grid_tiles_are_square_on_screen(bounds):
    ax = plots.manifold_grid(lambda z: torch.zeros(len(z), 1, 4, 4), bounds=bounds, n=5)
    ax.figure.canvas.draw()
    (x0, x1), (y0, y1) = bounds
    box = ax.get_window_extent()
    # Each tile spans (range / (n - 1)) data units each way; on screen the two must be equal.
    per_x = box.width / (x1 - x0 + (x1 - x0) / 4)
    per_y = box.height / (y1 - y0 + (y1 - y0) / 4)
    np.testing.assert_allclose(per_x * (x1 - x0) / 4, per_y * (y1 - y0) / 4, rtol=0.02)


def _square(n: int) -> torch.Tensor:
    """n Fashion-MNIST-sized images (28×28, grey)."""
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(n))


def _drawn_tile_inches(ax, images, nrow):
    """The printed width of one tile of an image_grid drawn on `ax` (the mosaic keeps its aspect inside the Axes)."""
    fig = ax.figure
    fig.canvas.draw()
    box = ax.get_window_extent()
    tiles = plots.mosaic(images, nrow=nrow)
    scale = min(box.width / tiles.shape[1], box.height / tiles.shape[0])  # screen pixels per image pixel
    return scale * (images.shape[-1] + 2) / fig.dpi


@pytest.mark.parametrize(("n_grids", "n", "nrow", "per_row"), [(3, 16, 4, None), (4, 16, 4, 2), (2, 36, 6, None),
                                                               (5, 16, 4, 3), (1, 16, 8, None)])
def test_sample_grids_are_large_enough_to_judge(n_grids, n, nrow, per_row):
    """Issue 19: sample tiles readable, at least TILE_INCHES (1.1 inch) each, however many sources sit side by side."""
    grids = {f"source {k}": _square(n) for k in range(n_grids)}
    fig = plots.sample_panels(grids, nrow=nrow, per_row=per_row)
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == n_grids and [ax.get_title() for ax in drawn] == list(grids)
    for ax in drawn:
        assert _drawn_tile_inches(ax, _square(n), nrow) >= plots.TILE_INCHES - 0.02
    assert fig.get_figwidth() <= plots.MAX_FIGURE_WIDTH + 1e-9 or per_row is not None
    plt.close(fig)


def test_a_standalone_grid_and_image_rows_have_large_tiles():
    ax = plots.image_grid(_square(16), nrow=8, title="samples")
    assert _drawn_tile_inches(ax, _square(16), 8) >= plots.TILE_INCHES - 0.02
    assert ax.figure.get_figwidth() >= 8 * plots.TILE_INCHES
    ax = plots.reconstruction_pairs(_square(8), _square(8), n=8)
    assert ax.figure.get_figwidth() >= 8 * plots.TILE_INCHES
    plt.close("all")


def test_sample_panels_rejects_bad_layouts():
    with pytest.raises(ConfigError, match="at least one"):
        plots.sample_panels({})
    with pytest.raises(ConfigError, match="nrow=0"):
        plots.sample_panels({"a": _square(4)}, nrow=0)


def test_kl_per_unit_colours_each_bar_by_the_criterion_its_title_counts():
    """Title and colours speak of one quantity: the bars, dots and tick labels in the VAE's colour are exactly the
    units the title counts as active, the rest grey, and the legend names both (reader 5: one colour for all bars)."""
    from matplotlib.colors import to_rgb

    kl = torch.tensor([0.6, 3.0, 0.4, 1.0])
    variances = torch.tensor([0.005, 0.9, 0.001, 0.3])  # units 1 and 3 active; unit 0 has KL but no variance
    ax = plots.kl_per_unit(kl, variances)
    assert ax.get_title() == ("2 of 4 units active (Var_x E_q[z_d] > 0.01, in colour),\ncarrying 80% of the KL "
                              "(5.0 nats / image)")
    on, off = plots.MODEL_COLOURS["VAE"], plots.INACTIVE_COLOUR
    assert on != off
    bars = ax.patches
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "3", "0", "2"]  # sorted by KL
    assert [b.get_height() for b in bars] == pytest.approx([3.0, 1.0, 0.6, 0.4])
    assert [to_rgb(b.get_facecolor()) for b in bars] == [pytest.approx(c) for c in (on, on, off, off)]
    assert [to_rgb(t.get_color()) for t in ax.get_xticklabels()] == [pytest.approx(c) for c in (on, on, off, off)]
    right = ax.figure.axes[1]
    dots = right.collections[0]
    assert list(dots.get_offsets()[:, 1]) == pytest.approx([0.9, 0.3, 0.005, 0.001])
    assert [tuple(c[:3]) for c in dots.get_facecolors()] == [pytest.approx(c) for c in (on, on, off, off)]
    assert right.lines[0].get_ydata()[0] == pytest.approx(0.01)  # the threshold, drawn at its value
    labels = [t.get_text() for t in right.get_legend().get_texts()]
    assert labels == ["active unit: KL bar (Var_x E_q[z_d] > 0.01)", "inactive unit: KL bar",
                      "Var_x E_q[z_d] per unit (dots, right axis; coloured alike)", "activity threshold 0.01"]
    assert plots.active_units_title(variances, kl, threshold=0.004).startswith(
        "3 of 4 units active (Var_x E_q[z_d] > 0.004")
    plt.close("all")


def test_kl_per_unit_needs_one_value_per_unit():
    with pytest.raises(ConfigError, match="got 3 variances and 4 KL values"):
        plots.kl_per_unit(torch.ones(4), torch.ones(3))
