"""Notebook 04's experiments on tiny tensors and models: identities, bounds and exact error messages."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.decomposition import PCA
from torch import nn

from aestudy import anomaly, denoising, generation, latent, probes, stats
from aestudy.data import Dataset, DatasetInfo, DatasetListing, Split
from aestudy.errors import ConfigError
from aestudy.metrics import active_units
from aestudy.models import ModelConfig, build_model
from aestudy.noise import NoiseConfig
from aestudy.series import applications as s04
from aestudy.train import TrainConfig

INFO = DatasetInfo("toy", (1, 4, 4), 3, ("a", "b", "c"), "tests", "0" * 64, "none")


def _split(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand((n, 1, 4, 4), generator=g), torch.arange(n) % 3)


def _toy(n: int = 60) -> Dataset:
    return Dataset(_split(n, 0), _split(12, 1), _split(30, 2), INFO, None)


def _model(kind: str = "vae", num_classes: int = 0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(kind=kind, arch="mlp", input_shape=(1, 4, 4), latent_dim=2, hidden=(8,),
                      num_classes=num_classes)
    return build_model(cfg).eval()


class Identity(nn.Module):
    """A 'denoiser' that returns its input unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return x


# --- denoising --------------------------------------------------------------------------------------------

def test_denoising_noise_validates_with_parameter_names() -> None:
    assert denoising.denoising_noise("gaussian", 0.3) == NoiseConfig("gaussian", 0.3)
    with pytest.raises(ConfigError, match=r"train_noise='mask' is invalid; valid values: gaussian, salt_pepper\."):
        denoising.denoising_noise("mask", 0.3)
    for level in (0, 1.5, True, "0.3"):
        with pytest.raises(ConfigError, match=r"train_noise_level=.* is invalid; it must be a number in \(0, 1\]"):
            denoising.denoising_noise("salt_pepper", level)


def test_noise_grid_adds_the_training_noise_once() -> None:
    train = NoiseConfig("gaussian", 0.25)
    grid = denoising.noise_grid({"gaussian": (0.1, 0.25), "salt_pepper": (0.1,)}, train)
    assert grid == [NoiseConfig("gaussian", 0.1), NoiseConfig("gaussian", 0.25), NoiseConfig("salt_pepper", 0.1)]
    assert denoising.noise_grid({"salt_pepper": (0.1,)}, train)[0] == train


def test_corrupted_is_seeded() -> None:
    x = torch.full((5, 1, 4, 4), 0.5)
    noise = NoiseConfig("gaussian", 0.2)
    assert torch.equal(denoising.corrupted(x, noise, seed=3), denoising.corrupted(x, noise, seed=3))
    assert not torch.equal(denoising.corrupted(x, noise, seed=3), denoising.corrupted(x, noise, seed=4))


def test_denoising_table_identity_model_scores_like_the_noisy_input() -> None:
    clean = torch.rand((20, 1, 4, 4), generator=torch.Generator().manual_seed(0))
    noises = [NoiseConfig("gaussian", 0.0), NoiseConfig("salt_pepper", 0.3)]
    table = denoising.denoising_table({"identity": Identity(), "VAE": _model()}, clean, noises)
    assert len(table) == 2 * 3 and set(table["model"]) == {"noisy input", "identity", "VAE"}
    by = table.set_index(["model", "noise"])
    assert by.loc[("identity", "salt_pepper"), "psnr"] == by.loc[("noisy input", "salt_pepper"), "psnr"]
    # σ = 0 leaves the images clean: the MSE floor caps PSNR at 100 dB and SSIM is exactly 1.
    assert by.loc[("noisy input", "gaussian"), "psnr"] == pytest.approx(100.0)
    assert by.loc[("noisy input", "gaussian"), "ssim"] == pytest.approx(1.0)
    assert (table["ssim"] <= 1.0 + 1e-9).all() and (table["psnr_sem"] >= 0).all()


def test_denoising_rows_order_and_shapes() -> None:
    clean = torch.rand((3, 1, 4, 4))
    rows = denoising.denoising_rows({"AE": _model("ae")}, clean, NoiseConfig("salt_pepper", 0.5), seed=1)
    assert list(rows) == ["clean", "noisy", "AE"]
    assert torch.equal(rows["clean"], clean) and all(r.shape == clean.shape for r in rows.values())


# --- representations --------------------------------------------------------------------------------------

