"""Lose nothing: checkpoints, resumable backups, Ctrl-C, SIGTERM and NaN handling for ``fit``.

    from kvae.checkpointing import training_callbacks
    model.fit(data, epochs=20, callbacks=training_callbacks("runs/my-run", config))

:func:`training_callbacks` returns Keras callbacks that keep, in a run directory::

    checkpoints/last.keras    the model after the last checkpointed epoch (``kvae.load_model``
                              reads it; optimizer state included)
    checkpoints/state.json    which epoch and step that file holds
    backup/                   the state to resume from (``keras.callbacks.BackupAndRestore``'s
                              folder): weights with optimizer state, and the epoch, step and
                              sampling state; written every ``backup_seconds`` (or
                              ``backup_steps``) within epochs and at each epoch end; kept when
                              the run finishes, so a finished run can be trained longer
    history.csv               one row per finished epoch (``keras.callbacks.CSVLogger``)

What is Keras' and what is kvae's. Keras restores a backup (weights, optimizer, the epoch to
start from): ``keras.callbacks.BackupAndRestore``, through its public ``on_train_begin``.
Keras detects a non-finite loss and stops by raising, so nothing after it (no backup, no
checkpoint, no history row) sees the bad step: ``keras.callbacks.TerminateOnNaN(
raise_error=True)``. Keras writes ``history.csv``: ``keras.callbacks.CSVLogger``. kvae adds
only what those do not do: every file written under a temporary name and moved onto its
final name (Keras writes in place, so a kill mid-write would leave a torn backup), and so
kvae's own backup schedule too (every ``backup_steps`` steps, counted across compiled calls
and epochs, or every ``backup_seconds``: Keras has no timer), the latent sampling state, the
message that names the term and step that went bad, ``on_nan="skip"``, the Ctrl-C and
SIGTERM handler with its resume command, and the scratch folder of non-chief workers.
``tf.train.CheckpointManager`` is not used: its TensorFlow checkpoints are not ``.keras``
files that ``kvae.load_model`` reads, and the backup above already is the resumable state, so
it would be a third copy of the same weights.

A write that fails (disk full, folder gone or read-only) raises
:class:`~kvae.errors.TrainingError` naming the path; the previous files stay as they were.
``history.csv`` is appended row by row (CSVLogger): a kill can tear at most its last line,
which a resume drops with the rows of epochs that run again.

Resuming (``kvae train --resume RUN_DIR``, or ``config.resume=True``) restores the backup:
weights, optimizer state, the sampling state and the epoch. An epoch interrupted in its middle
is run again from its start with the weights of the backup, so the run still trains for its
number of epochs; the examples it had already seen in that epoch are seen once more
(``tf.data`` iterator positions are not saved).

Ctrl-C (SIGINT), first press: the current compiled call (``steps_per_execution`` steps) ends,
the backup and the checkpoint are written, and :class:`~kvae.errors.TrainingInterrupted` is
raised with the command that resumes the run (the command line exits with 130). Second
press: an ordinary ``KeyboardInterrupt`` at once.

SIGTERM (what Kubernetes, SLURM and preemptible VMs send before a grace period ends in
SIGKILL): the same as a first Ctrl-C, the error's ``signum`` saying which (the command line
exits with 143). A repeated SIGTERM is ignored: the save it asks for is under way.

NaN or inf: with ``on_nan="stop"`` (default) training stops at the first compiled call whose
loss is not finite, and a ``TrainingError`` names the term that went bad, the epoch and steps,
the last good checkpoint, and the usual causes. ``on_nan="skip"`` needs a model whose
training step can drop non-finite steps (a ``skip_nonfinite`` attribute, as ``kvae.VAE``
has); it stops when more than half of an epoch's steps (at least 10) had to be skipped.

Several workers (``MultiWorkerMirroredStrategy``, ``TF_CONFIG``): only the chief writes into
the run directory; the others write the same files into a temporary folder that is deleted
(saving may need every worker). Every worker reads the run directory to resume, so it must be
on a shared file system.
"""

