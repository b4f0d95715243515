"""The two ways kvae stops a ``fit`` on purpose: a loss that is not finite (on Keras'
``TerminateOnNaN``) and a signal (Ctrl-C or SIGTERM). Private:
:func:`kvae.checkpointing.training_callbacks` puts them in order around the callbacks that
save. ``run`` is that module's ``_Run``: where the last good files are (for the messages)
and the clean-up before an error leaves ``fit``."""

import contextlib
import shlex
import signal
import sys
import threading

import keras
import numpy as np

from kvae.errors import ConfigError, TrainingError, TrainingInterrupted

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
_TERMS = {
    "reconstruction": "the reconstruction term (-log p(x|z))",
    "kl": "the KL term (KL(q(z|x) || p(z)))",
}


def training_step(model):
    """Training steps run so far: the optimizer's updates plus the steps that on_nan='skip'
    dropped (a dropped step applies nothing, so the optimizer does not count it)."""
    iterations = getattr(getattr(model, "optimizer", None), "iterations", None)
    steps = 0 if iterations is None else int(keras.ops.convert_to_numpy(iterations))
    skipped = getattr(model, "skipped_steps", None)
    if skipped is not None and getattr(model, "skip_nonfinite", False):
        steps += int(keras.ops.convert_to_numpy(skipped.result()))
    return steps


