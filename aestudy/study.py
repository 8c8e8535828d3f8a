"""A notebook's session: its parameters validated once, its profile-sized knobs, data, device and ledger.

Every notebook starts with

    study = Study("03_ae_vs_vae_comparison", SIZES, profile=profile, dataset=dataset, ...)

and then asks the study for what it needs (`study.size`, `study.data()`, `study.train_config()`), records
through it (`study.claim`, `study.metric`, `study.figure`) and ends with `study.watermark()`. Nothing is
found through hidden state: the notebook names itself, the profile is resolved once (the parameter, else
$AESTUDY_PROFILE, else "standard" — the one documented switch), and the ledger is the runner's file
($AESTUDY_METRICS_FILE, set per notebook by `aestudy run`) or, for a notebook run by hand, the git-ignored
`runs/interactive/metrics.json` of the checkout (see `claims.metrics_path`).

Sizes are nanoGPT-style: each notebook's recipe module (`aestudy.series.*`) lists every knob once as
`name: (smoke, standard, full)`, and the study picks the column of its profile.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import pandas as pd
import torch

from aestudy import plots
from aestudy.claims import (
    ClaimRecord,
    check_claim,
    claims_table,
    examine,
    metrics_path,
    record_figure,
    record_metric,
    verdict_line,
)
from aestudy.config import PROFILES, StudyConfig, resolve_device
from aestudy.data import DATASET_NAMES, Dataset, load_dataset, split_sizes
from aestudy.errors import ConfigError
from aestudy.imagefiles import check_study_size, is_path, parse_size
from aestudy.parameters import validate_parameters
from aestudy.stats import Verdict
from aestudy.train import TrainConfig
from aestudy.validate import require
from aestudy.watermark import watermark

Sizes = Mapping[str, tuple[Any, Any, Any]]  # knob -> (smoke, standard, full)
COMMON = tuple(StudyConfig.__dataclass_fields__)  # profile, dataset, latent_dim, epochs, batch_size, lr, seed, device


def sized(profile: str, sizes: Sizes) -> dict[str, Any]:
    """The column of `sizes` for `profile`: {knob: value}.

    Raises:
        ConfigError: when a knob is not a (smoke, standard, full) triple.
    """
    column = PROFILES.index(profile)
    for name, values in sizes.items():
        require(isinstance(values, tuple) and len(values) == 3, f"sizes[{name!r}]", values,
                "it must be a (smoke, standard, full) tuple")
    return {name: values[column] for name, values in sizes.items()}


def in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel (a notebook, papermill), where outputs are displayed."""
    try:
        from IPython import get_ipython
    except ImportError:  # IPython is optional outside notebooks
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class ShownClaimRecord(ClaimRecord):
    """A record whose verdict line `Study` has already displayed in this cell: displaying it again (a cell ending
    with `study.claim(...)`, or `display(study.examine(...))`) shows nothing, so each verdict appears once.
    `print(record)` still shows the full record."""

    def _ipython_display_(self) -> None:
        return None


def show_verdict(record: ClaimRecord) -> ClaimRecord:
    """Display `record`'s verdict line in the running kernel's current cell (nothing outside a kernel), so a cell
    that checks several claims, or checks inside `if`/`for`, shows every verdict (issue 19, item 3). Returns
    the record, as a `ShownClaimRecord` when it was displayed."""
    if not in_kernel():
        return record
    from IPython.display import Pretty, display

    display(Pretty(verdict_line(record)))
    return ShownClaimRecord(record)


