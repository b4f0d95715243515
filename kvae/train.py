"""Training runs: ``train(config) -> RunResult``, and ``load_run(run_dir)`` to use one later.

    from kvae.config import TrainConfig
    from kvae.train import train, load_run
    result = train(TrainConfig(dataset="digits", epochs=5))
    print(result.summary())
    config, model = load_run(result.run_dir)

A run directory holds::

    run.json          kvae's marker: versions, status, times, epochs, the steps per compiled
                      call that ran. Status "running", "finished", "interrupted" (Ctrl-C,
                      SIGTERM) or "failed" (a NaN loss or any error), the last two with the
                      "reason" and the "resume" command
    config.json       the resolved TrainConfig (TrainConfig.from_file reads it back)
    model.keras       the final model (written to a temporary name, then renamed)
    metrics.json      final test metrics: model.evaluate's loss/elbo/reconstruction/kl, active
                      units, KL per dimension (see kvae.evaluation), log p(x), training time
                      and ``seconds``: how long each test estimate took
    history.csv       one row per finished epoch (kvae.checkpointing)
    checkpoints/      last.keras and state.json: the last checkpointed epoch
    backup/           the state a resume starts from while training (kvae.checkpointing)
    logs/             TensorBoard event files (kvae.callbacks.TensorBoard)

Under several workers only the chief writes the run directory; the others write the same files
into a temporary folder that is deleted (saving may need every worker).

The test metrics are computed with the model's sampling state reset to the one a freshly
loaded ``model.keras`` starts from, so evaluating the saved model on the same test data with
the same batch size (``kvae evaluate`` does) reproduces them exactly.
"""

import dataclasses
import datetime
import math
import os
import shlex
import shutil
import sys
import tempfile
import time

import numpy as np

from kvae import _files, _precision, distribute
from kvae._choices import CHECKPOINT_DIR, SLOTS
from kvae._guards import sigterm_interrupts
from kvae._progress import resolve_verbose
from kvae._version import __version__
from kvae.checkpointing import (
    release_callbacks,
    resume_state,
    training_callbacks,
)
from kvae.config import TrainConfig
from kvae.errors import (
    ConfigError,
    DataError,
    KvaeError,
    ModelFileError,
    TrainingInterrupted,
)

__all__ = [
    "RUN_FILE",
    "Data",
    "RunResult",
    "build_model",
    "default_run_dir",
    "load_config",
    "load_data",
    "load_run",
    "load_test_data",
    "load_test_stream",
    "resume_config",
    "train",
]

RUN_FILE = "run.json"
RUN_FORMAT = "kvae-run"
CONFIG_FILE = "config.json"
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
LOG_DIR = "logs"
_TENSORBOARD_EXAMPLES = 1000
# An image run's TensorBoard examples hold at most this many pixel values (64 MB of float32):
# 1000 images of 64x64x3, 85 of 256x256x3.
_TENSORBOARD_PIXELS = 2**24


@dataclasses.dataclass
class RunResult:
    """What :func:`train` returns: where the run went, the model, and how it went."""

    run_dir: str
    model: object
    history: dict
    metrics: dict
    config: TrainConfig

    def path(self, name):
        return os.path.join(self.run_dir, name)

    def summary(self):
        """A few lines for a person: where everything went and how to open TensorBoard."""
        m = self.metrics
        lines = [
            f"Run directory: {self.run_dir}",
            f"  config:      {self.path(CONFIG_FILE)}",
            f"  model:       {self.path(MODEL_FILE)}",
            f"  metrics:     {self.path(METRICS_FILE)}",
            f"  checkpoints: {self.path(CHECKPOINT_DIR)}{os.sep}",
            f"  TensorBoard: {self.path(LOG_DIR)}{os.sep}",
            "Test metrics (nats per example): "
            + ", ".join(
                f"{k}={m[k]:.4g}"
                for k in ("elbo", "reconstruction", "kl", "log_likelihood")
                if isinstance(m.get(k), (int, float))
            )
            + (
                f", active units {m['active_units']}/{m['latent_dim']}"
                if "active_units" in m
                else ""
            ),
            f"Open TensorBoard:  tensorboard --logdir {self.path(LOG_DIR)}",
            f"Evaluate further:  kvae evaluate {self.run_dir} --num-samples 5000",
        ]
        return "\n".join(lines)


