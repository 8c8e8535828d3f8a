"""Widgets render a PNG on construction, re-render on every control change, and leak no figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import base64

import ipywidgets as widgets
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from aestudy import widgets as aw
from aestudy.errors import ConfigError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_figure_leak():
    """Every test must leave pyplot's figure list as it found it."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _tree(widget: widgets.Widget) -> list[widgets.Widget]:
    """The widget and all its descendants."""
    return [widget, *(w for child in getattr(widget, "children", ()) for w in _tree(child))]


def _image(box: aw.StudyWidget) -> bytes:
    """The one PNG the widget's Output shows (asserting there is exactly one output and it is an image)."""
    (output,) = box.output.outputs
    png = base64.b64decode(output["data"]["image/png"])
    assert png.startswith(PNG_SIGNATURE)
    return png


def _check_structure(box: aw.StudyWidget) -> None:
    """The classes the browser tests rely on, and the Output and main control living inside the box."""
    assert isinstance(box, widgets.VBox)
    assert aw.WIDGET_CLASS in box._dom_classes
    tree = _tree(box)
    mains = [w for w in tree if aw.MAIN_CONTROL_CLASS in getattr(w, "_dom_classes", ())]
    assert mains == [box.main_control]
    assert [w for w in tree if isinstance(w, widgets.Output)] == [box.output]


def _const_images(values) -> torch.Tensor:
    """One 8×8 constant image per value, clipped to [0, 1]."""
    v = torch.as_tensor(values, dtype=torch.float32).clamp(0, 1).view(-1, 1, 1, 1)
    return v.expand(-1, 1, 8, 8).clone()


def _change_renders_new_png(box: aw.StudyWidget, control: widgets.ValueWidget, value) -> None:
    """Setting `control.value` replaces the one image output with a different PNG."""
    before = _image(box)
    control.value = value
    assert _image(box) != before


def test_latent_explorer_decodes_the_slider_point():
    codes = torch.tensor([[-2.0, -1.0], [2.0, 1.0], [0.0, 0.5], [1.0, -0.5]])
    seen: list[torch.Tensor] = []

    def decode(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.clone())
        return _const_images((z[:, 0] + 2) / 4)

    box = aw.latent_explorer(decode, codes, torch.tensor([0, 1, 2, 1]), class_names=["a", "b", "c"])
    _check_structure(box)
    z1, z2 = box.children[0].children
    assert box.main_control is z1
    # sliders span the codes' bounding box and start at its centre
    assert (z1.min, z1.max, z2.min, z2.max) == (-2.0, 2.0, -1.0, 1.0)
    torch.testing.assert_close(seen[-1], torch.tensor([[0.0, 0.0]]))
    _change_renders_new_png(box, z1, 1.5)
    torch.testing.assert_close(seen[-1], torch.tensor([[1.5, 0.0]]))
    z2.value = -0.8
    torch.testing.assert_close(seen[-1], torch.tensor([[1.5, -0.8]]))
    assert len(seen) == 3


def test_latent_explorer_rejects_codes_that_are_not_2d():
    with pytest.raises(ConfigError, match=r"latent_explorer needs 2-D codes \(N, 2\); got \(4, 3\)"):
        aw.latent_explorer(lambda z: z, torch.zeros(4, 3), torch.zeros(4))


def test_choice_viewer_calls_the_chosen_render_function():
    calls: list[str] = []

    def render(label: str, level: float):
        def draw(fig) -> None:
            calls.append(label)
            fig.subplots().imshow(np.full((4, 4), level), vmin=0, vmax=1)
        return draw

    box = aw.choice_viewer({"β=0.5": render("β=0.5", 0.2), "β=4": render("β=4", 0.9)}, description="β")
    _check_structure(box)
    assert isinstance(box.main_control, widgets.Dropdown) and box.main_control.value == "β=0.5"
    assert calls == ["β=0.5"]
    _change_renders_new_png(box, box.main_control, "β=4")
    assert calls == ["β=0.5", "β=4"]


def test_choice_viewer_rejects_unknown_initial_value():
    with pytest.raises(ConfigError, match=r"value='β=2' is not an option; valid values: β=1, β=4\."):
        aw.choice_viewer({"β=1": lambda fig: None, "β=4": lambda fig: None}, value="β=2")


def test_latent_traversal_sliders_follow_the_kl_order_and_move_one_dimension():
    seen: list[torch.Tensor] = []

    def decode(z: torch.Tensor) -> torch.Tensor:
        seen.append(z.clone())
        return _const_images((z[:, 3] + 3) / 6)

    base = torch.tensor([0.5, -0.5, 1.0, 0.0, 9.0])
    box = aw.latent_traversal(decode, latent_dim=5, order=[3, 1, 4, 0, 2], base_z=base, max_sliders=3)
    _check_structure(box)
    sliders = box.children[0].children
    assert [s.description for s in sliders] == ["z[3]", "z[1]", "z[4]"]
    assert box.main_control is sliders[0]
    assert sliders[2].value == 3.0  # base value 9 clipped to the span
    torch.testing.assert_close(seen[-1], torch.tensor([[0.5, -0.5, 1.0, 0.0, 3.0]]))
    _change_renders_new_png(box, sliders[0], 2.25)
    torch.testing.assert_close(seen[-1], torch.tensor([[0.5, -0.5, 1.0, 2.25, 3.0]]))