import contextlib
import csv
import io
import os
import re
import shlex
import shutil
import tempfile
import time
import zipfile

import keras
import numpy as np

from kvae import _files
from kvae._choices import CHECKPOINT_DIR, ON_NAN
from kvae._guards import InterruptGuard, NaNGuard, training_step
from kvae._keras_private import BACKUP_EPOCH_KEY, BACKUP_STATE_FILE, BACKUP_WEIGHTS_FILE
from kvae.errors import ConfigError, ModelFileError, TrainingError

__all__ = [
    "BACKUP_DIR",
    "CHECKPOINT_DIR",
    "CHECKPOINT_FILE",
    "HISTORY_FILE",
    "resume_state",
    "training_callbacks",
]

CHECKPOINT_FILE = "last.keras"
STATE_FILE = "state.json"
BACKUP_DIR = "backup"
HISTORY_FILE = "history.csv"
BACKUP_SECONDS_ENV = "KVAE_BACKUP_SECONDS"
DEFAULT_BACKUP_SECONDS = 60.0
_FORMAT = "kvae-checkpoint"


# ----- writing ------------------------------------------------------------------------------
def _os_cause(err):
    seen = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    # h5py reports a failed write as a RuntimeError whose message holds the errno.
    found = re.search(r"errno = (\d+), error message = '([^']*)'", str(err))
    return OSError(int(found.group(1)), found.group(2)) if found else None


def _write(path, write, *, suffix=None, previous=None):
    """``write(tmp)`` to a temporary file beside ``path``, fsync it, move it onto ``path``.

    A failure caused by the file system raises TrainingError naming ``path`` and the file that
    still holds the last good state (``previous``, default ``path``); ``path`` is untouched."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise NotADirectoryError(20, "Not a directory", folder)
        os.makedirs(folder, exist_ok=True)
        with _files.atomic_path(path, suffix=suffix) as tmp:
            write(tmp)  # atomic_path fsyncs the file and its folder
    except Exception as err:
        cause = err if isinstance(err, OSError) else _os_cause(err)
        if cause is None:
            raise
        reason = getattr(cause, "strerror", None) or str(cause)
        if getattr(cause, "errno", None):
            reason = f"{reason} (errno {cause.errno})"
        previous = previous or path
        kept = f" The previous file {previous!r} is intact." if os.path.exists(previous) else ""
        raise TrainingError(
            f"Cannot write the checkpoint {path!r}: {reason}. Free disk space or make the run "
            f"directory writable, then resume with `kvae train --resume RUN_DIR`.{kept}"
        ) from err


def _write_json(path, data, *, previous=None):
    _write(path, lambda tmp: _files.write_json(tmp, data), previous=previous)


def _write_weights(model, path):
    """What ``model.save_weights(path)`` writes, without HDF5 ever writing to the disk: HDF5
    writing straight to a failing disk (full, or over a file-size limit) can crash the
    process, so the weights are taken from a ``.keras`` archive, whose HDF5 part Keras builds
    in memory and writes through a Python file (a full disk is then an ordinary OSError)."""

    def write(tmp):
        archive = tmp[: -len(".weights.h5")] + ".keras"
        try:
            try:
                model.save(archive)
            except OSError:
                raise
            except Exception:  # noqa: BLE001 - a config Keras cannot save: the weights only
                model.save_weights(tmp)
                return
            with zipfile.ZipFile(archive) as zf, zf.open("model.weights.h5") as src:
                with open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        finally:
            with contextlib.suppress(OSError):
                os.remove(archive)

    _write(path, write, suffix=".weights.h5")


def _read_state(path):
    """The dict of a kvae state file, None when there is none (ModelFileError when damaged)."""
    try:
        return _files.read_format_json(path, _FORMAT, "checkpoint state")
    except FileNotFoundError:
        return None


def _remove_temporary_files(*folders):
    """A run killed while writing leaves its temporary file (``_files.atomic_path``'s name)."""
    for folder in folders:
        with contextlib.suppress(OSError):
            for name in os.listdir(folder):
                if name.startswith(".") and ".tmp" in name:
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(folder, name))


