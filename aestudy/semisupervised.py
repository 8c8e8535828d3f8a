"""Semi-supervised learning with a deep generative model: M2 (Kingma et al. 2014, "Semi-Supervised Learning with
Deep Generative Models", §2.2 and §3.1.2).

Model: p(y) = Cat(1/K), p(z) = N(0, I), p(x | y, z) = Bernoulli(decoder(z, y)); inference networks
q(y | x) = Cat(classifier(x)) and q(z | x, y) = N(μ(x, y), diag σ²(x, y)). Per image, in nats:

    ELBO(x, y) = E_q(z|x,y)[log p(x|y,z)] + log p(y) − KL(q(z|x,y) ‖ p(z))          (a bound on log p(x, y))
    labelled loss   L_α(x, y) = −ELBO(x, y) + α · (−log q(y|x))
    unlabelled loss U(x)      = −Σ_y q(y|x) ELBO(x, y) − H(q(y|x))                 (≥ −log p(x))

One reparameterised z per (x, y) with the same noise ε for every y of an image (common random numbers); the KL
is analytic. The paper weighs the classification term as J + α' E_labelled[−log q(y|x)] with α' = 0.1·N
(N training images) over the *sums* Σ_labelled L + Σ_unlabelled U. Here each step averages a labelled batch
and an unlabelled batch with equal weight (labelled images oversampled, as common reimplementations do, so
100 labels are not drowned by 55,000 unlabelled images), and α is the per-image weight: by default
α = 0.1·N / N_labelled, the paper's α' spread over the labelled images. Images are binarized dynamically
(each pixel resampled as Bernoulli(x) at every step), so the Bernoulli decoder is a valid likelihood.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import aestudy
from aestudy import cache
from aestudy.config import DEVICES, resolve_device
from aestudy.data import binarize_images, require_labels
from aestudy.errors import ConfigError, DataError, TrainingDivergedError
from aestudy.models import clamp_logvar
from aestudy.objectives import gaussian_kl
from aestudy.progress import progress as progress_bar
from aestudy.validate import as_bool, as_float, as_int, require

ARCH_VERSION = 1
ALPHA_SHARE = 0.1  # the paper's α = 0.1·N
HISTORY_COLUMNS: tuple[str, ...] = ("epoch", "loss", "labelled_loss", "unlabelled_loss", "cross_entropy",
                                    "val_error", "seconds")
NOT_IN_KEY: tuple[str, ...] = ("device", "progress")
EVAL_BATCH = 1000


@dataclass(frozen=True)
class M2Config:
    """M2's architecture and training, validated at construction (ConfigError names the field and the fix).

    latent_dim: size of z (paper: 50); hidden: units of the one hidden layer of each network (paper: 500);
    alpha: per-image weight of −log q(y|x) in the labelled loss, None = 0.1·N / N_labelled (see the module
    docstring); epochs: passes over the unlabelled images; batch_size / labelled_batch_size: images per step
    of each kind; lr: Adam's learning rate; seed; device; progress.
    """

    latent_dim: int = 50
    hidden: int = 500
    alpha: float | None = None
    epochs: int = 10
    batch_size: int = 100
    labelled_batch_size: int = 100
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("latent_dim", "hidden", "batch_size", "labelled_batch_size"):
            object.__setattr__(self, name, as_int(getattr(self, name), name, low=1))
        object.__setattr__(self, "epochs", as_int(self.epochs, "epochs", low=0))
        object.__setattr__(self, "seed", as_int(self.seed, "seed", low=0))
        object.__setattr__(self, "alpha", as_float(self.alpha, "alpha", low=0.0, allow_none=True,
                                                   none_means="0.1·N / N_labelled, the paper's weight"))
        object.__setattr__(self, "lr", as_float(self.lr, "lr", low=0.0, low_open=True))
        require(self.device in DEVICES or str(self.device).startswith("cuda:"), "device", self.device,
                f"valid values: {', '.join(DEVICES)}")
        object.__setattr__(self, "progress", as_bool(self.progress, "progress"))

    def key_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights (all but device and progress)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in NOT_IN_KEY}


def default_alpha(n_train: int, n_labelled: int) -> float:
    """The per-image weight of −log q(y|x) equal to the paper's α' = 0.1·N on E_labelled: 0.1·N / N_labelled."""
    return ALPHA_SHARE * n_train / n_labelled


class M2(nn.Module):
    """The M2 networks: classifier q(y|x), encoder q(z|x,y), decoder p(x|y,z) (one hidden ReLU layer each).

    Images are (B, C, H, W) in [0, 1]; labels (B,) int64 in [0, K). The encoder's first layer is split into an
    x part and a y part (concatenating [x, onehot(y)] is the same map), so all K labels of an image share the
    x part's cost.
    """

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.image_shape, self.num_classes, self.latent_dim = tuple(image_shape), num_classes, latent_dim
        d = math.prod(image_shape)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
        self.enc_x = nn.Linear(d, hidden)
        self.enc_y = nn.Linear(num_classes, hidden, bias=False)
        self.enc_head = nn.Linear(hidden, 2 * latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim + num_classes, hidden), nn.ReLU(), nn.Linear(hidden, d))

    def class_logits(self, x: Tensor) -> Tensor:
        """Logits of q(y|x), (B, K)."""
        return self.classifier(x)

    def _posterior(self, hx: Tensor, y_onehot: Tensor) -> tuple[Tensor, Tensor]:
        """μ, log σ² of q(z|x,y) from the x part hx (..., H) and one-hot labels (..., K)."""
        return self.enc_head(F.relu(hx + self.enc_y(y_onehot))).chunk(2, dim=-1)

    def _elbo_from(self, x: Tensor, hx: Tensor, y_onehot: Tensor, eps: Tensor) -> Tensor:
        """ELBO for broadcastable (B, [K,] ...) inputs; eps (B, [1,] L)."""
        mu, logvar = self._posterior(hx, y_onehot)
        z = mu + torch.exp(0.5 * clamp_logvar(logvar)) * eps
        logits = self.decoder(torch.cat([z, y_onehot.expand(*z.shape[:-1], -1)], dim=-1))
        target = x.flatten(1).reshape(x.shape[0], *([1] * (logits.dim() - 2)), -1).expand_as(logits)
        log_px = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(dim=-1)
        kl = gaussian_kl(mu.reshape(-1, self.latent_dim), logvar.reshape(-1, self.latent_dim)).view(mu.shape[:-1])
        return log_px - math.log(self.num_classes) - kl

    def elbo(self, x: Tensor, y: Tensor, eps: Tensor) -> Tensor:
        """ELBO(x, y) per image in nats, (B,), with z = μ + σ·eps (eps (B, L) standard normal)."""
        onehot = F.one_hot(y.long(), self.num_classes).to(x.dtype)
        return self._elbo_from(x, self.enc_x(x.flatten(1)), onehot, eps)

    def elbo_all(self, x: Tensor, eps: Tensor) -> Tensor:
        """ELBO(x, y) for every label y, (B, K), the same eps (B, L) for all y of an image."""
        eye = torch.eye(self.num_classes, dtype=x.dtype, device=x.device)  # (K, K)
        hx = self.enc_x(x.flatten(1))[:, None, :]  # (B, 1, H)
        return self._elbo_from(x, hx, eye[None], eps[:, None, :])

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """eps ~ N(0, I), (n, latent_dim), on this model's device."""
        return torch.randn((n, self.latent_dim), generator=generator, device=self.enc_x.weight.device)


