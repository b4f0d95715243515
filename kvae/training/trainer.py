"""How a kvae model is fitted, evaluated and asked for predictions: the :class:`Trainer`
mixin, which ``kvae.VAE`` inherits before ``keras.Model`` (as Keras' own ``Model`` inherits
its trainer).

It overrides Keras' public entry points (``fit``, ``evaluate``, ``predict``,
``make_train_function``) and leaves the steps themselves (``train_step``, ``test_step``,
``predict_step``) to the model. It is duck-typed on the model and imports no model class;
it uses ``model.check_data(x)``, ``model.condition`` (None unless the model is
conditional), ``model.train_step``, ``model.metrics`` and ``model.compile_choice`` (what
``compile`` resolved ``jit_compile`` to), and gives the model's steps what
:mod:`kvae.training.step_helpers` holds.
"""

import keras
import numpy as np

from kvae import _keras_private
from kvae.datasets.pipeline import make_dataset, prefetch_for
from kvae.distribute import per_replica_batch_size
from kvae.errors import ConfigError
from kvae.training import checks, fused
from kvae.training import steps as _steps
from kvae.training.arrays import fast_path_ok, is_array, split_validation
from kvae.training.progress import add_truthful_progbar, step_callbacks
from kvae.training.replicas import multi_worker, replicated
from kvae.training.step_helpers import StepHelpers

__all__ = ["Trainer"]


