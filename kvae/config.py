"""``TrainConfig``: everything a training run needs, as inert, validated data.

    from kvae.config import TrainConfig
    config = TrainConfig(dataset="digits", latent_dim=2, epochs=5)
    config = TrainConfig.from_file("run.yaml").replace(epochs=20)
    config.to_dict()          # plain JSON-able dict, saved as config.json beside every run

Creating a config has no side effects: it imports no TensorFlow, reads no data and builds no
network. Every value is checked in ``__post_init__``; a wrong one raises
:class:`~kvae.errors.ConfigError` naming the key, the received value and what is allowed.
Unknown keys (in :meth:`TrainConfig.from_dict`, :meth:`~TrainConfig.from_file` and
:meth:`~TrainConfig.replace`) are refused with the nearest known key.

Component names (encoder, decoder, posterior, likelihood, prior, dataset) are only checked to
be non-empty strings here; whether they are registered is checked by :func:`kvae.train.train`
before any data is loaded, since plugins may be installed after a config was written.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
from typing import Any

from kvae._choices import (
    BINARIZE,
    DEFAULT_STEPS_PER_EXECUTION,
    FREE_BITS_MODES,
    KL_METHODS,
    LR_SCHEDULES,
    OBJECTIVES,
    ON_NAN,
    OPTIMIZERS,
    PRECISIONS,
    STRATEGIES,
)
from kvae.errors import ConfigError

__all__ = ["TrainConfig", "parse_image_size"]

VALIDATION = ("test", "none")
ON_BAD_FILE = ("error", "skip")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run's settings. All keys are keyword arguments with defaults.

    Data:
        dataset: a registered data set name (``kvae.datasets.names()``), a path to an .npz, a
            folder of images or a TFRecord path or glob (streamed: see
            ``kvae.datasets.image_dataset``, whose options go in ``dataset_kwargs``), or a
            table (.csv, .tsv, .parquet: ``kvae.tables``; its ``dataset_kwargs`` are
            schema, kinds and test_fraction).
        dataset_kwargs: extra arguments of the data set's loader.
        image_size: [height, width] the images of a folder or TFRecord data set are resized
            to (None: keep their one size); an int or "HxW" is accepted and stored as the pair.
        on_bad_file: "error" or "skip": what to do with image files that cannot be read.
        binarize: None, "static" (one Bernoulli draw per pixel, fixed) or "dynamic" (a fresh
            draw each batch). The test set is always binarised statically (seeded), so test
            metrics are reproducible.
        validation: "test" (the test split is the validation data after every epoch), "none",
            or a fraction in (0, 1) of the training data held out (its last rows).
        max_train_examples, max_test_examples: use only the first N rows (None: all).
    Model (see ``kvae.VAE``):
        encoder, decoder, posterior, likelihood, prior and their ``*_kwargs``; latent_dim;
        beta (KL weight, 1 = ELBO); kl ("auto", "analytic", "mc"); objective ("elbo" or
        "iwae"); num_samples (latent samples per example: K of the IWAE bound).
    Optimisation:
        epochs, batch_size, learning_rate, optimizer ("adam", "adamw", "sgd", "rmsprop"),
        clip_norm (None or a gradient-norm bound), kl_warmup_epochs (linear beta warm-up from
        0; 0 = none), seed, jit (XLA: true, false or "auto", kvae's measured rule; see
        ``kvae.VAE.compile``), steps_per_execution, precision ("float32" or "bf16": Keras'
        mixed_bfloat16 policy; see ``kvae._precision`` for when it pays).
    Logging and evaluation:
        image_every (TensorBoard images every N epochs; 0 = never), projector (write the
        embedding projector), eval_num_samples (K of the importance-weighted log p(x) written
        to metrics.json after training; 0 = skip it, ``kvae evaluate`` computes it).
    Robustness and scale (used by kvae.checkpointing and kvae.distribute):
        strategy ("default", "mirrored", "multi-worker", "tpu"), resume, on_nan ("stop",
        "skip"), free_bits (nats per latent dimension; 0 = off), free_bits_mode ("total": one floor
        free_bits * latent_dim on the whole code's KL; "dimension": each dimension's KL floored
        at free_bits, Kingma et al. 2016; "group": each layer of a hierarchical model), checkpoint_every (epochs).
    Conditioning:
        conditional: train a conditional VAE (``kvae.VAE(condition={"num_classes": C})``)
            on the data set's labels, C = the largest label + 1. TensorBoard then gets the
            scalars only (its images and projector are unconditional).
    lr_schedule: None (constant learning rate) or "burda" (Burda et al. 2016's stages,
        cut after ``epochs``: see ``kvae.recipes``).
    """

    dataset: str = "mnist"
    dataset_kwargs: dict = dataclasses.field(default_factory=dict)
    image_size: list | None = None
    on_bad_file: str = "error"
    encoder: str = "mlp"
    encoder_kwargs: dict = dataclasses.field(default_factory=dict)
    decoder: str = "mlp"
    decoder_kwargs: dict = dataclasses.field(default_factory=dict)
    posterior: str = "gaussian"
    posterior_kwargs: dict = dataclasses.field(default_factory=dict)
    likelihood: str = "bernoulli"
    likelihood_kwargs: dict = dataclasses.field(default_factory=dict)
    prior: str = "standard-normal"
    prior_kwargs: dict = dataclasses.field(default_factory=dict)
    latent_dim: int = 2
    beta: float = 1.0
    kl_warmup_epochs: int = 0
    kl: str = "auto"
    objective: str = "elbo"
    num_samples: int = 1
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    optimizer: str = "adam"
    clip_norm: float | None = None
    seed: int = 0
    jit: bool | str = "auto"
    steps_per_execution: int = DEFAULT_STEPS_PER_EXECUTION
    precision: str = "float32"
    binarize: str | None = None
    validation: str | float = "test"
    max_train_examples: int | None = None
    max_test_examples: int | None = None
    image_every: int = 1
    projector: bool = True
    eval_num_samples: int = 0
    strategy: str = "default"
    resume: bool = False
    on_nan: str = "stop"
    free_bits: float = 0.0
    free_bits_mode: str = "total"
    checkpoint_every: int = 1
    conditional: bool = False
    lr_schedule: str | None = None

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            checked = _CHECKS[field.name](field.name, value)
            if checked is not value:
                object.__setattr__(self, field.name, checked)
        if self.objective == "iwae" and self.beta != 1.0:
            raise ConfigError(
                "Expected beta=1 with objective='iwae' (the importance-weighted bound has no "
                f"KL weight). Received: beta={self.beta!r}. Use objective='elbo' for a beta-VAE."
            )

    # ----- construction ------------------------------------------------------------------
    @classmethod
    def keys(cls) -> list[str]:
        """The allowed keys, in definition order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, data: dict, *, source: str | None = None) -> TrainConfig:
        """A config from a mapping of keys to values; unknown keys are refused."""
        if not isinstance(data, dict):
            where = f" in {source}" if source else ""
            raise ConfigError(
                f"Expected a mapping of config keys to values{where}. "
                f"Received: {type(data).__name__}."
            )
        _refuse_unknown(data, source)
        return cls(**data)

    @classmethod
    def from_file(cls, path) -> TrainConfig:
        """A config from a ``.yaml``/``.yml`` or ``.json`` file holding one mapping."""
        path = os.fspath(path)
        ext = os.path.splitext(path)[1].lower()
        if ext not in (".yaml", ".yml", ".json"):
            raise ConfigError(
                f"Expected a config file ending in .yaml, .yml or .json. Received: path={path!r}"
            )
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise ConfigError(
                f"Expected an existing config file. Received: path={path!r}, which does not exist."
            ) from None
        except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
            raise ConfigError(f"Could not read the config file {path!r}: {err}.") from None
        try:
            data = json.loads(text) if ext == ".json" else _load_yaml(text)
        except ValueError as err:  # json.JSONDecodeError and yaml.YAMLError (made ValueError)
            raise ConfigError(f"The config file {path!r} is not valid {ext[1:]}: {err}") from None
        if data is None:
            data = {}
        return cls.from_dict(data, source=path)

    def replace(self, **overrides) -> TrainConfig:
        """A copy with some keys changed (validated like a new config)."""
        _refuse_unknown(overrides, None)
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON-able; dicts copied), the inverse of :meth:`from_dict`."""
        return {f.name: _copy(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @property
    def short_name(self) -> str:
        """A short label for run directories, e.g. ``mnist-mlp-z2``."""
        data = os.path.splitext(os.path.basename(self.dataset.rstrip("/\\")))[0] or "data"
        parts = [data, self.encoder.split(":")[-1], f"z{self.latent_dim}"]
        if self.objective == "iwae":
            parts.append(f"iwae{self.num_samples}")
        if self.beta != 1.0:
            parts.append(f"beta{self.beta:g}")
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in "-".join(parts))
        return safe[:60]


# ----- validation helpers ---------------------------------------------------------------------


def _refuse_unknown(data, source):
    allowed = TrainConfig.keys()
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            where = f" in {source}" if source else ""
            raise ConfigError(
                f"Unknown config key {key!r}{where}.{hint} Expected one of: "
                f"{', '.join(allowed)}. Received: {key}={data[key]!r}"
            )


def _fail(name, value, expected):
    raise ConfigError(f"Expected `{name}` to be {expected}. Received: {name}={value!r}")


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _int(minimum, *, optional=False):
    def check(name, value):
        if optional and value is None:
            return None
        if not _is_int(value) or value < minimum:
            expected = f"an integer >= {minimum}" + (" or null/None" if optional else "")
            _fail(name, value, expected)
        return value

    return check


def _float(minimum=None, *, exclusive=False, optional=False):
    def check(name, value):
        if optional and value is None:
            return None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        if ok and minimum is not None:
            ok = value > minimum if exclusive else value >= minimum
        if not ok:
            bound = "" if minimum is None else f" {'>' if exclusive else '>='} {minimum}"
            _fail(name, value, f"a finite number{bound}" + (" or null/None" if optional else ""))
        return float(value)

    return check


def _choice(allowed):
    def check(name, value):
        if value not in allowed or isinstance(value, bool):
            shown = ", ".join("null/None" if a is None else repr(a) for a in allowed)
            _fail(name, value, f"one of {shown}")
        return value

    return check


def _bool(name, value):
    if not isinstance(value, bool):
        _fail(name, value, "true or false")
    return value


def _jit(name, value):
    if not (isinstance(value, bool) or value == "auto"):
        _fail(name, value, "true, false or 'auto'")
    return value


def _name(name, value):
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        _fail(name, value, "a non-empty string (a registered name; see `kvae plugins list`)")
    return value


def _kwargs(name, value):
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        _fail(name, value, "a mapping of argument names to values, such as {'hidden': [256]}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as err:
        _fail(name, value, f"JSON-serialisable values (saved in config.json), but {err}")
    return _copy(value)


def _validation(name, value):
    if isinstance(value, str) and value in VALIDATION:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return float(value)
    _fail(name, value, "'test', 'none' or a fraction of the training data in (0, 1)")


def parse_image_size(value, name="image_size"):
    """``value`` as (height, width): an int (square), "H" or "HxW", or a pair; None stays None.
    Raises ConfigError otherwise."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().split("x")
        sizes = [int(p) for p in parts if p.strip().isdigit()]
        sizes = sizes if len(sizes) == len(parts) else []
    elif isinstance(value, (list, tuple)):
        sizes = list(value)
    else:
        sizes = [value]
    integers = all(isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes)
    if not (len(sizes) in (1, 2) and integers and min(sizes) >= 1):
        _fail(
            name,
            value,
            "a size in pixels: an integer (square), 'HxW' such as '64x48', or [height, width]",
        )
    return (int(sizes[0]), int(sizes[-1]))


def _image_size(name, value):
    size = parse_image_size(value, name)
    return None if size is None else list(size)


def _copy(value):
    return json.loads(json.dumps(value)) if isinstance(value, (dict, list)) else value


_CHECKS = {
    "dataset": _name,
    "dataset_kwargs": _kwargs,
    "image_size": _image_size,
    "on_bad_file": _choice(ON_BAD_FILE),
    "encoder": _name,
    "encoder_kwargs": _kwargs,
    "decoder": _name,
    "decoder_kwargs": _kwargs,
    "posterior": _name,
    "posterior_kwargs": _kwargs,
    "likelihood": _name,
    "likelihood_kwargs": _kwargs,
    "prior": _name,
    "prior_kwargs": _kwargs,
    "latent_dim": _int(1),
    "beta": _float(0.0),
    "kl_warmup_epochs": _int(0),
    "kl": _choice(KL_METHODS),
    "objective": _choice(OBJECTIVES),
    "num_samples": _int(1),
    "epochs": _int(1),
    "batch_size": _int(1),
    "learning_rate": _float(0.0, exclusive=True),
    "optimizer": _choice(OPTIMIZERS),
    "clip_norm": _float(0.0, exclusive=True, optional=True),
    "seed": _int(0),
    "jit": _jit,
    "steps_per_execution": _int(1),
    "precision": _choice(PRECISIONS),
    "binarize": _choice(BINARIZE),
    "validation": _validation,
    "max_train_examples": _int(1, optional=True),
    "max_test_examples": _int(1, optional=True),
    "image_every": _int(0),
    "projector": _bool,
    "conditional": _bool,
    "lr_schedule": _choice(LR_SCHEDULES),
    "eval_num_samples": _int(0),
    "strategy": _choice(STRATEGIES),
    "resume": _bool,
    "on_nan": _choice(ON_NAN),
    "free_bits": _float(0.0),
    "free_bits_mode": _choice(FREE_BITS_MODES),
    "checkpoint_every": _int(1),
}


def _load_yaml(text):
    """YAML with floats such as ``1e-3`` read as numbers (YAML 1.1 reads them as strings)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
            |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
            re.X,
        ),
        list("-+0123456789."),
    )
    try:
        return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        raise ValueError(str(err)) from None