def test_pca_features_match_scikit_learn() -> None:
    train, test = torch.rand((40, 1, 4, 4)), torch.rand((10, 1, 4, 4))
    tr, te = probes.pca_features(train, test, 3)
    pca = PCA(n_components=3, random_state=0).fit(train.flatten(1).numpy())
    np.testing.assert_allclose(te, pca.transform(test.flatten(1).numpy()), rtol=1e-5, atol=1e-6)
    assert tr.shape == (40, 3)


def test_probe_table_separable_features_are_perfect_and_repeats_only_for_subsets() -> None:
    y_train, y_test = np.arange(60) % 3, np.arange(30) % 3
    train = np.eye(3)[y_train] * 5 + np.random.default_rng(0).normal(0, 0.01, (60, 3))
    test = np.eye(3)[y_test] * 5
    table = probes.probe_table({"codes": (train, test)}, y_train, y_test, label_counts=(6, None), repeats=2, k=1)
    assert (table["accuracy"] == 1.0).all()
    assert sorted(table.groupby("labels").size().items()) == [(6, 4), (60, 2)]  # 2 probes × (2 repeats | 1)
    with pytest.raises(ConfigError, match=r"repeats=0 is invalid"):
        probes.probe_table({"codes": (train, test)}, y_train, y_test, label_counts=(None,), repeats=0)


def test_embedding_2d_shapes_and_methods() -> None:
    x = np.random.default_rng(0).normal(size=(30, 5))
    np.testing.assert_allclose(probes.embedding_2d(x, method="pca"), PCA(2, random_state=0).fit_transform(x))
    assert probes.embedding_2d(torch.as_tensor(x), method="tsne", max_iter=250).shape == (30, 2)
    with pytest.raises(ConfigError, match=r"method='umap' is invalid; valid values: tsne, pca\."):
        probes.embedding_2d(x, method="umap")


# --- anomaly detection ------------------------------------------------------------------------------------

def test_check_class_names_the_valid_classes() -> None:
    assert anomaly.check_class(2, INFO) == 2
    for bad in (3, -1, True, 1.0):
        with pytest.raises(ConfigError, match=r"anomaly_class=.* is invalid for toy; valid values: 0\.\.2 "
                                              r"\(0 = a, 1 = b, 2 = c\)\."):
            anomaly.check_class(bad, INFO)


def test_without_class_removes_it_from_train_and_val_only() -> None:
    data = _toy()
    held = anomaly.without_class(data, 1)
    assert (held.train.labels != 1).all() and (held.val.labels != 1).all()
    assert len(held.train) == 40 and len(held.val) == 8
    assert held.test is data.test
    assert len({data.fingerprint, held.fingerprint, anomaly.without_class(data, 0).fingerprint}) == 3
    assert anomaly.without_class(data, 1).fingerprint == held.fingerprint


def test_split_by_class_partitions_the_split() -> None:
    split = _split(30, 0)
    normal, anomalous = anomaly.split_by_class(split, 0)
    assert len(normal) == 20 and len(anomalous) == 10
    assert torch.equal(anomalous, split.images[split.labels == 0])


def test_perturbed_dataset_sets_the_expected_share_of_pixels_to_0_or_1() -> None:
    data = Dataset(Split(torch.full((500, 1, 4, 4), 0.5), torch.zeros(500, dtype=torch.long)), _split(12, 1),
                   _split(30, 2), INFO, None)
    bg = anomaly.perturbed_dataset(data, 0.2, seed=0)
    changed = (bg.train.images != 0.5).double().mean()
    assert abs(float(changed) - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 8000)
    assert set(bg.train.images.unique().tolist()) == {0.0, 0.5, 1.0}
    assert bg.test is data.test and bg.fingerprint != data.fingerprint
    with pytest.raises(ConfigError, match=r"rate=1 is invalid; it must be a probability in \(0, 1\)\."):
        anomaly.perturbed_dataset(data, 1)


def test_likelihood_ratio_of_a_model_with_itself_is_zero() -> None:
    vae, other = _model(seed=0), _model(seed=1)
    x = torch.bernoulli(torch.full((8, 1, 4, 4), 0.5), generator=torch.Generator().manual_seed(0))
    assert torch.equal(anomaly.likelihood_ratio(vae, vae, x, k=3), torch.zeros(8))
    lr = anomaly.likelihood_ratio(vae, other, x, k=5, seed=2)
    nll = {m: anomaly.anomaly_scores(m, x, score="is_nll", k=5, generator=torch.Generator().manual_seed(2))
           for m in (vae, other)}
    torch.testing.assert_close(lr, nll[vae] - nll[other])


