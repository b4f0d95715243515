"""Lose nothing: atomic checkpoints, resumable backups, Ctrl-C and NaN handling for ``fit``.

    from kvae.checkpointing import training_callbacks
    model.fit(data, epochs=20, callbacks=training_callbacks("runs/my-run", config))

:func:`training_callbacks` returns ordinary Keras callbacks that keep, in a run directory::

    checkpoints/last.keras    the model after the last good checkpointed epoch (a .keras file:
                              ``kvae.load_model`` reads it; optimizer state included)
    checkpoints/state.json    which epoch and step that file holds
    backup/                   the state to resume from (``keras.callbacks.BackupAndRestore``):
                              weights, optimizer and sampling state, epoch and step; written
                              every ``backup_seconds`` within epochs and at each epoch end
    history.csv               one row per finished epoch (the epoch's logs)

Every file is written under a temporary name in its own folder and moved onto its final name
with ``os.replace`` (atomic): a run killed at any moment, even with SIGKILL, leaves the
previous checkpoint whole. A write that fails (disk full, folder gone or read-only) raises
:class:`~kvae.errors.TrainingError` naming the path, and the previous files stay as they were.

Resuming (``kvae train --resume RUN_DIR``, or ``config.resume=True``) restores the backup
(else the last checkpoint): weights, optimizer state, the sampling state and the epoch. An
epoch interrupted in its middle is run again from its start with the weights of the backup,
so the run still trains for its number of epochs; the examples it had already seen in that
epoch are seen once more (``tf.data`` iterator positions are not saved).

Ctrl-C (SIGINT), first press: the current compiled call (``steps_per_execution`` steps) ends,
the backup and the checkpoint are written, ``history.csv`` and the TensorBoard logs are
flushed, and :class:`TrainingInterrupted` (a ``TrainingError``) is raised with the command
that resumes the run. Second press: an ordinary ``KeyboardInterrupt`` at once.

NaN or inf: with ``on_nan="stop"`` (default) training stops at the first compiled call whose
loss is not finite, and a ``TrainingError`` names the term that went bad (reconstruction
and/or KL), the epoch and steps, the last good checkpoint, and the usual causes. Nothing is
saved from the bad weights. ``on_nan="skip"`` needs a model whose training step can drop
non-finite steps (a ``skip_nonfinite`` attribute); the steps it skipped are reported.

Several workers (``MultiWorkerMirroredStrategy``): only the chief writes into the run
directory; the other workers write the same files into a temporary folder that is deleted
(the Keras multi-worker guide's pattern, since saving may need every worker). To resume, the
run directory must be readable by every worker (a shared file system). Ctrl-C must reach
every worker (a worker that stops alone leaves the others waiting).
"""

import contextlib
import csv
import errno
import io
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
import uuid
import warnings

import keras
import numpy as np

from kvae import _files
from kvae.errors import ConfigError, ModelFileError, TrainingError

__all__ = [
    "BACKUP_DIR",
    "CHECKPOINT_DIR",
    "CHECKPOINT_FILE",
    "HISTORY_FILE",
    "Backup",
    "Checkpoint",
    "History",
    "InterruptHandler",
    "NaNGuard",
    "TrainingInterrupted",
    "resume_config",
    "resume_state",
    "training_callbacks",
]

CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_FILE = "last.keras"
STATE_FILE = "state.json"
BACKUP_DIR = "backup"
HISTORY_FILE = "history.csv"
BACKUP_SECONDS_ENV = "KVAE_BACKUP_SECONDS"
DEFAULT_BACKUP_SECONDS = 60.0
_FORMAT = "kvae-checkpoint"

_CAUSES = {
    "reconstruction": (
        "data outside the likelihood's range (a Bernoulli or continuous Bernoulli likelihood "
        "needs x in [0, 1]: divide 8-bit pixels by 256; kvae checks arrays, but a tf.data "
        "pipeline only on its first batch), a learning rate too high (lower it or set "
        "clip_norm), or an unbounded log-scale in a custom likelihood head (use softplus, "
        "or clip the log-variance)"
    ),
    "kl": (
        "a posterior scale that collapsed or exploded (a learning rate too high: lower it or "
        "set clip_norm), or an unbounded log-variance in a custom posterior or prior (use "
        "softplus, or clip the log-variance)"
    ),
    "loss": (
        "a learning rate too high (lower it or set clip_norm), unnormalised data for a "
        "Bernoulli likelihood, or an unbounded log-scale in a custom head (use softplus)"
    ),
}


