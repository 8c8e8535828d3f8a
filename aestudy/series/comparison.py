"""Notebook 03 (AE vs VAE, measured): AE, VAE, DAE and β-VAE trained under one protocol and compared.

Every model shares the backbone, latent size, decoder likelihood, optimiser, epochs and data (`Protocol`);
the DAE differs only by corrupted inputs, the β-VAE only by its KL weight. Each measurement returns a tidy
DataFrame with one row per model and seed; `aestudy.stats` aggregates the seeds, and the AE-vs-VAE table is
built from named facts and the claims' own verdicts.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from aestudy.data import Dataset, binarize_images
from aestudy.ensemble import fit_many
from aestudy.errors import ConfigError, TrainingDivergedError
from aestudy.evaluation import EVAL_BATCH, batched, generator_on, model_device, reconstruct
from aestudy.generation import PRIOR, gap_closed
from aestudy.latent import (
    aggregate_posterior_sample,
    interpolation_smoothness,
    mmd_to_prior,
    path_off_manifold,
    path_realism,
    prior_holes,
    random_pairs,
    reference_scale,
    relative_active_units,
)
from aestudy.metrics import reconstruction_metrics, sharpness
from aestudy.models import ModelConfig, build_model, count_parameters
from aestudy.noise import NoiseConfig, corrupt
from aestudy.objectives import loss_terms
from aestudy.series import shared
from aestudy.stats import MIN_DECISIVE_REPLICATES, Verdict, holm, per_seed
from aestudy.train import TrainConfig, TrainResult, train_or_load
from aestudy.validate import as_float, as_int

MODEL_NAMES: tuple[str, ...] = ("AE", "VAE", "DAE", "β-VAE")
TABLE_ASPECTS: tuple[str, ...] = ("Purpose", "Architecture", "Latent space", "Loss function", "Output",
                                  "Use cases", "Advantages", "Limitations")
TABLE_COLUMNS: tuple[str, ...] = ("Aspect", "AE", "VAE", "Evidence", "Verdict")
COLLAPSED_MAX_UNITS = 1  # a run whose code keeps at most this many (relatively) active units has collapsed
EX_POST: tuple[str, ...] = ("AE", "VAE")  # models that also get ex-post code densities (the VAE: the control)
Results = Mapping[tuple[str, int], TrainResult]
Spec = tuple[ModelConfig, TrainConfig]

SIZES = {  # knob: (smoke, standard, full)
    "limit": shared.SIZES["limit"],  # training images of the main models (None = all 55,000)
    "val_size": (500, 5000, 5000),
    "epochs": shared.SIZES["vae_epochs"],  # every compared model: its VAE is the reference VAE
    "n_seeds": (2, 5, 10),  # seed replicates per model behind every claim (the `n_seeds` parameter overrides)
    "rep_epochs": (1, 4, 50),  # epochs of the seed replicates, trained on the `subset` training images
    # Every seed and model scores the same images, so image noise is shared by all replicates and the seed-to-seed
    # spread, not the image count, limits a claim: 2,000 keep the standard profile's evaluation of 20 replicates
    # affordable (FID with precision/recall costs O(n²); FID's bias at n = 2,000 is the same for every source).
    "n_eval": (1000, 2000, 10000),  # test (and train) images scored
    "n_gen": (500, 2000, 10000),  # samples per source for FID-FMNIST
    "n_latent": (500, 2000, 5000),  # codes for MMD, prior samples for holes and blur
    "n_pairs": (20, 200, 500),  # image pairs for interpolation smoothness
    "subset": (1000, 10000, None),  # training images of the seed replicates, the 2-D models and the tuning grid
    "latent2_epochs": (1, 5, 30),
    "tune_epochs": (1, 2, 10),
    "tune_lrs": ((1e-3, 3e-3), (3e-4, 1e-3, 3e-3), (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)),
    "tune_betas": ((4.0,), (2.0, 8.0), (0.5, 2.0, 4.0, 8.0, 16.0)),
    "tune_seeds": (2, 5, 10),  # seeds of the tuning grid (each seed gives one spread per model)
    "timing_rounds": (2, 20, 40),  # interleaved rounds of step timing (sign test)
    "timing_steps": (3, 5, 10),  # training steps per model and round
}



@dataclass(frozen=True)
class Protocol:
    """What the compared models share (backbone, latent size, likelihood) and what sets DAE and β-VAE apart."""

    latent_dim: int = 16
    arch: str = "mlp"
    likelihood: str = "bernoulli"
    input_shape: tuple[int, int, int] = (1, 28, 28)
    hidden: tuple[int, ...] = (512, 256)  # MLP widths (ModelConfig's default, as in notebooks 01 and 02)
    beta_vae: float = 4.0  # KL weight of the β-VAE column
    dae_noise: float = 0.3  # σ of the Gaussian input corruption the DAE learns to undo
    n_seeds: int = 2  # training seeds per model (base seed, base seed + 1, ...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "beta_vae", as_float(self.beta_vae, "beta_vae", low=0, low_open=True,
                                                          meaning="the β-VAE's KL weight"))
        object.__setattr__(self, "dae_noise", as_float(self.dae_noise, "dae_noise", low=0, low_open=True,
                                                           meaning="the σ of the DAE's Gaussian input noise"))
        object.__setattr__(self, "n_seeds", as_int(self.n_seeds, "n_seeds", low=1))
        self.model_config("vae")  # ModelConfig validates latent_dim, arch, likelihood and input_shape

    def model_config(self, kind: str, *, latent_dim: int | None = None) -> ModelConfig:
        """The shared architecture as an AE (`kind="ae"`) or a VAE (`kind="vae"`)."""
        return ModelConfig(kind=kind, arch=self.arch, latent_dim=latent_dim or self.latent_dim, hidden=self.hidden,
                           likelihood=self.likelihood, input_shape=tuple(self.input_shape))

    def specs(self, train_cfg: TrainConfig) -> dict[str, Spec]:
        """(model config, training config) of AE, VAE, DAE and β-VAE: one optimiser, schedule and data."""
        base = replace(train_cfg, beta=1.0, noise=None)
        return {
            "AE": (self.model_config("ae"), base),
            "VAE": (self.model_config("vae"), base),
            "DAE": (self.model_config("ae"), replace(base, noise=NoiseConfig("gaussian", float(self.dae_noise)))),
            "β-VAE": (self.model_config("vae"), replace(base, beta=float(self.beta_vae))),
        }

    def seeds(self, base_seed: int) -> tuple[int, ...]:
        """The training seeds: `base_seed`, `base_seed + 1`, … (`n_seeds` of them)."""
        return tuple(base_seed + k for k in range(self.n_seeds))


def train_all(specs: Mapping[str, Spec], data: Dataset, seeds: Sequence[int]) -> dict[tuple[str, int], TrainResult]:
    """Every model of `specs` trained (or loaded from the cache) once per seed, keyed by (name, seed).

    The models are returned on the CPU in eval mode: every evaluation here is batched and cheap, and CPU
    generators then drive all sampling, so results do not depend on the training device's RNG.
    """
    trained: dict[tuple[str, int], TrainResult] = {}
    for name, (model_cfg, train_cfg) in specs.items():  # a spec's seeds train as one batched computation
        runs = fit_many(model_cfg, [replace(train_cfg, seed=seed) for seed in seeds], data)
        trained.update({(name, seed): res for seed, res in zip(seeds, runs, strict=True)})
    results = {(name, seed): trained[name, seed] for seed in seeds for name in specs}
    for res in results.values():
        res.model.cpu().eval()
    return results


def evaluation_images(grey: Dataset, binary: Dataset, n: int, *, seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The images every model is scored on: (x_test, y_test, x_train, y_train), at most `n` of each split.

    x = the model's input (binarized test images; training images binarized once with `seed`), y = the
    grey-level images its decoder mean estimates (the scoring targets).
    """
    n = min(n, len(binary.test), len(binary.train))
    x_train = fixed_binarization(binary.train.images[:n], seed=seed)
    return binary.test.images[:n], grey.test.images[:n], x_train, binary.train.images[:n]


def fixed_binarization(images: Tensor, *, seed: int) -> Tensor:
    """One Bernoulli(x) draw of grey images with a fixed seed (the input a Bernoulli model sees at test time)."""
    return binarize_images(images, torch.Generator().manual_seed(seed))


def reconstruction_table(results: Results, inputs: Tensor, targets: Tensor) -> pd.DataFrame:
    """Test MSE / PSNR / SSIM per (model, seed)."""
    return pd.DataFrame([{"model": name, "seed": seed, **reconstruction_metrics(res.model, inputs, targets=targets)}
                         for (name, seed), res in results.items()])


