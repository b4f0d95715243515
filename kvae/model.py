"""The VAE: a ``keras.Model`` wiring encoder -> posterior head -> z -> decoder ->
likelihood head, with a prior, trained by Keras' own ``fit`` on the negative ELBO (or the
importance-weighted bound).

This module says what the model is: its components, the distributions, the objective's
terms and the steps. How it is fitted (kvae's pipeline for arrays, the fused XLA loop,
steps per call, progress bars) is :mod:`kvae.training`, whose ``Trainer`` the VAE inherits
before ``keras.Model``; the components are built by :mod:`kvae.factory`."""

import contextlib
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from kvae import _compile_mode, _precision, conditioning, export, objectives
from kvae._checks import choice, positive_int, shape_tuple
from kvae._choices import DEFAULT_STEPS_PER_EXECUTION, KL_METHODS, OBJECTIVES, SLOTS
from kvae.errors import ConfigError, DataError, KvaeError
from kvae.factory import component_configs, make_component, providers, revive_components
from kvae.training import Trainer, checks


@keras.saving.register_keras_serializable(package="kvae")
class VAE(Trainer, keras.Model):
    """A variational autoencoder whose q(z|x) and p(x|z) are TFP distributions.

    Args:
        encoder, decoder: registered network names (``kvae.registry.names("encoders")``) or
            Keras layer instances.
        latent_dim: size of z (>= 1).
        data_shape: shape of one example, e.g. ``(28, 28, 1)`` (the networks and the
            likelihood head get the same ``data_shape``). ``input_shape``, its old name, still
            works with a DeprecationWarning.
        posterior, likelihood, prior: registered head/prior names or layer instances.
        encoder_kwargs, decoder_kwargs, posterior_kwargs, likelihood_kwargs, prior_kwargs:
            extra constructor arguments of each named component.
        beta: weight of the KL term in the training loss (1 = the ELBO; a beta-VAE otherwise).
            Stored in a non-trainable variable ``model.beta`` so callbacks can anneal it.
        num_samples: latent samples per example in each training step.
        objective: ``"elbo"`` or ``"iwae"`` (the importance-weighted bound with
            ``num_samples`` samples, Burda et al. 2016).
        kl: ``"auto"`` (analytic when TFP has it, else Monte Carlo), ``"analytic"`` or ``"mc"``.
        seed: seed of the latent sampling; with ``keras.utils.set_random_seed`` two runs
            are identical.
        free_bits: nats per latent dimension the KL may use for free (Kingma et al. 2016): a
            KL piece (``free_bits_mode``) whose batch mean is below its floor gives no gradient
            (its value still counts). 0 (default) = off. Not with ``objective="iwae"``.
        free_bits_mode: ``"total"`` (default; the code's KL, floor ``free_bits * latent_dim``),
            ``"dimension"`` (each dimension's KL, as the paper; factorised q and p) or
            ``"group"`` (each layer of a hierarchical model): ``kvae.objectives.kl_pieces``.
        condition: None (default), or a conditional VAE's condition y (Sohn et al. 2015):
            ``{"num_classes": C}`` (class labels, one-hot; the shorthand ``condition=C``) or
            ``{"dim": D}`` (any vector). Then ``fit(x, y)`` trains q(z|x,y) p(x|z,y),
            ``encode(x, y)``, ``decode(z, y)``, ``sample(n, y=...)`` and
            ``log_likelihood(x, y=...)`` take it, and kvae feeds y to the networks itself
            (see ``kvae.conditioning``), so any encoder and decoder work unchanged.

    Metrics (nats per example): ``loss`` (what is minimised), ``elbo`` (the bound on
    log p(x)), ``reconstruction`` (-E_q log p(x|z)) and ``kl`` (KL(q(z|x) || p(z))).
    """

    def __init__(
        self,
        encoder="mlp",
        decoder="mlp",
        latent_dim=2,
        data_shape=(28, 28, 1),
        posterior="gaussian",
        likelihood="bernoulli",
        prior="standard-normal",
        encoder_kwargs=None,
        decoder_kwargs=None,
        posterior_kwargs=None,
        likelihood_kwargs=None,
        prior_kwargs=None,
        beta=1.0,
        num_samples=1,
        objective="elbo",
        kl="auto",
        seed=None,
        free_bits=0.0,
        free_bits_mode="total",
        condition=None,
        input_shape=None,
        **kwargs,
    ):
        arguments = dict(locals())
        super().__init__(**kwargs)
        if input_shape is not None:
            warnings.warn(
                "kvae.VAE(input_shape=...) is deprecated: pass data_shape=... (the shape of one "
                "example, the name the networks and heads use).",
                DeprecationWarning,
                stacklevel=2,
            )
            data_shape = input_shape
        self.condition = conditioning.parse(condition)
        self.latent_dim = positive_int("latent_dim", latent_dim, what="It is the size of z.")
        self.data_shape = shape_tuple("data_shape", data_shape)
        self.num_samples = positive_int("num_samples", num_samples)
        self.objective = choice("objective", objective, OBJECTIVES)
        self.kl_method = choice("kl", kl, KL_METHODS)
        beta = _nonnegative("beta", beta, "a number")
        self.free_bits, self.free_bits_mode = objectives.check_free_bits(
            free_bits, free_bits_mode, self.objective
        )
        # on_nan="skip" (kvae.checkpointing sets it): a step whose loss or gradients are not
        # finite applies no gradient and leaves the metrics alone; counted in skipped_steps.
        self.skip_nonfinite = False
        self.seed = seed
        self._make_components(arguments)
        self._make_state(beta, seed)
        # The Prior contract's hook: a prior may use the model (the VampPrior its encoder).
        bind = getattr(self.prior, "bind_model", None)
        if callable(bind):
            bind(self)
        self._build_components()

    # ----- construction -----------------------------------------------------------------
    def _make_components(self, arguments):
        """Each slot's layer from its argument and its ``<slot>_kwargs`` (kvae.factory)."""
        self._specs = {}
        for slot in SLOTS:
            build_args = {slot.shape_arg: getattr(self, slot.shape_arg)}
            # Named components take the VAE's dtype policy (dtype="mixed_bfloat16": bf16).
            with _precision.policy_scope(self.dtype_policy.name):
                layer, spec = make_component(
                    slot.name,
                    slot.group,
                    arguments[slot.name],
                    arguments[f"{slot.name}_kwargs"],
                    build_args,
                )
            setattr(self, slot.attribute, layer)
            self._specs[slot.name] = spec

    def _make_state(self, beta, seed):
        """The variables and metrics the steps update."""
        self.beta = keras.Variable(beta, dtype="float32", trainable=False, name="beta")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss", "elbo", "reconstruction", "kl")
        }
        self.skipped_steps = keras.metrics.Sum(name="skipped_steps")  # not reset per epoch

    def _build_components(self):
        """Run one example through every part, so weights exist and bad wiring fails now."""
        x0 = tf.zeros((1, *self.data_shape), tf.float32)
        y0 = None if self.condition is None else tf.zeros((1, self.condition.dim), tf.float32)
        names = {slot: spec["name"] for slot, spec in self._specs.items()}
        with _fitting(
            f"encoder {names['encoder']!r} and posterior {names['posterior']!r}",
            f"data_shape={self.data_shape}",
        ):
            features = self._posterior_input(self.encoder(x0), y0)
            q = self.posterior_head.distribution(self.posterior_head(features))
            z = q.mean()
        if tuple(z.shape) != (1, self.latent_dim):
            raise ConfigError(
                f"Expected the posterior to give z of shape (batch, {self.latent_dim}). "
                f"Received: {tuple(z.shape)} from posterior {names['posterior']!r}."
            )
        with _fitting(
            f"decoder {names['decoder']!r} and likelihood {names['likelihood']!r}",
            f"latent_dim={self.latent_dim} and data_shape={self.data_shape}",
        ):
            features = self.decoder(self._decoder_input(z, y0))
            p = self.likelihood_head.distribution(self.likelihood_head(features))
        if tuple(p.event_shape) != self.data_shape or tuple(p.batch_shape) != (1,):
            raise ConfigError(
                f"Expected the likelihood to have event shape {self.data_shape} and batch shape "
                f"(1,). Received: event shape {tuple(p.event_shape)}, batch shape "
                f"{tuple(p.batch_shape)} from likelihood {names['likelihood']!r}."
            )
        self.prior.build()
        prior = self.prior.distribution()
        if tuple(prior.event_shape) != (self.latent_dim,):
            raise ConfigError(
                f"Expected the prior to have event shape ({self.latent_dim},). Received: "
                f"{tuple(prior.event_shape)} from prior {names['prior']!r}."
            )
        if self.free_bits:  # a mode the model's q and p cannot split into is refused now
            objectives.kl_pieces(self.free_bits_mode, q, prior, z[:, 0], q.sample(1, seed=[0, 0]))
        self.built = True

    def build(self, input_shape=None):  # everything is built in __init__
        self.built = True

    # ----- the probabilistic model ---------------------------------------------------------
    def encode(self, x, y=None, training=False):
        """q(z|x) (q(z|x,y) when conditional) for a batch ``x``: a TFP distribution, batch
        shape [B], event [latent_dim]."""
        x = self._as_tensor(x)
        y = self._condition_vector(y)
        features = self._posterior_input(self.encoder(x, training=training), y)
        return self.posterior_head.distribution(self.posterior_head(features))

    def decoder_params(self, z, y=None, training=False):
        """Likelihood parameters for codes ``z`` of shape [..., latent_dim] (and conditions
        ``y`` [B, ...] for z [..., B, latent_dim] when conditional)."""
        z = tf.convert_to_tensor(z, tf.float32)
        lead = tf.shape(z)[:-1]
        flat = tf.reshape(z, (-1, self.latent_dim))
        y = self._condition_vector(y)
        if y is not None:
            y = tf.reshape(
                tf.broadcast_to(y, tf.concat([lead, tf.shape(y)[-1:]], axis=0)),
                (-1, self.condition.dim),
            )
        params = self.likelihood_head(self.decoder(self._decoder_input(flat, y), training=training))
        return tf.reshape(params, tf.concat([lead, tf.shape(params)[1:]], axis=0))

    def decode(self, z, y=None, training=False):
        """p(x|z) (p(x|z,y) when conditional) for codes ``z`` [..., latent_dim]: event shape
        = one data point."""
        return self.likelihood_head.distribution(self.decoder_params(z, y, training=training))

    # A conditional VAE feeds y to the networks (kvae.conditioning); otherwise these are the
    # identity on the networks' own inputs and outputs.
    def _condition_vector(self, y):
        if self.condition is None:
            return None
        if y is None:
            raise DataError(
                f"Expected y: this VAE is conditional ({self.condition.describe()}). "
                "Received: y=None. Pass the condition of each example."
            )
        return self.condition.vector(y)

    def _posterior_input(self, features, y):
        return features if y is None else conditioning.features_with_condition(features, y)

    def _decoder_input(self, z, y):
        return z if y is None else conditioning.code_with_condition(z, y)

    def prior_distribution(self):
        """p(z)."""
        return self.prior.distribution()

    def call(self, x, training=False):
        """Reconstruction: the mean of p(x | z = E[q(z|x)]), in the data's units. A
        conditional VAE takes ``(x, y)``."""
        y = None
        if self.condition is not None and isinstance(x, (tuple, list)):
            x, y = x
        z = self.encode(x, y, training=training).mean()
        return self.likelihood_head.mean(self.decoder_params(z, y, training=training))

    def sample(self, n, seed=None, mean=True, y=None):
        """``n`` new data points from p(z) through the decoder (numpy).

        With ``mean=True`` (default) each is the mean of p(x|z), the usual VAE picture;
        with ``mean=False`` a draw from p(x|z). A conditional VAE needs ``y``: one condition
        (a class label, say) for all ``n``, or one per sample.
        """
        n = positive_int("n", n)
        if self.condition is not None:
            y = self.condition.repeat(y, n)
        seed = self._stateless_seed(seed)
        z = self.prior.distribution().sample(n, seed=seed)
        params = self.decoder_params(z, y)
        if mean:
            return keras.ops.convert_to_numpy(self.likelihood_head.mean(params))
        x = self.likelihood_head.distribution(params).sample(seed=tf.random.split(seed, 2)[1])
        return keras.ops.convert_to_numpy(self.likelihood_head.to_data(x))

    def _stateless_seed(self, seed=None):
        if seed is None:
            seed = self.seed_generator.next()
        elif isinstance(seed, int):
            seed = tf.constant([seed, 0])
        return tf.cast(seed, tf.int32)

    # ----- objective ---------------------------------------------------------------------
    def compute_terms(self, x, seed, training=False, y=None):
        """Per-example loss, elbo, reconstruction and kl for a batch ``x`` (with conditions
        ``y`` when conditional)."""
        q = self.encode(x, y, training=training)
        prior = self.prior.distribution()
        target = self.likelihood_head.prepare(x)

        def decode(z):
            return self.decode(z, y, training=training)

        args, samples = (target, q, prior, decode), {"seed": seed, "num_samples": self.num_samples}
        if self.objective == "iwae":
            bound = objectives.iwae_bound(*args, **samples)
            return dict(objectives.elbo(*args, **samples, kl=self.kl_method), loss=-bound)
        beta = tf.convert_to_tensor(self.beta)
        terms = objectives.elbo(*args, **samples, kl=self.kl_method, beta=beta)
        if training and self.free_bits:
            mode, kl = self.free_bits_mode, terms["kl"]
            terms["kl_pieces"] = objectives.kl_pieces(mode, q, prior, kl, terms["z"])
        return terms

    def _step_seed(self):
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            # Each replica draws its own noise.
            seed = tf.random.experimental.stateless_fold_in(seed, ctx.replica_id_in_sync_group)
        return seed

    def _gradients(self, x, weights, seed, y=None):
        """Per-example terms and the gradients of this replica's share of the batch loss."""
        with tf.GradientTape() as tape:
            terms = self.compute_terms(x, seed, training=True, y=y)
            per_example = terms["loss"]
            if self.free_bits:
                kl = objectives.free_bits_kl(*terms.pop("kl_pieces"), self.free_bits, weights)
                beta = tf.cast(tf.convert_to_tensor(self.beta), kl.dtype)
                per_example = terms["reconstruction"] + beta * kl
            loss = _mean(per_example, weights)
            if self.losses:
                loss = loss + tf.add_n(self.losses)
            # Keras sums gradients over replicas: scale so the update is the global mean.
            ctx = tf.distribute.get_replica_context()
            replicas = ctx.num_replicas_in_sync if ctx is not None else 1
            scaled = self.optimizer.scale_loss(loss / replicas)
        grads, ok = self._finite_gradients(loss, tape.gradient(scaled, self.trainable_weights))
        return grads, terms, ok

    def train_step(self, data):
        x, weights = _unpack(data)
        y = self._step_condition(data)
        grads, terms, ok = self._replica_fn("train", self._gradients)(
            x, weights, self._step_seed(), y
        )
        self._apply_gradients(grads, ok)
        return self._update_metrics(terms, weights)

    def _eval_terms(self, x, seed, y=None):
        return self.compute_terms(x, seed, training=False, y=y)

    def _step_condition(self, data):
        """A conditional VAE's y from a batch (x, y[, weights]); None otherwise."""
        if self.condition is None:
            return None
        return keras.utils.unpack_x_y_sample_weight(data)[1]

    def test_step(self, data):
        x, weights = _unpack(data)
        y = self._step_condition(data)
        terms = self._replica_fn("test", self._eval_terms)(x, self._step_seed(), y)
        return self._update_metrics(terms, weights)

    def predict_step(self, data):
        if self.condition is not None:
            # predict((x, y)): Keras hands the pair over as x (or as x and y).
            x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
            return self(x if y is None else (x, y), training=False)
        return super().predict_step(data)

    @property
    def metrics(self):
        return list(self.trackers.values())

    # ----- Keras entry points with input checks -------------------------------------------------
    def compile(
        self,
        optimizer="adam",
        *,
        jit_compile="auto",
        steps_per_execution=DEFAULT_STEPS_PER_EXECUTION,
        **kwargs,
    ):
        """Like ``keras.Model.compile``, with kvae's defaults: Adam, several steps per
        compiled call, and ``jit_compile="auto"``, kvae's own measured rule (see
        ``kvae._compile_mode``): XLA on GPU/TPU, and on CPU for dense models, off on CPU for
        models with convolutions (also under ``tf.distribute``, where Keras' ``"auto"``
        would turn XLA off). ``True``/``False`` force it; the choice and its reason are in
        ``model.compile_choice``. The loss is the model's own; pass no ``loss``."""
        if kwargs.get("loss") is not None:
            raise ConfigError(
                "Expected no `loss`: a VAE trains on its own negative ELBO. "
                f"Received: loss={kwargs['loss']!r}. Set beta, objective or kl on the VAE instead."
            )
        self.compile_choice = _compile_mode.resolve(
            jit_compile, self, run_eagerly=bool(kwargs.get("run_eagerly"))
        )
        _compile_mode.log(self.compile_choice)
        super().compile(
            optimizer=optimizer,
            jit_compile=self.compile_choice.jit,
            steps_per_execution=steps_per_execution,
            **kwargs,
        )
        self._compile_for_strategy()

    def check_data(self, x, name="x"):
        """Raise DataError unless ``x`` fits this model: shape, finite, the likelihood's range.

        Arrays are checked whole; for a ``tf.data.Dataset`` the element shape is checked and
        the values of its first batch."""
        checks.check_data(self, x, name)

    def _as_tensor(self, x):
        if isinstance(x, np.ndarray):
            x = x.astype(np.float32, copy=False)
        x = tf.convert_to_tensor(x)
        # Keras hands integer arrays (uint8 pixels) over as integer tensors.
        return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)

    # ----- estimates --------------------------------------------------------------------
    def log_likelihood(
        self,
        x,
        num_samples=1000,
        batch_size=100,
        chunk_size=None,
        seed=None,
        *,
        method=None,
        return_stderr=False,
        y=None,
        verbose=0,
        **options,
    ):
        """Estimate of log p(x) per example, in nats (log p(x|y) for a conditional model,
        which needs ``y`` and the IWAE method).

        By default (no ``method``) the importance-weighted estimate with K = ``num_samples``
        samples (Burda et al. 2016) as a numpy array: a lower bound that grows with K towards
        log p(x), computed in XLA-compiled chunks of ``chunk_size`` samples.

        With ``method`` (``"iwae"``, ``"exact"``, ``"quadrature"``, ``"ais"``, ``"auto"``) or
        ``return_stderr=True`` it returns a :class:`kvae.evaluation.LogLikelihood` with
        per-example ``estimate`` and ``stderr``, the ``method`` used and diagnostics; method
        options go in ``**options`` (see :func:`kvae.evaluation.log_likelihood`).

        ``verbose`` (importance sampling): 0 silent, 1 Keras' progress bar (one step per batch
        of examples, with the time left), 2 one line when done, "auto" a bar when standard
        output is a terminal.
        """
        from kvae import evaluation

        if method is None and not return_stderr and options:
            raise ConfigError(f"Unexpected options {sorted(options)}: pass method=... too.")
        if (method or "iwae") == "iwae":
            options.update(
                num_samples=num_samples,
                batch_size=batch_size,
                chunk_size=chunk_size,
                seed=seed,
                verbose=verbose,
            )
        result = evaluation.log_likelihood(self, x, method=method or "iwae", y=y, **options)
        return result if method or return_stderr else result.estimate

    def impute(self, table, num_samples=1000, multiple=None, seed=0):
        """A table's missing cells filled (a model of a table): ``kvae.imputation.impute``."""
        from kvae import imputation

        return imputation.impute(self, table, num_samples, multiple=multiple, seed=seed)

    # ----- saving -----------------------------------------------------------------------
    def export(
        self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs
    ):
        """Export for inference, as Keras' ``Model.export``: by default a SavedModel with the
        serving signatures ``reconstruct``, ``encode``, ``decode`` and ``sample``
        (:func:`kvae.export.export_model`, docs/export.md)."""
        return export.export_model(self, filepath, format, verbose, input_signature, **kwargs)

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        config.update(component_configs(self._specs))
        config.update(
            latent_dim=self.latent_dim,
            data_shape=list(self.data_shape),
            beta=float(keras.ops.convert_to_numpy(self.beta)),
            num_samples=self.num_samples,
            objective=self.objective,
            kl=self.kl_method,
            seed=self.seed,
            free_bits=self.free_bits,
            free_bits_mode=self.free_bits_mode,
            condition=None if self.condition is None else self.condition.get_config(),
            providers=providers(self._specs),
        )
        if self.dtype_policy.name != "float32":
            config["dtype"] = self.dtype_policy.name
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "input_shape" in config:  # saved before data_shape was its name
            config["data_shape"] = config.pop("input_shape")
        return cls(**revive_components(config))