try:  # kvae.errors is the home of kvae's error types (the CLI maps this one to exit code 130)
    from kvae.errors import TrainingInterrupted
except ImportError:  # pragma: no cover - until kvae.errors has it

    class TrainingInterrupted(TrainingError):
        """Training was stopped by Ctrl-C after saving; the message says how to resume."""


# ----- helpers ------------------------------------------------------------------------------
def _option(config, key, default):
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def _finite(value):
    try:
        return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))
    except (TypeError, ValueError):
        return True  # not a number: nothing to judge


def _scalar(value):
    try:
        return float(np.mean(np.asarray(value, dtype=np.float64)))
    except (TypeError, ValueError):
        return None


def _fsync(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_error(path, err, previous):
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    if getattr(err, "errno", None):
        reason = f"{reason} (errno {err.errno})"
    kept = (
        f" The previous file {previous!r} is intact."
        if previous and os.path.exists(previous)
        else ""
    )
    return TrainingError(
        f"Cannot write the checkpoint {path!r}: {reason}. Free disk space or make the run "
        f"directory writable, then resume with `kvae train --resume RUN_DIR`.{kept}"
    )


def _atomic_write(path, write, *, suffix, previous=None):
    """``write(tmp)`` into a temporary file beside ``path`` (ending in ``suffix``, as Keras
    requires), fsync it, then ``os.replace`` it onto ``path``. On any failure the temporary
    file is removed, ``path`` is untouched and a TrainingError names it (and ``previous``,
    the file that still holds the last good state; default ``path``)."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex[:12]}{suffix}")
    try:
        try:
            os.makedirs(folder, exist_ok=True)
        except FileExistsError:
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", folder) from None
        write(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, (KeyboardInterrupt, SystemExit, TrainingError)):
            raise
        if isinstance(err, OSError) or _caused_by_os_error(err):
            raise _write_error(path, _os_cause(err), previous or path) from err
        raise


def _caused_by_os_error(err):
    return _os_cause(err) is not err


def _os_cause(err):
    seen = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    # h5py reports a failed write as a RuntimeError whose message holds the errno.
    found = re.search(r"errno = (\d+), error message = '([^']*)'", str(err))
    if found:
        return OSError(int(found.group(1)), found.group(2))
    return err


def _save_model_file(model, folder, stem, *, previous=None):
    """Save ``model`` atomically as ``folder/stem.keras`` and return the file name.

    The .keras format is used, also for backups: Keras writes its HDF5 part in memory and
    the archive through a Python file, so a full disk is an ordinary OSError (HDF5 writing
    straight to a failing disk can crash the process). A model whose config cannot be saved
    (an unregistered custom layer) falls back to ``stem.weights.h5``, with a warning.
    """
    path = os.path.join(folder, f"{stem}.keras")
    try:
        _atomic_write(path, model.save, suffix=".keras", previous=previous)
        return os.path.basename(path)
    except TrainingError:
        raise
    except Exception as err:  # noqa: BLE001 - a config that cannot be serialised
        warnings.warn(
            f"Saving only the weights in {folder!r}: the model's config cannot be saved "
            f"({type(err).__name__}: {err}). Register custom layers with "
            "@keras.saving.register_keras_serializable so checkpoints are whole models.",
            stacklevel=2,
        )
    path = os.path.join(folder, f"{stem}.weights.h5")
    _atomic_write(path, model.save_weights, suffix=".weights.h5", previous=previous)
    return os.path.basename(path)


def _write_json(path, data, *, previous=None):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=True)
            f.write("\n")

    _atomic_write(path, write, suffix=".json", previous=previous)


def _read_json(path):
    try:
        return _files.read_format_json(path, _FORMAT, "checkpoint state")
    except FileNotFoundError:
        return None


def _seed_state(model):
    generator = getattr(model, "seed_generator", None)
    state = getattr(generator, "state", None)
    if state is None:
        return None
    return [int(v) for v in np.asarray(keras.ops.convert_to_numpy(state)).ravel()]


def _set_seed_state(model, values):
    generator = getattr(model, "seed_generator", None)
    state = getattr(generator, "state", None)
    if state is None or values is None:
        return
    current = np.asarray(keras.ops.convert_to_numpy(state))
    if current.size == len(values):
        state.assign(np.asarray(values, current.dtype).reshape(current.shape))


def _step(model):
    optimizer = getattr(model, "optimizer", None)
    iterations = getattr(optimizer, "iterations", None)
    if iterations is None:
        return 0
    return int(keras.ops.convert_to_numpy(iterations))


def _chief(model):
    from kvae.distribute import is_chief

    strategy = getattr(model, "distribute_strategy", None)
    return is_chief(strategy)


class _RunState:
    """What kvae's callbacks tell each other during one ``fit``."""

    def __init__(self, run_dir, resume):
        self.run_dir = os.fspath(run_dir)
        self.resume = bool(resume)
        self.chief = True
        self.failure = None  # the NaN message
        self.interrupt_requested = False
        self.interrupted = None  # (epoch, batch, partial)
        self.epoch = 0
        self.batch = -1
        self.restored_epoch = None
        self.restored_from = None
        self.last_checkpoint = None  # (path, epoch, step)
        self.last_backup = None  # (path, epoch, step)
        self.scratch = None  # non-chief workers' temporary folder
        self.restore_signal = None

    def folder(self, name):
        """Where to write ``name``: the run directory on the chief, a scratch folder elsewhere."""
        if self.chief:
            return os.path.join(self.run_dir, name)
        if self.scratch is None:
            self.scratch = tempfile.mkdtemp(prefix="kvae-worker-")
        return os.path.join(self.scratch, name)

    def fail(self, error):
        """Restore the SIGINT handler before an error leaves ``fit``; name the run directory."""
        if self.restore_signal is not None:
            self.restore_signal()
        self.cleanup()
        if isinstance(error, TrainingError) and "RUN_DIR" in str(error):
            error = TrainingError(str(error).replace("RUN_DIR", _quote(self.run_dir)))
        return error

    def cleanup(self):
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


# ----- the callbacks ------------------------------------------------------------------------
class NaNGuard(keras.callbacks.Callback):
    """Stop at the first non-finite loss and say which term went bad, where, and why.

    Checked after every compiled call (``steps_per_execution`` steps): the logs then hold the
    running means of the epoch, so a NaN is caught within the call that produced it.

    Args:
        on_nan: ``"stop"`` (stop, raise TrainingError at the end of ``fit``) or ``"skip"`` (the
            model's training step drops non-finite steps; needs ``model.skip_nonfinite``).
        max_skipped_fraction: with ``"skip"``, stop anyway when more than this share of an
            epoch's steps (at least 10 steps) had to be skipped.
    """

    def __init__(self, on_nan="stop", *, max_skipped_fraction=0.5, _state=None):
        super().__init__()
        if on_nan not in ("stop", "skip"):
            raise ConfigError(
                f"Expected `on_nan` to be 'stop' or 'skip'. Received: on_nan={on_nan!r}"
            )
        self.on_nan = on_nan
        self.max_skipped_fraction = float(max_skipped_fraction)
        self._state = _state or _RunState(".", False)
        self._previous_end = -1
        self._epoch = 0
        self._skipped_at_epoch_start = 0

    def on_train_begin(self, logs=None):
        self._state.failure = None
        if self.on_nan == "skip":
            if not hasattr(self.model, "skip_nonfinite"):
                raise self._state.fail(
                    ConfigError(
                        "Expected a model whose training step can skip non-finite steps (a "
                        f"`skip_nonfinite` attribute) for on_nan='skip'. Received: "
                        f"{type(self.model).__name__} without it. Use on_nan='stop'."
                    )
                )
            if not self.model.skip_nonfinite:
                self.model.skip_nonfinite = True
                if getattr(self.model, "train_function", None) is not None:
                    self.model.make_train_function(force=True)  # trace the step again

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._previous_end = -1
        self._skipped_at_epoch_start = self._skipped()

    def on_epoch_end(self, epoch, logs=None):
        if self.on_nan == "skip" and self._state.failure is None:
            skipped = self._skipped() - self._skipped_at_epoch_start
            if skipped:
                print(
                    f"kvae: skipped {skipped} training step(s) with a non-finite loss or "
                    f"gradient in epoch {epoch + 1} (on_nan='skip').",
                    file=sys.stderr,
                    flush=True,
                )

    def _skipped(self):
        counter = getattr(self.model, "skipped_steps", None)
        if counter is None:
            return 0
        value = counter.result() if hasattr(counter, "result") else counter
        return int(round(float(keras.ops.convert_to_numpy(value))))

    def on_train_batch_end(self, batch, logs=None):
        first, self._previous_end = self._previous_end + 1, batch
        if not logs:
            return
        if self.on_nan == "skip":
            skipped = self._skipped() - self._skipped_at_epoch_start
            if skipped >= max(10, self.max_skipped_fraction * (batch + 1)):
                self._stop(logs, first, batch, skipped=skipped)
            return
        loss = logs.get("loss")
        if loss is None or _finite(loss):
            return
        self._stop(logs, first, batch)

    def _stop(self, logs, first, last, skipped=None):
        state = self._state
        epoch = self._epoch
        epochs = (self.params or {}).get("epochs")
        step = _step(self.model)
        calls = last - first + 1
        where = f"epoch {epoch + 1}{f'/{epochs}' if epochs else ''}, " + (
            f"training step {step} (batch {last + 1} of the epoch)"
            if calls == 1
            else f"training steps {step - calls + 1}-{step} (batches {first + 1}-"
            f"{last + 1} of the epoch, one compiled call of {calls} steps)"
        )
        bad = [k for k in ("reconstruction", "kl") if k in logs and not _finite(logs[k])]
        if skipped is not None:
            what = (
                f"{skipped} of the {last + 1} steps of this epoch so far had a non-finite loss "
                f"and were skipped (on_nan='skip')"
            )
            bad = bad or ["loss"]
        elif bad:
            names = {
                "reconstruction": "the reconstruction term (-log p(x|z))",
                "kl": "the KL term (KL(q(z|x) || p(z)))",
            }
            fine = [
                f"{k}={_scalar(logs[k]):.4g}"
                for k in ("reconstruction", "kl")
                if k in logs and k not in bad
            ]
            what = (
                "the loss became "
                + _kind(logs.get("loss"))
                + ": "
                + " and ".join(names[k] for k in bad)
                + (" went bad" if len(bad) == 1 else " both went bad")
                + (f" ({', '.join(fine)} stayed finite)" if fine else "")
            )
        else:
            what = (
                "the loss became "
                + _kind(logs.get("loss"))
                + " while reconstruction and KL stayed finite (beta times KL overflowed, or "
                "an extra loss of a layer went bad)"
            )
            bad = ["loss"]
        causes = "; ".join(_CAUSES[k] for k in dict.fromkeys(bad))
        state.failure = (
            f"Training stopped at {where}: {what}. Usual causes: {causes}. {_last_good(state)}"
        )
        self.model.stop_training = True


def _kind(value):
    arr = np.asarray(value, dtype=np.float64) if value is not None else np.array(np.nan)
    if np.any(np.isnan(arr)):
        return "NaN"
    return "infinite"


def _last_good(state):
    parts = []
    if state.last_checkpoint:
        path, epoch, step = state.last_checkpoint
        parts.append(f"{path} (after epoch {epoch}, step {step})")
    if state.last_backup:
        path, epoch, step = state.last_backup
        parts.append(f"the backup {path} (step {step})")
    if not parts:
        return "No checkpoint had been written yet; nothing was saved from the bad weights."
    return (
        "Nothing was saved from the bad weights; the last good state is "
        + " and ".join(parts)
        + "."
    )


class InterruptHandler(keras.callbacks.Callback):
    """First Ctrl-C: stop after the current compiled call, save, and say how to resume.
    A second Ctrl-C raises ``KeyboardInterrupt`` at once. Installed only in the main thread."""

    def __init__(self, *, _state=None, stream=None):
        super().__init__()
        self._state = _state or _RunState(".", False)
        self._stream = stream
        self._previous = None
        self._installed = False

    def _handler(self, signum, frame):
        state = self._state
        if state.interrupt_requested:
            self._restore()
            raise KeyboardInterrupt
        state.interrupt_requested = True
        print(
            "\nInterrupt received: finishing the current step, then saving a checkpoint "
            "(press Ctrl-C again to stop at once).",
            file=self._stream or sys.stderr,
            flush=True,
        )

    def _restore(self):
        if self._installed:
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            self._installed = False

    def on_train_begin(self, logs=None):
        state = self._state
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handler)
            self._installed = True
            state.restore_signal = self._restore

    def on_train_batch_end(self, batch, logs=None):
        state = self._state
        if state.interrupt_requested and state.interrupted is None and state.failure is None:
            state.interrupted = (state.epoch, batch, True)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        state = self._state
        if state.interrupt_requested and state.interrupted is None and state.failure is None:
            # Pressed during validation or between calls: this epoch is complete.
            state.interrupted = (epoch, None, False)
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        self._restore()
        self._state.restore_signal = None