@dataclasses.dataclass
class Data:
    """A run's arrays (numpy): train, validation (None when validation="none") and test.

    Test (and held-out validation) data is binarised once, with the config's seed, when the
    config asks for binarisation, so every evaluation of a run sees the same test set."""

    x_train: np.ndarray
    y_train: object
    x_val: object
    y_val: object
    x_test: np.ndarray
    y_test: object

    @property
    def data_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def num_train(self):
        return len(self.x_train)


# ----- data ---------------------------------------------------------------------------------------
def _limit(x, y, n):
    if n is None:
        return x, y
    return x[:n], (None if y is None else y[:n])


def load_data(config, data=None):
    """The arrays of a run as :class:`Data`: loaded by name (or taken from ``data``, a
    ``((x_train, y_train), (x_test, y_test))`` pair), limited, split and binarised as the
    config says."""
    from kvae import datasets, tables
    from kvae.datasets.pipeline import binarize_static, check_unit_interval

    if data is None and tables.is_table_path(config.dataset):
        data = tables.table_data(config)
    elif data is None:
        data = datasets.load(config.dataset, **config.dataset_kwargs)
    try:
        (x_train, y_train), (x_test, y_test) = data
    except (TypeError, ValueError):
        raise DataError(
            "Expected data as ((x_train, y_train), (x_test, y_test)). "
            f"Received: {type(data).__name__}."
        ) from None
    x_train = np.asarray(x_train, np.float32)
    x_test = np.asarray(x_test, np.float32)
    x_train, y_train = _limit(x_train, y_train, config.max_train_examples)
    x_test, y_test = _limit(x_test, y_test, config.max_test_examples)
    if config.binarize is not None:
        check_unit_interval(x_train, "x_train")  # before any work, not when fit starts
        x_test = binarize_static(x_test, config.seed + 1, "x_test")
    x_val, y_val = None, None
    if config.validation == "test":
        x_val, y_val = x_test, y_test
    elif isinstance(config.validation, float):
        n_val = int(round(len(x_train) * config.validation))
        if not 1 <= n_val < len(x_train):
            raise ConfigError(
                f"Expected `validation` to hold out between 1 and {len(x_train) - 1} of the "
                f"{len(x_train)} training examples. Received: validation={config.validation} "
                f"({n_val} examples)."
            )
        x_val, y_val = x_train[-n_val:], (None if y_train is None else y_train[-n_val:])
        x_train, y_train = x_train[:-n_val], (None if y_train is None else y_train[:-n_val])
        if config.binarize is not None:
            x_val = binarize_static(x_val, config.seed + 2, "x_val")
    return Data(x_train, y_train, x_val, y_val, x_test, y_test)


# ----- model ----------------------------------------------------------------------------------
def check_components(config):
    """Raise (UnknownComponentError with the names that exist, or PluginError) now, before
    any data is loaded, if a component of the config is not registered or does not import."""
    from kvae import registry

    for slot in SLOTS:
        registry.get(slot.group, getattr(config, slot.name))


def _optimizer(config):
    import keras

    classes = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    return classes[config.optimizer](
        learning_rate=config.learning_rate, global_clipnorm=config.clip_norm
    )


def condition_of(config, arrays):
    """The condition of a ``conditional`` run ({"num_classes": C}, C = largest label + 1),
    checked against the data before anything is built; None for other runs."""
    if not config.conditional:
        return None
    if arrays.y_train is None or arrays.y_test is None:
        raise DataError(
            f"Expected labels for conditional=True: the data set {config.dataset!r} has none. "
            "Use a data set with labels (mnist, digits, an .npz with y_train and y_test)."
        )
    y = np.asarray(arrays.y_train)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise DataError(
            "Expected integer class labels >= 0 of shape (n,) for conditional=True. Received: "
            f"labels of dtype {y.dtype} and shape {y.shape}."
        )
    _check_classes_seen(y, arrays, config)
    return {"num_classes": max(2, int(y.max()) + 1)}


def _check_classes_seen(y_train, arrays, config):
    """Every class of the test and validation labels must be among the training labels:
    the model's classes come from the training labels, so an unseen one would fail (or
    meet an untrained condition) only after training (``max_train_examples`` can cut a
    class off)."""
    seen = set(np.unique(y_train).tolist())
    for name, labels in (("test", arrays.y_test), ("validation", arrays.y_val)):
        if labels is None:
            continue
        unseen = sorted(set(np.unique(np.asarray(labels)).tolist()) - seen)
        if unseen:
            raise DataError(
                f"Expected every class of the {name} labels among the training labels "
                f"(conditional=True learns one condition per training class). Received: "
                f"{name} classes {unseen} not in the {len(y_train)} training examples "
                f"(classes {sorted(seen)}; max_train_examples={config.max_train_examples}). "
                "Train on more examples (raise --max-train-examples) so every class appears."
            )