def latent_table(results: Results, images: Tensor, classifier: Any, *, n: int, n_pairs: int, steps: int = 10,
                 seed: int = 0, real: Tensor | None = None, held_out: Tensor | None = None) -> pd.DataFrame:
    """Per (model, seed): MMD² of q(z) vs N(0, I), prior holes, path roughness, off-manifold distance and realism
    of latent paths, relatively active units.

    mmd: `latent.mmd_to_prior`, one kernel fixed by the prior for every model; off_manifold:
    `latent.path_off_manifold` in the classifier's features against `real` images (grey, held out), scaled by the
    distance of `held_out` real images to them (both default to halves of `images`); active_units:
    `latent.relative_active_units` (scale-free, so AE and VAE codes count alike).
    """
    rows = []
    a, b = random_pairs(len(images), n_pairs, seed=seed)
    if real is None or held_out is None:
        half = len(images) // 2
        real, held_out = images[:half], images[half:]
    reference = classifier.embed(real)
    scale = reference_scale(reference, classifier.embed(held_out))
    for (name, model_seed), res in results.items():
        model = res.model
        gen = torch.Generator().manual_seed(seed + model_seed)
        q = aggregate_posterior_sample(model, images[:n], generator=gen)
        rows.append({"model": name, "seed": model_seed, "mmd": mmd_to_prior(q, generator=gen),
                     "holes": prior_holes(model, classifier, n=n, generator=gen),
                     "roughness": interpolation_smoothness(model, images[a], images[b], steps=steps),
                     "off_manifold": path_off_manifold(model, classifier.embed, images[a], images[b], reference,
                                                       scale=scale, steps=steps),
                     "path_realism": path_realism(model, classifier, images[a], images[b], steps=steps),
                     "active_units": relative_active_units(model, images)})
    return pd.DataFrame(rows)


