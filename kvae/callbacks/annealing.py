"""KL warm-up (annealing): the KL weight beta grows linearly from 0 to its target.

Bowman et al. (2016) and Sønderby et al. (2016) start training with a small KL weight so
the decoder learns to use z before the KL term pushes q(z|x) onto the prior.
"""

import keras

from kvae._checks import positive_int
from kvae.errors import ConfigError

__all__ = ["KLWarmup"]


class KLWarmup(keras.callbacks.Callback):
    """Anneal ``model.beta`` linearly from 0 to ``target`` over the first ``epochs`` epochs.

    The value is updated before every compiled call (every ``steps_per_execution`` steps, or
    once per epoch when the number of steps is unknown):
    ``beta = target * min(1, (epoch + step / steps_per_epoch) / epochs)``. ``model.beta`` is a
    non-trainable variable read inside the compiled training step, so the assignment takes
    effect without retracing. At the end of training beta is set to ``target``, so a saved
    model carries the configured objective.

    Args:
        epochs: warm-up length in epochs (>= 1).
        target: the final beta; None (default) takes the model's beta when training starts.
    """

    def __init__(self, epochs, target=None):
        super().__init__()
        self.epochs = positive_int("epochs", epochs, what="It is the warm-up length.")
        if target is not None:
            try:
                target = float(target)
            except (TypeError, ValueError):
                target = -1.0
            if not target >= 0:
                raise ConfigError(
                    f"Expected `target` to be None or a number >= 0. Received: target={target!r}"
                )
        self.target = target
        self._target = None
        self._epoch = 0
        self._steps = None

    def on_train_begin(self, logs=None):
        beta = getattr(self.model, "beta", None)
        if not isinstance(beta, keras.Variable):
            raise ConfigError(
                "Expected a model with a `beta` variable (a kvae.VAE) for KLWarmup. "
                f"Received: {type(self.model).__name__}."
            )
        self._target = (
            float(keras.ops.convert_to_numpy(beta)) if self.target is None else self.target
        )
        self._steps = (self.params or {}).get("steps")

    def value(self, progress):
        """beta after ``progress`` epochs (a float; may be fractional)."""
        return self._target * min(1.0, max(0.0, progress) / self.epochs)

    def _assign(self, progress):
        self.model.beta.assign(self.value(progress))

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._assign(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self._steps and self._epoch < self.epochs:
            self._assign(self._epoch + batch / self._steps)

    def on_train_end(self, logs=None):
        if self._target is not None:
            self.model.beta.assign(self._target)