class Trainer(StepHelpers):
    """Keras' fit/evaluate/predict with kvae's input checks, its own pipeline for arrays and
    the fused XLA loop. Mix in before ``keras.Model``: ``class VAE(Trainer, keras.Model)``."""

    # Steps per fused call while fit() feeds arrays (None: Keras' own train function), and
    # the value the current train function was made for.
    _fused_steps = None
    _train_function_fused = None

    def fit(self, x=None, y=None, batch_size=None, epochs=1, *, binarize=None, **kwargs):
        """``keras.Model.fit``, after checking ``x`` (shape, finite values, the likelihood's
        range) so bad data fails before any step runs. ``y`` is not needed: a VAE
        reconstructs its input. A conditional VAE takes its conditions as ``y`` (checked
        against ``x`` first), and they travel with ``x`` through the same pipeline.

        For in-memory arrays kvae feeds the steps itself through
        :func:`kvae.datasets.make_dataset` (``pad=True``), which is faster than Keras' generic
        array path: one shuffled permutation per epoch, gathered batch by batch; the last
        batch topped up with weight-0 rows, so every step has one shape (one XLA compilation)
        and each epoch still weighs every example exactly once; and one iterator for the whole
        run (a fresh iterator per epoch pauses Keras 3 for about a second at each epoch
        start). For that, ``steps_per_execution`` may be moved to a nearby divisor of the
        steps per epoch (:func:`kvae.training.steps.steps_per_call`), so that no compiled
        call runs across an epoch boundary. With XLA on one device the steps of each call
        then run in one XLA loop (:mod:`kvae.training.fused`; 1.2x-2x the steps per second of
        Keras' own loop on CPU), except for models with convolutions, which XLA compiles
        slowly inside a loop (``kvae._compile_mode.fused_loop``). ``binarize`` (None,
        ``"static"`` or ``"dynamic"``, array data only) binarises the examples as
        ``make_dataset`` does. ``validation_split`` holds out the last fraction of the
        arrays, as Keras does (binarised once when ``binarize`` is set). An unconditional VAE
        takes no ``y`` (labels are refused, not ignored).
        """
        self.check_data(x)
        self._check_condition(x, y)
        add_truthful_progbar(kwargs)
        conditional = self.condition is not None
        if is_array(x) and kwargs.get("validation_split"):
            x, y = split_validation(x, None if y is x else y, kwargs, binarize)
        if is_array(x) and fast_path_ok(x, y, kwargs, conditional):
            conditions = np.asarray(y) if conditional else None
            return self._fit_arrays(x, conditions, batch_size, epochs, binarize, kwargs)
        if binarize is not None:
            why = (
                "Keras' own array handling, which kvae leaves class_weight, steps_per_epoch "
                "and a sample_weight other than one weight per example to, does not binarise: "
                "binarise the arrays first (kvae.datasets.binarize_static)"
                if is_array(x)
                else "a tf.data pipeline binarises itself: kvae.datasets.make_dataset"
            )
            raise ConfigError(
                "Expected `binarize` only where kvae feeds the arrays itself "
                f"({why}). Received: binarize={binarize!r} with {type(x).__name__} data."
            )
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, **kwargs)

    def _check_condition(self, x, y):
        """A conditional model's y must match x (before any work); others take none."""
        checks.check_condition(self, x, y)

    def _fit_arrays(self, x, y, batch_size, epochs, binarize, kwargs):
        n = int(x.shape[0])
        batch_size = min(int(batch_size or 32), n)
        if replicated(self.distribute_strategy):
            per_replica_batch_size(self.distribute_strategy, batch_size)
        num_steps = -(-n // batch_size)
        per_call = _steps.steps_per_call(num_steps, int(self.steps_per_execution or 1))
        # Under MultiWorkerMirroredStrategy, Keras 3.15 fails on the padded, repeated
        # (x, x, weight) stream (a PerReplica value reaches convert_to_tensor): there each
        # epoch is one plain pass of batches, which Keras shards over the workers itself.
        plain = multi_worker(self.distribute_strategy)
        if plain:
            per_call = None
        dataset = self._array_dataset(x, y, batch_size, binarize, per_call, plain, kwargs)
        kwargs["shuffle"] = False  # the dataset shuffles itself
        if per_call is not None:
            self._set_steps_per_execution(per_call)
            kwargs["steps_per_epoch"] = num_steps
            if _steps.fusable(self, per_call, batch_size, x):
                self._fused_steps = per_call
        try:
            return super().fit(dataset, None, epochs=epochs, **kwargs)
        finally:
            self._fused_steps = None

    def _array_dataset(self, x, y, batch_size, binarize, per_call, plain, kwargs):
        """The ``tf.data`` stream ``fit`` feeds from arrays; takes ``sample_weight`` and
        ``shuffle`` out of ``kwargs``."""
        return make_dataset(
            np.asarray(x, np.float32),  # as given: no uint8 rescaling here, unlike loaders
            batch_size,
            shuffle=kwargs.pop("shuffle", True),
            binarize=binarize,
            sample_weight=kwargs.pop("sample_weight", None),
            pad=not plain,
            repeat=per_call is not None,
            in_graph=replicated(self.distribute_strategy),
            prefetch=prefetch_for(per_call or 2, batch_size, x.shape[1:]),
            y=y,
            missing=checks.handles_missing(self),
        )

    def _set_steps_per_execution(self, value):
        if value != self.steps_per_execution:
            self.steps_per_execution = value
            # Keras traces the step loop with this number: trace again.
            self.train_function = self.test_function = self.predict_function = None

    def make_train_function(self, force=False):
        """Keras' train function, or kvae's fused one (:mod:`kvae.training.fused`) while
        ``fit`` feeds arrays."""
        fused_steps = self._fused_steps
        if (
            self.train_function is not None
            and not force
            and self._train_function_fused == fused_steps
        ):
            return self.train_function
        self._train_function_fused = fused_steps
        if not fused_steps:
            return super().make_train_function(force=True)
        function = fused.train_function(self, fused_steps)
        return _keras_private.set_iterator_train_function(self, function)

    # ----- the compile config a saved model keeps -------------------------------------------
    def get_compile_config(self):
        """Keras' compile config, with ``jit_compile`` as it was asked for: a saved model
        keeps "auto", which decides again where it is loaded."""
        config = super().get_compile_config()
        if config and getattr(self, "compile_choice", None) is not None:
            config["jit_compile"] = self.compile_choice.requested
        return config

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss", None)
        self.compile(**{k: v for k, v in config.items() if v is not None})
        if self.built and self.optimizer is not None:
            self.optimizer.build(self.trainable_variables)

    def evaluate(
        self,
        x=None,
        y=None,
        batch_size=None,
        verbose="auto",
        sample_weight=None,
        steps=None,
        callbacks=None,
        **kwargs,
    ):
        """``keras.Model.evaluate`` after checking ``x``; its progress bar never counts past
        the number of steps (Keras reports each compiled call as ``steps_per_execution``
        steps, also the last, shorter one: 335/313 after ``fit`` moved it to 67)."""
        self.check_data(x)
        self._check_condition(x, y)
        callbacks = step_callbacks(self, x, batch_size, steps, callbacks, verbose)
        return super().evaluate(
            x,
            y,
            batch_size=batch_size,
            verbose=verbose,
            sample_weight=sample_weight,
            steps=steps,
            callbacks=callbacks,
            **kwargs,
        )

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        self.check_data(x)
        callbacks = step_callbacks(self, x, batch_size, steps, callbacks, verbose)
        return super().predict(
            x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks
        )