def objective_parts(model: nn.Module, images: Tensor, train_cfg: TrainConfig, *, seed: int = 0,
                    batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """The model's training objective and its reconstruction term on `images`, nats per image, fixed randomness.

    "loss": the objective as trained (β, input noise); "recon": its reconstruction NLL −log p(x|z) alone, one
    z ~ q(z|x) per image for a VAE (the term the objective averages), the decoded code for an AE. The recon term
    is the like-for-like measure of fit across AE and VAE: the VAE's loss also holds its KL term, which is not a
    fit to the images and dilutes a train→test gap.
    """
    gen = generator_on(seed, model_device(model))

    def batch_parts(x: Tensor) -> Tensor:  # (1, 2): the batch's summed loss and recon
        inputs = x if train_cfg.noise is None else corrupt(x, train_cfg.noise, generator=gen)
        loss, parts = loss_terms(model, inputs, beta=train_cfg.beta, target=x, generator=gen)
        return torch.stack([loss.double(), parts["recon"].double()]).reshape(1, 2) * len(x)

    total = batched(model, batch_parts, images, batch_size=batch_size).sum(dim=0) / len(images)
    return {"loss": float(total[0]), "recon": float(total[1])}


def own_loss(model: nn.Module, images: Tensor, train_cfg: TrainConfig, *, seed: int = 0,
             batch_size: int = EVAL_BATCH) -> float:
    """The model's training objective on `images`, nats per image, with fixed randomness (β, input noise as trained)."""
    return objective_parts(model, images, train_cfg, seed=seed, batch_size=batch_size)["loss"]


def generalisation_table(results: Results, specs: Mapping[str, Spec], *, train_inputs: Tensor,
                         train_targets: Tensor, test_inputs: Tensor, test_targets: Tensor,
                         seed: int = 0) -> pd.DataFrame:
    """Per (model, seed): train and test reconstruction MSE, own loss and its reconstruction NLL term ("recon",
    nats per image), gaps (test − train) and relative gaps. `train_inputs` must be images the models trained on.

    The like-for-like gap across AE and VAE is `recon_gap` (nats per image): the VAE's `loss_gap` also holds the
    KL term's gap, which is not a fit to the images (issue 14, item 3).
    """
    rows = []
    for (name, model_seed), res in results.items():
        train_cfg = specs[name][1]
        row: dict[str, Any] = {"model": name, "seed": model_seed}
        for part, inputs, targets in (("train", train_inputs, train_targets), ("test", test_inputs, test_targets)):
            row[f"{part}_mse"] = reconstruction_metrics(res.model, inputs, targets=targets)["mse"]
            parts = objective_parts(res.model, inputs, train_cfg, seed=seed)
            row[f"{part}_loss"], row[f"{part}_recon"] = parts["loss"], parts["recon"]
        for what in ("mse", "loss", "recon"):
            row[f"{what}_gap"] = row[f"test_{what}"] - row[f"train_{what}"]
            row[f"{what}_gap_rel"] = row[f"{what}_gap"] / abs(row[f"train_{what}"])
        rows.append(row)
    return pd.DataFrame(rows)


def epochs_to_converge(val_loss: Sequence[float], *, tolerance: float = 0.01) -> int:
    """The first epoch (1-based) whose validation loss is within `tolerance` (relative) of the run's best."""
    losses = np.asarray(val_loss, dtype=float)
    if losses.size == 0 or not np.isfinite(losses).all():
        raise ConfigError(f"epochs_to_converge needs a non-empty finite loss curve; got {losses.tolist()}.")
    best = losses.min()
    return int(np.argmax(losses <= best + tolerance * abs(best))) + 1


def cost_table(results: Results) -> pd.DataFrame:
    """Per (model, seed): parameters, median seconds per epoch (history), epochs to converge, cached or not."""
    return pd.DataFrame([{"model": name, "seed": seed, "parameters": count_parameters(res.model),
                          "seconds_per_epoch": float(res.history["seconds"].median()),
                          "epochs_to_converge": epochs_to_converge(res.history["val_loss"]),
                          "epochs": len(res.history), "from_cache": res.from_cache}
                         for (name, seed), res in results.items()])


def step_timing(specs: Mapping[str, Spec], batch: Tensor, *, rounds: int = 5, steps: int = 10,
                seed: int = 0, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Seconds per training step (forward, backward, Adam) of fresh models, interleaved round by round.

    Interleaving (each round times every model once, in a rotated order) spreads a drifting machine load
    over all models alike, so the medians compare the models, not the moments they ran.
    """
    rounds, steps = as_int(rounds, "rounds", low=1), as_int(steps, "steps", low=1)
    torch.manual_seed(seed)
    models = {name: build_model(model_cfg).to(device).train() for name, (model_cfg, _) in specs.items()}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-3) for name, m in models.items()}
    gen = torch.Generator(device=device).manual_seed(seed)
    x = batch.to(device)
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    names = list(specs)
    rows = []
    for r in range(rounds + 1):  # round 0 warms up allocators and kernels; it is not recorded
        for name in names[r % len(names):] + names[:r % len(names)]:
            train_cfg = specs[name][1]
            synchronize()  # CUDA runs asynchronously: time finished work only
            start = time.perf_counter()
            for _ in range(steps):
                inputs = x if train_cfg.noise is None else corrupt(x, train_cfg.noise, generator=gen)
                loss, _ = loss_terms(models[name], inputs, beta=train_cfg.beta, target=x, generator=gen)
                optimizers[name].zero_grad(set_to_none=True)
                loss.backward()
                optimizers[name].step()
            synchronize()
            if r:
                rows.append({"model": name, "round": r, "seconds_per_step": (time.perf_counter() - start) / steps})
    return pd.DataFrame(rows)


def _grid_run(model_cfg: ModelConfig, train_cfg: TrainConfig, data: Dataset, test_inputs: Tensor,
              test_targets: Tensor) -> dict[str, Any]:
    """Train one grid point and score it; a diverged run is recorded (test_mse NaN), not raised.

    active_units counts relatively active units (`latent.relative_active_units`): an AE's code has no scale of
    its own, so Burda's absolute 0.01 would call its collapse by the code's scale, not by what it carries.
    """
    try:
        res = train_or_load(model_cfg, train_cfg, data)
    except TrainingDivergedError:
        return {"test_mse": math.nan, "active_units": 0, "diverged": True}
    n_active = relative_active_units(res.model, test_inputs)
    return {"test_mse": reconstruction_metrics(res.model, test_inputs, targets=test_targets)["mse"],
            "active_units": n_active, "diverged": False}


def tuning_grid(protocol: Protocol, train_cfg: TrainConfig, data: Dataset, *, lrs: Sequence[float],
                betas: Sequence[float], seeds: Sequence[int], test_inputs: Tensor,
                test_targets: Tensor) -> pd.DataFrame:
    """AE and VAE over learning rates × seeds (β = 1), and the VAE over β × seeds (at `train_cfg.lr`).

    Columns: model, varied ("lr" or "beta"), lr, beta, seed, test_mse, active_units (relatively active, scale-free),
    diverged, collapsed (active units ≤ COLLAPSED_MAX_UNITS).
    """
    points = [(name, kind, "lr", lr, 1.0, s) for name, kind in (("AE", "ae"), ("VAE", "vae"))
              for lr in lrs for s in seeds]
    points += [("VAE", "vae", "beta", train_cfg.lr, float(b), s) for b in betas if b != 1.0 for s in seeds]
    rows = []
    for name, kind, varied, lr, beta, s in points:
        cfg = replace(train_cfg, lr=float(lr), beta=beta, seed=s, noise=None)
        rows.append({"model": name, "varied": varied, "lr": float(lr), "beta": beta, "seed": s,
                     **_grid_run(protocol.model_config(kind), cfg, data, test_inputs, test_targets)})
    grid = pd.DataFrame(rows)
    grid["collapsed"] = grid["diverged"] | (grid["active_units"] <= COLLAPSED_MAX_UNITS)
    return grid


def tuning_summary(grid: pd.DataFrame) -> pd.DataFrame:
    """Per model: runs, failed runs (collapsed or diverged), and the spread of test MSE over the lr × seed runs.

    relative_spread = (worst − best) / best test MSE over the learning-rate runs (which both models share);
    the β runs count towards the failures only, since β trades reconstruction for rate by design.
    """
    rows = []
    for name, g in grid.groupby("model", sort=False):
        lr_runs = g[g["varied"] == "lr"]["test_mse"].dropna()
        best, worst = float(lr_runs.min()), float(lr_runs.max())
        rows.append({"model": name, "runs": len(g), "lr_runs": int((g["varied"] == "lr").sum()),
                     "best_mse": best, "worst_mse": worst, "relative_spread": (worst - best) / best,
                     "collapsed": int(g["collapsed"].sum()), "diverged": int(g["diverged"].sum())})
    return pd.DataFrame(rows).set_index("model")


def sharpness_table(results: Results, inputs: Tensor, data_images: Tensor, *, n: int,
                    seed: int = 0) -> pd.DataFrame:
    """Mean Laplacian variance (intensity²) of reconstructions and prior samples per (model, seed), and of the data."""
    rows = [{"model": "data", "seed": seed, "source": "test images",
             "sharpness": float(sharpness(data_images[:n]).mean())}]
    for (name, model_seed), res in results.items():
        model = res.model
        recon = reconstruct(model, inputs[:n])
        samples = model.sample(n, generator=torch.Generator().manual_seed(seed + model_seed)).cpu()
        rows += [{"model": name, "seed": model_seed, "source": source, "sharpness": float(sharpness(images).mean())}
                 for source, images in (("reconstructions", recon), ("prior samples", samples))]
    return pd.DataFrame(rows)
TEXTBOOK: dict[str, tuple[str, str]] = {
    "Purpose": ("learn a compact code that reconstructs its input (compression, features)",
                "learn a generative model p(x) = ∫ p(x|z) p(z) dz with amortised inference q(z|x)"),
    "Architecture": ("encoder → code z → decoder", "encoder → (μ, log σ²) → z = μ + σ ε → decoder"),
    "Latent space": ("unregularised: arbitrary scale and shape, holes between classes",
                     "pulled towards the prior N(0, I): continuous, samplable"),
    "Loss function": ("reconstruction only: −log p(x | decode(encode(x)))",
                      "−ELBO = −E_q log p(x|z) + KL(q(z|x) ‖ p(z)); the KL term regularises (better generalisation)"),
    "Output": ("a deterministic reconstruction, sharp",
               "a distribution: reconstructions and new samples from the prior, blurrier"),
    "Use cases": ("compression, denoising (DAE), features, anomaly scores from reconstruction error",
                  "generation, likelihood bounds, anomaly scores from −ELBO, semi-supervised learning"),
    "Advantages": ("simpler, faster per epoch, sharper reconstructions",
                   "principled sampling, a smooth latent space, a bound on log p(x)"),
    "Limitations": ("no principled way to sample; decoding N(0, I) falls into holes",
                    "blurrier outputs, posterior collapse, more sensitive to β and learning rate"),
}


@dataclass(frozen=True)
class Facts:
    """What the AE-vs-VAE table quotes, each a mean over seeds from this notebook's tidy tables (units as there)."""

    mse_ae: float  # test MSE per pixel [intensity²]
    mse_vae: float
    mse_dae: float
    mse_bvae: float
    ssim_ae: float
    ssim_vae: float
    fid_ae_prior: float  # FID-FMNIST of AE samples decoded from z ~ N(0, I)
    fid_ae_gauss: float  # … from a Gaussian fitted to its codes ex post
    fid_ae_gmm: float  # … from a 10-component GMM fitted ex post
    fid_vae: float
    fid_vae_gmm: float  # the control: the same ex-post GMM fitted to the VAE's codes
    fid_bvae: float
    fid_data: float  # held-out real images
    gap_closed_gmm: float  # share of the AE→VAE FID gap the GMM closes
    mmd_ae: float
    mmd_vae: float
    holes_ae: float  # share of prior samples the classifier cannot place
    holes_vae: float
    rough_ae: float
    rough_vae: float
    off_ae: float  # off-manifold distance of latent paths' interiors (1 ≈ a real image's)
    off_vae: float
    real_ae: float  # realism kept along latent paths
    real_vae: float
    params_ae: float
    params_vae: float
    loss_gap_rel_ae: float  # (test − train) / train of the own objective
    loss_gap_rel_vae: float
    recon_gap_ae: float  # test − train reconstruction NLL [nats / image], like for like
    recon_gap_vae: float
    mse_gap_rel_ae: float
    mse_gap_rel_vae: float
    step_ratio: float  # VAE / AE time per training step: geometric mean of the per-round ratios (as the claim)
    epoch_ae: float  # seconds per epoch, mean over seeds: each model's own batched run (not a comparison)
    epoch_vae: float
    spread_ae: float  # relative test-MSE spread over the lr × seed grid
    spread_vae: float
    collapsed_ae: float
    collapsed_vae: float
    runs_vae: float
    sharp_data: float  # Laplacian variance [intensity²]
    sharp_ae_recon: float
    sharp_vae_recon: float
    sharp_vae_samples: float
    sharp_ae_samples: float  # AE decodes of z ~ N(0, I)


def collect_facts(*, recon: pd.DataFrame, generation: pd.DataFrame, fid_data: float, latent: pd.DataFrame,
                  gaps: pd.DataFrame, cost: pd.DataFrame, timing: pd.DataFrame, tuning: pd.DataFrame,
                  sharp: pd.DataFrame) -> Facts:
    """The table's `Facts`, as means over seeds of this notebook's tidy tables (tuning: its summary)."""
    def mean(df: pd.DataFrame, model: str, column: str, **where: str) -> float:
        return float(per_seed(df, model, column, **where).mean())

    fid = {key: mean(generation, model, "fid", source=source) for key, model, source in (
        ("fid_ae_prior", "AE", PRIOR), ("fid_ae_gauss", "AE", "Gaussian ex post"), ("fid_ae_gmm", "AE", "GMM ex post"),
        ("fid_vae", "VAE", PRIOR), ("fid_vae_gmm", "VAE", "GMM ex post"), ("fid_bvae", "β-VAE", PRIOR))}
    per_model = {}
    for key, model in (("ae", "AE"), ("vae", "VAE")):
        per_model |= {f"mmd_{key}": mean(latent, model, "mmd"), f"holes_{key}": mean(latent, model, "holes"),
                      f"rough_{key}": mean(latent, model, "roughness"),
                      f"off_{key}": mean(latent, model, "off_manifold"),
                      f"recon_gap_{key}": mean(gaps, model, "recon_gap"),
                      f"real_{key}": mean(latent, model, "path_realism"),
                      f"params_{key}": mean(cost, model, "parameters"),
                      f"epoch_{key}": mean(cost, model, "seconds_per_epoch"),
                      f"loss_gap_rel_{key}": mean(gaps, model, "loss_gap_rel"),
                      f"mse_gap_rel_{key}": mean(gaps, model, "mse_gap_rel"),
                      f"spread_{key}": float(tuning.loc[model, "relative_spread"]),
                      f"collapsed_{key}": float(tuning.loc[model, "collapsed"])}
    return Facts(
        **{f"mse_{key}": mean(recon, model, "mse") for key, model in
           (("ae", "AE"), ("vae", "VAE"), ("dae", "DAE"), ("bvae", "β-VAE"))},
        ssim_ae=mean(recon, "AE", "ssim"), ssim_vae=mean(recon, "VAE", "ssim"),
        **fid, fid_data=float(fid_data),
        gap_closed_gmm=gap_closed(fid["fid_ae_prior"], fid["fid_ae_gmm"], fid["fid_vae"]),
        # paired by round, as 03.ae-faster-per-step measures it: exp(mean over rounds of log(VAE / AE))
        step_ratio=paired_step_ratio(timing),
        runs_vae=float(tuning.loc["VAE", "runs"]),
        sharp_data=mean(sharp, "data", "sharpness"),
        sharp_ae_recon=mean(sharp, "AE", "sharpness", source="reconstructions"),
        sharp_vae_recon=mean(sharp, "VAE", "sharpness", source="reconstructions"),
        sharp_vae_samples=mean(sharp, "VAE", "sharpness", source="prior samples"),
        sharp_ae_samples=mean(sharp, "AE", "sharpness", source="prior samples"),
        **per_model,
    )


def paired_step_ratio(timing: pd.DataFrame) -> float:
    """VAE / AE time per training step, paired by timing round: exp(mean over rounds of log(VAE s / AE s)), the
    ratio that 03.ae-faster-per-step's effect is the log of (a median per model ignores the pairing).

    `timing`: `step_timing` rows (model, round, seconds_per_step).

    Raises:
        ConfigError: when no round timed both the AE and the VAE.
    """
    missing = sorted({"model", "round", "seconds_per_step"} - set(timing.columns))
    if missing:
        raise ConfigError(f"paired_step_ratio needs step_timing's columns; the table lacks {missing}.")
    per_round = timing.pivot_table(index="round", columns="model", values="seconds_per_step")
    if not {"AE", "VAE"} <= set(per_round.columns) or per_round[["AE", "VAE"]].dropna().empty:
        raise ConfigError("paired_step_ratio needs timing rounds that time both the AE and the VAE "
                          f"(step_timing rows); the table has models {sorted(set(timing['model']))}.")
    both = per_round[["AE", "VAE"]].dropna()
    return float(np.exp(np.mean(np.log(both["VAE"]) - np.log(both["AE"]))))


STEP_CLAIM = "03.ae-faster-per-step"


def step_ratio_text(record: Mapping[str, Any] | None, fallback: float | None = None) -> str:
    """"VAE/AE time per training step ×r [lo, hi], <verdict>": 03.ae-faster-per-step's own effect as a ratio.

    The claim compares log seconds per step paired by timing round with lower = better for the AE, so its effect is
    the mean over rounds of log(VAE / AE) and exp(effect) the VAE/AE ratio (> 1: the AE is faster); its interval
    maps the same way. Without an effect in `record` (an asserted or missing record) the `fallback` ratio
    (`paired_step_ratio`) is shown without an interval.
    """
    effect = None if record is None else record.get("effect")
    if effect is None:
        shown = "n/a" if fallback is None else f"×{fallback:.3f}"
        return f"VAE/AE time per training step {shown} (per-round ratios, geometric mean; no interval recorded)"
    low, high = record.get("ci_low"), record.get("ci_high")
    interval = f" [{math.exp(low):.3f}, {math.exp(high):.3f}]" if low is not None and high is not None else ""
    verdict = record.get("verdict") or ("holds" if record.get("holds") else "does not hold")
    return (f"VAE/AE time per training step ×{math.exp(effect):.3f}{interval} (geometric mean of the paired per-round "
            f"ratios, {STEP_CLAIM}: {verdict})")


def _sharpness_evidence(f: Facts) -> str:
    """The "Output" row's evidence: the reconstructions the claim compares, then the prior samples, with a clause
    saying whose samples are sharper and why that can differ from the reconstructions."""
    recon = "AE" if f.sharp_ae_recon > f.sharp_vae_recon else "VAE"
    samples = "AE" if f.sharp_ae_samples > f.sharp_vae_samples else "VAE"
    text = (f"sharpness (Laplacian variance) of reconstructions, which 03.vae-outputs-blurrier compares: AE "
            f"{f.sharp_ae_recon:.4f} vs VAE {f.sharp_vae_recon:.4f} (data {f.sharp_data:.4f}); of prior samples: AE "
            f"{f.sharp_ae_samples:.4f} vs VAE {f.sharp_vae_samples:.4f}")
    if samples == recon:
        return text + f" — the {recon}'s are the sharper ones for both"
    if samples == "VAE":
        return text + (" — the VAE's samples are the sharper ones: the AE decodes N(0, I) draws, codes off the "
                       "manifold of its training codes, into smeared blends; the claim is about reconstructions")
    return text + (" — the AE's samples are the sharper ones although its reconstructions are not; the claim is "
                   "about reconstructions")


def _epoch_clause(f: Facts, step_record: Mapping[str, Any] | None) -> str:
    """The "Advantages" row's per-epoch means (reader 8, C1: the textbook's "faster per epoch" beside per-step evidence
    only), and, when they order the AE and the VAE otherwise than the step timing, which of the two compares them."""
    effect = None if step_record is None else step_record.get("effect")
    ratio = f.step_ratio if effect is None else math.exp(effect)  # VAE / AE per step: > 1, the AE is the quicker
    text = f"; per epoch AE {f.epoch_ae:.3g} s vs VAE {f.epoch_vae:.3g} s, each model's own batched run"
    if ratio != 1 and f.epoch_ae != f.epoch_vae and (ratio > 1) != (f.epoch_ae < f.epoch_vae):
        text += (f" — the {'VAE' if ratio > 1 else 'AE'} the quicker per epoch, against the step timing's order; only "
                 "the interleaved step timing compares them")
    return text


def _claim_verdict(records: Mapping[str, Mapping[str, Any]], name: str) -> str:
    """The verdict a claim record carries: its three-way `verdict`, else "holds"/"does not hold" from `holds`."""
    record = records.get(f"03.{name}", records.get(name))
    if record is None:
        raise ConfigError(f"comparison_table needs the record of claim 03.{name}; make that claim first (study.claim "
                          "returns the record, and the study keeps it in study.records).")
    return record.get("verdict") or ("holds" if record.get("holds") else "does not hold")


def _verdict(records: Mapping[str, Mapping[str, Any]], claims: Sequence[tuple[str, int]]) -> str:
    """The row's verdict: an (id, +1) claim supports the row when it holds, an (id, −1) one contradicts it."""
    if not claims:
        return "by construction (one backbone; see the parameter counts)"
    notes, agree = [], []
    for name, sign in claims:
        verdict = _claim_verdict(records, name)
        if verdict not in ("inconclusive", "skipped"):  # skipped: not checked on this data (Study.skip)
            agree.append((verdict == "holds") == (sign > 0))
        notes.append(f"03.{name} {verdict}" + ("" if sign > 0 else " (against the row)"))
    word = ("inconclusive" if not agree  # every claim of the row was inconclusive (or skipped)
            else "holds" if all(agree) else "does not hold" if not any(agree) else "mixed")
    return f"{word}: " + "; ".join(notes)


# Which models the table's FIDs score: 05's "Output vs GANs" row quotes the reference VAE's FID (trained longer, on
# more images), and one table shows both (reader 7).
REPLICATES_NOTE = "03's seed replicates, trained on fewer images than the series' reference VAE of notebooks 02 and 05"


def _share(x: float) -> str:
    """A share as a percentage; "n/a (no classifier)" for the NaN of a score that needs class probabilities
    (unlabelled data: `aestudy.series.shared.CLASSIFIER_ONLY`)."""
    return "n/a (no classifier)" if math.isnan(x) else f"{x:.0%}"


def _evidence(f: Facts, fid_name: str = "FID-FMNIST",
              step_record: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The measured evidence sentence of each aspect, from the facts (means over seeds); `fid_name` names the
    run's FID feature space (`aestudy.series.shared.fid_label`: FID-AE on unlabelled data); `step_record` is
    03.ae-faster-per-step's record, whose effect the "Advantages" row quotes as a ratio (`step_ratio_text`)."""
    return {
        "Purpose": (f"test MSE AE {f.mse_ae:.4f} vs VAE {f.mse_vae:.4f}; prior-sample {fid_name} "
                    f"VAE {f.fid_vae:.1f} vs AE {f.fid_ae_prior:.1f} (real images {f.fid_data:.1f}; "
                    f"{REPLICATES_NOTE})"),
        "Architecture": (f"same MLP backbone: AE {f.params_ae:,.0f} vs VAE {f.params_vae:,.0f} parameters "
                         "(the VAE's head outputs μ and log σ²)"),
        "Latent space": (f"MMD² to N(0, I): AE {f.mmd_ae:.3f} vs VAE {f.mmd_vae:.3f}; prior holes AE "
                         f"{_share(f.holes_ae)} vs VAE {_share(f.holes_vae)}; off-manifold distance of latent paths AE "
                         f"{f.off_ae:.2f} vs VAE {f.off_vae:.2f} (1 ≈ a real image; pixel roughness AE "
                         f"{f.rough_ae:.4f} vs VAE {f.rough_vae:.4f}); realism kept midway AE "
                         f"{_share(f.real_ae)} vs VAE {_share(f.real_vae)}"),
        "Loss function": (f"train→test gap of the reconstruction NLL: AE {f.recon_gap_ae:+.2f} vs VAE "
                          f"{f.recon_gap_vae:+.2f} nats/image; relative gap of own loss (VAE's holds its KL): AE "
                          f"{f.loss_gap_rel_ae:+.2%} vs VAE {f.loss_gap_rel_vae:+.2%}; of MSE: AE "
                          f"{f.mse_gap_rel_ae:+.2%} vs VAE {f.mse_gap_rel_vae:+.2%}"),
        "Output": _sharpness_evidence(f),
        "Use cases": (f"DAE test MSE {f.mse_dae:.4f} (clean inputs); β-VAE FID {f.fid_bvae:.1f}, MSE "
                      f"{f.mse_bvae:.4f}; {LATER_NOTE}"),
        "Advantages": (f"{step_ratio_text(step_record, f.step_ratio)}{_epoch_clause(f, step_record)}; SSIM AE "
                       f"{f.ssim_ae:.3f} vs VAE {f.ssim_vae:.3f}; VAE FID {f.fid_vae:.1f} vs AE {f.fid_ae_prior:.1f} "
                       "(seed replicates)"),
        "Limitations": (f"AE + GMM ex post: FID {f.fid_ae_gmm:.1f} (Gaussian {f.fid_ae_gauss:.1f}), closing "
                        f"{f.gap_closed_gmm:.0%} of the AE→VAE gap; VAE + the same GMM {f.fid_vae_gmm:.1f}; "
                        "MSE spread over lr×seed AE "
                        f"{f.spread_ae:.1%} vs VAE {f.spread_vae:.1%}; collapsed VAE runs "
                        f"{f.collapsed_vae:.0f}/{f.runs_vae:.0f} (AE {f.collapsed_ae:.0f})"),
    }


# Each row's claims: +1 when the claim holding supports the row's textbook text, −1 when it contradicts it.
ROW_VERDICTS: dict[str, tuple[tuple[str, int], ...]] = {
    "Purpose": (("ae-reconstructs-better", 1), ("vae-samples-beat-ae-prior", 1)),
    "Architecture": (),
    "Latent space": (("vae-latent-matches-prior", 1), ("vae-smoother-interpolations", 1),
                     ("vae-interpolations-realistic", 1)),
    "Loss function": (("vae-generalises-better", 1),),
    "Output": (("vae-outputs-blurrier", 1),),
    "Use cases": (("vae-samples-beat-ae-prior", 1),),
    "Advantages": (("ae-faster-per-step", 1), ("ae-reconstructs-better", 1), ("vae-samples-beat-ae-prior", 1),
                   ("vae-latent-matches-prior", 1), ("vae-gmm-beats-ae-gmm", 1)),
    "Limitations": (("ex-post-density-closes-gap", -1), ("vae-outputs-blurrier", 1), ("vae-needs-careful-tuning", 1)),
}


TABLE_CLAIMS: tuple[str, ...] = tuple(dict.fromkeys(name for row in ROW_VERDICTS.values() for name, _ in row))

# Claims a later notebook checks that bear on a row too (full ledger ids, signs as in ROW_VERDICTS). This notebook
# builds its table before notebook 04 runs, so its own verdict rests on ROW_VERDICTS alone; the recorded rows name
# these as well (`table_records`), and the run report, built after every notebook, weighs the ones the ledger holds.
# "Use cases": the DAE denoising better than the VAE supports the AE's denoising use; the VAE's likelihood beating
# the AE's reconstruction error as an anomaly score (on a held-out class, and across classes) and its means making
# better few-label probe features support the VAE's; the likelihood ranking OOD digits above its own test images
# (Nalisnick et al. 2019) contradicts "anomaly scores from −ELBO".
LATER_ROW_CLAIMS: dict[str, tuple[tuple[str, int], ...]] = {
    "Use cases": (("04.dae-beats-vae-denoising", 1), ("04.likelihood-beats-recon-error", 1),
                  ("04.vae-elbo-beats-recon-across-classes", 1), ("04.ood-likelihood-failure", -1),
                  ("04.vae-beats-ae-few-labels", 1)),
}
LATER_NOTE = ("notebook 04 measures denoising, probes and anomaly scores; its claims are weighed with this row once "
              "every notebook has run (the run's report.md)")


def _provisional(aspect: str, verdict: str) -> str:
    """A row that later notebooks' claims bear on (`LATER_ROW_CLAIMS`) gets "(provisional: …)" after its verdict
    word: this notebook sees only its own claims, and the run report's row, which weighs the later ones too, can
    differ (e.g. "holds" here, "mixed" there)."""
    later = LATER_ROW_CLAIMS.get(aspect, ())
    if not later:
        return verdict
    word, _, notes = verdict.partition(": ")
    notebooks = sorted({cid.split(".", 1)[0] for cid, _ in later})
    return (f"{word} (provisional: notebook 03's claims only; the run report's row also weighs notebook "
            f"{', '.join(notebooks)}'s {len(later)} claims on it): {notes}")


def comparison_table(facts: Facts, records: Mapping[str, Mapping[str, Any]], *,
                     fid_name: str = "FID-FMNIST") -> pd.DataFrame:
    """The AE-vs-VAE table: one row per aspect (TABLE_ASPECTS) with textbook text, measured evidence and verdict.

    `records` are the claim records the notebook's claims returned (`study.records`, keyed by claim id); each
    row's verdict is read from them, never from the ledger file. `fid_name` names the FID feature space in the
    evidence (`aestudy.series.shared.fid_label(grey)`).

    Raises:
        ConfigError: naming a claim the table needs whose record is missing.
    """
    evidence = _evidence(facts, fid_name, records.get(STEP_CLAIM, records.get(STEP_CLAIM.split(".", 1)[1])))
    rows = [{"Aspect": aspect, "AE": TEXTBOOK[aspect][0], "VAE": TEXTBOOK[aspect][1], "Evidence": evidence[aspect],
             "Verdict": _provisional(aspect, _verdict(records, ROW_VERDICTS[aspect]))} for aspect in TABLE_ASPECTS]
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS))


def row_claims(aspect: str) -> list[dict[str, Any]]:
    """Every claim the row `aspect` rests on, as `{"id": ledger id, "sign": +1 supports / −1 contradicts}`: this
    notebook's (`ROW_VERDICTS`, ids prefixed "03.") then later notebooks' (`LATER_ROW_CLAIMS`).

    Raises:
        ConfigError: when `aspect` is not a row of the table (`TABLE_ASPECTS`).
    """
    if aspect not in ROW_VERDICTS:
        raise ConfigError(f"aspect {aspect!r} is not a row of the AE-vs-VAE table; use one of {list(TABLE_ASPECTS)}")
    own = [(f"03.{name}", sign) for name, sign in ROW_VERDICTS[aspect]]
    return [{"id": cid, "sign": sign} for cid, sign in (*own, *LATER_ROW_CLAIMS.get(aspect, ()))]


def table_records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The rows of `comparison_table` as the `comparison_table` metric records them: each row dict gains `Claims`
    (`row_claims`), so the run report (`aestudy.runner.report.row_claims`) weighs later notebooks' claims too."""
    return [{**row, "Claims": row_claims(str(row["Aspect"]))} for row in table.to_dict("records")]


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table of `df` (index dropped; `|` in cells escaped)."""
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def tuning_spread_per_seed(grid: pd.DataFrame) -> pd.DataFrame:
    """Per (model, seed) of a `tuning_grid`: relative test-MSE spread (worst − best) / best over its learning rates.

    One value per tuning seed, so the spreads of AE and VAE can be compared across seeds (`stats.compare`).
    Diverged runs (NaN MSE) are left out of the spread and counted in `diverged`.
    """
    lr_runs = grid[grid["varied"] == "lr"]
    rows = []
    for (name, seed), g in lr_runs.groupby(["model", "seed"], sort=False):
        mse = g["test_mse"].dropna()
        spread = float((mse.max() - mse.min()) / mse.min()) if len(mse) else math.nan
        rows.append({"model": name, "seed": seed, "relative_spread": spread, "diverged": int(g["diverged"].sum())})
    return pd.DataFrame(rows)


def seed_intervals(df: pd.DataFrame, by: Sequence[str], value: str, *, level: float = 0.95) -> pd.DataFrame:
    """Mean of `value` per group with its two-sided t interval over seeds (columns mean, low, high, n).

    The interval is mean ± t_{n−1} · sd / √n (Student); NaN bounds for a group with one seed.
    """
    from scipy.stats import t as student_t

    rows = []
    for key, g in df.groupby(list(by), sort=False):
        x = g[value].to_numpy(dtype=float)
        half = (float(student_t.ppf(0.5 + level / 2, x.size - 1)) * x.std(ddof=1) / math.sqrt(x.size)
                if x.size > 1 else math.nan)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,), strict=True)),
                     "mean": float(x.mean()), "low": float(x.mean()) - half, "high": float(x.mean()) + half,
                     "n": x.size})
    return pd.DataFrame(rows)


def holm_summary(verdicts: Mapping[str, Verdict], *, alpha: float = 0.05) -> str:
    """One markdown line: how many comparative claims were tested and which "holds" survive Holm–Bonferroni."""
    survives = holm(verdicts, alpha=alpha)
    held = [key for key, v in verdicts.items() if v.holds]
    kept = [key for key, ok in survives.items() if ok]
    lost = [key for key in held if key not in kept]
    return (f"**Holm–Bonferroni** over the {len(verdicts)} comparative claims of this notebook (family-wise "
            f"α = {alpha:g}): {len(held)} hold{'s' * (len(held) == 1)}, {len(kept)} "
            f"survive{'s' * (len(kept) == 1)} the correction"
            + (f" ({', '.join(kept)})" if kept else "")
            + (f"; not surviving: {', '.join(lost)}" if lost else "") + ".")


# --- readings of surprising results (issue 19): one sentence each, its wording chosen from the measured values ---

CLEAR_FID_SHARE = 0.9  # a reading calls the AE's sampler the better one only at a FID at least 10 % lower


def generation_reading(gen: pd.DataFrame) -> str:
    """Markdown interpreting the sample FIDs where they go against the textbook (the VAE is the better sampler): which
    (model, source) of the AE and VAE has the lowest mean FID, and, when it is the AE with an ex-post density, why.

    `gen`: `generation.generation_table` rows (model, source, seed, fid, …; FID lower = better). Source: Ghosh et al.
    (2020), "From variational to deterministic autoencoders".

    Raises:
        ConfigError: when the table has no AE or no VAE rows.
    """
    rows = gen[gen["model"].isin(["AE", "VAE"])]
    if set(rows["model"]) != {"AE", "VAE"}:
        raise ConfigError(f"generation_reading needs AE and VAE rows; the table has {sorted(set(gen['model']))}.")
    fid = rows.groupby(["model", "source"])["fid"].mean().sort_values()
    (model, source), value = fid.index[0], float(fid.iloc[0])
    vae_prior = float(fid.get(("VAE", PRIOR), math.nan))
    text = (f"**Reading:** the lowest FID of the AE and VAE samplers is the {model}'s from its {source} ({value:.1f}; "
            f"the VAE's prior samples {vae_prior:.1f}).")
    if model == "AE" and value > CLEAR_FID_SHARE * vae_prior:
        text += (f" It is within {1 - CLEAR_FID_SHARE:.0%} of the VAE's prior samples: no clear winner between the "
                 "two in this run.")
    elif model == "AE" and source != PRIOR:
        text += (" A deterministic AE whose codes get a density after training samples better than the VAE here: the "
                 "fitted density puts samples where the AE's codes are, so its decoder sees codes like the ones it "
                 "learnt to reconstruct (section 7 measures whose outputs are sharper), while the VAE's prior also "
                 "covers regions its codes leave empty (the "
                 "VAE's own GMM samples show how much of its FID is that mismatch). Ghosh et al. (2020) report the "
                 "same kind of result.")
    return text


def interpolation_reading(lat: pd.DataFrame, off_manifold: Verdict | None = None,
                          realism: Verdict | None = None) -> str:
    """Markdown interpreting the latent-path measures where they disagree with each other or with the textbook (the
    VAE's paths are smoother): the off-manifold distance and the realism of the AE's and VAE's paths.

    `lat`: `latent_table` rows (model, seed, off_manifold (1 ≈ a real image, lower = closer to real images),
    path_realism (share of the end points' classifier confidence kept midway, higher = more recognisable)).
    `off_manifold`, `realism`: the verdicts of 03.vae-smoother-interpolations and 03.vae-interpolations-realistic
    when recorded; a difference whose 95 % interval includes 0 is read as within seed noise, and two measures
    only "disagree" when both differences are settled.

    Raises:
        ConfigError: when the table has no AE or no VAE rows.
    """
    mean = lat.groupby("model")[["off_manifold", "path_realism"]].mean()
    if not {"AE", "VAE"} <= set(mean.index):
        raise ConfigError(f"interpolation_reading needs AE and VAE rows; the table has {sorted(mean.index)}.")
    ae, vae = mean.loc["AE"], mean.loc["VAE"]

    def unsettled(v: Verdict | None) -> str:
        """Why a difference is not settled ("" when it is, or when no verdict was recorded)."""
        if v is None:
            return ""
        if v.ci_low is None or v.ci_high is None or v.ci_low <= 0 <= v.ci_high:
            return " — within seed noise (its 95 % interval includes 0)"
        if v.n_seeds is not None and min(v.n_seeds) < MIN_DECISIVE_REPLICATES:
            return f" — too few seeds to settle ({min(v.n_seeds)} per model)"
        return ""

    closer = "VAE" if vae["off_manifold"] < ae["off_manifold"] else "AE"
    clearer = "VAE" if vae["path_realism"] > ae["path_realism"] else "AE"
    text = (f"**Reading:** midway along the paths the {closer}'s images lie closer to real images on average "
            f"(off-manifold distance AE {ae['off_manifold']:.2f}, VAE {vae['off_manifold']:.2f}"
            f"{unsettled(off_manifold)}) and the {clearer}'s stay more recognisable (realism AE "
            f"{ae['path_realism']:.1%}, VAE {vae['path_realism']:.1%}{unsettled(realism)}).")
    if closer != clearer and not unsettled(off_manifold) and not unsettled(realism):
        text += (f" The two measures disagree: the {clearer}'s midpoints keep a class the classifier recognises but "
                 "look less like any single real image; blurrier decoder means (section 7) can do both, being "
                 "averages of plausible images rather than one of them.")
    return text


def tuning_reading(grid: pd.DataFrame, epochs: int) -> str:
    """Markdown saying what the learning-rate spread measures in this run: sensitivity, or under-training.

    `grid`: `tuning_grid` rows (model, varied ("lr" or "beta"), lr, test_mse, ...). For each model, the mean test MSE
    over seeds at each learning rate: when the best is the largest rate tried, the models are still far from
    converged at the slower rates after `epochs` epochs, and a larger spread says "trains slower at small rates"
    rather than "needs careful tuning" (the claim's reading of it).

    Raises:
        ConfigError: when the grid has no learning-rate rows for the AE or the VAE.
    """
    lr = grid[grid["varied"] == "lr"].groupby(["model", "lr"])["test_mse"].mean()
    models = [m for m in ("AE", "VAE") if m in lr.index.get_level_values("model")]
    if len(models) < 2:
        raise ConfigError(f"tuning_reading needs learning-rate rows for AE and VAE; the grid has {models}.")
    top = {m: lr.loc[m].idxmin() == lr.loc[m].index.max() for m in models}
    unit = "epoch" if epochs == 1 else "epochs"
    if all(top.values()):
        return (f"**Reading:** after {epochs} {unit} both models do best at the largest learning rate tried: their "
                "test MSE still falls as the rate grows, so the slower rates are simply further from converged. The "
                "spread over learning rates therefore measures how much each model lags at small rates in this short "
                "budget more than how carefully it must be tuned; a longer budget (the `full` profile) separates the "
                "two.")
    if any(top.values()):
        lagging = next(m for m in models if top[m])
        return (f"**Reading:** after {epochs} {unit} the {lagging} does best at the largest learning rate tried (its "
                "MSE still falls as the rate grows), the other model at a rate inside the grid: part of the "
                f"{lagging}'s spread is under-training at the small rates, not sensitivity.")
    return (f"**Reading:** after {epochs} {unit} both models do best at a learning rate inside the grid, so the spread "
            "measures how much a wrong rate costs each of them: sensitivity to tuning, as the claim reads it.")


SAME_SHARE = 0.05  # two shares (of prior samples in holes) closer than 5 points read as "about the same"
MMD_CLEAR = 0.02  # an MMD² difference the reading calls real: 03.vae-latent-matches-prior's minimum effect
PRIOR_SAMPLES = "prior samples"  # the `sharpness_table` source of decoded N(0, I) draws
FLAT_TIME = 1e-3  # seeds whose training times differ by less than 0.1 % of their mean were timed as one


def _means(df: pd.DataFrame, column: str, models: Sequence[str], reading: str) -> pd.Series:
    mean = df.groupby("model")[column].mean()
    missing = [m for m in models if m not in mean.index]
    if missing:
        raise ConfigError(f"{reading} needs rows for {missing}; the table has {sorted(mean.index)}.")
    return mean


def sharpness_reading(sharp: pd.DataFrame) -> str:
    """Markdown saying whose outputs the measured sharpness calls sharper, for reconstructions and for prior samples
    separately (a sharp reconstruction does not make a sharp sample).

    `sharp`: `sharpness_table` rows (model, source in {"reconstructions", "prior samples"} or the data's
    "test images", seed, sharpness = variance of the Laplacian [intensity²], higher = sharper).

    Raises:
        ConfigError: when AE or VAE reconstructions or prior samples are missing.
    """
    mean = sharp.groupby(["model", "source"])["sharpness"].mean()
    need = [(m, s) for m in ("AE", "VAE") for s in ("reconstructions", PRIOR_SAMPLES)]
    if any(key not in mean.index for key in need):
        raise ConfigError(f"sharpness_reading needs AE and VAE reconstructions and prior samples; the table has "
                          f"{sorted(map(tuple, mean.index))}.")
    data = mean[mean.index.get_level_values(0) == "data"]
    parts = []
    for source in ("reconstructions", PRIOR_SAMPLES):
        ae, vae = float(mean["AE", source]), float(mean["VAE", source])
        parts.append(f"of {source} the {'AE' if ae > vae else 'VAE'}'s are sharper (AE {ae:.3g}, VAE {vae:.3g})")
    text = "**Reading:** " + "; ".join(parts)
    text += f" (test images {float(data.iloc[0]):.3g})." if len(data) else "."
    recon_ae = mean["AE", "reconstructions"] > mean["VAE", "reconstructions"]
    samples_ae = mean["AE", PRIOR_SAMPLES] > mean["VAE", PRIOR_SAMPLES]
    if recon_ae and not samples_ae:
        text += (" The AE decodes a real image's code sharply, but a code drawn from N(0, I) lies where it never saw "
                 "codes, and decodes to a smooth blend: its sharpness is a property of its reconstructions, not of "
                 "its samples (section 3's holes and MMD² measure how far N(0, I) is from its codes).")
    elif not recon_ae:
        text += (" The textbook's blurrier VAE does not show in reconstructions here: the VAE decodes its posterior "
                 "mean, and with few epochs the AE's decoder has not sharpened either.")
    return text


def holes_reading(lat: pd.DataFrame) -> str:
    """Markdown comparing the two prior-mismatch measures of section 3, MMD² and the share of prior samples in holes,
    and saying why they can disagree.

    `lat`: `latent_table` rows (model, seed, mmd [dimensionless, 0 = q(z) matches N(0, I)], holes [share of decoded
    prior samples with top-class probability < 0.5]). Sources on the aggregated posterior not matching the prior:
    M. Rosca, B. Lakshminarayanan, S. Mohamed (2018), "Distribution Matching in Variational Inference",
    arXiv:1802.06847; B. Dai, D. Wipf (2019), "Diagnosing and Enhancing VAE Models", ICLR 2019 (its two-stage VAE
    fits a second VAE to the codes to reduce the mismatch).

    Raises:
        ConfigError: when the table has no AE or no VAE rows.
    """
    mmd = _means(lat, "mmd", ("AE", "VAE"), "holes_reading")
    holes = _means(lat, "holes", ("AE", "VAE"), "holes_reading")
    text = (f"**Reading:** MMD² to N(0, I) is AE {mmd['AE']:.3g} against VAE {mmd['VAE']:.3g}; the share of prior "
            f"samples in holes is AE {holes['AE']:.0%} against VAE {holes['VAE']:.0%}.")
    if abs(holes["AE"] - holes["VAE"]) < SAME_SHARE and mmd["VAE"] < mmd["AE"] - MMD_CLEAR:
        text += (" The holes are about as common for both although the codes' mismatch with the prior differs: MMD² "
                 "asks where the codes lie, a hole asks whether the decoded image is recognisable. A VAE whose "
                 "aggregated posterior is close to N(0, I) by MMD² can still leave regions where the prior has mass "
                 "and its codes are sparse, and prior draws there decode to images the classifier cannot place. "
                 "Rosca et al. 2018 (\"Distribution Matching in Variational Inference\", arXiv:1802.06847) show that "
                 "a VAE's aggregated posterior does not match its prior, leaving regions where the prior has mass "
                 "and the aggregated posterior little; Dai & Wipf (2019, \"Diagnosing and Enhancing VAE Models\", "
                 "ICLR) trace poor VAE samples to the same mismatch and reduce it by fitting a second VAE to the "
                 "codes. A small MMD² alone does not guarantee recognisable samples.")
    elif (holes["AE"] > holes["VAE"]) != (mmd["AE"] > mmd["VAE"]):
        text += (" The two measures point different ways: a hole is judged from the decoded image, MMD² from the "
                 "codes alone.")
    return text


def generalisation_reading(gaps: pd.DataFrame) -> str:
    """Markdown reading the signs of the train→test gaps of section 4: the relative MSE gap (against grey levels)
    and the reconstruction-NLL gap (Bernoulli NLL of the fixed binarization) as measured, which image set each
    ranks the easier when their signs differ (03.vae-generalises-better uses the NLL gap), and why a negative gap is
    no better-than-perfect generalisation.

    `gaps`: `generalisation_table` rows (model, seed, mse_gap_rel = (test − train) / train of the MSE against grey
    levels, recon_gap = test − train reconstruction NLL [nats / image]).

    Raises:
        ConfigError: when the table has no rows.
    """
    if gaps.empty:
        raise ConfigError("generalisation_reading needs the rows of generalisation_table; it got none.")
    mean = gaps.groupby("model", sort=False)[["mse_gap_rel", "recon_gap"]].mean()

    def sign(column: str) -> str:
        return "negative" if (mean[column] < 0).all() else "positive" if (mean[column] > 0).all() else "mixed"

    def easier(column: str, noun: str) -> str:
        return {"negative": f"by {noun} every model reconstructs its test images better than its own training images. ",
                "positive": f"by {noun} every model reconstructs its training images better than its test images. ",
                "mixed": "not every model's has the same sign. "}[sign(column)]

    mse = ", ".join(f"{m} {row.mse_gap_rel:+.2%}" for m, row in mean.iterrows())
    nll = ", ".join(f"{m} {row.recon_gap:+.2f}" for m, row in mean.iterrows())
    text = (f"**Reading:** the relative MSE gap (test − train; the MSE scores reconstructions against the grey levels) "
            f"is {mse}; " + easier("mse_gap_rel", "MSE")
            + f"The reconstruction-NLL gap (test − train, nats/image; the Bernoulli negative log-likelihood of the "
            f"fixed binarization of the same images) is {nll}; " + easier("recon_gap", "this NLL"))
    signs = {sign("mse_gap_rel"), sign("recon_gap")}
    if signs == {"negative", "positive"}:
        by_mse = "test" if sign("mse_gap_rel") == "negative" else "training"
        by_nll = "training" if by_mse == "test" else "test"
        text += (f"The two gaps rank the image sets differently: by MSE the {by_mse} images are the easier to "
                 f"reconstruct, by the NLL the {by_nll} images; this run does not test why. 03.vae-generalises-better "
                 "uses the NLL gap. ")
    if "negative" in signs:
        text += ("A negative gap is no better-than-perfect generalisation: a model that has not begun to memorise its "
                 "training images (the replicates train a few epochs on a subset) has a gap near 0, and its sign is "
                 "then set by which image set is easier to reconstruct by that measure. Overfitting shows as a large "
                 "positive gap between test and training error (Goodfellow, Bengio & Courville 2016, *Deep Learning*, "
                 "MIT Press, §5.2), one that grows as training goes on once a model starts to memorise (the learning "
                 "curves of its §7.8, early stopping).")
    return text.rstrip()


def cost_reading(cost: pd.DataFrame, timing: pd.DataFrame | None = None) -> str:
    """Markdown saying what the training-cost columns of section 5 can and cannot show: seed replicates trained as one
    batched computation (`aestudy.ensemble.fit_many`) get equal shares of its wall time, an "epochs to converge"
    equal to the whole budget means that no run converged within it, and (given `timing`) when the per-epoch
    column orders the AE and the VAE otherwise than the interleaved step timing, which of the two compares them.

    `cost`: `cost_table` rows (model, seed, seconds_per_epoch, epochs_to_converge, epochs); `timing`: `step_timing`
    rows (model, round, seconds_per_step), read as 03.ae-faster-per-step reads them: the VAE/AE ratio paired by
    round (`paired_step_ratio`), not the per-model medians, which can order close models the other way.

    Raises:
        ConfigError: when the table has no rows.
    """
    if cost.empty:
        raise ConfigError("cost_reading needs the rows of cost_table; it got none.")
    lines = []
    spread = cost.groupby("model")["seconds_per_epoch"].agg(lambda s: float(s.max() - s.min()) / float(s.mean()))
    flat = sorted(m for m, value in spread.items() if value < FLAT_TIME and (cost["model"] == m).sum() > 1)
    if flat:
        lines.append(f"**Reading:** {', '.join(flat)}: every seed shows the same seconds per epoch because the seeds "
                     "of a model train together, as one batched computation (`aestudy.ensemble.fit_many`), and each "
                     "gets an equal share of its wall time — that sd is not a measured spread. The interleaved step "
                     "timing is the comparison between models.")
    epoch = cost.groupby("model")["seconds_per_epoch"].mean()
    if timing is not None and {"AE", "VAE"} <= set(epoch.index) and {"AE", "VAE"} <= set(timing["model"]):
        ratio = paired_step_ratio(timing)  # VAE / AE, the claim's own quantity
        by_epoch = "AE" if epoch["AE"] < epoch["VAE"] else "VAE"
        by_step = "AE" if ratio > 1 else "VAE"
        if by_epoch != by_step and epoch["AE"] != epoch["VAE"] and ratio != 1:
            lines.append(f"**The two timings disagree:** by seconds per epoch the {by_epoch} is the quicker "
                         f"({epoch[by_epoch]:.3g} s against {epoch[by_step]:.3g} s), by the interleaved step timing "
                         f"the {by_step} (VAE/AE time per step ×{ratio:.3f}, paired by round as "
                         "03.ae-faster-per-step pairs them). The per-epoch column times each model's own batched run, "
                         "at whatever load the machine had then; the step timing alternates the models round by "
                         "round, so only it compares them.")
    at_budget = cost["epochs_to_converge"] >= cost["epochs"]
    if at_budget.all():
        lines.append(f"**No run converged within its budget:** epochs to converge equals the whole budget "
                     f"({', '.join(str(e) for e in sorted(cost['epochs'].unique()))} "
                     f"epoch{'' if set(cost['epochs']) == {1} else 's'}) for every model and "
                     "seed, i.e. the best validation loss came in the last epoch and no earlier one was within 1 % of "
                     "it. The column measures the budget here, not a speed of convergence.")
    elif at_budget.any():
        lines.append(f"{int(at_budget.sum())} of {len(cost)} runs had their best validation loss in the last epoch "
                     "with no earlier one within 1 %: for those, epochs to converge is the budget, not a speed.")
    return "\n\n".join(lines)


def precision_reading(gen: pd.DataFrame, data_scores: Mapping[str, float]) -> str:
    """Markdown naming the samplers whose precision is above the held-out real images' own, and why that is no
    better-than-real sampling.

    `gen`: `generation.generation_table` rows (model, source, seed, precision, recall; shares); `data_scores`: the
    held-out real images' scores against the reference images (`generation.generation_scores`: precision,
    recall). Source: Kynkäänniemi et al. (2019), whose truncation experiments raise precision and lower recall.

    Raises:
        ConfigError: when `data_scores` has no precision.
    """
    if "precision" not in data_scores:
        raise ConfigError(f"precision_reading needs the data's precision; data_scores has {sorted(data_scores)}.")
    real = float(data_scores["precision"])
    mean = gen.groupby(["model", "source"], sort=False)[["precision", "recall"]].mean()
    above = mean[mean["precision"] > real]
    if above.empty:
        return f"**Reading:** no sampler's precision reaches the held-out real images' ({real:.3g})."
    named = ", ".join(f"{m}{'' if s == PRIOR else ' + ' + s} (precision {row.precision:.3g}, recall {row.recall:.3g})"
                      for (m, s), row in above.iterrows())
    return (f"**Reading:** {named} {'has' if len(above) == 1 else 'have'} a precision above the held-out real "
            f"images' ({real:.3g}). Precision counts samples that fall inside the real images' k-NN balls; a sampler "
            "that keeps to the dense centre of the data puts more of its samples there than real images do, whose "
            "rarer ones lie outside — and pays in recall. Kynkäänniemi et al. (2019) show exactly this trade when "
            "they truncate a generator's latent distribution towards its mode.")


def step_timing_reading(timing: pd.DataFrame, record: Mapping[str, Any]) -> str:
    """Markdown relating the timing table's medians per model to 03.ae-faster-per-step's paired effect, and saying
    why the two can order the models differently.

    `timing`: `step_timing` rows (model, round, seconds_per_step [s]); `record`: the claim's record (effect = mean
    over rounds of log(VAE / AE), ci_low, ci_high, verdict), quoted as a ratio by `step_ratio_text`.

    Raises:
        ConfigError: when the timing has no AE or no VAE rows, or the record carries no effect.
    """
    _means(timing, "seconds_per_step", ("AE", "VAE"), "step_timing_reading")  # raises without AE or VAE rows
    median = 1000 * timing.groupby("model")["seconds_per_step"].median()
    if record.get("effect") is None:
        raise ConfigError(f"step_timing_reading needs the effect of {STEP_CLAIM}'s record; it has {sorted(record)}.")
    by_median = "VAE" if median["VAE"] < median["AE"] else "AE"
    ratio = math.exp(float(record["effect"]))
    by_pairs = "AE" if ratio > 1 else "VAE"
    # ratio = VAE time / AE time: the AE takes 1 − 1/ratio less time when ratio > 1, the VAE 1 − ratio when < 1.
    share = 1 - 1 / ratio if by_pairs == "AE" else 1 - ratio
    text = (f"**Reading:** the table's step times are medians per model (AE {median['AE']:.2f} ms, VAE "
            f"{median['VAE']:.2f} ms: by medians the {by_median} is faster). The claim pairs the rounds instead: its "
            "effect is the mean over rounds of log(VAE time / AE time), as a ratio "
            f"{step_ratio_text(record).removeprefix('VAE/AE time per training step ')} — the {by_pairs} taking about "
            f"{share:.1%} less time per step on average over the rounds.")
    if by_median != by_pairs:
        text += (" The two order the models differently: a median per model ignores which rounds belong together, "
                 "while the paired ratio compares the two models within each round (same machine load) and averages "
                 "over all rounds, so a few rounds in which one model was slower move it and not the medians. With "
                 "the models this close, the claim's interval is what to read.")
    else:
        text += f" Both put the {by_pairs} ahead; the claim's interval says whether that is more than noise."
    return text


def beta_vae_reading(gen: pd.DataFrame, sharp: pd.DataFrame, lat: pd.DataFrame, recon: pd.DataFrame,
                     beta: float, *, fid_name: str = "FID") -> str:
    """Markdown comparing the β-VAE's prior samples with the VAE's (FID, sharpness), beside what β trades for them:
    the match of the aggregated posterior to N(0, I) (MMD²) and the reconstructions (test MSE).

    With β > 1 the KL term weighs more than in the ELBO: q(z) is pulled towards N(0, I) and units switch off, which
    can make prior draws land where the decoder has seen codes (better samples) at the cost of reconstructions;
    with β < 1 the codes keep more detail and q(z) matches the prior less (Higgins et al. 2017, "β-VAE", ICLR;
    Alemi et al. 2018, "Fixing a broken ELBO", ICML). Whether the sample FIDs differ beyond seed noise is judged by
    Welch's t on per-seed log FID (p < 0.05).

    `gen`: `generation_table` rows (model, source, seed, fid); `sharp`: `sharpness_table` rows; `lat`:
    `latent_table` rows (mmd); `recon`: `reconstruction_table` rows (mse); `beta`: the β-VAE's KL weight (> 0).

    Raises:
        ConfigError: when a table lacks VAE or β-VAE rows, or β is not positive.
    """
    beta = as_float(beta, "beta", low=0.0)
    if beta <= 0:
        raise ConfigError(f"beta_vae_reading needs the β-VAE's KL weight > 0; it got {beta}.")
    models = ("VAE", "β-VAE")
    prior = gen[gen["source"] == PRIOR]
    fid = _means(prior, "fid", models, "beta_vae_reading")
    sh = _means(sharp[sharp["source"] == PRIOR_SAMPLES], "sharpness", models, "beta_vae_reading")
    mmd, mse = _means(lat, "mmd", models, "beta_vae_reading"), _means(recon, "mse", models, "beta_vae_reading")
    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # equal per-seed FIDs (a degenerate test run) make scipy warn; p is then NaN
        warnings.filterwarnings("ignore", message="Precision loss occurred", category=RuntimeWarning)
        p = float(ttest_ind(np.log(per_seed(prior, "β-VAE", "fid")), np.log(per_seed(prior, "VAE", "fid")),
                            equal_var=False).pvalue)
    better = fid["β-VAE"] < fid["VAE"]
    closer = mmd["β-VAE"] < mmd["VAE"]
    text = (f"**Reading (β-VAE, β = {beta:g}):** its prior samples have a {'lower' if better else 'higher'} {fid_name} "
            f"than the VAE's ({fid['β-VAE']:.1f} against {fid['VAE']:.1f}"
            + (f", Welch p = {p:.2g} on log FID" if p < 0.05 else f", within seed noise: Welch p = {p:.2g} on log FID")
            + f") and are {'sharper' if sh['β-VAE'] > sh['VAE'] else 'blurrier'} (sharpness {sh['β-VAE']:.3g} "
            f"against {sh['VAE']:.3g}); its aggregated posterior lies {'closer to' if closer else 'further from'} "
            f"N(0, I) (MMD² {mmd['β-VAE']:.3g} against {mmd['VAE']:.3g}) and it reconstructs "
            f"{'worse' if mse['β-VAE'] > mse['VAE'] else 'better'} (test MSE {mse['β-VAE']:.4f} against "
            f"{mse['VAE']:.4f}).")
    if math.isnan(p) or p >= 0.05:
        return text + " The samples' FIDs do not separate the two models in this run."
    worse = mse["β-VAE"] > mse["VAE"]
    recon_sharp = sharp[sharp["source"] == "reconstructions"].groupby("model")["sharpness"].mean()
    blurrier = set(models) <= set(recon_sharp.index) and recon_sharp["β-VAE"] < recon_sharp["VAE"]
    fewer = ("active_units" in lat.columns
             and _means(lat, "active_units", models, "beta_vae_reading").pipe(lambda a: a["β-VAE"] < a["VAE"]))
    if beta > 1 and better and closer:
        text += (" With β > 1 the KL term weighs more than in the VAE's ELBO: the codes are pulled closer to N(0, I)"
                 + (" and fewer units stay active (section 3's table)" if fewer else "")
                 + ", so a prior draw more often lands where the decoder has seen codes. "
                 + ("The better samples are bought with reconstruction detail"
                    + (": its reconstructions are blurrier too (section 7's table), so the textbook's \"a larger β "
                       "blurs\" holds for reconstructions, not for samples." if blurrier else ".") if worse else
                    "Here that costs no reconstruction quality measured in this run."))
    elif beta > 1 and not better:
        text += (" With β > 1 the KL term weighs more than in the VAE's ELBO; here the detail it costs the decoder "
                 "outweighs what the closer match to the prior gains the samples, the usual textbook outcome.")
    elif beta < 1 and better:
        text += (" With β < 1 the KL term weighs less than in the VAE's ELBO: the codes keep more detail, which can "
                 "make samples sharper and FID better"
                 + (" even though the aggregated posterior matches the prior less." if not closer else "."))
    elif beta < 1:
        text += (" With β < 1 the KL term weighs less than in the VAE's ELBO: "
                 + ("the aggregated posterior matches the prior less, so more prior draws land where the decoder saw "
                    "few codes." if not closer else "the codes keep more detail, but the samples do not gain from it."))
    elif better:
        text += " Its samples are better although its codes do not match the prior more closely than the VAE's."
    return text
