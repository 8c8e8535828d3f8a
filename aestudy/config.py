"""Profiles, devices and the validated study configuration shared by every notebook."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch

from aestudy.data import DATASET_NAMES as DATASETS
from aestudy.errors import ConfigError, DeviceError

PROFILES: tuple[str, ...] = ("smoke", "standard", "full")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")
PROFILE_ENV = "AESTUDY_PROFILE"
DEFAULT_PROFILE = "standard"

T = TypeVar("T")


def resolve_profile(profile: str | None = None) -> str:
    """Return the active profile: the argument, else $AESTUDY_PROFILE, else "standard"."""
    source = "profile"
    if profile is None:
        profile = os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
        source = f"${PROFILE_ENV}" if os.environ.get(PROFILE_ENV) else "profile"
    if profile not in PROFILES:
        raise ConfigError(f"{source}={profile!r} is not a profile; valid values: {', '.join(PROFILES)}.")
    return profile


def by_profile(profile: str, *, smoke: T, standard: T, full: T) -> T:
    """Pick the value sized for `profile` (sizes live next to the code that uses them)."""
    return {"smoke": smoke, "standard": standard, "full": full}[resolve_profile(profile)]


def resolve_device(device: str = "auto") -> torch.device:
    """Turn "auto"|"cpu"|"cuda"|"mps" into a torch.device, failing clearly when it is absent."""
    if device not in DEVICES and not str(device).startswith("cuda:"):
        raise ConfigError(f"device={device!r} is not a device; valid values: {', '.join(DEVICES)}.")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(
            f"device={device!r} was requested but no CUDA GPU is available "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda is not None}). "
            "Use device='auto' or device='cpu', or install a CUDA build of torch on a GPU machine "
            "(see README, 'Running on a GPU')."
        )
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise DeviceError("device='mps' was requested but Apple MPS is not available; use 'auto' or 'cpu'.")
    return torch.device(device)


def _require(cond: bool, name: str, value: Any, valid: str) -> None:
    if not cond:
        raise ConfigError(f"{name}={value!r} is invalid; {valid}.")


@dataclass(frozen=True)
class StudyConfig:
    """A notebook's parameters, validated at construction (profile resolved, values in range)."""

    profile: str | None = None
    dataset: str = "fashion-mnist"
    latent_dim: int = 16
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "profile", resolve_profile(self.profile))
        _require(self.dataset in DATASETS, "dataset", self.dataset, f"valid values: {', '.join(DATASETS)}")
        _require(isinstance(self.latent_dim, int) and self.latent_dim >= 1, "latent_dim", self.latent_dim,
                 "it must be an integer >= 1")
        _require(self.epochs is None or (isinstance(self.epochs, int) and self.epochs >= 0), "epochs",
                 self.epochs, "it must be None (profile default) or an integer >= 0")
        _require(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", self.batch_size,
                 "it must be an integer >= 1")
        _require(isinstance(self.lr, (int, float)) and 0 < self.lr < 10, "lr", self.lr,
                 "it must be a number in (0, 10)")
        _require(isinstance(self.seed, int) and self.seed >= 0, "seed", self.seed, "it must be an integer >= 0")
        _require(self.device in DEVICES or str(self.device).startswith("cuda:"), "device", self.device,
                 f"valid values: {', '.join(DEVICES)}")

    def epochs_or(self, default: int) -> int:
        """The explicit `epochs` parameter, or the profile's default when it is None."""
        return default if self.epochs is None else self.epochs

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (for the claims ledger and the watermark)."""
        return asdict(self)
