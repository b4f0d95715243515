"""Progress bars that tell the truth about the steps that ran.

* ``fit``: an epoch stopped early (Ctrl-C, a NaN stop, any callback setting
  ``stop_training``) ends its bar at the steps it ran, not at ``469/469``
  (:class:`TruthfulProgbarLogger`).
* ``evaluate`` / ``predict``: Keras reports each compiled call as ``steps_per_execution``
  steps, also the last, shorter one (335/313 after ``fit`` moved it to 67); the reported
  step is capped at the last one (:func:`step_callbacks`).
"""

import sys

import keras
import tensorflow as tf
from absl import logging

from kvae.training.arrays import is_array

__all__ = ["TruthfulProgbarLogger", "add_truthful_progbar", "step_callbacks"]


class TruthfulProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras' progress bar for ``fit``, ``evaluate`` and ``predict``, drawn the same way with
    ``keras.utils.Progbar`` through the public callback hooks, except that an epoch stopped
    early ends at the steps it ran.

    A ``ProgbarLogger`` subclass so that Keras' ``CallbackList`` adds no second bar (it adds
    its own only when none of the callbacks is one); every hook is overridden here and none
    of ``ProgbarLogger``'s own state is read or written.
    """

    def __init__(self):
        super().__init__()
        self._bar = None
        self._seen = 0
        self._steps = None
        self._verbosity = 1
        self._num_epochs = 1
        self._in_fit = False

    def set_params(self, params):
        verbose = params["verbose"]
        self._verbosity = 1 if verbose == "auto" else verbose
        self._num_epochs = params["epochs"]
        self._steps = params["steps"]

    def on_train_begin(self, logs=None):
        self._in_fit = True  # inside fit, validation is silent

    def on_test_begin(self, logs=None):
        if not self._in_fit:
            self._start()

    def on_predict_begin(self, logs=None):
        self._start()

    def on_epoch_begin(self, epoch, logs=None):
        self._start()
        if self._verbosity and self._num_epochs > 1:
            _print(f"Epoch {epoch + 1}/{self._num_epochs}")

    def on_train_batch_end(self, batch, logs=None):
        self._update(batch, logs)

    def on_test_batch_end(self, batch, logs=None):
        if not self._in_fit:
            self._update(batch, logs)

    def on_predict_batch_end(self, batch, logs=None):
        self._update(batch, None)  # no prediction results in the bar

    def on_epoch_end(self, epoch, logs=None):
        stopped = getattr(self.model, "stop_training", False)
        if stopped and self._steps is not None and 0 < self._seen < self._steps:
            self._bar.update(self._seen, list((logs or {}).items()), finalize=True)
            return
        self._finish(logs)

    def on_test_end(self, logs=None):
        if not self._in_fit:
            self._finish(logs)

    def on_predict_end(self, logs=None):
        self._finish(logs)

    def _start(self):
        self._seen = 0
        self._bar = None
        self._make_bar()

    def _make_bar(self):
        if self._bar is None:
            self._bar = keras.utils.Progbar(
                target=self._steps,
                verbose=self._verbosity,
                unit_name="step",
                stateless_metrics=set(),
            )

    def _update(self, batch, logs):
        self._make_bar()
        self._seen = batch + 1  # one-indexed
        if self._verbosity == 1:
            self._bar.update(self._seen, list((logs or {}).items()), finalize=False)

    def _finish(self, logs):
        if self._steps is None:
            self._steps = self._seen
            self._bar.target = self._steps
        self._bar.update(self._steps, list((logs or {}).items()), finalize=True)


def _print(message):
    """A line where Keras' progress bars write theirs: standard output, or the log when
    interactive logging is off (``keras.config.disable_interactive_logging``)."""
    if keras.config.is_interactive_logging_enabled():
        sys.stdout.write(f"{message}\n")
        sys.stdout.flush()
    else:
        logging.info(message)


def add_truthful_progbar(kwargs):
    """Put a :class:`TruthfulProgbarLogger` into fit's callbacks where Keras would add its
    own progress bar (verbose not 0, none given, not a ready CallbackList)."""
    callbacks = kwargs.get("callbacks")
    if kwargs.get("verbose", "auto") == 0 or isinstance(callbacks, keras.callbacks.CallbackList):
        return
    callbacks = list(callbacks or [])
    if not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks):
        kwargs["callbacks"] = [*callbacks, TruthfulProgbarLogger()]


def num_steps(x, batch_size, steps):
    """Steps of an evaluate/predict call as Keras counts them, or None when unknown."""
    if steps is not None:
        return int(steps)
    if isinstance(x, tf.data.Dataset):
        n = int(x.cardinality())
        return n if n >= 0 else None
    if is_array(x):
        return -(-int(x.shape[0]) // int(batch_size or 32))
    return None


class LastStepCallbackList(keras.callbacks.CallbackList):
    """Keras' CallbackList, reporting at most step ``total - 1`` at the end of a batch."""

    def __init__(self, total, *args, **kwargs):
        self._last_step = int(total) - 1
        super().__init__(*args, **kwargs)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(min(batch, self._last_step), logs)

    def on_predict_batch_end(self, batch, logs=None):
        super().on_predict_batch_end(min(batch, self._last_step), logs)


def step_callbacks(model, x, batch_size, steps, callbacks, verbose):
    """The callbacks Keras would make for ``model.evaluate`` / ``predict``, in a list that
    caps the reported step at the last one; ``callbacks`` as given when they are a
    CallbackList already or the number of steps is unknown."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        return callbacks
    total = num_steps(x, batch_size, steps)
    if total is None or int(model.steps_per_execution or 1) == 1:
        return callbacks
    return LastStepCallbackList(
        total,
        callbacks,
        add_progbar=verbose != 0,
        verbose=verbose,
        epochs=1,
        steps=total,
        model=model,
    )
