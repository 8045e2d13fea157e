"""The engine's errors: each names what was wrong and what was expected."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration value is out of range or unknown (raised before any work starts)."""


class RunExistsError(RuntimeError):
    """``out_dir`` already holds a run and ``resume`` was not asked for."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names the step and the last good checkpoint."""


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or read (the message says which and why)."""
