"""Probes: how useful a representation is for classification with few labels (linear probe, k-NN), PCA
features as the baseline, and 2-D embeddings for plots.

Taught in notebook 04 section 2 (M1-style: a classifier on frozen codes, Kingma et al. 2014).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import train_test_split
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from torch import Tensor

from aestudy.data import require_labels
from aestudy.errors import ConfigError
from aestudy.validate import as_float

ArrayLike = Tensor | np.ndarray


EMBEDDING_METHODS: tuple[str, ...] = ("tsne", "pca")


def _as_numpy(a: ArrayLike) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)


def _require_both(train_y: ArrayLike, test_y: ArrayLike, where: str) -> None:
    require_labels(train_y, f"{where} (train labels)")
    require_labels(test_y, f"{where} (test labels)")


def _labelled_subset(x: np.ndarray, y: np.ndarray, n_labels: int | None,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified subset of `n_labels` labelled examples (all of them when None or ≥ the set size)."""
    if n_labels is None or n_labels >= len(y):
        return x, y
    n_classes = len(np.unique(y))
    if not (isinstance(n_labels, int) and n_labels >= n_classes):
        raise ConfigError(f"n_labels={n_labels!r} is invalid; it must be None (all labels) or an integer >= "
                          f"the number of classes ({n_classes}), so every class is represented.")
    idx, _ = train_test_split(np.arange(len(y)), train_size=n_labels, stratify=y, random_state=seed)
    return x[idx], y[idx]


def linear_probe_accuracy(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
                          n_labels: int | None = None, seed: int = 0, max_iter: int = 1000) -> float:
    """Test accuracy (share in [0, 1]) of logistic regression on standardised codes.

    Trained on a stratified subset of `n_labels` labelled training codes (None: all), chosen with `seed`.

    Raises:
        ConfigError: unlabelled data (labels all UNLABELLED: there is nothing to classify).
    """
    _require_both(train_y, test_y, "probes.linear_probe_accuracy")
    x, y = _labelled_subset(_as_numpy(train_x), _as_numpy(train_y), n_labels, seed)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter))
    probe.fit(x, y)
    return float(probe.score(_as_numpy(test_x), _as_numpy(test_y)))


def knn_accuracy(train_x: ArrayLike, train_y: ArrayLike, test_x: ArrayLike, test_y: ArrayLike, *,
                 k: int = 5, n_labels: int | None = None, seed: int = 0) -> float:
    """Test accuracy (share in [0, 1]) of a k-nearest-neighbour vote in the raw (unscaled) code space.

    Neighbours come from a stratified subset of `n_labels` labelled training codes (None: all).

    Raises:
        ConfigError: unlabelled data (labels all UNLABELLED; a vote among -1 labels would score 1.0), a bad `k`.
    """
    _require_both(train_y, test_y, "probes.knn_accuracy")
    x, y = _labelled_subset(_as_numpy(train_x), _as_numpy(train_y), n_labels, seed)
    if not (isinstance(k, int) and 1 <= k <= len(y)):
        raise ConfigError(f"k={k!r} is invalid; it must be an integer in [1, {len(y)}] (the labelled set size).")
    return float(KNeighborsClassifier(n_neighbors=k).fit(x, y).score(_as_numpy(test_x), _as_numpy(test_y)))