def build_model(config, data_shape, steps_per_epoch=None, condition=None):
    """A compiled ``kvae.VAE`` as the config describes it (call inside a strategy scope).

    ``condition``: a conditional VAE's condition (see :func:`condition_of`).

    ``steps_per_execution`` is capped at ``steps_per_epoch`` when that is given: more steps
    per compiled call than an epoch has gain nothing (and confuse Keras' progress bar)."""
    from kvae.model import VAE

    kwargs = dict(
        latent_dim=config.latent_dim,
        data_shape=data_shape,
        beta=config.beta,
        num_samples=config.num_samples,
        objective=config.objective,
        kl=config.kl,
        seed=config.seed,
        free_bits=config.free_bits,
        free_bits_mode=config.free_bits_mode,
    )
    for slot in (s.name for s in SLOTS):
        kwargs[slot] = getattr(config, slot)
        kwargs[f"{slot}_kwargs"] = getattr(config, f"{slot}_kwargs") or None
    if condition is not None:
        kwargs["condition"] = condition
    model = VAE(**kwargs, dtype=_precision.policy(config.precision))
    model.compile(
        optimizer=_optimizer(config),
        jit_compile=config.jit,
        steps_per_execution=min(config.steps_per_execution, steps_per_epoch or math.inf),
    )
    return model