def _unpack(data):
    """(x, sample_weight or None) from a batch: x, (x,), (x, y) or (x, y, sample_weight).
    y, when given, is ignored: a VAE's target is its input."""
    x, _, weights = keras.utils.unpack_x_y_sample_weight(data)
    if weights is not None:
        weights = tf.cast(weights, tf.float32)
    return x, weights


def _mean(values, weights):
    if weights is None:
        # 0 for an empty batch (a replica's share of a short last batch), not NaN.
        count = tf.cast(tf.size(values), values.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(values), count)
    return tf.reduce_sum(values * weights) / tf.maximum(tf.reduce_sum(weights), 1e-12)


def _nonnegative(name, value, what):
    """``value`` as a finite float >= 0, or ConfigError."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number >= 0 and math.isfinite(number)):
        raise ConfigError(f"Expected `{name}` to be {what} >= 0. Received: {name}={number!r}")
    return number


@contextlib.contextmanager
def _fitting(parts, where):
    """ConfigError "The <parts> do not fit together for <where>" when the code inside fails
    (kvae's own errors pass as they are)."""
    try:
        yield
    except KvaeError:
        raise
    except Exception as err:
        raise ConfigError(
            f"The {parts} do not fit together for {where}: {type(err).__name__}: {err}"
        ) from err