class Study:
    """One notebook's validated parameters, sizes, device and ledger (see the module docstring).

    Args:
        notebook: the notebook's file stem (its ledger key), e.g. "01_autoencoder_basics".
        sizes: the notebook's knobs, `name: (smoke, standard, full)`; knobs named in `epochs_knobs` take the
            `epochs` parameter instead when it is given.
        epochs_knobs: the knobs that the `epochs` parameter overrides. Any other knob is overridden by a
            notebook parameter of the same name that is not None (e.g. notebook 03's `n_seeds`).
        **params: the notebook's parameters cell, all of it, each checked by its rule in `aestudy.parameters`
            (the rules `aestudy run` applies before any kernel starts) and kept as plain values.

    Raises:
        ConfigError: naming the parameter and the valid values, before any data is loaded.
    """

    def __init__(self, notebook: str, sizes: Sizes, *, epochs_knobs: tuple[str, ...] = ("epochs",),
                 **params: Any) -> None:
        require(isinstance(notebook, str) and bool(notebook), "notebook", notebook, "it must be a notebook's stem")
        self.started_at = time.time()
        self.notebook = notebook
        params = validate_parameters(params, notebook=notebook)  # the runner's rules, one home: aestudy.parameters
        self.config = StudyConfig(**{k: params[k] for k in COMMON if k in params})
        self.params = {**params, **self.config.to_dict()}  # the common ones as validated (profile resolved)
        self.profile: str = self.config.profile
        self.seed: int = self.config.seed
        self.device: torch.device = resolve_device(self.config.device)
        self.size = sized(self.profile, sizes)
        for knob in epochs_knobs:
            if knob not in self.size:
                raise ConfigError(f"epochs_knobs names {knob!r}, which is not in the sizes; valid: {list(self.size)}.")
            self.size[knob] = self.config.epochs_or(self.size[knob])
        for name, value in params.items():  # a notebook parameter named like a knob (e.g. n_seeds) overrides it
            if name in self.size and name not in COMMON and value is not None:
                self.size[name] = value
        self.ledger = metrics_path()
        self.records: dict[str, Any] = {}  # claim id -> the record its claim returned (this session's claims)
        self.skipped: dict[str, str] = {}  # claim id -> why it was not recorded (e.g. a dataset without labels)
        # Measured values this data cannot give (name prefix -> why), e.g. classifier confidences without labels:
        # `examine` leaves them out when NaN instead of failing the claim's sanity check on them.
        self.unavailable: dict[str, str] = {}
        self._said_ignored = False  # the data layer's "N non-image file(s) ignored" note, printed once by data()
        torch.manual_seed(self.seed)
        plots.set_theme()
        # Claims tables in full width: no "..." in a statement, a measured list or a hidden column (issue 19).
        for option in ("display.max_colwidth", "display.max_columns", "display.width"):
            pd.set_option(option, None)

    def __repr__(self) -> str:
        return (f"Study({self.notebook}: profile={self.profile}, dataset={self.config.dataset}, device={self.device}, "
                f"seed={self.seed}, ledger={self.ledger})")

    # --- data and training ---------------------------------------------------------------------------

    def data(self, *, binarize: str | None = None) -> Dataset:
        """The notebook's dataset at the profile's `limit`/`val_size` (scaled to what the dataset holds)."""
        if self.config.dataset not in DATASET_NAMES and is_path(self.config.dataset):
            check_study_size(self.config.dataset)  # before loading: too few images fail late inside the notebooks
        sizes = split_sizes(self.config.dataset, limit=self.size.get("limit"), val_size=self.size.get("val_size", 5000))
        data = load_dataset(self.config.dataset, seed=self.seed, binarize=binarize, **sizes, **self.files)
        ignored = [part for part in data.info.note.split("; ") if part.endswith("non-image file(s) ignored")]
        if ignored and not self._said_ignored:  # once per notebook: a stray file should not pass silently
            print(f"note: {data.info.name}: {ignored[0]}")
            self._said_ignored = True
        return data

    @property
    def files(self) -> dict[str, Any]:
        """`load_dataset`'s `size`/`channels` from the `image_size`/`channels` parameters ({} when both are None,
        as a built-in dataset needs): every load of the study's dataset passes them (`**study.files`)."""
        if self.config.image_size is None and self.config.channels is None:
            return {}
        return {"size": parse_size(self.config.image_size), "channels": self.config.channels}

    def train_config(self, **overrides: Any) -> TrainConfig:
        """TrainConfig from the parameters (epochs from the sizes, batch size, lr, seed, device) and `overrides`."""
        base = dict(epochs=self.size["epochs"], batch_size=self.config.batch_size, lr=self.config.lr, seed=self.seed,
                    device=self.config.device)
        return TrainConfig(**{**base, **overrides})

    # --- the ledger ---------------------------------------------------------------------------------------

    def claim(self, claim_id: str, statement: str, measured: Mapping[str, Any], holds: bool, **kw: Any) -> Any:
        """`claims.check_claim` filed under this notebook and profile (see there for `kind`, `bounds`).

        The returned record is also kept in `self.records`, so tables built from verdicts use the claims' own
        results rather than reading the ledger file back. In a kernel its verdict line is displayed at once
        (`show_verdict`); a failing enforced claim raises `ClaimFailed` instead, whose message says it.
        """
        record = check_claim(claim_id, statement, measured, holds, profile=self.profile, notebook=self.notebook,
                             path=self.ledger, **kw)
        self.records[claim_id] = record
        return show_verdict(record)

    def examine(self, claim_id: str, statement: str, verdict: Verdict, *,
                measured: Mapping[str, Any] | None = None) -> Any:
        """`claims.examine`: a textbook statement's three-way verdict (from `aestudy.stats.compare`), filed under this
        notebook; the record is kept in `self.records` like `claim`'s and its verdict line displayed in a kernel.

        Values of `measured` that are NaN and whose name starts with a prefix of `self.unavailable` (what this
        data cannot measure, e.g. "confidence" without labels) are left out and named under `not_measured`;
        any other non-finite value still fails the claim's sanity check."""
        measured = self._without_unavailable(measured)
        record = examine(claim_id, statement, verdict, measured=measured, notebook=self.notebook,
                         profile=self.profile, path=self.ledger)
        self.records[claim_id] = record
        return show_verdict(record)

    def _without_unavailable(self, measured: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        if not measured or not self.unavailable:
            return measured

        def absent(name: str, value: Any) -> bool:
            return (isinstance(value, float) and math.isnan(value)
                    and any(name.startswith(prefix) for prefix in self.unavailable))

        dropped = [name for name, value in measured.items() if absent(name, value)]
        if not dropped:
            return measured
        reasons = sorted({why for prefix, why in self.unavailable.items()
                          if any(name.startswith(prefix) for name in dropped)})
        kept = {name: value for name, value in measured.items() if name not in dropped}
        return {**kept, "not_measured": f"{', '.join(dropped)} ({'; '.join(reasons)})"}

    def figure(self, name: str, fig: Any, *, caption: str | None = None) -> None:
        """Save a key figure as a PNG beside the ledger for the report (`claims.record_figure`); returns None so a
        cell ending with it shows nothing extra."""
        record_figure(name, fig, notebook=self.notebook, path=self.ledger, caption=caption)

    def metric(self, name: str, value: Any) -> None:
        """`claims.record_metric` filed under this notebook."""
        record_metric(name, value, notebook=self.notebook, path=self.ledger)

    def skip(self, claim_ids: tuple[str, ...] | list[str], reason: str) -> None:
        """Record that claims were not checked in this run, and why (metric `skipped_claims`, read by the report's
        "For this data" section). A skipped claim is never written to the ledger as a verdict; `self.records`
        gets a stand-in {"verdict": "skipped", "skipped": reason} for the tables built from it."""
        for claim_id in claim_ids:
            self.skipped[str(claim_id)] = str(reason)
            # A stand-in record, so that tables built from `records` say "skipped" instead of missing the claim.
            self.records[str(claim_id)] = {"id": str(claim_id), "verdict": "skipped", "holds": False,
                                           "skipped": str(reason)}
        self.metric("skipped_claims", [{"id": cid, "reason": why} for cid, why in self.skipped.items()])

    def record_config(self, **extra: Any) -> None:
        """Record the whole configuration once (parameters, sizes, and `extra` facts such as image counts)."""
        self.metric("config", {**self.params, **self.size, **extra})

    def claims_table(self) -> pd.DataFrame:
        """The "what we measured" table of this notebook's claims."""
        return claims_table(self.ledger, notebook=self.notebook)

    def watermark(self) -> pd.DataFrame:
        """The last cell: versions, device, seed, profile and wall time, shown and recorded."""
        return watermark(seed=self.seed, profile=self.profile, device=self.device, started_at=self.started_at,
                         notebook=self.notebook, path=self.ledger)

    def describe(self, data: Dataset) -> str:
        """One line saying what runs where: profile, device, data and split sizes."""
        return (f"profile={self.profile}, device={self.device}, {data.info.name}: train {len(data.train):,} / "
                f"val {len(data.val):,} / test {len(data.test):,}, image shape {data.info.shape}")