class History(keras.callbacks.Callback):
    """``history.csv`` in the run directory: one row per finished epoch, rewritten atomically
    at each epoch end; on resume the rows of epochs that will run again are dropped."""

    def __init__(self, *, _state=None):
        super().__init__()
        self._state = _state or _RunState(".", False)
        self._rows = []

    @property
    def path(self):
        return os.path.join(self._state.run_dir, HISTORY_FILE)

    def on_train_begin(self, logs=None):
        self._rows = []
        if self._state.resume and os.path.exists(self.path):
            with contextlib.suppress(OSError, ValueError, csv.Error):
                with open(self.path, newline="", encoding="utf-8") as f:
                    self._rows = list(csv.DictReader(f))
            start = self._state.restored_epoch or 0
            self._rows = [r for r in self._rows if _int(r.get("epoch")) < start]

    def on_epoch_end(self, epoch, logs=None):
        state = self._state
        if state.failure is not None or (state.interrupted and state.interrupted[2]):
            return  # a partial or failed epoch is not history
        row = {"epoch": str(epoch)}
        for key, value in (logs or {}).items():
            number = _scalar(value)
            if number is not None:
                row[key] = repr(number)
        self._rows = [r for r in self._rows if _int(r.get("epoch")) < epoch] + [row]
        if state.chief:
            self._write()

    def _write(self):
        keys = ["epoch"]
        for row in self._rows:
            keys += [k for k in row if k not in keys]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self._rows)
        text = buffer.getvalue()

        def write(tmp):
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write(text)

        try:
            _atomic_write(self.path, write, suffix=".csv")
        except TrainingError as err:
            raise self._state.fail(err) from None


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