# ----- model state --------------------------------------------------------------------------
def _seed_state(model):
    state = getattr(getattr(model, "seed_generator", None), "state", None)
    if state is None:
        return None
    return [int(v) for v in np.asarray(keras.ops.convert_to_numpy(state)).ravel()]


def _set_seed_state(model, values):
    state = getattr(getattr(model, "seed_generator", None), "state", None)
    if state is None or values is None:
        return
    current = np.asarray(keras.ops.convert_to_numpy(state))
    if current.size == len(values):
        state.assign(np.asarray(values, current.dtype).reshape(current.shape))


class _Run:
    """The one thing kvae's callbacks share for one run directory: where to write, what the
    last good files are (for messages), and the clean-up every way out of ``fit`` runs."""

    def __init__(self, run_dir, chief):
        self.run_dir = os.fspath(run_dir)
        self.chief = chief
        self.scratch = None  # a non-chief worker's temporary folder
        self.last_checkpoint = None  # (path, epoch, step)
        self.last_backup = None  # (path, epoch, step)
        self.on_release = []

    def folder(self, name):
        """Where to write ``name``: the run directory on the chief, a scratch folder elsewhere."""
        if self.chief:
            return os.path.join(self.run_dir, name)
        if self.scratch is None:
            self.scratch = tempfile.mkdtemp(prefix="kvae-worker-")
        return os.path.join(self.scratch, name)

    def release(self):
        """Give the SIGINT handler back and delete the scratch folder."""
        for release in self.on_release:
            release()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    def fail(self, error):
        """Release, then the error to raise (``RUN_DIR`` in its message made this run's)."""
        self.release()
        if "RUN_DIR" in str(error):
            error = type(error)(str(error).replace("RUN_DIR", shlex.quote(self.run_dir)))
        return error

    def last_good(self):
        parts = []
        if self.last_checkpoint:
            path, epoch, step = self.last_checkpoint
            parts.append(f"{path} (after epoch {epoch}, step {step})")
        if self.last_backup:
            path, _, step = self.last_backup
            parts.append(f"the backup {path} (step {step})")
        if not parts:
            return "No checkpoint had been written yet; nothing was saved from the bad weights."
        return (
            f"Nothing was saved from the bad weights; the last good state is {' and '.join(parts)}."
        )