def test_compressed_bits_and_complexity_score() -> None:
    flat = torch.zeros((1, 1, 28, 28))
    noise = torch.rand((1, 1, 28, 28), generator=torch.Generator().manual_seed(0))
    bits = anomaly.compressed_bits(torch.cat([flat, noise]))
    assert bits[0] < bits[1] and 8 * 784 * 0.9 < bits[1] <= 8 * 784 + 1  # grey noise barely compresses
    nll = torch.full((2,), 300.0)
    score = anomaly.complexity_corrected(nll, torch.cat([flat, noise]))
    torch.testing.assert_close(score, nll.double() / math.log(2) - bits)
    assert score[0] > score[1]  # at equal likelihood, the simpler image is the more surprising one


def test_auroc_table_and_roc_curves_for_separated_scores() -> None:
    scores = {"perfect": (torch.zeros(5), torch.ones(4)), "reversed": (torch.ones(5), torch.zeros(4))}
    table = anomaly.auroc_table(scores)
    assert table.loc["perfect", "auroc"] == 1.0 and table.loc["reversed", "auroc"] == 0.0
    assert table.loc["perfect", "mean_anomalous"] == 1.0
    fpr, tpr, auc = anomaly.roc_curves(scores)["perfect"]
    assert auc == 1.0 and fpr[-1] == 1.0 and tpr[-1] == 1.0


def test_grey_level_summary() -> None:
    x = torch.tensor([0.0, 0.0, 0.6, 1.0]).view(1, 1, 2, 2)
    row = anomaly.grey_level_summary({"x": x}).loc["x"]
    assert (row["min"], row["max"], row["mean"]) == (0.0, 1.0, pytest.approx(0.4))
    assert (row["background_share"], row["bright_share"], row["shape"]) == (0.5, 0.5, "1×2×2")