class NaNGuard(keras.callbacks.TerminateOnNaN):
    """Keras' TerminateOnNaN with ``raise_error=True`` (the raise skips every later callback,
    so nothing is saved from the bad weights); kvae turns its RuntimeError into a message that
    names the term, the epoch and the steps. With ``on_nan="skip"`` the model's step drops
    non-finite steps itself, and this stops when too many were dropped."""

    def __init__(self, run, on_nan="stop", max_skipped_fraction=0.5):
        super().__init__(raise_error=True)
        self._run = run
        self.on_nan = on_nan
        self.max_skipped_fraction = float(max_skipped_fraction)
        self._epoch = 0
        self._next_batch = 0
        self._skipped_before = 0

    def on_train_begin(self, logs=None):
        if self.on_nan != "skip":
            return
        if not hasattr(self.model, "skip_nonfinite"):
            raise self._run.fail(
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
        self._epoch, self._next_batch = epoch, 0
        self._skipped_before = self._skipped()

    def _skipped(self):
        counter = getattr(self.model, "skipped_steps", None)
        if counter is None:
            return 0
        value = counter.result() if hasattr(counter, "result") else counter
        return int(round(float(keras.ops.convert_to_numpy(value))))

    def on_train_batch_end(self, batch, logs=None):
        first, self._next_batch = self._next_batch, batch + 1
        if self.on_nan == "skip":
            skipped = self._skipped() - self._skipped_before
            if skipped >= max(10, self.max_skipped_fraction * (batch + 1)):
                what = (
                    f"{skipped} of the {batch + 1} steps of this epoch so far had a "
                    "non-finite loss and were skipped (on_nan='skip')"
                )
                raise self._run.fail(TrainingError(self._message(what, ["loss"], first, batch)))
            return
        try:
            super().on_train_batch_end(batch, logs)
        except RuntimeError as err:  # Keras: "NaN or Inf loss encountered"
            raise self._run.fail(TrainingError(self._describe(logs, first, batch))) from err

    def on_epoch_end(self, epoch, logs=None):
        skipped = self._skipped() - self._skipped_before
        if self.on_nan == "skip" and skipped:
            print(
                f"kvae: skipped {skipped} training step(s) with a non-finite loss or gradient "
                f"in epoch {epoch + 1} (on_nan='skip').",
                file=sys.stderr,
                flush=True,
            )

    def _describe(self, logs, first, last):
        loss = np.asarray(logs.get("loss", np.nan), np.float64)
        kind = "NaN" if np.any(np.isnan(loss)) else "infinite"
        bad = [k for k in _TERMS if k in logs and not _finite(logs[k])]
        if bad:
            fine = [f"{k}={_scalar(logs[k]):.4g}" for k in _TERMS if k in logs and k not in bad]
            what = (
                f"the loss became {kind}: "
                + " and ".join(_TERMS[k] for k in bad)
                + (" went bad" if len(bad) == 1 else " both went bad")
                + (f" ({', '.join(fine)} stayed finite)" if fine else "")
            )
        else:
            what = (
                f"the loss became {kind} while reconstruction and KL stayed finite (beta times "
                "KL overflowed, or an extra loss of a layer went bad)"
            )
        return self._message(what, bad or ["loss"], first, last)

    def _message(self, what, bad, first, last):
        epochs = (self.params or {}).get("epochs")
        step = training_step(self.model)
        calls = last - first + 1
        where = f"epoch {self._epoch + 1}{f'/{epochs}' if epochs else ''}, " + (
            f"training step {step} (batch {last + 1} of the epoch)"
            if calls == 1
            else f"training steps {step - calls + 1}-{step} (batches {first + 1}-{last + 1} of "
            f"the epoch, one compiled call of {calls} steps)"
        )
        causes = "; ".join(_CAUSES[k] for k in bad)
        return (
            f"Training stopped at {where}: {what}. Usual causes: {causes}. {self._run.last_good()}"
        )


def _finite(value):
    try:
        return bool(np.all(np.isfinite(np.asarray(value, dtype=np.float64))))
    except (TypeError, ValueError):
        return True  # not a number: nothing to judge


def _scalar(value):
    return float(np.mean(np.asarray(value, dtype=np.float64)))


# The signals that stop training after a save, and the handler to put back where the one
# found was not set from Python (signal.getsignal gives None).
_SIGNALS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


class InterruptGuard(keras.callbacks.Callback):
    """First Ctrl-C (SIGINT) or SIGTERM (what Kubernetes, SLURM and preemptible VMs send,
    then SIGKILL when their grace period ends): at the end of the current compiled call, save
    the backup and the checkpoint and raise TrainingInterrupted, whose ``signum`` is the
    signal (a raise, so Keras neither ends the epoch as if it were complete nor prints it so).
    Received during validation: the epoch ends, then the same. A second Ctrl-C raises
    ``KeyboardInterrupt`` at once; a repeated SIGTERM is ignored (the save it asks for is
    under way, and a job manager may send it to every process of a job). Installed only in
    the main thread, and for neither signal where it is ignored (``nohup`` and a shell's
    background jobs leave SIGINT ignored, and Python leaves it so). The handlers found are
    put back when training ends."""

    def __init__(self, run, backup, checkpoint, stream=None):
        super().__init__()
        self._run = run
        self._backup = backup
        self._checkpoint = checkpoint
        self._stream = stream
        self._previous = {}  # signal -> the handler found, while kvae's is installed
        self._requested = None  # the signal received
        self._epoch = 0

    def _handler(self, signum, frame):
        if self._requested is not None:
            if signum == signal.SIGINT:
                self._uninstall()
                raise KeyboardInterrupt
            return
        self._requested = signal.Signals(signum)
        if signum == signal.SIGINT:
            what, now = "Interrupt", "press Ctrl-C again to stop at once"
        else:
            what, now = self._requested.name, "Ctrl-C or SIGKILL stops at once"
        print(
            f"\n{what} received: finishing the current step, then saving a checkpoint ({now}).",
            file=self._stream or sys.stderr,
            flush=True,
        )

    def _uninstall(self):
        for signum, found in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(signum, _SIGNALS[signum] if found is None else found)
        self._previous = {}

    def on_train_begin(self, logs=None):
        self._requested = None
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in _SIGNALS:
            previous = signal.getsignal(signum)
            if previous is not signal.SIG_IGN:
                signal.signal(signum, self._handler)
                self._previous[signum] = previous
        if self._previous and self._uninstall not in self._run.on_release:
            self._run.on_release.append(self._uninstall)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._requested is not None:
            self._backup.save()  # its epoch is this one: it runs again on resume
            self._checkpoint.save(self._epoch, partial=True)
            where = f"in epoch {self._epoch + 1} after batch {batch + 1}"
            raise self._stop(f"{where} (the epoch runs again on resume)")

    def on_epoch_end(self, epoch, logs=None):
        if self._requested is not None:
            # The backup of this epoch's end is written (its callback runs before this one).
            self._checkpoint.save_complete(epoch + 1)
            raise self._stop(f"after epoch {epoch + 1}")

    def on_train_end(self, logs=None):
        self._run.release()

    def _stop(self, where):
        """The TrainingInterrupted to raise (the handlers given back)."""
        saved = [f"checkpoint {self._run.last_checkpoint[0]}"] if self._run.last_checkpoint else []
        if self._run.last_backup:
            saved.append(f"backup {self._run.last_backup[0]}")
        by = "" if self._requested == signal.SIGINT else f"by {self._requested.name} "
        error = self._run.fail(
            TrainingInterrupted(
                f"Interrupted {by}{where}, at training step {training_step(self.model)}. Saved "
                f"the {' and the '.join(saved) or 'state'}. Resume with: kvae train --resume "
                "RUN_DIR"
            )
        )
        error.signum = self._requested
        return error


@contextlib.contextmanager
def sigterm_interrupts(run_dir):
    """Within: SIGTERM raises TrainingInterrupted (``signum`` SIGTERM) at once, so a run
    stopped outside ``fit`` (saving the model, the test metrics) records how it ended. Inside
    ``fit`` :class:`InterruptGuard` replaces this handler and puts it back. Not installed
    outside the main thread, nor where SIGTERM is ignored."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    ):
        yield
        return
    received = []

    def handler(signum, frame):
        if received:  # repeated: the clean-up the first one started is under way
            return
        received.append(signum)
        error = TrainingInterrupted(
            "Interrupted by SIGTERM outside the training epochs (the backup keeps every "
            f"finished epoch). Resume with: kvae train --resume {shlex.quote(run_dir)}"
        )
        error.signum = signal.SIGTERM
        raise error

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
