"""The notebooks' parameters: values read like papermill's `-p`, YAML 1.2, annotations, and the one set of rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from papermill.cli import _resolve_type

from aestudy import data as data_module
from aestudy.errors import ConfigError
from aestudy.parameters import (
    RULES,
    ParameterError,
    notebook_parameters,
    parse_annotation,
    parse_text,
    read_yaml,
    validate_parameter,
    validate_parameters,
)

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# ------------------------------------------------------------------------------------------ reading values


@pytest.mark.parametrize("text", ["None", "True", "False", "3", "-2", " 7 ", "1_000", "1e-3", "0.5", "3.0", "nan",
                                  "inf", "mnist", "none", "null", "true", "0x10", "1e", ""])
def test_command_line_values_are_read_exactly_as_papermill_reads_them(text):
    expected = _resolve_type(text)
    got = parse_text(text)
    assert type(got) is type(expected)
    assert got == expected or (got != got and expected != expected)  # nan == nan by identity of kind


def test_bracketed_values_are_python_lists_and_tuples():
    assert parse_text("[1e-3, 3e-3]") == [0.001, 0.003]
    assert parse_text("(2, 8)") == (2, 8)
    assert parse_text("[1e-3,") == "[1e-3,"  # not a literal: stays text, and the rules then refuse it


def test_yaml_files_are_read_with_the_core_schema():
    values = read_yaml("lr: 1e-3\nname: no\nseed: 010\nday: 2024-01-02\nood_dataset: None\nx: null\n"
                       "flag: True\nhexa: 0x10\nlrs: [1e-3, 3e-3]\nbig: .inf\n")
    assert values == {"lr": 0.001, "name": "no", "seed": 10, "day": "2024-01-02", "ood_dataset": None, "x": None,
                      "flag": True, "hexa": 16, "lrs": [0.001, 0.003], "big": float("inf")}
    assert type(values["lr"]) is float and type(values["seed"]) is int


def test_a_yaml_key_given_twice_is_an_error():
    with pytest.raises(yaml.YAMLError) as info:
        read_yaml("lr: 1e-3\nseed: 1\nlr: 1e-2\n")
    assert "key 'lr' is given twice (first on line 1)" in str(info.value)
    assert "line 3, column 1" in str(info.value)


# ------------------------------------------------------------------------------------------ annotations


@pytest.mark.parametrize(("text", "value", "expected"), [
    ("int | None", None, (True, None)),
    ("int | None", 3, (True, 3)),
    ("int | None", 2.5, (False, 2.5)),
    ("int", True, (False, True)),  # a bool is not a count
    ("float", 3, (True, 3.0)),
    ("float", float("nan"), (False, float("inf"))),
    ("str | None", "None", (True, "None")),
    ('Literal["smoke", "full"] | None', "smoke", (True, "smoke")),
    ('Literal["smoke", "full"] | None', "fast", (False, "fast")),
    ("Optional[str]", None, (True, None)),
    ("list[float]", [1, 2.5], (True, [1.0, 2.5])),
    ("tuple[float, ...]", [1e-3, 3e-3], (True, (1e-3, 3e-3))),
    ("tuple[float, ...]", ["a"], (False, ["a"])),
])
def test_annotations_admit_and_convert(text, value, expected):
    ok, converted = parse_annotation(text).convert(value)
    assert ok is expected[0]
    if ok:
        assert converted == expected[1] and type(converted) is type(expected[1])


def test_annotations_describe_what_they_admit():
    assert parse_annotation("int | None").describe() == "an integer or None"
    assert parse_annotation('Literal["a", "b"] | None').describe() == "one of 'a', 'b' or None"
    assert parse_annotation("list[float]").describe() == "a list (each item a finite number)"
    assert parse_annotation("SomeClass").describe() == "any value"


# ------------------------------------------------------------------------------------------ the rules


@pytest.mark.parametrize(("name", "value", "message"), [
    ("latent_dim", 0, "latent_dim=0 is invalid; it must be an integer >= 1."),
    ("latent_dim", 2.0, "latent_dim=2.0 is invalid; it must be an integer >= 1."),
    ("epochs", 0, "epochs=0 is invalid; it must be None (the profile's default) or an integer >= 1."),
    ("batch_size", "64", "batch_size='64' is invalid; it must be an integer >= 1."),
    ("lr", -1, "lr=-1 is invalid; it must be a finite number in (0, 10)."),
    ("lr", "1e-3", "lr='1e-3' is invalid; it must be a finite number in (0, 10)."),
    ("lr", float("inf"), "lr=inf is invalid; it must be a finite number in (0, 10)."),
    ("beta", -0.5, "beta=-0.5 is invalid; it must be a finite number >= 0."),
    ("n_seeds", 0, "n_seeds=0 is invalid; it must be None (the profile's default) or an integer >= 1."),
    ("beta_vae", 0, "beta_vae=0 is invalid; it must be a finite number > 0."),
    ("dae_noise", True, "dae_noise=True is invalid; it must be a finite number > 0."),
    ("train_noise", "mask", "train_noise='mask' is invalid; valid values: 'gaussian', 'salt_pepper'."),
    ("train_noise_level", 1.5, "train_noise_level=1.5 is invalid; it must be a finite number in (0, 1]."),
    ("anomaly_class", 10, "anomaly_class=10 is invalid; it must be an integer in [0, 9]."),
    ("device", "cuda:x", "device='cuda:x' is invalid; valid values: 'auto', 'cpu', 'cuda', 'mps' or 'cuda:N' "
                         "(a GPU index)."),
    ("profile", "None", "profile='None' is invalid; valid values: None, 'smoke', 'standard', 'full'."),
    ("dataset", None, "dataset=None is invalid; valid values: 'fashion-mnist', 'mnist', 'digits', "
                      "'photo-patches-32', 'photo-patches-64', 'cifar-10', or a path to a folder of images or an "
                      ".npz/.npy file."),
])
def test_each_rule_names_the_parameter_and_what_is_valid(name, value, message):
    with pytest.raises(ConfigError) as info:
        validate_parameter(name, value)
    assert str(info.value) == message


def test_the_string_none_is_not_none():
    """Item 4 of issue 12: `ood_dataset='None'` must not pass as a string and fail later, in a kernel."""
    with pytest.raises(ParameterError) as info:
        validate_parameters({"dataset": "fashion-mnist", "ood_dataset": "None"}, notebook="04_applications")
    assert str(info.value) == (
        "notebook 04_applications: ood_dataset='None' is invalid; valid values: None (digits, or fashion-mnist "
        "when training on digits) or one of 'mnist', 'digits' (a dataset other than the training dataset "
        "'fashion-mnist', with its image shape 1x28x28).")
    assert (info.value.parameter, info.value.notebook) == ("ood_dataset", "04_applications")
    assert validate_parameters({"ood_dataset": parse_text("None")}) == {"ood_dataset": None}


def test_cross_checks_read_the_dataset():
    with pytest.raises(ConfigError, match=r"^ood_dataset='mnist' is invalid; .* one of 'fashion-mnist', 'digits' "
                                          r"\(a dataset other than the training dataset 'mnist', with its image "):
        validate_parameters({"ood_dataset": "mnist", "dataset": "mnist"})  # order of the mapping does not matter
    assert validate_parameters({"dataset": "mnist", "ood_dataset": "fashion-mnist"}) == {
        "dataset": "mnist", "ood_dataset": "fashion-mnist"}
    # OOD images are scored by models of the training data, so they must share its image shape.
    with pytest.raises(ConfigError, match=r"^ood_dataset='cifar-10' is invalid; .* with its image shape 1x28x28\)"):
        validate_parameters({"dataset": "fashion-mnist", "ood_dataset": "cifar-10"})
    with pytest.raises(ConfigError, match=r"^anomaly_class=2 is invalid; it must be an integer in \[0, 1\]\.$"):
        validate_parameters({"dataset": "photo-patches-32", "anomaly_class": 2})  # a two-class dataset


def test_an_ood_dataset_missing_on_this_machine_is_refused_up_front(monkeypatch):
    rows = [row if row.name != "mnist" else data_module.DatasetListing(row.name, row.shape, row.num_classes,
                                                                       row.licence, False, "")
            for row in data_module.list_datasets()]
    monkeypatch.setattr(data_module, "list_datasets", lambda *args, **kwargs: rows)
    with pytest.raises(ConfigError) as info:
        validate_parameter("ood_dataset", "mnist", {"dataset": "fashion-mnist"})
    assert str(info.value) == ("ood_dataset='mnist' is invalid; mnist is not on this machine; fetch it first "
                               "(aestudy data fetch mnist) or use None.")


def test_values_come_back_plain_and_converted():
    got = validate_parameters({"lr": np.float32(0.5), "latent_dim": np.int64(8), "beta": 2, "epochs": None})
    assert got == {"lr": 0.5, "latent_dim": 8, "beta": 2.0, "epochs": None}
    assert [type(v) for v in got.values()] == [float, int, float, type(None)]


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        validate_parameters({"latnt_dim": 3}, notebook="01_autoencoder_basics")
    assert str(info.value) == ("notebook 01_autoencoder_basics: unknown parameter 'latnt_dim'; valid names: "
                               f"{', '.join(sorted(RULES))}.")


def test_a_notebook_annotation_narrows_the_rule():
    declared = {"device": parse_annotation('Literal["cpu", "cuda"]'), "flag": parse_annotation("bool")}
    assert validate_parameters({"device": "cpu", "flag": False}, declared=declared) == {"device": "cpu",
                                                                                       "flag": False}
    with pytest.raises(ConfigError) as info:
        validate_parameters({"device": "mps"}, notebook="x", declared=declared)
    assert str(info.value) == ("notebook x: device='mps' is invalid; the notebook declares `device: "
                               "Literal[\"cpu\", \"cuda\"]`, so it must be one of 'cpu', 'cuda'.")
    with pytest.raises(ConfigError, match=r"^flag=1 is invalid; the notebook declares `flag: bool`, so it must be "
                                          r"True or False\.$"):
        validate_parameters({"flag": 1}, declared=declared)


# ------------------------------------------------------------------------------------------ the notebooks


def test_every_notebook_parameter_has_a_rule_that_matches_its_declaration():
    assert NOTEBOOKS, "no notebooks found"
    for notebook in NOTEBOOKS:
        declared = notebook_parameters(notebook)
        assert declared, notebook.name
        for name, parameter in declared.items():
            assert name in RULES, f"{notebook.name}: {name} has no rule in aestudy.parameters.RULES"
            rule = parse_annotation(RULES[name].annotation)
            # The same kinds of value (a Literal counts as the type of its choices).
            kinds = {t for t in parameter.annotation.types} | {type(c) for c in parameter.annotation.choices}
            assert kinds == set(rule.types), (notebook.name, name)
            assert validate_parameter(name, parameter.default, {}) == parameter.default, (notebook.name, name)


def test_the_epochs_rule_admits_only_what_every_notebook_handles():
    """Item 7 of issue 12: 03 measures epochs to convergence, which needs at least one epoch's loss."""
    from aestudy.series.comparison import epochs_to_converge

    assert epochs_to_converge([0.7]) == 1  # the smallest run the rule admits (epochs=1, the smoke profile)
    with pytest.raises(ConfigError, match="needs a non-empty finite loss curve"):
        epochs_to_converge([])  # what epochs=0 would give; the rule refuses it first
    with pytest.raises(ConfigError, match=r"^epochs=0 is invalid"):
        validate_parameter("epochs", 0)
    assert validate_parameter("epochs", 1) == 1