class Checkpoint(keras.callbacks.Callback):
    """``checkpoints/last.keras``: the whole model (``kvae.load_model`` reads it), written
    atomically every ``every`` epochs, at the end of training and on Ctrl-C; never from
    non-finite weights. ``checkpoints/state.json`` says which epoch and step it holds."""

    def __init__(self, every=1, *, _state=None):
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ConfigError(
                f"Expected `checkpoint_every` to be an integer >= 1. Received: {every!r}"
            )
        self.every = every
        self._state = _state or _RunState(".", False)
        self._saved_epoch = None

    def on_train_begin(self, logs=None):
        self._saved_epoch = None
        folder = os.path.join(self._state.run_dir, CHECKPOINT_DIR)
        info = _read_json_quietly(os.path.join(folder, STATE_FILE))
        if info is not None:
            path = os.path.join(folder, str(info.get("file", CHECKPOINT_FILE)))
            if os.path.isfile(path):
                self._state.last_checkpoint = (path, info.get("epoch"), info.get("step"))

    def save(self, epochs_done, *, partial=False):
        """Write the checkpoint: ``epochs_done`` complete epochs (plus part of the next one
        when ``partial``)."""
        state = self._state
        folder = state.folder(CHECKPOINT_DIR)
        step = _step(self.model)
        try:
            name = _save_model_file(self.model, folder, CHECKPOINT_FILE[: -len(".keras")])
            path = os.path.join(folder, name)
            _write_json(
                os.path.join(folder, STATE_FILE),
                {
                    "format": _FORMAT,
                    "file": name,
                    "epoch": epochs_done,
                    "partial_epoch": partial,
                    "step": step,
                    "seed_state": _seed_state(self.model),
                    "time": time.time(),
                },
                previous=path,
            )
        except TrainingError as err:
            raise state.fail(err) from None
        if state.chief:
            state.last_checkpoint = (path, epochs_done, step)
        self._saved_epoch = (epochs_done, partial)

    def on_train_batch_end(self, batch, logs=None):
        state = self._state
        partial = bool(state.interrupted and state.interrupted[2])
        if partial and self._saved_epoch != (state.epoch, True):
            self.save(state.epoch, partial=True)  # Ctrl-C within an epoch

    def on_epoch_end(self, epoch, logs=None):
        state = self._state
        if state.failure is not None or (state.interrupted and state.interrupted[2]):
            return
        if (epoch + 1) % self.every == 0 or state.interrupted:
            self.save(epoch + 1)

    def on_train_end(self, logs=None):
        state = self._state
        if state.failure is not None or state.interrupted:
            return
        done = state.epoch + 1 if self._saved_epoch is not None or state.batch >= 0 else None
        if done is not None and self._saved_epoch != (done, False):
            self.save(done)


