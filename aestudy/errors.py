"""The exceptions aestudy raises: each names the parameter or file at fault and the fix."""


class AestudyError(Exception):
    """Base class for every error aestudy raises on purpose."""


class ConfigError(AestudyError, ValueError):
    """An invalid parameter value (names the parameter and the valid values)."""


class DataError(AestudyError):
    """A dataset that cannot be found, read, verified or written."""


class DeviceError(AestudyError, RuntimeError):
    """A requested device (e.g. `cuda`) that this machine does not have."""


class TrainingDivergedError(AestudyError, FloatingPointError):
    """A NaN/inf loss during training (names epoch and step; last good weights are kept)."""


class CheckpointError(AestudyError):
    """A checkpoint that is corrupted, truncated or from an incompatible version."""


class CheckpointRefusedError(CheckpointError):
    """An intact checkpoint holding types that `torch.load(weights_only=True)` refuses (`types` names them)."""

    def __init__(self, message: str, types: list[str] | tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.types = tuple(types)


class ClaimFailed(AestudyError, AssertionError):
    """A measured claim that did not hold in a profile where claims are enforced."""