# ----- the callbacks that save (private: use training_callbacks) ---------------------------
class _Backup(keras.callbacks.Callback):
    """The resumable backup in ``backup/``. Keras restores it: a
    ``keras.callbacks.BackupAndRestore`` on the same folder, asked only through its public
    ``on_train_begin``, loads the weights and optimizer state and sets the epoch ``fit``
    starts from. kvae writes it (:meth:`save`), because Keras' own writer writes in place: the
    weights file and then the state file, each atomically, under the names Keras reads
    (``kvae._keras_private``), the state file holding the sampling state and the step too. A
    kill between the two leaves the new weights with the previous state file: the resumed run
    repeats at most the steps since the previous backup, on slightly newer weights, and
    nothing is torn. It saves at the end of the compiled call in which ``steps`` training
    steps have passed since the last such save (counted across epoch ends, as Keras'
    ``save_freq`` is meant to: Keras counts one step too few in the first call of every
    epoch when a call runs several steps), after any compiled call once ``seconds`` have
    passed, and at every epoch end; restores only when ``resume`` is set, and keeps the
    backup when training ends."""

    def __init__(self, run, *, seconds, steps, resume):
        super().__init__()
        self.backup_dir = os.path.join(run.run_dir, BACKUP_DIR)
        self._restorer = keras.callbacks.BackupAndRestore(self.backup_dir, delete_checkpoint=False)
        self._run = run
        self.seconds = seconds
        self.steps = steps
        self.resume = resume
        self._epoch = 0  # the epoch a resume from a backup written now starts with
        self._batch = -1
        self._steps_since_save = 0
        self._last_save = 0.0

    def on_train_begin(self, logs=None):
        self._last_save = time.monotonic()
        self._epoch, self._batch, self._steps_since_save = 0, -1, 0
        run = self._run
        if run.chief:
            _remove_temporary_files(self.backup_dir, os.path.join(run.run_dir, CHECKPOINT_DIR))
        info = _read_state(os.path.join(self.backup_dir, BACKUP_STATE_FILE))
        if self.resume and info is not None:
            self._restore(info, logs)

    def _restore(self, info, logs):
        run = self._run
        try:
            self._restorer.set_model(self.model)
            self._restorer.on_train_begin(logs)  # Keras loads the weights and sets the epoch
        except Exception as err:  # noqa: BLE001 - any failure here means the same to a user
            raise run.fail(
                ModelFileError(
                    f"Cannot resume from {self.backup_dir!r}: {type(err).__name__}: {err}. The "
                    "run directory's backup does not fit this model (was the config changed?) "
                    "or is damaged."
                )
            ) from None
        _set_seed_state(self.model, info.get("seed_state"))
        self._epoch = int(info[BACKUP_EPOCH_KEY])
        run.last_backup = (self.backup_dir, self._epoch, info.get("step"))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch, self._batch = epoch, -1

    def on_train_batch_end(self, batch, logs=None):
        # Keras reports each compiled call once, with the number of its last batch.
        self._steps_since_save += batch - self._batch
        self._batch = batch
        if self.steps and self._steps_since_save >= self.steps:
            self._steps_since_save = 0
            self.save()
        elif time.monotonic() - self._last_save >= self.seconds:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self._epoch, self._batch = epoch + 1, -1
        self.save()

    def save(self):
        """Write the backup now: the weights with optimizer state, then the state file (the
        epoch a resume starts from, the batch, step and sampling state)."""
        folder = self._run.folder(BACKUP_DIR)
        weights = os.path.join(folder, BACKUP_WEIGHTS_FILE)
        step = training_step(self.model)
        try:
            _write_weights(self.model, weights)
            _write_json(
                os.path.join(folder, BACKUP_STATE_FILE),
                {
                    "format": _FORMAT,
                    BACKUP_EPOCH_KEY: self._epoch,  # what BackupAndRestore reads back
                    "batch": self._batch,
                    "step": step,
                    "seed_state": _seed_state(self.model),
                    "time": time.time(),
                },
                previous=weights,
            )
        except TrainingError as err:
            raise self._run.fail(err) from None
        self._last_save = time.monotonic()
        if self._run.chief:
            self._run.last_backup = (folder, self._epoch, step)


class _History(keras.callbacks.CSVLogger):
    """``keras.callbacks.CSVLogger`` appending to ``history.csv``; on resume the rows of the
    epochs that run again (and a line torn by a kill) are dropped first."""

    def __init__(self, run, resume):
        super().__init__(os.path.join(run.run_dir, HISTORY_FILE), append=True)
        self._run = run
        self.resume = resume

    def on_train_begin(self, logs=None):
        path = os.path.join(self._run.run_dir, HISTORY_FILE)
        self.filename = self._run.folder(HISTORY_FILE)
        if self._run.chief and os.path.exists(path):
            found = resume_state(self._run.run_dir) if self.resume else None
            _keep_history(path, found["epoch"] if found else 0)
        os.makedirs(os.path.dirname(os.path.abspath(self.filename)), exist_ok=True)
        super().on_train_begin(logs)


