"""Exceptions with messages that name the problem and the fix."""


class RegaeError(Exception):
    """Base class of regae's own errors."""


class ConfigError(RegaeError, ValueError):
    """A configuration key, value or name is invalid."""


class DataError(RegaeError, ValueError):
    """Input data is malformed: wrong shape or dtype, non-finite values, empty, missing or corrupt files."""


class CheckpointError(RegaeError):
    """A checkpoint or pretrained folder is missing, truncated or corrupt."""


class NonFiniteLossError(RegaeError, FloatingPointError):
    """A training loss became NaN or Inf."""


class NotGenerativeError(RegaeError, NotImplementedError):
    """The model has no prior to sample from."""


class ConfigMigrationWarning(UserWarning):
    """A saved config came from an older regae and was brought up to date (renamed or removed keys)."""
