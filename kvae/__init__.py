"""kvae: variational autoencoders for Keras 3 whose posterior and likelihood are
TensorFlow Probability distributions.

    import kvae
    (x_train, _), (x_test, _) = kvae.datasets.load("mnist")
    model = kvae.VAE(encoder="mlp", decoder="mlp", latent_dim=2, data_shape=(28, 28, 1))
    model.compile(optimizer="adam")
    model.fit(x_train, epochs=5, batch_size=128)

The public API is what ``__all__`` lists. Importing kvae imports TensorFlow and registers
kvae's Keras objects, so ``keras.models.load_model`` finds them; the ``kvae`` command line
defers that import until a command needs it (its ``--help`` stays fast).
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
}

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


def _imported_by_cli():
    """True for the ``kvae`` script and ``python -m kvae``: they import TensorFlow only in the
    commands that need it, so ``--help`` stays fast."""
    if os.environ.get("KVAE_LAZY_IMPORT") == "1":
        return True
    if os.path.basename(sys.argv[0] or "") in ("kvae", "kvae.exe"):
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    return any(a == "-m" and b == "kvae" for a, b in zip(argv, argv[1:], strict=False))


if not _imported_by_cli():
    # Register every Keras serializable of kvae now, so keras.models.load_model works.
    for _name in _LAZY:
        __getattr__(_name)
    del _name
