"""Profiles, devices and the validated study configuration shared by every notebook."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import torch

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


@dataclass(frozen=True)
class StudyConfig:
    """A notebook's parameters, validated at construction by `aestudy.parameters` (profile resolved, plain values).

    Raises:
        ConfigError: naming the parameter, the value and what is valid (e.g. "epochs=0 is invalid; it must be
            None (the profile's default) or an integer >= 1.").
    """

    profile: str | None = None
    dataset: str = "fashion-mnist"
    image_size: str | None = None  # your own images only: None | "auto" | "HxW" (aestudy.imagefiles.parse_size)
    channels: int | None = None  # your own images only: None (as found) | 1 (grey) | 3 (RGB)
    latent_dim: int = 16
    epochs: int | None = None
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        # One home for the rules: aestudy.parameters (the runner checks the same values before any kernel starts).
        from aestudy.parameters import validate_parameters

        values = validate_parameters(asdict(self))
        values["profile"] = resolve_profile(values["profile"])
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def epochs_or(self, default: int) -> int:
        """The explicit `epochs` parameter, or the profile's default when it is None."""
        return default if self.epochs is None else self.epochs

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (for the claims ledger and the watermark)."""
        return asdict(self)