def labelled_loss(model: M2, x: Tensor, y: Tensor, alpha: float, eps: Tensor) -> Tensor:
    """L_α(x, y) = −ELBO(x, y) + α·(−log q(y|x)) per image, nats, (B,) (Kingma et al. 2014, eqs. 6 and 9)."""
    return -model.elbo(x, y, eps) + alpha * F.cross_entropy(model.class_logits(x), y, reduction="none")


def unlabelled_loss(model: M2, x: Tensor, eps: Tensor) -> Tensor:
    """U(x) = −Σ_y q(y|x) ELBO(x, y) − H(q(y|x)) per image, nats, (B,) (Kingma et al. 2014, eq. 7)."""
    log_q = F.log_softmax(model.class_logits(x), dim=1)  # (B, K)
    q = log_q.exp()
    return -(q * model.elbo_all(x, eps)).sum(dim=1) + (q * log_q).sum(dim=1)


def balanced_labelled_subset(labels: Any, n_labels: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of `n_labels` items, n_labels / K from each of the K classes present, drawn with `seed`.

    Raises ConfigError when n_labels is not a positive multiple of K or a class has too few items.
    """
    require_labels(labels, "semisupervised.balanced_labelled_subset")
    labels = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    classes = np.unique(labels)
    n_labels = as_int(n_labels, "n_labels", low=1)
    require(n_labels % len(classes) == 0, "n_labels", n_labels,
            f"it must be a multiple of the number of classes ({len(classes)}) for a balanced subset")
    per_class = n_labels // len(classes)
    rng = np.random.default_rng([seed, 15])
    picks = []
    for c in classes:
        pool = np.flatnonzero(labels == c)
        require(len(pool) >= per_class, "n_labels", n_labels,
                f"class {c} has only {len(pool)} items, fewer than the {per_class} a balanced subset needs")
        picks.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(picks))


@dataclass
class M2Result:
    """A trained (or loaded) M2 model (eval mode) with its history, cache key, α used and wall time of the call."""

    model: M2
    history: pd.DataFrame
    key: str
    from_cache: bool
    seconds: float
    alpha: float

    @torch.no_grad()
    def classify(self, images: Tensor, *, batch_size: int = EVAL_BATCH) -> Tensor:
        """argmax_y q(y|x) for images (N, C, H, W) in [0, 1]: labels (N,) int64 on the CPU."""
        return predict(self.model, images, batch_size=batch_size)

    @torch.no_grad()
    def sample(self, y: int | Tensor, n: int | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """Decoder means σ(logits) at z ~ N(0, I) for class y: (n, C, H, W) in [0, 1].

        y: one class (then n is required) or labels (n,) (then n may be omitted).
        """
        return sample_class(self.model, y, n, generator=generator)


@torch.no_grad()
def predict(model: M2, images: Tensor, *, batch_size: int = EVAL_BATCH) -> Tensor:
    """argmax_y q(y|x), (N,) int64 on the CPU (eval mode restored to the caller's mode)."""
    device, was = model.enc_x.weight.device, model.training
    model.eval()
    out = [model.class_logits(images[s:s + batch_size].to(device)).argmax(dim=1).cpu()
           for s in range(0, images.shape[0], batch_size)]
    model.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.int64)


@torch.no_grad()
def sample_class(model: M2, y: int | Tensor, n: int | None = None, *,
                 generator: torch.Generator | None = None) -> Tensor:
    """Class-conditional samples (decoder means) of M2, (n, C, H, W) in [0, 1]."""
    k = model.num_classes
    device = model.enc_x.weight.device
    if isinstance(y, Tensor):
        labels = y.to(device=device, dtype=torch.int64).reshape(-1)
        require(n is None or n == len(labels), "n", n, f"it must be None or len(y) = {len(labels)}")
    else:
        require(isinstance(y, (int, np.integer)) and not isinstance(y, bool) and 0 <= y < k, "y", y,
                f"it must be a class in [0, {k}) or a tensor of labels")
        labels = torch.full((as_int(n, "n", low=0),), int(y), dtype=torch.int64, device=device)
    require(bool(((labels >= 0) & (labels < k)).all()), "y", "labels out of range", f"labels must be in [0, {k})")
    z = torch.randn((len(labels), model.latent_dim), generator=generator, device=device)
    logits = model.decoder(torch.cat([z, F.one_hot(labels, k).to(z.dtype)], dim=1))
    return torch.sigmoid(logits).view(len(labels), *model.image_shape)


def _check_labelled(labelled_idx: Any, n_train: int) -> np.ndarray:
    idx = np.asarray(labelled_idx)
    require(idx.ndim == 1 and idx.size >= 1 and np.issubdtype(idx.dtype, np.integer), "labelled_idx",
            f"array of shape {idx.shape} and dtype {idx.dtype}", "it must be a non-empty 1-D array of integer indices "
            "into data.train (e.g. from balanced_labelled_subset)")
    require(len(np.unique(idx)) == idx.size and idx.min() >= 0 and idx.max() < n_train, "labelled_idx",
            f"{idx.size} indices in [{idx.min()}, {idx.max()}]", f"they must be distinct and in [0, {n_train})")
    return np.sort(idx.astype(np.int64))


def m2_key(cfg: M2Config, data: Any, labelled_idx: np.ndarray) -> str:
    """Cache key: "m2-" + SHA-256 of config, data fingerprint, the labelled indices and aestudy version."""
    labelled = hashlib.sha256(np.ascontiguousarray(labelled_idx, dtype=np.int64).tobytes()).hexdigest()
    payload = {"what": "m2", "arch_version": ARCH_VERSION, "config": cfg.key_fields(), "data": data.fingerprint,
               "labelled": labelled, "version": aestudy.__version__}
    return "m2-" + cache.hash_key(payload)


def _val_error(model: M2, data: Any) -> float:
    if len(data.val) == 0:
        return math.nan
    return float((predict(model, data.val.images) != data.val.labels).double().mean())


def _train(model: M2, data: Any, labelled: np.ndarray, cfg: M2Config, alpha: float) -> pd.DataFrame:
    """Adam over the unlabelled images; each step adds a labelled batch (cycled through seeded permutations)."""
    device = model.enc_x.weight.device
    x_all = data.train.images.to(device)
    y_all = data.train.labels.to(device)
    lab = torch.from_numpy(labelled).to(device)
    unlab_mask = torch.ones(len(x_all), dtype=torch.bool, device=device)
    unlab_mask[lab] = False
    unlab = unlab_mask.nonzero().squeeze(1)
    rng = torch.Generator(device=device).manual_seed(cfg.seed)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    lab_order, lab_pos = torch.randperm(len(lab), generator=rng, device=device), 0
    rows = []
    bar = progress_bar(range(1, cfg.epochs + 1), desc="M2", unit="epoch", enabled=cfg.progress)
    for epoch in bar:
        start, sums, steps = time.perf_counter(), torch.zeros(4, device=device), 0
        model.train()
        order = unlab[torch.randperm(len(unlab), generator=rng, device=device)]
        for batch in order.split(cfg.batch_size):
            if lab_pos + cfg.labelled_batch_size > len(lab):  # a fresh permutation once the labelled set runs out
                lab_order, lab_pos = torch.randperm(len(lab), generator=rng, device=device), 0
            li = lab[lab_order[lab_pos:lab_pos + cfg.labelled_batch_size]]
            lab_pos += cfg.labelled_batch_size
            xl = binarize_images(x_all[li], generator=rng)
            xu = binarize_images(x_all[batch], generator=rng)
            ce = F.cross_entropy(model.class_logits(xl), y_all[li])
            l_loss = -model.elbo(xl, y_all[li], model.noise(len(li), rng)).mean() + alpha * ce
            u_loss = unlabelled_loss(model, xu, model.noise(len(batch), rng)).mean()
            loss = l_loss + u_loss
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"M2 training diverged at epoch {epoch}, step {steps + 1}: loss = {float(loss)}. Nothing was "
                    f"cached. Try a lower learning rate (e.g. lr={cfg.lr / 10:g}, now lr={cfg.lr:g}).")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sums += torch.stack([loss.detach(), l_loss.detach(), u_loss.detach(), ce.detach()])
            steps += 1
        means = (sums / max(steps, 1)).tolist()
        rows.append([epoch, *means, _val_error(model, data), time.perf_counter() - start])
        bar.set_postfix(loss=f"{means[0]:.1f}", val_error=f"{rows[-1][5]:.3f}", refresh=False)
    model.eval()
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS))


