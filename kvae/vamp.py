"""VampPrior (Tomczak and Welling 2018): ``prior="vamp"``.

    p(z) = (1/K) sum_k q(z | u_k)

a uniform mixture of the model's *own* posterior at K learned pseudo-inputs u_k, which live
in data space. The prior therefore needs the model's encoder and posterior head: it uses the
``bind_model`` hook of the :class:`kvae.priors.Prior` contract, which ``kvae.VAE`` calls once
while it is built (see docs/plugins.md). Pseudo-inputs are kept inside the data's range
(the likelihood's ``data_range``, e.g. [0, 1] for Bernoulli pixels) by a sigmoid; they may
be initialised from training examples (:meth:`VampPrior.init_from_data`, which ``kvae
train`` calls). The KL from q(z|x) has no closed form: ``kl="auto"`` uses Monte Carlo.
"""

import math
import weakref

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from kvae._checks import choice
from kvae.errors import ConfigError, DataError
from kvae.priors import Prior

tfd = tfp.distributions

# Pseudo-inputs initialised from data are pulled this far inside the open range, so their
# sigmoid pre-images are finite (logit(1e-3) = -6.9).
_EDGE = 1e-3


@keras.saving.register_keras_serializable(package="kvae")
class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z|u_k) over K learned pseudo-inputs u_k.

    Args:
        latent_dim: size of z.
        num_components: K >= 1, the number of pseudo-inputs.
        data_range: ``"auto"`` (the model's likelihood's data range, unbounded if it has
            none), ``None`` (unbounded) or ``[low, high]``.
        init: ``"random"`` (pseudo-inputs near the middle of the range) or ``"data"``
            (:meth:`init_from_data` copies K random training examples; ``kvae train``
            calls it with the training set).
        init_stddev: spread of the random initial pre-images.
        seed: seed of the random initialisation and of the examples chosen from data.
    """

    uses_encoder = True

    def __init__(
        self,
        latent_dim,
        num_components=100,
        data_range="auto",
        init="random",
        init_stddev=0.01,
        seed=0,
        **kwargs,
    ):
        super().__init__(latent_dim, **kwargs)
        if (
            isinstance(num_components, bool)
            or not isinstance(num_components, int)
            or num_components < 1
        ):
            raise ConfigError(
                "Expected `num_components` (K, the number of pseudo-inputs) to be an integer "
                f">= 1. Received: num_components={num_components!r}"
            )
        self.num_components = num_components
        if data_range not in ("auto", None):
            try:
                low, high = (float(v) for v in data_range)
            except (TypeError, ValueError):
                low = high = float("nan")
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ConfigError(
                    "Expected `data_range` to be 'auto', None or [low, high] with low < high. "
                    f"Received: data_range={data_range!r}"
                )
            data_range = [low, high]
        self.data_range = data_range
        self.init = choice("init", init, {"random", "data"})
        self.init_stddev = float(init_stddev)
        self.seed = int(seed)
        self._host = None
        self._range = None
        self.pseudo_inputs_raw = None

    # ----- the Prior contract's hook -----------------------------------------------------
    def bind_model(self, model):
        """Called by ``kvae.VAE`` once, before its first forward pass: keep (a weak reference
        to) the model, whose ``encode`` gives q(z|u), and make the pseudo-inputs."""
        if getattr(model, "condition", None) is not None:
            raise ConfigError(
                "Expected an unconditional model for the VampPrior: its pseudo-inputs have no "
                f"condition y. Received: condition={model.condition!r}. Use "
                "prior='standard-normal' or 'mixture' with a conditional VAE."
            )
        self._host = weakref.ref(model)
        rng = self.data_range
        if rng == "auto":
            rng = getattr(model.likelihood_head, "data_range", None)
        self._range = None if rng is None else (float(rng[0]), float(rng[1]))
        if self.pseudo_inputs_raw is None:
            self.pseudo_inputs_raw = self.add_weight(
                name="pseudo_inputs",
                shape=(self.num_components, *model.data_shape),
                initializer=keras.initializers.RandomNormal(
                    stddev=self.init_stddev, seed=self.seed
                ),
            )
            if self._range is None:
                # Unbounded data: start the pseudo-inputs at random, standard-normal scale.
                self.pseudo_inputs_raw.assign(
                    np.random.default_rng(self.seed)
                    .standard_normal(self.pseudo_inputs_raw.shape)
                    .astype("float32")
                )

    def _bound_model(self):
        model = self._host() if self._host is not None else None
        if model is None:
            raise ConfigError(
                "The VampPrior needs a model: it is a mixture of the model's own q(z|u_k). "
                "Received: a prior that no kvae.VAE has bound. Use it as kvae.VAE(prior='vamp')."
            )
        return model

    def pseudo_inputs(self):
        """u_1..u_K, shape [K, *data_shape], inside the data's range."""
        raw = tf.convert_to_tensor(self.pseudo_inputs_raw)
        if self._range is None:
            return raw
        low, high = self._range
        return low + (high - low) * tf.sigmoid(raw)

    def components(self):
        """q(z|u_k) for every pseudo-input: batch shape [K], event [latent_dim]."""
        return self._bound_model().encode(self.pseudo_inputs())

    def distribution(self):
        return tfd.MixtureSameFamily(
            mixture_distribution=tfd.Categorical(logits=tf.zeros([self.num_components])),
            components_distribution=self.components(),
        )

    def init_from_data(self, x, seed=None):
        """Set the pseudo-inputs to K training examples drawn at random (without replacement
        when there are at least K). Does nothing unless ``init="data"``."""
        if self.init != "data":
            return
        self._bound_model()
        x = np.asarray(x, "float32")
        shape = tuple(self.pseudo_inputs_raw.shape[1:])
        if x.ndim < 1 or tuple(x.shape[1:]) != shape or len(x) < 1:
            raise DataError(
                f"Expected training examples of shape (n, {', '.join(map(str, shape))}) to "
                f"initialise the VampPrior's pseudo-inputs. Received: shape {x.shape}."
            )
        rng = np.random.default_rng(self.seed if seed is None else seed)
        rows = rng.choice(len(x), self.num_components, replace=len(x) < self.num_components)
        u = x[rows]
        if self._range is not None:
            low, high = self._range
            p = np.clip((u - low) / (high - low), _EDGE, 1 - _EDGE)
            u = np.log(p) - np.log1p(-p)
        self.pseudo_inputs_raw.assign(u.astype("float32"))

    def get_config(self):
        return {
            **super().get_config(),
            "num_components": self.num_components,
            "data_range": self.data_range,
            "init": self.init,
            "init_stddev": self.init_stddev,
            "seed": self.seed,
        }