class Backup(keras.callbacks.BackupAndRestore):
    """``keras.callbacks.BackupAndRestore`` with atomic writes, time-based saving and kvae's
    extra state (the latent sampling state), never saving after a non-finite loss.

    ``backup/state.json`` names the model file it belongs to (``state-NNNNNN.keras``: weights
    and optimizer state); a save writes a new model file, then replaces ``state.json`` (the
    one atomic step that commits it), then deletes the older model file. A kill at any moment
    leaves a consistent pair. Restoring loads the weights into the model being trained
    (``model.load_weights``) and sets the epoch to start from, as Keras' callback does.

    Args:
        backup_dir: the folder (``RUN_DIR/backup``).
        seconds: within an epoch, save after a compiled call when this many seconds have
            passed since the last save (0: after every call). Epoch ends always save.
        steps: save every this many steps instead of by time (what several workers need,
            as all must save at the same step). None: by time.
        resume: restore from the backup when training starts (else it is overwritten).
    """

    def __init__(
        self, backup_dir, *, seconds=DEFAULT_BACKUP_SECONDS, steps=None, resume=True, _state=None
    ):
        super().__init__(backup_dir, save_freq=steps if steps else "epoch", delete_checkpoint=True)
        self.seconds = float(seconds)
        self.steps = steps
        self.resume = resume
        self._state = _state or _RunState(os.path.dirname(os.path.abspath(backup_dir)), resume)
        self._last_save = None
        self._write_dir = backup_dir

    # -- restore --
    def on_train_begin(self, logs=None):
        self._last_save = time.monotonic()
        self._current_epoch = 0
        self._last_batch_seen = 0
        state = self._state
        self._write_dir = self.backup_dir if state.chief else state.folder(BACKUP_DIR)
        if state.chief:  # a run killed while writing leaves a temporary file: remove it
            for folder in (self.backup_dir, os.path.join(state.run_dir, CHECKPOINT_DIR)):
                for name in _listdir(folder):
                    if name.startswith(".tmp-"):
                        with contextlib.suppress(OSError):
                            os.remove(os.path.join(folder, name))
        if self.resume:
            self._restore()

    def _restore(self):
        state = self._state
        source = _resume_source(state.run_dir, self.backup_dir)
        if source is None:
            return
        path, info, _ = source
        shown = path
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        try:
            model.load_weights(path)
        except Exception as err:  # noqa: BLE001 - any failure here means the same to a user
            raise state.fail(
                ModelFileError(
                    f"Cannot resume from {shown!r}: {type(err).__name__}: {err}. The run "
                    "directory's checkpoint does not fit this model (was the config "
                    "changed?) or is damaged."
                )
            ) from None
        _set_seed_state(model, info.get("seed_state"))
        epoch = int(info.get("epoch", 0))
        model._initial_epoch = epoch
        self._current_epoch = epoch
        state.restored_epoch = epoch
        state.restored_from = shown
        state.last_backup = (shown, epoch, info.get("step"))

    # -- save --
    def _save_model(self):
        state = self._state
        if state.failure is not None:
            return
        folder = self._write_dir
        previous = _read_json_quietly(os.path.join(folder, STATE_FILE)) or {}
        counter = int(previous.get("counter", 0)) + 1
        kept = os.path.join(folder, str(previous.get("weights"))) if previous else None
        step = _step(self.model)
        try:
            name = _save_model_file(self.model, folder, f"state-{counter:06d}", previous=kept)
            _write_json(
                os.path.join(folder, STATE_FILE),
                {
                    "format": _FORMAT,
                    "epoch": self._current_epoch,
                    "batch": self._last_batch_seen,
                    "step": step,
                    "weights": name,
                    "counter": counter,
                    "seed_state": _seed_state(self.model),
                    "time": time.time(),
                },
                previous=kept,
            )
        except TrainingError as err:
            raise state.fail(err) from None
        for other in os.listdir(folder):
            if other.startswith("state-") and other != name:
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(folder, other))
        self._last_save = time.monotonic()
        if state.chief:
            state.last_backup = (folder, self._current_epoch, step)

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        state = self._state
        if state.failure is not None:
            return
        self._last_batch_seen = batch
        if state.interrupted and state.interrupted[2]:
            self._current_epoch = state.epoch  # this epoch runs again on resume
            self._save_model()
            return
        if self.steps:
            if self._should_save_on_batch(batch):
                self._save_model()
        elif time.monotonic() - self._last_save >= self.seconds:
            self._save_model()

    def on_epoch_end(self, epoch, logs=None):
        state = self._state
        if state.failure is not None or (state.interrupted and state.interrupted[2]):
            return
        self._current_epoch = epoch + 1
        self._last_batch_seen = 0
        self._save_model()

    def on_train_end(self, logs=None):
        self.model._initial_epoch = None
        # Keep the backup of an interrupted or failed run; a finished run resumes (to train
        # longer) from its checkpoint instead.
        state = self._state
        if state.failure is None and not state.interrupted and state.chief:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def _listdir(folder):
    try:
        return os.listdir(folder)
    except OSError:
        return []