def test_holdout_sweep_one_row_per_class_and_score() -> None:
    data = _toy()
    ae_cfg = ModelConfig(kind="ae", arch="mlp", input_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    vae_cfg = ModelConfig(kind="vae", arch="mlp", input_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    table = anomaly.holdout_sweep(data, (0, 2), ae_cfg, vae_cfg, TrainConfig(epochs=1, progress=False, device="cpu"),
                              k=5, progress=False)
    assert len(table) == 2 * 3 and set(table["class_name"]) == {"a", "c"}
    assert table["auroc"].between(0, 1).all()
    binary = Dataset(data.train, data.val, Split(torch.bernoulli(data.test.images), data.test.labels), INFO, "dynamic")
    with pytest.raises(ConfigError, match=r"needs grey_test= the grey-level test split"):
        anomaly.holdout_sweep(binary, (0,), ae_cfg, vae_cfg, TrainConfig(epochs=1, progress=False), progress=False)


# --- synthesis --------------------------------------------------------------------------------------------

def test_synthetic_dataset_is_fingerprinted_by_content() -> None:
    test = _split(30, 2)
    x, y = torch.rand((6, 1, 4, 4)), torch.arange(6) % 3
    a = generation.synthetic_dataset(x, y, test, INFO, name="cvae")
    assert a.fingerprint == generation.synthetic_dataset(x.clone(), y, test, INFO, name="cvae").fingerprint
    assert a.fingerprint != generation.synthetic_dataset(x * 0.5, y, test, INFO, name="cvae").fingerprint
    assert len(a.val) == 0 and a.test is test and a.info.name == "toy:cvae"


def test_conditional_samples_are_class_major() -> None:
    images, labels = generation.conditional_samples(_model(num_classes=3), 4, seed=0)
    assert images.shape == (12, 1, 4, 4) and labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert torch.equal(images, generation.conditional_samples(_model(num_classes=3), 4, seed=0)[0])
    with pytest.raises(ConfigError, match=r"needs a class-conditional model"):
        generation.conditional_samples(_model(), 4)


class FixedClassifier(nn.Module):
    """Predicts class (image mean > 0.5) and reports a fixed test accuracy."""

    test_accuracy = 0.75

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        bright = (images.flatten(1).mean(dim=1) > 0.5).long()
        return torch.nn.functional.one_hot(bright, 3).double()


def test_classifier_labelled_samples_and_tstr_table() -> None:
    ae = _model("ae")
    density = generation.fit_code_density(torch.randn(50, 2) * 30, kind="gaussian")
    images, labels = generation.classifier_labelled_samples(ae, FixedClassifier(), 7, seed=0, density=density)
    assert images.shape == (7, 1, 4, 4)
    # The AE's samples are its decoder applied to the fitted density's codes, never to N(0, I) draws.
    torch.testing.assert_close(images, generation.decoder_fn(ae)(density.sample(7, generator=torch.Generator()
                                                                                .manual_seed(0))))
    with pytest.raises(ConfigError, match=r"a deterministic AE has no prior to sample; pass density="):
        generation.classifier_labelled_samples(ae, FixedClassifier(), 7)
    assert torch.equal(labels, (images.flatten(1).mean(dim=1) > 0.5).long())
    balanced = (torch.rand((9, 1, 4, 4)), torch.arange(9) % 3)
    single = (torch.rand((9, 1, 4, 4)), torch.zeros(9, dtype=torch.long))
    table = generation.tstr_table({"balanced": balanced, "single": single}, _split(30, 2), INFO,
                           classifier_fn=lambda ds: FixedClassifier())
    assert table.loc["balanced", "label_entropy_bits"] == pytest.approx(math.log2(3))
    assert table.loc["single", "label_entropy_bits"] == 0.0
    assert (table["test_accuracy"] == 0.75).all() and (table["train_images"] == 9).all()
    test = _split(30, 2)
    _, correct = generation.tstr_results({"balanced": balanced}, test, INFO, classifier_fn=lambda ds: FixedClassifier())
    expected = (test.images.flatten(1).mean(dim=1) > 0.5).long() == test.labels
    assert correct["balanced"].dtype == bool and (correct["balanced"] == expected.numpy()).all()


def test_real_subset_draws_without_replacement() -> None:
    split = _split(30, 0)
    images, labels = generation.real_subset(split, 10, seed=1)
    assert len(images) == 10 and len({tuple(x.flatten().tolist()) for x in images}) == 10
    assert torch.equal(labels, split.labels[torch.randperm(30, generator=torch.Generator().manual_seed(1))[:10]])


# --- uncertainty ------------------------------------------------------------------------------------------

def test_posterior_variance_matches_the_encoder() -> None:
    vae, x = _model(), torch.rand((5, 1, 4, 4))
    with torch.no_grad():
        var = vae.encode(x).logvar.exp()
    torch.testing.assert_close(latent.posterior_variance(vae, x), var.mean(dim=1))
    torch.testing.assert_close(latent.posterior_variance(vae, x, dims=torch.tensor([1])), var[:, 1])
    with pytest.raises(ConfigError, match=r"posterior_variance needs a variational model"):
        latent.posterior_variance(_model("ae"), x)


def test_uncertainty_table_columns_and_bounds() -> None:
    vae = _model()
    grey_in, grey_out = torch.full((6, 1, 4, 4), 0.3), torch.full((4, 1, 4, 4), 0.7)
    sets = {"in": (grey_in, torch.bernoulli(grey_in)), "out": (grey_out, torch.bernoulli(grey_out))}
    table = s04.uncertainty_table(vae, sets)
    assert list(table.columns) == ["set", "posterior_var", "neg_elbo", "recon_mse"]
    assert table["set"].tolist() == ["in"] * 6 + ["out"] * 4
    assert (table["posterior_var"] > 0).all() and (table["neg_elbo"] > 0).all()
    # The error is against the grey levels the binarized images were drawn from (issue 14 (4)).
    expected = torch.cat([anomaly.recon_error(vae, b, g) for g, b in sets.values()])
    np.testing.assert_allclose(table["recon_mse"].to_numpy(), expected.numpy(), rtol=1e-6)


def test_replicate_models_and_paired_probe_rows() -> None:
    data = _toy()
    ae_cfg = ModelConfig(kind="ae", arch="mlp", input_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    vae_cfg = ModelConfig(kind="vae", arch="mlp", input_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    reps = s04.replicate_models(data, ae_cfg, vae_cfg, TrainConfig(epochs=1, progress=False, device="cpu"),
                                NoiseConfig("gaussian", 0.3), seeds=(0, 1))
    assert list(reps) == [0, 1] and all(list(m) == ["AE", "DAE", "VAE", "DVAE"] for m in reps.values())
    psnr = s04.replicate_denoising(reps, data.test.images, [NoiseConfig("gaussian", 0.1)])
    assert len(psnr) == 2 * 5 and s04.per_seed(psnr, "psnr", model="DAE").shape == (2,)
    pca = probes.pca_features(data.train.images, data.test.images, 2)
    table = s04.replicate_probes(reps, data.train.images, data.train.labels, data.test.images, data.test.labels,
                                 label_counts=(6, None), pca=pca)
    assert len(table) == 2 * 2 * 4 and table["accuracy"].between(0, 1).all()
    # Seed s probes PCA on the labelled draw of seed s: the same value the plain probe gives.
    assert s04.per_seed(table, "accuracy", representation="PCA", labels=6)[1] == pytest.approx(
        probes.linear_probe_accuracy(pca[0], data.train.labels, pca[1], data.test.labels, n_labels=6, seed=1,
                                     max_iter=200))


def test_spearman_table_monotone_pairs() -> None:
    import pandas as pd

    df = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "b": [1.0, 4.0, 9.0, 16.0], "c": [4.0, 3.0, 2.0, 1.0]})
    table = stats.spearman_table(df, [("a", "b"), ("a", "c")])
    assert table["rho"].tolist() == [pytest.approx(1.0), pytest.approx(-1.0)]
    assert (table["n"] == 4).all()
    with pytest.raises(ConfigError, match=r"columns \['z'\] are not in the table"):
        stats.spearman_table(df, [("a", "z")])


# --- out-of-distribution inputs ---------------------------------------------------------------------------

def test_unavailable_reason_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [DatasetListing("mnist", (1, 28, 28), 10, "CC BY-SA 3.0", False, ""),
            DatasetListing("digits", (1, 28, 28), 10, "CC BY 4.0", True, "bundled with scikit-learn")]
    monkeypatch.setattr(anomaly, "list_datasets", lambda: rows)
    assert anomaly.unavailable_reason("digits") is None
    assert anomaly.unavailable_reason("mnist").startswith(
        "mnist is not on this machine; with internet access: aestudy data fetch mnist")


def test_ood_images_digits_are_28x28_and_binarized_with_a_seed() -> None:
    grey, binary = anomaly.ood_images("digits", n=50, seed=0)
    assert grey.shape == binary.shape == (50, 1, 28, 28)
    assert float(grey.min()) >= 0.0 and float(grey.max()) <= 1.0
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(binary, anomaly.ood_images("digits", n=50, seed=0)[1])


def test_ood_score_sets_background_equal_to_model_gives_zero_ratio() -> None:
    vae, ae = _model(), _model("ae")
    g = torch.Generator().manual_seed(0)
    inside = (torch.rand((6, 1, 4, 4), generator=g), torch.bernoulli(torch.full((6, 1, 4, 4), 0.3), generator=g))
    outside = (torch.rand((5, 1, 4, 4), generator=g), torch.bernoulli(torch.full((5, 1, 4, 4), 0.7), generator=g))
    scores = anomaly.ood_score_sets(vae=vae, background=vae, ae=ae, inside=inside, outside=outside, k=4)
    assert list(scores) == ["AE recon error", "VAE −ELBO", "VAE IS-NLL", "likelihood ratio",
                            "complexity-corrected IS-NLL"]
    assert torch.equal(scores["likelihood ratio"][0], torch.zeros(6))
    nll_in, nll_out = scores["VAE IS-NLL"]
    torch.testing.assert_close(scores["complexity-corrected IS-NLL"][1],
                               nll_out.double() / math.log(2) - anomaly.compressed_bits(outside[1]))
    assert [len(a) for a, _ in scores.values()] == [6] * 5 and [len(b) for _, b in scores.values()] == [5] * 5


def test_mnist_layout_centres_a_box_on_a_black_canvas() -> None:
    x = torch.ones((2, 1, 8, 8))
    out = anomaly.mnist_layout(x)
    assert out.shape == (2, 1, 28, 28)
    torch.testing.assert_close(out[:, :, 4:24, 4:24], torch.ones((2, 1, 20, 20)))
    assert float(out.sum()) == pytest.approx(2 * 20 * 20)
    with pytest.raises(ConfigError, match=r"box=21, side=28 are invalid"):
        anomaly.mnist_layout(x, box=21)


def test_ood_images_mnist_layout_is_for_digits_only() -> None:
    grey, _ = anomaly.ood_images("digits", n=20, layout="mnist")
    assert grey.shape == (20, 1, 28, 28) and grey[:, :, :4].eq(0).all() and grey[:, :, :, 24:].eq(0).all()
    with pytest.raises(ConfigError, match=r"layout='mnist' is invalid for 'fashion-mnist'"):
        anomaly.ood_images("fashion-mnist", n=20, layout="mnist")


# --- issue 14: the claims that were bare booleans, now verdicts over training seeds -----------------------------

def _per_seed(column: str, values) -> pd.DataFrame:
    return pd.DataFrame({"seed": range(len(values)), column: values})


def test_holdout_seed_aurocs_are_section_3s_aurocs_per_seed_and_the_worst_score_decides() -> None:
    """04.anomaly-scores-beat-chance: per seed, the AUROCs of the pair trained without the class (the same numbers
    `model_scorers` gives for those models); the verdict tests each seed's WORST score against 0.5."""
    data = _toy()
    ae_cfg = ModelConfig(kind="ae", arch="mlp", input_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    vae_cfg = ModelConfig(kind="vae", arch="mlp", input_shape=(1, 4, 4), latent_dim=2, hidden=(8,))
    binary = Split(torch.bernoulli(data.test.images, generator=torch.Generator().manual_seed(0)), data.test.labels)
    cfg = TrainConfig(epochs=1, progress=False, device="cpu")
    table = s04.holdout_seed_aurocs(data, 1, ae_cfg, vae_cfg, cfg, (0, 1), (data.test, binary), k=5, seed=0)
    assert table[["seed", "score"]].values.tolist() == [[s, n] for s in (0, 1)
                                                        for n in ("AE recon error", "VAE −ELBO", "VAE IS-NLL")]
    held = anomaly.holdout_models(data, 1, ae_cfg, vae_cfg, replace(cfg, seed=1))  # seed 1's pair, from the cache
    scores = anomaly.score_sets(anomaly.model_scorers(held.ae.model.cpu(), held.vae.model.cpu(), k=5, seed=0),
                                anomaly.split_by_class(data.test, 1)[0:1] + anomaly.split_by_class(binary, 1)[0:1],
                                anomaly.split_by_class(data.test, 1)[1:] + anomaly.split_by_class(binary, 1)[1:])
    expected = anomaly.auroc_table(scores)["auroc"]
    got = table[table["seed"] == 1].set_index("score")["auroc"]
    np.testing.assert_allclose(got[expected.index].to_numpy(), expected.to_numpy())
    good = pd.DataFrame({"seed": [0, 0, 1, 1, 2, 2], "score": ["a", "b"] * 3,
                         "auroc": [0.9, 0.8, 0.91, 0.82, 0.88, 0.79]})
    assert s04.anomaly_beats_chance(good).verdict == "holds"
    one_at_chance = good.assign(auroc=[0.9, 0.50, 0.91, 0.51, 0.88, 0.49])  # one score no better than chance
    assert s04.anomaly_beats_chance(one_at_chance).verdict == "does not hold"


def test_likelihood_seed_table_reproduces_section_5s_numbers_per_seed() -> None:
    """04.ood-likelihood-failure, 04.variance-tracks-error, 04.neg-elbo-tracks-error, 04.variance-flags-ood: the
    per-seed columns are the IS-NLL AUROC, Spearman ρ of `uncertainty_table`'s columns and the variance AUROC."""
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    inside_grey, outside_grey = torch.rand((40, 1, 4, 4), generator=g), torch.rand((30, 1, 4, 4), generator=g) * 0.3
    inside = (inside_grey, torch.bernoulli(inside_grey, generator=g))
    outside = (outside_grey, torch.bernoulli(outside_grey, generator=g))
    models = {s: _model("vae", seed=s) for s in (0, 1)}
    table = s04.likelihood_seed_table(models, inside, outside, k=5, seed=0)
    assert table["seed"].tolist() == [0, 1]
    for s, model in models.items():
        row = table[table["seed"] == s].iloc[0]
        _, unit_var = active_units(model, inside[1])
        dims = torch.nonzero(unit_var > 0.01).flatten()
        unc = s04.uncertainty_table(model, {"in": inside}, dims=dims if len(dims) else None, seed=0)
        assert row["rho_var_error"] == pytest.approx(spearmanr(unc["posterior_var"], unc["recon_mse"]).statistic)
        assert row["rho_elbo_error"] == pytest.approx(spearmanr(unc["neg_elbo"], unc["recon_mse"]).statistic)
        nll = [anomaly.anomaly_scores(model, x[1], score="is_nll", k=5, generator=torch.Generator().manual_seed(0))
               for x in (inside, outside)]
        assert row["auroc_is_nll"] == pytest.approx(anomaly.anomaly_auroc(nll[0].numpy(), nll[1].numpy()))
        assert 0 <= row["auroc_var"] <= 1
    # The verdicts: a failure is an AUROC BELOW chance; correlations against 0 with min effect 0.1.
    assert s04.ood_likelihood_failure(_per_seed("auroc_is_nll", [0.30, 0.33, 0.28, 0.31, 0.35])).verdict == "holds"
    assert s04.ood_likelihood_failure(_per_seed("auroc_is_nll", [0.80, 0.83, 0.78, 0.81, 0.85])).verdict == \
        "does not hold"
    assert s04.tracks_error(_per_seed("rho_elbo_error", [0.40, 0.42, 0.39, 0.41]), "rho_elbo_error").verdict == "holds"
    assert s04.tracks_error(_per_seed("rho_var_error", [-0.39, -0.41, -0.38, -0.40]), "rho_var_error").verdict == \
        "does not hold"
    assert s04.variance_flags_ood(_per_seed("auroc_var", [0.31, 0.29, 0.30])).verdict == "does not hold"
    assert s04.variance_flags_ood(_per_seed("auroc_var", [0.71])).verdict == "inconclusive"  # one seed (smoke)


class _Oracle(nn.Module):
    """A 'classifier' that reads the class off a sample: images of class c are filled with c / 10 (see Painter)."""

    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot((images.flatten(1).mean(dim=1) * 10).round().long(), 3).double()


def test_cvae_agreement_counts_samples_of_the_requested_class_and_the_verdicts_read_it() -> None:
    """04.cvae-label-matters / 04.cvae-follows-label: agreement is 1 for a model whose samples show their label
    (read by an oracle classifier) and chance (1/K) for one that ignores it; the verdicts test against 1/K (min
    effect 1/K) and against 0.5 (min effect 0.05)."""

    class Painter(nn.Module):  # a class-conditional "model" whose samples are its label / 10 everywhere
        config = ModelConfig(kind="vae", arch="mlp", input_shape=(1, 4, 4), latent_dim=2, hidden=(8,), num_classes=3)

        def __init__(self, follow: bool) -> None:
            super().__init__()
            self.follow, self.dummy = follow, nn.Parameter(torch.zeros(1))

        def sample(self, n, *, y, generator=None, temperature=1.0):
            shown = y if self.follow else torch.zeros_like(y)
            return (shown.double() / 10).view(-1, 1, 1, 1).expand(n, 1, 4, 4).float()

    table = s04.cvae_agreement({0: Painter(True), 1: Painter(False)}, _Oracle(), 4, seed=0)
    assert table.set_index("seed")["agreement"].to_dict() == {0: 1.0, 1: pytest.approx(1 / 3)}
    high, low = _per_seed("agreement", [0.71, 0.68, 0.74, 0.70]), _per_seed("agreement", [0.12, 0.10, 0.11, 0.09])
    assert s04.cvae_label_matters(high, 10).verdict == "holds" and s04.cvae_follows_label(high).verdict == "holds"
    assert s04.cvae_label_matters(low, 10).verdict == "does not hold"
    assert s04.cvae_follows_label(low).verdict == "does not hold"


def test_likelihood_beats_recon_is_paired_over_seeds_and_needs_both_scores():
    rows = lambda vae, ae: [{"seed": s, "score": name, "auroc": v}  # noqa: E731 - a table builder
                            for s, (a, b) in enumerate(zip(vae, ae, strict=True))
                            for name, v in (("VAE IS-NLL", a), ("AE recon error", b), ("VAE −ELBO", 0.5))]
    # A seed-shared offset (the hard seeds are hard for both) cancels in the paired test: +0.1 every seed holds.
    base = [0.55, 0.70, 0.62, 0.80, 0.66]
    jitter = [0.004, -0.003, 0.001, -0.002, 0.0]
    shifted = lambda by: [b + by + j for b, j in zip(base, jitter, strict=True)]  # noqa: E731
    better = s04.likelihood_beats_recon(pd.DataFrame(rows(shifted(0.1), base)))
    assert better.verdict == "holds" and better.effect == pytest.approx(0.1) and better.n_seeds == (5, 5)
    assert "paired" in better.test
    worse = s04.likelihood_beats_recon(pd.DataFrame(rows(shifted(-0.1), base)))
    assert worse.verdict == "does not hold"
    with pytest.raises(ConfigError, match=r"no VAE IS-NLL score; score the held-out replicates with k set"):
        s04.likelihood_beats_recon(pd.DataFrame([r for r in rows(base, base) if r["score"] != "VAE IS-NLL"]))


def test_ood_fixes_per_seed_are_computed_from_each_replicates_own_is_nll_and_background() -> None:
    """04.ood-likelihood-ratio-helps and 04.ood-complexity-correction-helps over seeds: the likelihood-ratio and
    complexity-corrected AUROCs of a replicate use the same IS-NLL draws as its raw AUROC and its own background."""
    g = torch.Generator().manual_seed(1)
    inside_grey, outside_grey = torch.rand((40, 1, 4, 4), generator=g), torch.rand((30, 1, 4, 4), generator=g) * 0.3
    inside = (inside_grey, torch.bernoulli(inside_grey, generator=g))
    outside = (outside_grey, torch.bernoulli(outside_grey, generator=g))
    models = {s: _model("vae", seed=s) for s in (0, 1)}
    backgrounds = {s: _model("vae", seed=10 + s) for s in (0, 1)}
    table = s04.likelihood_seed_table(models, inside, outside, k=5, seed=0, backgrounds=backgrounds)
    for s in (0, 1):
        row = table[table["seed"] == s].iloc[0]
        draw = lambda m: [anomaly.anomaly_scores(m, x[1], score="is_nll", k=5,  # noqa: E731
                                                 generator=torch.Generator().manual_seed(0)) for x in (inside, outside)]
        nll, bg = draw(models[s]), draw(backgrounds[s])
        ratio = [(n - b).numpy() for n, b in zip(nll, bg, strict=True)]
        corrected = [anomaly.complexity_corrected(n, x[1]).numpy() for n, x in zip(nll, (inside, outside), strict=True)]
        assert row["auroc_likelihood_ratio"] == pytest.approx(anomaly.anomaly_auroc(*ratio))
        assert row["auroc_complexity_corrected"] == pytest.approx(anomaly.anomaly_auroc(*corrected))
    assert "auroc_likelihood_ratio" not in s04.likelihood_seed_table(models, inside, outside, k=5).columns
    # The verdict: the fix's AUROC minus the raw one, paired by seed, min effect 0.02.
    per_seed = pd.DataFrame({"seed": range(5), "auroc_is_nll": [0.30, 0.35, 0.28, 0.33, 0.31],
                             "auroc_likelihood_ratio": [0.52, 0.58, 0.49, 0.57, 0.50],
                             "auroc_complexity_corrected": [0.25, 0.31, 0.22, 0.27, 0.26]})
    helps = s04.ood_fix_helps(per_seed, "likelihood ratio")
    assert helps.verdict == "holds" and helps.n_seeds == (5, 5) and "paired" in helps.test
    assert s04.ood_fix_helps(per_seed, "complexity-corrected IS-NLL").verdict == "does not hold"
    with pytest.raises(ConfigError, match=r"fix='likelihood ratio' has no per-seed AUROC in the table"):
        s04.ood_fix_helps(per_seed.drop(columns="auroc_likelihood_ratio"), "likelihood ratio")


def test_tstr_verdicts_pair_accuracies_by_seed_and_pick_the_best_synthetic_source_by_its_mean() -> None:
    acc = {s04.TSTR_REAL: [0.80, 0.82, 0.79, 0.81, 0.80], s04.TSTR_CVAE: [0.70, 0.73, 0.69, 0.72, 0.71],
           s04.TSTR_AE_GMM: [0.74, 0.77, 0.73, 0.75, 0.76]}
    table = pd.DataFrame([{"seed": s, "source": name, "test_accuracy": v[s]} for name, v in acc.items()
                          for s in range(5)])
    cvae_vs_ae, real_vs_best, best = s04.tstr_verdicts(table)
    assert best == s04.TSTR_AE_GMM
    assert cvae_vs_ae.verdict == "does not hold" and cvae_vs_ae.effect == pytest.approx(-0.04)
    assert real_vs_best.verdict == "holds" and real_vs_best.n_seeds == (5, 5) and "paired" in real_vs_best.test
    with pytest.raises(ConfigError, match=r"the CVAE seeds \[0, 1\] and the AE seeds \[0\] must be the same"):
        s04.tstr_seed_table({0: None, 1: None}, {0: None}, None, None, None, None, 10, classifier_fn=None)
