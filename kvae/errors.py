"""kvae's error types.

Every mistake a user can make (bad data, an unknown component name, a bad config, a
broken plugin, a foreign model file) raises a subclass of :class:`KvaeError`. Messages
follow the Keras habit: what was expected, what was received, and what to do.
The subclasses also derive from the closest built-in type, so ``except ValueError``
keeps working for code that does not know about kvae.
"""


class KvaeError(Exception):
    """Base class of every error kvae raises on purpose."""


class ConfigError(KvaeError, ValueError):
    """A constructor argument or config value is invalid."""


class DataError(KvaeError, ValueError):
    """Data does not fit the model (shape, dtype, range, NaN/inf)."""


class UnknownComponentError(KvaeError, LookupError):
    """A component name is not registered in its group."""

    def __str__(self):  # LookupError would otherwise quote the message like a KeyError.
        return str(self.args[0]) if self.args else ""


class PluginError(KvaeError, ImportError):
    """A plugin could not be loaded, or its object is not what its group needs."""


class ModelFileError(KvaeError, ValueError):
    """A saved model file is missing, truncated, foreign or needs a missing plugin."""


class TrainingError(KvaeError, RuntimeError):
    """Training could not go on (for example a NaN loss)."""


class TrainingInterrupted(TrainingError):
    """Training was stopped by Ctrl-C or SIGTERM after saving a checkpoint; the message says
    how to resume and ``signum`` which signal it was. The command line exits with status
    128 + signum (130 for Ctrl-C, 143 for SIGTERM)."""