def _build(data: Any, cfg: M2Config) -> M2:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return M2(tuple(data.train.images.shape[1:]), int(data.info.num_classes), cfg.latent_dim, cfg.hidden)


def fit_m2(cfg: M2Config, data: Any, labelled_idx: Any, *, cache_dir: Any = None) -> M2Result:
    """Load the cached M2 model for (cfg, data, labelled_idx, version), or train it and cache it.

    data: an `aestudy.data.Dataset` loaded with binarize="dynamic" (the Bernoulli decoder needs binary images:
    training batches are resampled every step, val/test are binarized once). labelled_idx: indices into
    data.train whose labels are used (e.g. `balanced_labelled_subset(data.train.labels, 100)`); every other
    training image is used without its label. Same seed → same weights and history on CPU. History: epoch,
    loss, labelled_loss, unlabelled_loss, cross_entropy (per-image means over the epoch's steps, nats), val_error
    (classification error on data.val), seconds. Raises ConfigError for unlabelled data, data not binarized or bad
    indices,
    DataError when no unlabelled image is left, TrainingDivergedError on a NaN/inf loss (nothing cached).
    """
    require(isinstance(cfg, M2Config), "cfg", type(cfg).__name__, "it must be an aestudy.semisupervised.M2Config")
    require_labels(data, "semisupervised.fit_m2")
    if data.binarize is None:
        raise ConfigError("M2 has a Bernoulli decoder, a likelihood for binary images only; load the data with "
                          "binarize='dynamic' (e.g. load_dataset('fashion-mnist', binarize='dynamic')).")
    labelled = _check_labelled(labelled_idx, len(data.train))
    if len(labelled) == len(data.train) and cfg.epochs > 0:
        raise DataError("every training image is labelled, so M2 has no unlabelled images to learn from; pass a "
                        "subset (e.g. balanced_labelled_subset(data.train.labels, 100)).")
    alpha = default_alpha(len(data.train), len(labelled)) if cfg.alpha is None else cfg.alpha
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    key = m2_key(cfg, data, labelled)

    def load(record: dict[str, Any], _path: Any) -> M2Result:
        model = _build(data, cfg)
        model.load_state_dict(record["state_dict"])
        return M2Result(model.to(device).eval(), record["history"], key, True, time.perf_counter() - start, alpha)

    def build() -> tuple[M2Result, cache.Checkpoint]:
        model = _build(data, cfg).to(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            history = _train(model, data, labelled, cfg, alpha)
        config = {"m2": asdict(cfg), "alpha": alpha, "n_labelled": len(labelled), "data": data.fingerprint}
        result = M2Result(model, history, key, False, time.perf_counter() - start, alpha)
        return result, cache.Checkpoint(model.state_dict(), config, history)

    result, _ = cache.load_or_build(key, load=load, build=build, what="M2", cache_dir=cache_dir)
    return result