def _read_json_quietly(path):
    try:
        return _read_json(path)
    except ModelFileError:
        return None


class _Finish(keras.callbacks.Callback):
    """Last of kvae's callbacks: raise what the others recorded, once their work is done."""

    def __init__(self, *, _state):
        super().__init__()
        self._state = _state

    def on_train_end(self, logs=None):
        state = self._state
        state.cleanup()
        if state.failure is not None:
            raise TrainingError(state.failure)
        if state.interrupted:
            epoch, batch, partial = state.interrupted
            run_dir = state.run_dir
            saved = []
            if state.last_checkpoint:
                saved.append(f"checkpoint {state.last_checkpoint[0]}")
            if state.last_backup:
                saved.append(f"backup {state.last_backup[0]}")
            where = (
                f"in epoch {epoch + 1} after batch {batch + 1} (the epoch runs again on resume)"
                if partial
                else f"after epoch {epoch + 1}"
            )
            message = (
                f"Interrupted {where}, at training step {_step(self.model)}. Saved the "
                f"{' and the '.join(saved) or 'state'}. Resume with: kvae train --resume "
                f"{_quote(run_dir)}"
            )
            raise TrainingInterrupted(message)


def _quote(path):
    import shlex

    return shlex.quote(os.fspath(path))


# ----- the public entry points -------------------------------------------------------------
def training_callbacks(run_dir, config=None, *, backup_seconds=None, backup_steps=None):
    """The callbacks that make a ``fit`` in ``run_dir`` safe to kill, interrupt and resume.

    Args:
        run_dir: the run directory (created when missing).
        config: a ``kvae.config.TrainConfig`` (or a dict, or None for the defaults); read:
            ``resume`` (restore the backup or checkpoint when training starts),
            ``on_nan`` ("stop" or "skip") and ``checkpoint_every`` (epochs).
        backup_seconds: seconds between backups within an epoch (default ``$KVAE_BACKUP_SECONDS``
            or 60; 0 = after every compiled call). Epoch ends always back up.
        backup_steps: back up every this many steps instead (default under several workers:
            at epoch ends only, since all workers must save at the same step).

    Returns:
        A list of Keras callbacks, in the order they must run: pass them to ``fit`` as they are.
        They raise :class:`~kvae.errors.TrainingError` at the end of ``fit`` after a NaN, and
        :class:`TrainingInterrupted` after Ctrl-C.
    """
    run_dir = os.fspath(run_dir)
    resume = bool(_option(config, "resume", False))
    on_nan = _option(config, "on_nan", "stop")
    every = _option(config, "checkpoint_every", 1)
    if backup_seconds is None:
        raw = os.environ.get(BACKUP_SECONDS_ENV)
        try:
            backup_seconds = float(raw) if raw not in (None, "") else DEFAULT_BACKUP_SECONDS
        except ValueError:
            raise ConfigError(
                f"Expected {BACKUP_SECONDS_ENV} to be a number of seconds >= 0. Received: {raw!r}"
            ) from None
    if not (isinstance(backup_seconds, (int, float)) and backup_seconds >= 0) or not math.isfinite(
        backup_seconds
    ):
        raise ConfigError(
            f"Expected `backup_seconds` to be a number >= 0. Received: {backup_seconds!r}"
        )
    if backup_steps is not None and (
        isinstance(backup_steps, bool) or not isinstance(backup_steps, int) or backup_steps < 1
    ):
        raise ConfigError(
            f"Expected `backup_steps` to be None or an integer >= 1. Received: {backup_steps!r}"
        )
    if backup_steps is None:
        from kvae.distribute import num_workers

        if num_workers() > 1:
            backup_seconds = math.inf  # same-step saves on every worker: epoch ends only
    state = _RunState(run_dir, resume)
    return [
        _Start(_state=state),
        NaNGuard(on_nan, _state=state),
        InterruptHandler(_state=state),
        Backup(
            os.path.join(run_dir, BACKUP_DIR),
            seconds=backup_seconds,
            steps=backup_steps,
            resume=resume,
            _state=state,
        ),
        History(_state=state),
        Checkpoint(every, _state=state),
        _Finish(_state=state),
    ]