def _keep_history(path, epochs):
    """Rewrite ``history.csv`` with the rows of its first ``epochs`` epochs only."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, csv.Error):
        rows = []
    header, kept = (rows[0], []) if rows else ([], [])
    for row in rows[1:]:
        if len(row) == len(header) and row[0].isdigit() and int(row[0]) < epochs:
            kept.append(row)
    if not kept:
        with contextlib.suppress(OSError):
            os.remove(path)
        return
    text = io.StringIO()
    csv.writer(text, lineterminator="\r\n").writerows([header, *kept])  # CSVLogger's dialect
    _write(path, lambda tmp: _files.write_text(tmp, text.getvalue()))


class _Checkpoint(keras.callbacks.Callback):
    """``checkpoints/last.keras`` (the whole model) every ``every`` epochs and after the last,
    and ``checkpoints/state.json`` saying which epoch and step it holds."""

    def __init__(self, run, every):
        super().__init__()
        self._run = run
        self.every = every
        self._saved = None
        self._done = None

    def on_train_begin(self, logs=None):
        self._saved = self._done = None
        folder = os.path.join(self._run.run_dir, CHECKPOINT_DIR)
        with contextlib.suppress(ModelFileError):
            info = _read_state(os.path.join(folder, STATE_FILE))
            if info and os.path.isfile(os.path.join(folder, str(info.get("file")))):
                path = os.path.join(folder, info["file"])
                self._run.last_checkpoint = (path, info.get("epoch"), info.get("step"))

    def save(self, epochs_done, *, partial=False):
        """Write the checkpoint: ``epochs_done`` complete epochs (and part of the next one when
        ``partial``)."""
        folder = self._run.folder(CHECKPOINT_DIR)
        path = os.path.join(folder, CHECKPOINT_FILE)
        step = training_step(self.model)
        try:
            _write(path, self.model.save)
            _write_json(
                os.path.join(folder, STATE_FILE),
                {
                    "format": _FORMAT,
                    "file": CHECKPOINT_FILE,
                    "epoch": epochs_done,
                    "partial_epoch": partial,
                    "step": step,
                    "seed_state": _seed_state(self.model),
                    "time": time.time(),
                },
                previous=path,
            )
        except TrainingError as err:
            raise self._run.fail(err) from None
        if self._run.chief:
            self._run.last_checkpoint = (path, epochs_done, step)
        self._saved = (epochs_done, partial)

    def on_epoch_end(self, epoch, logs=None):
        self._done = epoch + 1
        last = self._done == (self.params or {}).get("epochs")
        if self._done % self.every == 0 or last:
            self.save(self._done)

    def save_complete(self, epochs_done):
        """Write the checkpoint of ``epochs_done`` complete epochs unless it is written."""
        if self._saved != (epochs_done, False):
            self.save(epochs_done)

    def on_train_end(self, logs=None):  # stopped early by another callback
        if self._done is not None:
            self.save_complete(self._done)


# ----- the public entry points -------------------------------------------------------------
def _backup_seconds(value):
    if value is None:
        raw = os.environ.get(BACKUP_SECONDS_ENV)
        try:
            return float(raw) if raw not in (None, "") else DEFAULT_BACKUP_SECONDS
        except ValueError:
            raise ConfigError(
                f"Expected {BACKUP_SECONDS_ENV} to be a number of seconds >= 0. Received: {raw!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ConfigError(f"Expected `backup_seconds` to be a number >= 0. Received: {value!r}")
    return float(value)


def _get(config, key, default):
    if config is None:
        return default
    if isinstance(config, dict):
        return config.get(key, default)
    return getattr(config, key, default)


def _checked_options(config):
    """``(on_nan, checkpoint_every)`` of ``config``, checked."""
    on_nan = _get(config, "on_nan", "stop")
    every = _get(config, "checkpoint_every", 1)
    if on_nan not in ON_NAN:
        raise ConfigError(
            f"Expected `on_nan` to be one of {', '.join(map(repr, ON_NAN))}. "
            f"Received: on_nan={on_nan!r}"
        )
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"Expected `checkpoint_every` to be an integer >= 1. Received: {every!r}")
    return on_nan, every


def _backup_schedule(backup_seconds, backup_steps):
    """Seconds between timed backups (checked): none (inf) when backing up by steps, or under
    several workers, which back up at epoch ends since all must save at the same step."""
    from kvae.distribute import num_workers

    seconds = _backup_seconds(backup_seconds)
    if backup_steps is not None and (
        isinstance(backup_steps, bool) or not isinstance(backup_steps, int) or backup_steps < 1
    ):
        raise ConfigError(
            f"Expected `backup_steps` to be None or an integer >= 1. Received: {backup_steps!r}"
        )
    if backup_steps is not None or num_workers() > 1:
        return float("inf")
    return seconds


def training_callbacks(run_dir, config=None, *, backup_seconds=None, backup_steps=None):
    """The callbacks that make a ``fit`` in ``run_dir`` safe to kill, interrupt and resume.

    Args:
        run_dir: the run directory (created when missing).
        config: a ``kvae.config.TrainConfig`` (or a dict, or None for the defaults); read:
            ``resume`` (restore the backup when training starts), ``on_nan`` ("stop" or
            "skip") and ``checkpoint_every`` (epochs).
        backup_seconds: seconds between backups within an epoch (default
            ``$KVAE_BACKUP_SECONDS`` or 60; 0 = after every compiled call). Epoch ends always
            back up.
        backup_steps: back up every this many steps instead (like Keras' ``save_freq``). Default
            under several workers: at epoch ends only, since all workers must save at the same
            step.

    Returns:
        A list of Keras callbacks, in the order they must run: pass them to ``fit`` as they
        are. They raise :class:`~kvae.errors.TrainingError` after a NaN and
        :class:`~kvae.errors.TrainingInterrupted` after Ctrl-C or SIGTERM.
    """
    from kvae.distribute import is_chief

    run_dir = os.fspath(run_dir)
    resume = bool(_get(config, "resume", False))
    on_nan, every = _checked_options(config)
    seconds = _backup_schedule(backup_seconds, backup_steps)
    run = _Run(run_dir, chief=is_chief())
    backup = _Backup(run, seconds=seconds, steps=backup_steps, resume=resume)
    checkpoint = _Checkpoint(run, every)
    return [
        NaNGuard(run, on_nan),  # first: a bad step raises before anything is saved
        backup,
        _History(run, resume),
        checkpoint,
        InterruptGuard(run, backup, checkpoint),  # last: the others have saved this step or epoch
    ]


def resume_state(run_dir):
    """What resuming ``run_dir`` restores: a dict with ``epoch`` (epochs complete; training
    goes on from there), ``step``, ``source`` (the folder or file) and ``kind`` ("backup" or
    "checkpoint"), or None when the run has neither.

    Raises:
        ModelFileError: a state file is damaged.
    """
    run_dir = os.fspath(run_dir)
    backup = os.path.join(run_dir, BACKUP_DIR)
    info = _read_state(os.path.join(backup, BACKUP_STATE_FILE))
    if info is not None and os.path.isfile(os.path.join(backup, BACKUP_WEIGHTS_FILE)):
        return {
            "kind": "backup",
            "epoch": info[BACKUP_EPOCH_KEY],
            "step": info.get("step"),
            "source": backup,
        }
    folder = os.path.join(run_dir, CHECKPOINT_DIR)
    info = _read_state(os.path.join(folder, STATE_FILE))
    if info is not None and os.path.isfile(os.path.join(folder, str(info.get("file")))):
        path = os.path.join(folder, info["file"])
        return {
            "kind": "checkpoint",
            "epoch": info["epoch"],
            "step": info.get("step"),
            "source": path,
        }
    return None


def release_callbacks(callbacks):
    """Give back what :func:`training_callbacks`' callbacks hold during ``fit`` (the SIGINT
    handler, a worker's scratch folder) after ``fit`` raised an error of its own. Their own
    errors release them already; calling this again does nothing."""
    for callback in callbacks:
        run = getattr(callback, "_run", None)
        if isinstance(run, _Run):
            run.release()