# ----- run directories ------------------------------------------------------------------------
def default_run_dir(config, root="runs"):
    """``runs/<YYYYmmdd-HHMMSS>-<short name>`` under the current folder (made unique)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(root, f"{stamp}-{config.short_name}")
    path, i = base, 2
    while os.path.exists(path):
        path, i = f"{base}-{i}", i + 1
    return path


def _check_new_run_dir(run_dir, config, chief=True):
    """The run directory to write (checked, not yet created). A worker that is not the chief
    writes nothing there, so it does not care what the chief has already put in it."""
    if config.resume:
        if run_dir is None:
            raise ConfigError("Expected a run directory to resume. Received: run_dir=None.")
        done = finished_epochs(run_dir)
        if done is not None and config.epochs <= done:
            raise ConfigError(finished_message(run_dir, done))
        return os.fspath(run_dir)
    run_dir = os.fspath(run_dir) if run_dir is not None else default_run_dir(config)
    if chief and os.path.exists(run_dir) and (not os.path.isdir(run_dir) or os.listdir(run_dir)):
        raise ConfigError(
            f"Expected a new or empty run directory. Received: run_dir={run_dir!r}, which "
            f"already holds files. Choose another directory, or resume it with "
            f"`kvae train --resume {run_dir}`."
        )
    return run_dir


def finished_message(run_dir, epochs_done):
    """What to tell someone who resumes a run that has already trained its epochs."""
    command = f"kvae train --resume {shlex.quote(os.fspath(run_dir))} --epochs {epochs_done + 1}"
    return (
        f"The run {os.fspath(run_dir)!r} is finished: it trained {epochs_done} epochs, as many "
        f"as it was asked for. To train it longer, give a larger number of epochs in total, "
        f"e.g. `{command}`."
    )


def finished_epochs(run_dir):
    """The epochs a finished run trained; None when the run is not finished.

    Raises:
        ModelFileError: ``run_dir`` is not a kvae run directory."""
    info = _check_run_dir(run_dir)
    return info.get("epochs_completed") if info.get("status") == "finished" else None


def _make_run_dir(run_dir):
    try:
        os.makedirs(os.path.join(run_dir, CHECKPOINT_DIR), exist_ok=True)
        os.makedirs(os.path.join(run_dir, LOG_DIR), exist_ok=True)
    except OSError as err:
        raise KvaeError(f"Cannot create the run directory {run_dir!r}: {err}.") from None


def _check_run_dir(run_dir):
    run_dir = os.fspath(run_dir)
    if not os.path.exists(run_dir):
        raise ModelFileError(
            f"Expected a kvae run directory. Received: {run_dir!r}, which does not exist."
        )
    if not os.path.isdir(run_dir):
        raise ModelFileError(
            f"Expected a kvae run directory (a folder written by `kvae train`). Received: "
            f"{run_dir!r}, which is a file."
        )
    marker = os.path.join(run_dir, RUN_FILE)
    try:
        return _files.read_format_json(marker, RUN_FORMAT, "run file")
    except FileNotFoundError:
        raise ModelFileError(
            f"Expected a kvae run directory, with a {RUN_FILE} written by `kvae train`. "
            f"Received: {run_dir!r}, which has none: it is not a kvae run."
        ) from None


def load_config(run_dir):
    """The :class:`TrainConfig` of a run directory."""
    _check_run_dir(run_dir)
    path = os.path.join(os.fspath(run_dir), CONFIG_FILE)
    if not os.path.exists(path):
        raise ModelFileError(f"Expected {path!r} in the run directory. Received: no such file.")
    return TrainConfig.from_file(path)


def resume_config(run_dir):
    """The ``TrainConfig`` saved in ``run_dir`` (its config.json), with ``resume=True``: the
    settings ``kvae train --resume RUN_DIR`` continues with.

    Raises:
        ModelFileError: ``run_dir`` is not a kvae run directory or has no config.json.
    """
    return load_config(run_dir).replace(resume=True)


def load_run(run_dir):
    """``(config, model)`` of a finished run directory.

    Raises ModelFileError for a missing, foreign or unfinished run directory."""
    config = load_config(run_dir)
    path = os.path.join(os.fspath(run_dir), MODEL_FILE)
    if not os.path.exists(path):
        raise ModelFileError(
            f"Expected the final model {path!r}. Received: no such file: the training of this "
            f"run did not finish. Resume it with `kvae train --resume {os.fspath(run_dir)}`."
        )
    import kvae.heads  # noqa: F401  (register kvae's Keras objects: the command line
    import kvae.model  # noqa: F401  imports kvae lazily, without them)
    import kvae.networks  # noqa: F401
    import kvae.priors  # noqa: F401
    from kvae.saving import load_model

    return config, load_model(path)


def _write_run_file(run_dir, **fields):
    path = os.path.join(run_dir, RUN_FILE)
    try:
        info = _files.read_format_json(path, RUN_FORMAT, "run file")
    except (FileNotFoundError, ModelFileError):
        info = {}
    for key in ("reason", "resume"):  # only an interrupted or failed run has them
        info.pop(key, None)
    info.update(format=RUN_FORMAT, kvae_version=__version__, **fields)
    _files.write_json(path, info)


def _compile_record(model):
    """What ``compile`` chose (``jit`` may be "auto"): recorded in run.json and the hparams."""
    choice = getattr(model, "compile_choice", None)
    if choice is None:
        return {"requested": None, "jit_compile": bool(model.jit_compile), "reason": "unknown"}
    return choice.to_dict()


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _versions():
    import keras
    import tensorflow as tf
    import tensorflow_probability as tfp

    return {"tensorflow": tf.__version__, "keras": keras.__version__, "tfp": tfp.__version__}


# ----- training -------------------------------------------------------------------------------
def _as_config(config):
    if config is None:
        return TrainConfig()
    if isinstance(config, dict):
        return TrainConfig.from_dict(config)
    if not isinstance(config, TrainConfig):
        raise ConfigError(
            f"Expected a TrainConfig, a dict or None. Received: {type(config).__name__}."
        )
    return config


def train(config=None, run_dir=None, *, callbacks=(), verbose="auto", data=None, on_start=None):
    """Train a VAE as ``config`` says and write a run directory (see the module docstring).

    Args:
        config: a :class:`TrainConfig`, a dict of its keys, or None for the defaults (MNIST).
        run_dir: where to write the run; None: ``runs/<timestamp>-<short name>``. Must be new
            or empty unless ``config.resume``; resuming a finished run needs more epochs than
            it trained (ConfigError otherwise, saying how to train it longer).
        callbacks: more Keras callbacks for ``fit``.
        verbose: passed to ``fit`` ("auto" shows Keras' progress bar).
        data: optional ``((x_train, y_train), (x_test, y_test))`` arrays to use instead of
            loading ``config.dataset`` (which is then only a label).
        on_start: called with the run directory once everything that a mistake in the config
            or the data can make fail has been checked, just before the directory is written.

    Returns:
        A :class:`RunResult`.

    However training ends, ``run.json`` says so: "finished", "interrupted" (Ctrl-C or
    SIGTERM: :class:`~kvae.errors.TrainingInterrupted`) or "failed" (anything else raised), the last
    two with the reason and the command that resumes the run.
    """
    config = _as_config(config)
    check_components(config)
    _check_streamed_strategy(config, data)
    # The strategy first: a multi-worker cluster must be set up before TensorFlow computes.
    strategy = distribute.get_strategy(config.strategy)
    chief = distribute.is_chief()
    config = _with_dataset_path(config, data)
    run_dir = _check_new_run_dir(run_dir, config, chief)
    # Everything that can fail on a user's mistake (data, model arguments) happens before
    # the run directory is made, so a failed start leaves nothing behind.
    arrays = _checked_data(config, data, strategy)
    if _is_streamed(arrays):
        # An image folder or TFRecords: its preprocessing is pinned in the config written to
        # config.json, so the run's model is evaluated on images prepared the same way.
        config = arrays.config
    model = _run_model(config, arrays, strategy)
    robust = training_callbacks(run_dir, config)
    if on_start is not None:
        on_start(run_dir)
    # Only the chief writes the run directory; another worker writes the same files (saving
    # and logging may need every worker) into a scratch folder, deleted at the end.
    out = run_dir if chief else tempfile.mkdtemp(prefix="kvae-worker-")
    ending = ("failed", "the run did not start")
    try:
        with sigterm_interrupts(run_dir):
            if chief:
                _start_run_dir(run_dir, config, model)
            _announce_compile(model, verbose)
            result = _train(config, model, arrays, run_dir, out, robust, list(callbacks), verbose)
        ending = None
        return result
    except BaseException as err:
        ending = _ending_of(err)
        raise
    finally:
        release_callbacks(robust)
        if ending is not None and chief:
            _record_ending(run_dir, *ending)
        if out != run_dir:
            shutil.rmtree(out, ignore_errors=True)


# ----- train's steps, in order ---------------------------------------------------------------
def _with_dataset_path(config, data):
    """The config with its data set resolved to an absolute path when it names a file, and
    for a table file its schema and the table components (kvae.tables)."""
    from kvae import tables
    from kvae.datasets.sources import is_streamed

    ds = config.dataset
    named = ds.endswith(".npz") or tables.is_table_path(ds) or os.sep in ds
    if data is None and named and os.path.exists(ds):
        config = config.replace(dataset=os.path.abspath(ds))
    elif data is None and "://" not in ds and is_streamed(ds) and not ds.startswith("tfds:"):
        # a folder, a TFRecord glob (a TensorFlow Datasets name "tfds:..." is no path)
        config = config.replace(dataset=os.path.abspath(ds))
    return config if data is not None else tables.table_config(config)


def _check_streamed_strategy(config, data):
    """A streamed data set under ``multi-worker`` is refused before the cluster starts."""
    from kvae.datasets.sources import is_streamed

    if config.strategy == "multi-worker" and data is None and is_streamed(config.dataset):
        raise ConfigError(
            "Expected a single-machine strategy for a streamed data set "
            f"({config.dataset!r}). Received: strategy={config.strategy!r}. Keras 3.15's fit "
            "cannot take kvae's padded (x, y, weight) stream under "
            "MultiWorkerMirroredStrategy; in Python, kvae.distribute.distribute_images "
            "streams each worker's own files (docs/scaling.md)."
        )


def _checked_data(config, data, strategy):
    """The run's arrays (the random seed set first), checked against the strategy."""
    import keras

    from kvae.datasets.sources import is_streamed, streamed_data

    keras.utils.set_random_seed(config.seed)
    if data is None and is_streamed(config.dataset):
        # Listed, probed and every file decoded once now, before the run directory is made:
        # a file whose body is corrupt is named (or skipped and counted) before training.
        arrays = streamed_data(config, decode_check=True)
    else:
        arrays = load_data(config, data)
    if strategy.num_replicas_in_sync > 1:
        # A global batch that does not split evenly over the replicas is refused now, before
        # the run directory is made (docs/scaling.md).
        distribute.per_replica_batch_size(strategy, min(config.batch_size, arrays.num_train))
    return arrays


def _run_model(config, arrays, strategy):
    """The compiled model, built in the strategy's scope; a new run's prior initialised."""
    condition = condition_of(config, arrays)
    with strategy.scope():
        steps = math.ceil(arrays.num_train / config.batch_size)
        model = build_model(config, arrays.data_shape, steps_per_epoch=steps, condition=condition)
        # The Prior contract's optional hook: a VampPrior with init="data" copies examples.
        init_prior = getattr(model.prior, "init_from_data", None)
        if callable(init_prior) and not config.resume:
            x = arrays.train_examples() if _is_streamed(arrays) else arrays.x_train
            init_prior(x, seed=config.seed)
    return model


def _start_run_dir(run_dir, config, model):
    """Make the run directory: its folders, config.json, and run.json saying "running"."""
    _make_run_dir(run_dir)
    _files.write_json(os.path.join(run_dir, CONFIG_FILE), config.to_dict())
    schema = getattr(model.likelihood_head, "schema", None)
    if schema is not None:  # a table's: kvae impute and kvae score read new rows with it
        from kvae.tables import save_schema

        save_schema(schema, run_dir)
    _write_run_file(
        run_dir,
        status="running",
        started=_now(),
        versions=_versions(),
        compile=_compile_record(model),
    )


def _announce_compile(model, verbose):
    if verbose:
        choice = _compile_record(model)
        on = "on" if choice["jit_compile"] else "off"
        print(f"kvae: XLA {on} ({choice['reason']})", file=sys.stderr)


def _ending_of(err):
    """``(status, reason)`` for run.json of a run that ``err`` ended."""
    if isinstance(err, TrainingInterrupted):
        return ("interrupted", str(err))
    if isinstance(err, KeyboardInterrupt):
        return ("interrupted", "Stopped at once by a second Ctrl-C.")
    reason = str(err) or type(err).__name__
    if not isinstance(err, KvaeError):
        reason = f"{type(err).__name__}: {reason}"
    return ("failed", reason)


def _record_ending(run_dir, status, reason):
    """run.json of a run that did not finish: how it ended and the command that resumes it
    (nothing when the run directory was never started)."""
    if os.path.isfile(os.path.join(run_dir, RUN_FILE)):
        _write_run_file(
            run_dir,
            status=status,
            finished=_now(),
            reason=reason,
            resume=f"kvae train --resume {shlex.quote(run_dir)}",
        )


def _train(config, model, arrays, run_dir, out, robust, callbacks, verbose):
    """Fit, save the final model, compute the test metrics; run.json says "finished"."""
    import keras

    resumed_at, initial_epoch = _restore_checkpoint(config, model, run_dir)
    # The sampling state a freshly built (or loaded) model starts from: the test metrics are
    # computed from it, so evaluating the saved model reproduces them exactly.
    initial_seed_state = keras.ops.convert_to_numpy(model.seed_generator.state)
    val_ds = _validation_dataset(config, model, arrays)
    tensorboard = _tensorboard(config, model, arrays, run_dir, out)
    all_callbacks = [tensorboard, *_schedule_callbacks(config), *robust, *callbacks]
    try:
        history, train_seconds = _fit(
            config, model, arrays, initial_epoch, val_ds, all_callbacks, verbose
        )
        with _files.atomic_path(os.path.join(out, MODEL_FILE)) as tmp:
            model.save(tmp)
        model.seed_generator.state.assign(initial_seed_state)
        metrics = _test_metrics(config, model, arrays, verbose)
        epochs_done = history.epoch[-1] + 1 if history.epoch else resumed_at
        metrics["train_seconds"] = train_seconds
        metrics["epochs_completed"] = epochs_done
        _files.write_json(os.path.join(out, METRICS_FILE), metrics)
        tensorboard.log_metrics(metrics)
    finally:
        tensorboard.close()
    if out == run_dir:
        _record_finished(run_dir, model, arrays, train_seconds, epochs_done)
    return RunResult(
        run_dir=run_dir,
        model=model,
        history={k: [float(v) for v in vs] for k, vs in history.history.items()},
        metrics=metrics,
        config=config,
    )


def _restore_checkpoint(config, model, run_dir):
    """``(resumed_at, initial_epoch)``: the epochs a resumed run had done, and the epoch
    ``fit`` starts from when the run has only a checkpoint (a run written before backups
    were kept); a backup is restored by its callback, which sets the epoch itself."""
    found = resume_state(run_dir) if config.resume else None
    resumed_at = int(found["epoch"]) if found is not None else 0
    if found is None or found["kind"] != "checkpoint":
        return resumed_at, 0
    model.optimizer.build(model.trainable_variables)
    model.load_weights(found["source"])
    return resumed_at, resumed_at


def _is_streamed(arrays):
    """True for the data of an image folder or TFRecords (kvae.datasets.sources.Streamed)."""
    from kvae.datasets.sources import Streamed

    return isinstance(arrays, Streamed)


def _is_conditional(model):
    return getattr(model, "condition", None) is not None


def _validation_dataset(config, model, arrays):
    """The held-out data as a dataset (None without validation)."""
    from kvae.datasets import make_dataset
    from kvae.training.checks import handles_missing

    if _is_streamed(arrays):
        return arrays.validation  # the test stream, or None
    if arrays.x_val is None:
        return None
    val_y = arrays.y_val if _is_conditional(model) else None
    missing = handles_missing(model)  # a table's NaN (missing values)
    return make_dataset(arrays.x_val, config.batch_size, shuffle=False, y=val_y, missing=missing)


def _tensorboard(config, model, arrays, run_dir, out):
    """kvae's TensorBoard callback, showing held-out examples (validation, else test)."""
    from kvae.callbacks import TensorBoard

    if _is_streamed(arrays):
        # The first test images, decoded from the first batches only: at most
        # _TENSORBOARD_PIXELS numbers, so large images mean fewer of them.
        size = int(np.prod(arrays.data_shape))
        shown = max(1, min(_TENSORBOARD_EXAMPLES, _TENSORBOARD_PIXELS // size))
        shown_x, shown_y = arrays.test_examples(shown)
    else:
        held_out = arrays.x_val is not None
        shown_x = arrays.x_val if held_out else arrays.x_test
        shown_y = arrays.y_val if held_out else arrays.y_test
    return TensorBoard(
        os.path.join(out, LOG_DIR),
        # A conditional model's pictures take the labels as their conditions.
        x=shown_x[:_TENSORBOARD_EXAMPLES],
        y=None if shown_y is None else shown_y[:_TENSORBOARD_EXAMPLES],
        image_every=config.image_every,
        projector=config.projector,
        # The model settings, and what compile chose (the `jit` flag itself is operational).
        hparams={**_hparams_of(config), "jit_compile": _compile_record(model)["jit_compile"]},
        trial_id=os.path.basename(os.path.abspath(run_dir)),
    )


def _schedule_callbacks(config):
    """The callbacks the config's schedules ask for: KL warm-up, the learning rate."""
    import keras

    scheduled = []
    if config.kl_warmup_epochs:
        from kvae.callbacks import KLWarmup

        scheduled.append(KLWarmup(config.kl_warmup_epochs))
    if config.lr_schedule == "burda":
        from kvae.recipes import burda_learning_rate

        scheduled.append(
            keras.callbacks.LearningRateScheduler(
                lambda epoch, lr: burda_learning_rate(epoch, config.learning_rate)
            )
        )
    return scheduled


def _fit(config, model, arrays, initial_epoch, val_ds, callbacks, verbose):
    """``(history, seconds)`` of ``model.fit`` on the training arrays."""
    start = time.perf_counter()
    if _is_streamed(arrays):  # (x, label, weight) batches, one shape; Keras' own loop
        import tensorflow as tf

        from kvae.datasets.images import decode_failure

        try:
            history = model.fit(
                arrays.train,
                epochs=config.epochs,
                shuffle=False,  # the stream shuffles its files itself
                initial_epoch=initial_epoch,
                validation_data=val_ds,
                callbacks=callbacks,
                verbose=verbose,
            )
        except tf.errors.InvalidArgumentError as err:
            # A file that stopped decoding after the listing checked it: named by its path.
            failure = decode_failure(err)
            if failure is None:
                raise
            raise failure from None
        return history, time.perf_counter() - start
    train_y = arrays.y_train if _is_conditional(model) else None
    # VAE.fit feeds the arrays through kvae.datasets.make_dataset (one iterator for the
    # run, fixed-shape batches), under a strategy too.
    history = model.fit(
        arrays.x_train,
        train_y,
        batch_size=config.batch_size,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
        validation_data=val_ds,
        callbacks=callbacks,
        verbose=verbose,
        binarize=config.binarize,
    )
    return history, time.perf_counter() - start


def _test_metrics(config, model, arrays, verbose):
    """The test metrics (``metrics.json`` without the training figures) and, under
    ``seconds``, how long each estimate took."""
    # The same calls as kvae.evaluation.evaluate makes (the run's batch size). An image
    # folder's test set is streamed batch by batch (its labels come with the batches).
    streamed = _is_streamed(arrays)
    test_x = arrays.test if streamed else arrays.x_test
    test_y = arrays.y_test if _is_conditional(model) and not streamed else None
    eval_verbose = resolve_verbose("auto" if verbose == "auto" else min(int(verbose), 2))
    estimates = [("elbo", _test_elbo), ("latent", _test_latent)]
    if config.eval_num_samples:
        estimates.append(("log_likelihood", _test_log_likelihood))
    metrics, seconds = {}, {}
    for name, estimate in estimates:
        started = time.perf_counter()
        metrics.update(estimate(config, model, test_x, test_y, eval_verbose))
        seconds[name] = time.perf_counter() - started
    metrics["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    return metrics


def _test_elbo(config, model, x, y, verbose):
    from kvae import evaluation

    if evaluation.is_stream(x):
        _say(verbose, "Test set: ELBO (streamed)")
        return evaluation.streamed_elbo(model, x, config.batch_size, verbose=verbose)
    _say(verbose, f"Test set: ELBO of {len(x)} examples")
    scores = model.evaluate(x, y, batch_size=config.batch_size, return_dict=True, verbose=verbose)
    metrics = {k: float(v) for k, v in scores.items()}
    metrics["num_examples"] = int(len(x))
    return metrics


def _test_latent(config, model, x, y, verbose):
    from kvae import evaluation

    _say(verbose, "Test set: active units and KL per dimension")
    return evaluation.latent_summary(
        model,
        x,
        seed=config.seed,
        verbose=verbose,
        y=y,
        max_examples=10000,
        # A stream in chunks of the run's batch size (an array: as before).
        batch_size=config.batch_size if evaluation.is_stream(x) else None,
    )


def _test_log_likelihood(config, model, x, y, verbose):
    k = config.eval_num_samples
    _say(verbose, f"Test set: log p(x), importance-weighted, K={k}")
    from kvae import evaluation

    extra = {} if y is None else {"y": y}
    if evaluation.is_stream(x):  # chunks of the run's batch size: the images held stay few
        extra["batch_size"] = config.batch_size
    ll = model.log_likelihood(x, num_samples=k, seed=config.seed, verbose=verbose, **extra)
    return {"log_likelihood": float(np.mean(ll)), "log_likelihood_num_samples": k}


def _record_finished(run_dir, model, arrays, train_seconds, epochs_done):
    _write_run_file(
        run_dir,
        status="finished",
        finished=_now(),
        train_seconds=train_seconds,
        epochs_completed=epochs_done,
        # What ran: VAE.fit may move it to a divisor of the steps per epoch.
        steps_per_execution=int(model.steps_per_execution or 1),
        replicas=int(model.distribute_strategy.num_replicas_in_sync),
        data_shape=list(arrays.data_shape),
        **({"skipped_files": len(arrays.info.skipped)} if _is_streamed(arrays) else {}),
    )


# Config keys that say how a run is operated, not what model it trains: kept out of
# TensorBoard's hparams table (which is for comparing models); config.json has them all.
_OPERATIONAL_KEYS = ("image_every", "checkpoint_every", "projector", "resume", "on_nan", "jit")


def _hparams_of(config):
    """The hyperparameters of ``config`` for TensorBoard's hparams table: its keys without
    :data:`_OPERATIONAL_KEYS`."""
    return {k: v for k, v in config.to_dict().items() if k not in _OPERATIONAL_KEYS}


def _say(verbose, text):
    if verbose:
        print(text, flush=True)


def load_test_data(config, max_examples=None):
    """``(x_test, y_test)`` arrays of a run's config, as :func:`train` evaluated them
    (limited and, when the run binarises, binarised with the run's seed); only the first
    ``max_examples`` (None: all). For an image folder or TFRecords run they are decoded
    from the first test batches only; evaluate such a run on :func:`load_test_stream`."""
    from kvae.datasets.sources import is_streamed, streamed_data

    if is_streamed(config.dataset):
        return streamed_data(config).test_examples(max_examples)
    data = load_data(config)
    x, y = data.x_test, data.y_test
    if max_examples is not None:
        x, y = x[:max_examples], (None if y is None else y[:max_examples])
    return x, y


def load_test_stream(config):
    """The test ``tf.data.Dataset`` of an image folder or TFRecords run (padded ``(x, y,
    weight)`` batches of the run's batch size, prepared as the run recorded), or None for a
    run on arrays."""
    from kvae.datasets.sources import is_streamed, streamed_data

    return streamed_data(config).test if is_streamed(config.dataset) else None