def active_features(train_x: ArrayLike, test_x: ArrayLike, *, threshold: float = 0.01
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """VAE posterior means restricted to the active units: (train (N, A), test (M, A), kept unit indices (A,)).

    A unit is active when the variance of its mean over the *training* codes exceeds `threshold` (Burda et al.
    2016's 0.01, as `aestudy.metrics.active_units`). Inactive units carry no information about x: their means
    sit near 0 with a tiny input-dependent jitter. The linear probe standardises every feature, which blows that
    jitter up to unit variance — 100 labels then have to learn to ignore several pure-noise features (issue 14
    (9)). Dropping them keeps the probe on what the code actually carries. When no unit is active every unit is
    kept (a collapsed model is then probed as it is). Meant for VAE means only: AE codes have no natural scale.

    Raises:
        ConfigError: for a threshold < 0 or features that are not 2-D with the same width.
    """
    threshold = as_float(threshold, "threshold", low=0.0)
    train, test = _as_numpy(train_x), _as_numpy(test_x)
    if train.ndim != 2 or test.ndim != 2 or train.shape[1] != test.shape[1]:
        raise ConfigError(f"active_features needs 2-D features of equal width; got {train.shape} and {test.shape}.")
    keep = np.flatnonzero(train.astype(np.float64).var(axis=0, ddof=1) > threshold)
    if keep.size == 0:
        keep = np.arange(train.shape[1])
    return train[:, keep], test[:, keep], keep


def pca_features(train_images: Tensor, test_images: Tensor, dim: int, *,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PCA codes with `dim` components fitted on the training images: (train (N, dim), test (M, dim))."""
    train, test = train_images.flatten(1).numpy(), test_images.flatten(1).numpy()
    pca = PCA(n_components=dim, random_state=seed).fit(train)
    return pca.transform(train), pca.transform(test)


def probe_table(features: Mapping[str, tuple[ArrayLike, ArrayLike]], train_labels: ArrayLike,
                test_labels: ArrayLike, *, label_counts: Sequence[int | None], repeats: int = 1, k: int = 5,
                seed: int = 0, max_iter: int = 1000) -> pd.DataFrame:
    """Linear-probe and k-NN test accuracy of each representation, trained on few or all labels.

    `features` maps a name to (train features, test features); a count of None uses every training label.
    Subsets smaller than the training set are drawn `repeats` times (seeds seed, seed + 1, …); `max_iter` caps
    the probe's lbfgs iterations. Columns: representation, labels (the count used), probe, repeat, accuracy
    (share in [0, 1]).

    Raises:
        ConfigError: unlabelled data (labels all UNLABELLED), a bad `repeats`.
    """
    _require_both(train_labels, test_labels, "probes.probe_table")
    if not (isinstance(repeats, int) and repeats >= 1):
        raise ConfigError(f"repeats={repeats!r} is invalid; it must be an integer >= 1.")
    rows = []
    n_train = len(train_labels)
    # Multi-threaded BLAS next to torch's OpenMP threads on a busy CPU runs 10-70x slower; `max_iter` is the
    # caller's budget, so an lbfgs fit stopped by it is expected rather than worth a warning per fit.
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, (train_x, test_x) in features.items():
            rows += _probe_rows(name, train_x, test_x, train_labels, test_labels, n_train=n_train,
                                label_counts=label_counts, repeats=repeats, k=k, seed=seed, max_iter=max_iter)
    return pd.DataFrame(rows)


def _probe_rows(name: str, train_x: ArrayLike, test_x: ArrayLike, train_labels: ArrayLike, test_labels: ArrayLike, *,
                n_train: int, label_counts: Sequence[int | None], repeats: int, k: int, seed: int,
                max_iter: int) -> list[dict[str, object]]:
    """probe_table's rows for one representation."""
    rows = []
    for count in label_counts:
        used = n_train if count is None or count >= n_train else count
        for r in range(repeats if used < n_train else 1):
            common = dict(n_labels=None if used == n_train else used, seed=seed + r)
            linear = linear_probe_accuracy(train_x, train_labels, test_x, test_labels, max_iter=max_iter,
                                           **common)
            knn = knn_accuracy(train_x, train_labels, test_x, test_labels, k=k, **common)
            rows += [{"representation": name, "labels": used, "probe": "linear probe", "repeat": r,
                      "accuracy": linear},
                     {"representation": name, "labels": used, "probe": f"{k}-NN", "repeat": r,
                      "accuracy": knn}]
    return rows


def embedding_2d(features: ArrayLike, *, method: str = "tsne", seed: int = 0, max_iter: int = 1000) -> np.ndarray:
    """A 2-D embedding (N, 2) of features (N, D): t-SNE (perplexity 30, PCA init, `max_iter` steps) or a 2-D PCA."""
    x = features.detach().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    x = x.reshape(len(x), -1).astype(np.float64)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method == "tsne":
        perplexity = min(30.0, (len(x) - 1) / 3)
        # One thread: scikit-learn's OpenMP pool next to torch's (two libgomp copies) spins for seconds per call.
        return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter,
                    n_jobs=1).fit_transform(x)
    raise ConfigError(f"method={method!r} is invalid; valid values: {', '.join(EMBEDDING_METHODS)}.")