class _Start(keras.callbacks.Callback):
    """First of kvae's callbacks: decide who writes (the chief) before the others start."""

    def __init__(self, *, _state):
        super().__init__()
        self._state = _state

    def on_train_begin(self, logs=None):
        state = self._state
        state.chief = _chief(self.model)
        state.failure = None
        state.epoch, state.batch = 0, -1
        state.restored_epoch = None
        state.last_backup = None
        state.interrupt_requested = False
        state.interrupted = None

    def on_epoch_begin(self, epoch, logs=None):
        self._state.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._state.batch = batch


def _resume_source(run_dir, backup_dir=None):
    """(file, state dict, kind) to resume ``run_dir`` from: the backup, else the checkpoint;
    None when neither exists."""
    backup_dir = backup_dir or os.path.join(run_dir, BACKUP_DIR)
    info = _read_json(os.path.join(backup_dir, STATE_FILE))
    if info is not None:
        path = os.path.join(backup_dir, str(info.get("weights", "")))
        if os.path.isfile(path):
            return path, info, "backup"
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    info = _read_json(os.path.join(folder, STATE_FILE))
    if info is not None:
        path = os.path.join(folder, str(info.get("file", CHECKPOINT_FILE)))
        if os.path.isfile(path):
            return path, info, "checkpoint"
    return None


def resume_state(run_dir):
    """What ``kvae train --resume RUN_DIR`` would restore: a dict with ``epoch`` (epochs
    complete; training goes on from there), ``step``, ``source`` (the file) and ``kind``
    ("backup" or "checkpoint"), or None when the run has neither."""
    found = _resume_source(os.fspath(run_dir))
    if found is None:
        return None
    path, info, kind = found
    return {"kind": kind, "epoch": info.get("epoch"), "step": info.get("step"), "source": path}


def resume_config(run_dir):
    """The ``TrainConfig`` saved in ``run_dir`` (its config.json), with ``resume=True``: the
    settings ``kvae train --resume RUN_DIR`` continues with.

    Raises:
        ModelFileError: ``run_dir`` is not a kvae run directory or has no config.json.
    """
    from kvae.train import load_config

    return load_config(run_dir).replace(resume=True)
