"""kvae: variational autoencoders for Keras 3 whose posterior and likelihood are
TensorFlow Probability distributions.

    import kvae
    (x_train, _), (x_test, _) = kvae.datasets.load("mnist")
    model = kvae.VAE(encoder="mlp", decoder="mlp", latent_dim=2, data_shape=(28, 28, 1))
    model.compile(optimizer="adam")
    model.fit(x_train, epochs=5, batch_size=128)

The public API is what ``__all__`` lists: the classes and functions a user calls
(``VAE``, ``load_model``, ``register``), kvae's errors, and its modules, each reachable as an
attribute (``kvae.callbacks``, ``kvae.train``, ...; loaded on first use). Anything else is
private. Importing kvae imports TensorFlow and registers kvae's Keras objects, so
``keras.models.load_model`` finds them, except in the ``kvae`` console script (its module
``kvae_console`` is imported first) or with ``KVAE_LAZY_IMPORT=1``: the command line imports
TensorFlow only in the commands that need it, so its ``--help`` stays fast.
"""

import importlib
import os
import sys

from kvae._version import __version__
from kvae.errors import (
    ConfigError,
    DataError,
    KvaeError,
    ModelFileError,
    PluginError,
    TrainingError,
    UnknownComponentError,
)

# name -> (module, attribute or None for the module itself)
_LAZY = {
    "VAE": ("kvae.model", "VAE"),
    "load_model": ("kvae.saving", "load_model"),
    "register": ("kvae.registry", "register"),
    "datasets": ("kvae.datasets", None),
    "objectives": ("kvae.objectives", None),
    "registry": ("kvae.registry", None),
    "heads": ("kvae.heads", None),
    "priors": ("kvae.priors", None),
    "networks": ("kvae.networks", None),
    "callbacks": ("kvae.callbacks", None),
    "config": ("kvae.config", None),
    "distribute": ("kvae.distribute", None),
    "evaluation": ("kvae.evaluation", None),
    "export": ("kvae.export", None),
    "plots": ("kvae.plots", None),
    "testing": ("kvae.testing", None),
    "train": ("kvae.train", None),
}
# What registers kvae's Keras objects (the rest import TensorFlow for nothing else).
_KERAS_MODULES = ("VAE", "heads", "priors", "networks")

__all__ = [
    "__version__",
    "ConfigError",
    "DataError",
    "KvaeError",
    "ModelFileError",
    "PluginError",
    "TrainingError",
    "UnknownComponentError",
    *_LAZY,
]


def __getattr__(name):
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'kvae' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)


def _lazy():
    """True in the ``kvae`` console script and with ``KVAE_LAZY_IMPORT=1``."""
    return "kvae_console" in sys.modules or os.environ.get("KVAE_LAZY_IMPORT") == "1"


if not _lazy():
    # Register every Keras serializable of kvae now, so keras.models.load_model works.
    for _name in _KERAS_MODULES:
        __getattr__(_name)
    del _name