def test_latent_traversal_validates_its_arguments():
    with pytest.raises(ConfigError, match=r"order within 0\.\.3 .* got base_z \(4,\), order \[4\], span 3\.0"):
        aw.latent_traversal(lambda z: z, latent_dim=4, order=[4])
    with pytest.raises(ConfigError, match=r"base_z of shape \(4,\)"):
        aw.latent_traversal(lambda z: z, latent_dim=4, base_z=torch.zeros(3))


def test_pair_interpolation_passes_both_chosen_images():
    calls: list[tuple[int, int]] = []

    def interp(i: int, j: int) -> dict[str, torch.Tensor]:
        calls.append((i, j))
        path = torch.linspace(i / 10, j / 10, 7)
        return {"AE": _const_images(path), "VAE": _const_images(path.flip(0))}

    box = aw.pair_interpolation(interp, n_images=10)
    _check_structure(box)
    first, second = box.children[0].children
    assert box.main_control is first and (first.max, second.max) == (9, 9)
    assert calls == [(0, 1)]
    _change_renders_new_png(box, first, 7)
    second.value = 3
    assert calls == [(0, 1), (7, 1), (7, 3)]


def test_pair_interpolation_rejects_out_of_range_images():
    with pytest.raises(ConfigError, match=r"got n_images=5, first=0, second=5"):
        aw.pair_interpolation(lambda i, j: {}, n_images=5, second=5)


def test_sample_viewer_passes_number_and_temperature():
    calls: list[tuple[int, float]] = []

    def sample(n: int, temperature: float) -> dict[str, torch.Tensor]:
        calls.append((n, temperature))
        gen = torch.Generator().manual_seed(0)
        return {name: (0.5 + temperature * torch.randn(n, 1, 8, 8, generator=gen) / 4).clamp(0, 1)
                for name in ("AE", "VAE")}

    box = aw.sample_viewer(sample, n=9)
    _check_structure(box)
    count, temperature = box.children[0].children
    assert box.main_control is temperature
    assert calls == [(9, 1.0)]
    _change_renders_new_png(box, temperature, 0.5)
    _change_renders_new_png(box, count, 4)
    assert calls == [(9, 1.0), (9, 0.5), (4, 0.5)]


def test_noise_viewer_renders_the_chosen_level():
    calls: list[float] = []

    def render(level: float) -> dict[str, torch.Tensor]:
        calls.append(level)
        return {"noisy": _const_images([level, 1 - level]), "DAE": _const_images([0.5, 0.5])}

    box = aw.noise_viewer(render, levels=[0.1, 0.3, 0.5])
    _check_structure(box)
    assert isinstance(box.main_control, widgets.SelectionSlider)
    assert calls == [0.1]
    _change_renders_new_png(box, box.main_control, 0.5)
    assert calls == [0.1, 0.5]
    with pytest.raises(ConfigError, match=r"got levels=\[0\.1\], value=0\.2"):
        aw.noise_viewer(render, levels=[0.1], value=0.2)


def test_errors_raise_on_construction_and_show_in_the_output_on_change():
    def render(level: float) -> dict[str, torch.Tensor]:
        if level > 0.2:
            raise RuntimeError(f"cannot denoise at {level}")
        return {"noisy": _const_images([level])}

    with pytest.raises(RuntimeError, match="cannot denoise at 0.5"):
        aw.noise_viewer(render, levels=[0.5])
    box = aw.noise_viewer(render, levels=[0.1, 0.5])
    box.main_control.value = 0.5
    (output,) = box.output.outputs
    assert output["output_type"] == "error" and output["evalue"] == "cannot denoise at 0.5"
    assert aw.png_of(box.output) is None
    box.main_control.value = 0.1  # a good value renders the figure again
    assert _image(box).startswith(PNG_SIGNATURE)


def test_display_bundle_carries_the_current_figure_as_static_png():
    box = aw.noise_viewer(lambda level: {"noisy": _const_images([level])}, levels=[0.1, 0.9])
    box.main_control.value = 0.9
    bundle = box._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == _image(box)


def test_many_rerenders_create_no_pyplot_figures():
    box = aw.sample_viewer(lambda n, t: {"VAE": _const_images(torch.full((n,), t / 2))}, n=2, max_n=4)
    for t in (0.2, 0.4, 0.6, 0.8, 1.0):
        box.main_control.value = t
    assert plt.get_fignums() == []
