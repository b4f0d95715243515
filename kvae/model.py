"""The VAE: a ``keras.Model`` wiring encoder -> posterior head -> z -> decoder ->
likelihood head, with a prior, trained by Keras' own ``fit`` on the negative ELBO (or the
importance-weighted bound)."""

import difflib
import inspect
import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from kvae import _compile_mode, _precision, conditioning, objectives, registry
from kvae._checks import choice, positive_int, shape_tuple
from kvae._choices import DEFAULT_STEPS_PER_EXECUTION, KL_METHODS, OBJECTIVES, SLOTS
from kvae.errors import ConfigError, DataError, KvaeError, PluginError


@keras.saving.register_keras_serializable(package="kvae")
class VAE(keras.Model):
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
        free_bits: nats per latent dimension the KL may use for free (Kingma et al. 2016),
            applied to the whole code: while a batch's mean KL is below
            ``free_bits * latent_dim`` the KL term gives no gradient (its value still counts
            in the loss and metrics). 0 (default) = off. Not with ``objective="iwae"``.
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
        try:
            beta = float(beta)
        except (TypeError, ValueError):
            beta = float("nan")
        if not (beta >= 0 and math.isfinite(beta)):
            raise ConfigError(f"Expected `beta` to be a number >= 0. Received: beta={beta!r}")
        try:
            free_bits = float(free_bits)
        except (TypeError, ValueError):
            free_bits = float("nan")
        if not (free_bits >= 0 and math.isfinite(free_bits)):
            raise ConfigError(
                f"Expected `free_bits` to be a number of nats >= 0. Received: free_bits={free_bits!r}"
            )
        if free_bits and self.objective == "iwae":
            raise ConfigError(
                "Expected free_bits=0 with objective='iwae' (the importance-weighted bound has no "
                f"separate KL term). Received: free_bits={free_bits!r}."
            )
        self.free_bits = free_bits
        # on_nan="skip" (kvae.checkpointing sets it): a step whose loss or gradients are not
        # finite applies no gradient and leaves the metrics alone; counted in skipped_steps.
        self.skip_nonfinite = False
        # Steps per fused call while fit() feeds arrays (see _fused_train_function).
        self._fused_steps = None
        self._train_function_fused = None
        self.seed = seed
        self._specs = {}
        for slot in SLOTS:  # each slot's argument and its `<slot>_kwargs`
            build_args = {slot.shape_arg: getattr(self, slot.shape_arg)}
            # Named components take the VAE's dtype policy (dtype="mixed_bfloat16": bf16).
            with _precision.policy_scope(self.dtype_policy.name):
                layer, spec = _make_component(
                    slot.name,
                    slot.group,
                    arguments[slot.name],
                    arguments[f"{slot.name}_kwargs"],
                    build_args,
                )
            setattr(self, slot.attribute, layer)
            self._specs[slot.name] = spec
        self.beta = keras.Variable(beta, dtype="float32", trainable=False, name="beta")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {
            name: keras.metrics.Mean(name=name) for name in ("loss", "elbo", "reconstruction", "kl")
        }
        self.skipped_steps = keras.metrics.Sum(name="skipped_steps")  # not reset per epoch
        self._replica_jit = False
        self._replica_fns = {}
        # The Prior contract's hook: a prior may use the model (the VampPrior its encoder).
        bind = getattr(self.prior, "bind_model", None)
        if callable(bind):
            bind(self)
        self._build_components()

    # ----- construction -----------------------------------------------------------------
    def _build_components(self):
        """Run one example through every part, so weights exist and bad wiring fails now."""
        x0 = tf.zeros((1, *self.data_shape), tf.float32)
        y0 = None if self.condition is None else tf.zeros((1, self.condition.dim), tf.float32)
        try:
            features = self._posterior_input(self.encoder(x0), y0)
            params = self.posterior_head(features)
            q = self.posterior_head.distribution(params)
            z = q.mean()
        except KvaeError:
            raise
        except Exception as err:
            raise ConfigError(
                f"The encoder {self._specs['encoder']['name']!r} and posterior "
                f"{self._specs['posterior']['name']!r} do not fit together for data_shape="
                f"{self.data_shape}: {type(err).__name__}: {err}"
            ) from err
        if tuple(z.shape) != (1, self.latent_dim):
            raise ConfigError(
                f"Expected the posterior to give z of shape (batch, {self.latent_dim}). "
                f"Received: {tuple(z.shape)} from posterior {self._specs['posterior']['name']!r}."
            )
        try:
            features = self.decoder(self._decoder_input(z, y0))
            params = self.likelihood_head(features)
            p = self.likelihood_head.distribution(params)
        except KvaeError:
            raise
        except Exception as err:
            raise ConfigError(
                f"The decoder {self._specs['decoder']['name']!r} and likelihood "
                f"{self._specs['likelihood']['name']!r} do not fit together for latent_dim="
                f"{self.latent_dim} and data_shape={self.data_shape}: {type(err).__name__}: {err}"
            ) from err
        if tuple(p.event_shape) != self.data_shape or tuple(p.batch_shape) != (1,):
            raise ConfigError(
                f"Expected the likelihood to have event shape {self.data_shape} and batch shape "
                f"(1,). Received: event shape {tuple(p.event_shape)}, batch shape "
                f"{tuple(p.batch_shape)} from likelihood {self._specs['likelihood']['name']!r}."
            )
        self.prior.build()
        prior = self.prior.distribution()
        if tuple(prior.event_shape) != (self.latent_dim,):
            raise ConfigError(
                f"Expected the prior to have event shape ({self.latent_dim},). Received: "
                f"{tuple(prior.event_shape)} from prior {self._specs['prior']['name']!r}."
            )
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

        if self.objective == "iwae":
            bound = objectives.iwae_bound(
                target, q, prior, decode, seed=seed, num_samples=self.num_samples
            )
            terms = objectives.elbo(
                target, q, prior, decode, seed=seed, num_samples=self.num_samples, kl=self.kl_method
            )
            terms = dict(terms, loss=-bound)
        else:
            terms = objectives.elbo(
                target,
                q,
                prior,
                decode,
                seed=seed,
                num_samples=self.num_samples,
                kl=self.kl_method,
                beta=tf.convert_to_tensor(self.beta),
            )
        return terms

    def _step_seed(self):
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            # Each replica draws its own noise.
            seed = tf.random.experimental.stateless_fold_in(seed, ctx.replica_id_in_sync_group)
        return seed

    def _metric_results(self):
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def _update_metrics(self, terms, weights=None):
        # Per-example values, so an epoch's metric is the mean over its examples (not the
        # mean of batch means) and padded rows (weight 0) do not count.
        names = list(self.trackers)
        if self.skip_nonfinite:
            ok = tf.reduce_all(tf.stack([tf.math.is_finite(terms[k]) for k in names]), axis=0)
            mask = tf.cast(ok, tf.float32)
            weights = mask if weights is None else weights * mask
            terms = {k: tf.where(ok, terms[k], tf.zeros_like(terms[k])) for k in names}
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name], sample_weight=weights)
        results = self._metric_results()
        if _multi_worker(self.distribute_strategy):
            # Keras 3 reduces step outputs across workers with strategy.reduce(..., axis=0),
            # which needs rank >= 1 (tensorflow/tensorflow#72388).
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def _gradients(self, x, weights, seed, y=None):
        """Per-example terms and the gradients of this replica's share of the batch loss."""
        with tf.GradientTape() as tape:
            terms = self.compute_terms(x, seed, training=True, y=y)
            per_example = terms["loss"]
            if self.free_bits:
                kl = terms["kl"]
                floor = tf.cast(self.free_bits * self.latent_dim, kl.dtype)
                kl = tf.where(_mean(kl, weights) < floor, tf.stop_gradient(kl), kl)
                beta = tf.cast(tf.convert_to_tensor(self.beta), kl.dtype)
                per_example = terms["reconstruction"] + beta * kl
            loss = _mean(per_example, weights)
            if self.losses:
                loss = loss + tf.add_n(self.losses)
            # Keras sums gradients over replicas: scale so the update is the global mean.
            ctx = tf.distribute.get_replica_context()
            replicas = ctx.num_replicas_in_sync if ctx is not None else 1
            scaled = self.optimizer.scale_loss(loss / replicas)
        grads = tape.gradient(scaled, self.trainable_weights)
        ok = tf.constant(True)
        if self.skip_nonfinite:
            ok = tf.reduce_all(
                [tf.math.is_finite(loss)]
                + [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
            )
            grads = [g if g is None else tf.where(ok, g, tf.zeros_like(g)) for g in grads]
        return grads, terms, ok

    def _replica_fn(self, name, fn):
        """``fn``, XLA-compiled per replica when compile() moved XLA there (see compile)."""
        if not self._replica_jit:
            return fn
        if name not in self._replica_fns:
            self._replica_fns[name] = _compile_mode.function(fn, reduce_retracing=True)
        return self._replica_fns[name]

    def train_step(self, data):
        x, weights = _unpack(data)
        y = self._step_condition(data)
        grads, terms, ok = self._replica_fn("train", self._gradients)(
            x, weights, self._step_seed(), y
        )
        if self.skip_nonfinite and not _replicated(self.distribute_strategy):
            # Zero gradients are not "no step": Adam's moments would still move the weights.
            # A bad step applies nothing at all (weights, moments and iteration count stay).
            tf.cond(
                ok,
                lambda: self.optimizer.apply(grads, self.trainable_weights) or tf.no_op(),
                tf.no_op,
            )
        else:
            # Under a replicated strategy the optimizer's merge_call cannot sit inside a
            # tf.cond, so a bad step there applies zero gradients (docs/scaling.md).
            self.optimizer.apply(grads, self.trainable_weights)
        if self.skip_nonfinite:
            self.skipped_steps.update_state(1.0 - tf.cast(ok, tf.float32))
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
        # Saved models keep what was asked for ("auto" decides again where they are loaded).
        self._compile_config.config["jit_compile"] = self.compile_choice.requested
        self._replica_fns = {}
        self._replica_jit = False
        strategy = self.distribute_strategy
        if _replicated(strategy) and not isinstance(strategy, tf.distribute.TPUStrategy):
            # Keras would XLA-compile `strategy.run(step)` as one cluster, which cannot reach
            # the variables on the other replicas' devices (Keras' "auto" turns XLA off here
            # for that reason). kvae compiles each replica's forward and backward pass
            # instead; the gradient all-reduce and the optimizer update run outside XLA.
            # And Keras runs each step of a multi-step call inside a tf.cond, where
            # tf.distribute cannot merge_call (the optimizer's update; see Keras'
            # LossScaleOptimizer._tf_apply): one step per call. The saved compile config
            # keeps the values asked for.
            self._replica_jit = bool(self.jit_compile)
            self.jit_compile = False
            self.steps_per_execution = 1

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss", None)
        self.compile(**{k: v for k, v in config.items() if v is not None})
        if self.built and self.optimizer is not None:
            self.optimizer.build(self.trainable_variables)

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
        steps per epoch (:func:`steps_per_call`), so that no compiled call runs across an
        epoch boundary. With XLA on one device the steps of each call then run in one XLA
        loop (``_fused_train_function``; 1.2x-2x the steps per second of Keras' own loop on
        CPU). ``binarize`` (None, ``"static"`` or ``"dynamic"``, array data only)
        binarises the examples as ``make_dataset`` does.
        """
        self.check_data(x)
        self._check_condition(x, y)
        _add_truthful_progbar(kwargs)
        conditional = self.condition is not None
        if _is_array(x) and _fast_path_ok(x, y, kwargs, conditional):
            conditions = np.asarray(y) if conditional else None
            return self._fit_arrays(x, conditions, batch_size, epochs, binarize, kwargs)
        if binarize is not None:
            raise ConfigError(
                "Expected `binarize` only with array data (a tf.data pipeline binarises "
                f"itself: kvae.datasets.make_dataset). Received: binarize={binarize!r}."
            )
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, **kwargs)

    def _fit_arrays(self, x, y, batch_size, epochs, binarize, kwargs):
        from kvae.datasets.pipeline import make_dataset, prefetch_for

        n = int(x.shape[0])
        batch_size = min(int(batch_size or 32), n)
        replicated = _replicated(self.distribute_strategy)
        if replicated:
            from kvae.distribute import per_replica_batch_size

            per_replica_batch_size(self.distribute_strategy, batch_size)
        steps = -(-n // batch_size)
        per_call = steps_per_call(steps, int(self.steps_per_execution or 1))
        # Under MultiWorkerMirroredStrategy, Keras 3.15 fails on the padded, repeated
        # (x, x, weight) stream (a PerReplica value reaches convert_to_tensor): there each
        # epoch is one plain pass of batches, which Keras shards over the workers itself.
        plain = _multi_worker(self.distribute_strategy)
        if plain:
            per_call = None
        weights = kwargs.pop("sample_weight", None)
        dataset = make_dataset(
            np.asarray(x, np.float32),  # as given: no uint8 rescaling here, unlike loaders
            batch_size,
            shuffle=kwargs.pop("shuffle", True),
            binarize=binarize,
            sample_weight=weights,
            pad=not plain,
            repeat=per_call is not None,
            in_graph=replicated,
            prefetch=prefetch_for(per_call or 2, batch_size, x.shape[1:]),
            y=y,
        )
        kwargs["shuffle"] = False  # the dataset shuffles itself
        if per_call is not None:
            self._set_steps_per_execution(per_call)
            kwargs["steps_per_epoch"] = steps
            if _fusable(self, per_call, batch_size, x):
                self._fused_steps = per_call
        try:
            return super().fit(dataset, None, epochs=epochs, **kwargs)
        finally:
            self._fused_steps = None

    def _set_steps_per_execution(self, value):
        if value != self.steps_per_execution:
            self.steps_per_execution = value
            # Keras traces the step loop with this number: trace again.
            self.train_function = self.test_function = self.predict_function = None

    # ----- several steps in one XLA computation -------------------------------------------
    def make_train_function(self, force=False):
        """Keras' train function, or kvae's fused one while ``fit`` feeds arrays (below)."""
        fused = self._fused_steps
        if self.train_function is not None and not force and self._train_function_fused == fused:
            return self.train_function
        self._train_function_fused = fused
        if not fused:
            return super().make_train_function(force=True)
        self.train_function = self._fused_train_function(fused)
        return self.train_function

    def _fused_train_function(self, steps):
        """One compiled call = ``steps`` training steps in one XLA while-loop.

        Keras runs each step of a multi-step call as its own XLA computation, fed from the
        iterator through a loop of optionals and conditionals (it cannot know how many
        batches are left). That costs about 0.8 ms per step: at Burda et al.'s batch of 20
        the steps ran at 2.2 ms against 1.4 ms for the same step looped inside one XLA
        computation. ``fit`` on arrays knows that every call has ``steps`` batches (the
        stream repeats and the steps per call divide the epoch), so kvae takes them from the
        iterator at once, stacks them and loops over them in XLA. What Keras sees is
        unchanged: one call per ``steps_per_execution`` steps, the last step's logs.
        """

        def run(batches):
            def body(i):
                self.train_step(tf.nest.map_structure(lambda t: t[i], batches))
                return (i + 1,)

            tf.while_loop(lambda i: i < steps, body, (tf.constant(0),))
            return self._metric_results()

        run = _compile_mode.function(run, reduce_retracing=True)

        def function(iterator):
            # One get_next op in a loop, not ``steps`` of them: traced without AutoGraph,
            # tf.data refuses a 33rd get_next on one iterator (its guard against
            # ``for batch in dataset`` in a tf.function), and steps per call go up to 128.
            arrays = tf.nest.map_structure(
                lambda s: tf.TensorArray(s.dtype, size=steps, element_shape=s.shape),
                iterator.element_spec,
            )

            def take(i, arrays):
                batch = iterator.get_next()
                return i + 1, tf.nest.map_structure(lambda a, t: a.write(i, t), arrays, batch)

            _, arrays = tf.while_loop(lambda i, _: i < steps, take, (tf.constant(0), arrays))
            return run(tf.nest.map_structure(lambda a: a.stack(), arrays))

        return _compile_mode.function(function, jit_compile=False, reduce_retracing=True)

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
        callbacks = self._step_callbacks(x, batch_size, steps, callbacks, verbose)
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

    def _check_condition(self, x, y):
        """A conditional VAE's y must match x (before any work); others ignore y."""
        if self.condition is not None and _is_array(x):
            self.condition.check(None if y is None else np.asarray(y), int(x.shape[0]))

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        self.check_data(x)
        callbacks = self._step_callbacks(x, batch_size, steps, callbacks, verbose)
        return super().predict(
            x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks
        )

    def _step_callbacks(self, x, batch_size, steps, callbacks, verbose):
        """The callbacks Keras would make, in a list that caps the reported step at the
        last one; ``callbacks`` as given when they are a CallbackList already or the number
        of steps is unknown."""
        if isinstance(callbacks, keras.callbacks.CallbackList):
            return callbacks
        total = _num_steps(x, batch_size, steps)
        if total is None or int(self.steps_per_execution or 1) == 1:
            return callbacks
        return _LastStepCallbackList(
            total,
            callbacks,
            add_progbar=verbose != 0,
            verbose=verbose,
            epochs=1,
            steps=total,
            model=self,
        )

    def check_data(self, x, name="x"):
        """Raise DataError unless ``x`` fits this model: shape, finite, the likelihood's range.

        Arrays are checked whole; for a ``tf.data.Dataset`` the element shape is checked and
        the values of its first batch."""
        if x is None:
            raise DataError(
                f"Expected {name} to be data of shape (n, *{self.data_shape}). Received: None."
            )
        if isinstance(x, tf.data.Dataset):
            spec = x.element_spec
            spec = spec[0] if isinstance(spec, tuple) else spec
            self._check_shape(tuple(spec.shape), name)
            for element in x.take(1):
                batch = element[0] if isinstance(element, tuple) else element
                self._check_values(np.asarray(batch), name)
            return
        if isinstance(x, (tuple, list, dict)) or not hasattr(x, "shape"):
            return  # Keras handles the other input types (generators, PyDataset) itself.
        arr = np.asarray(x)
        self._check_shape(arr.shape, name)
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise DataError(
                f"Expected real numbers (an integer or floating dtype) in {name}. "
                f"Received: dtype={arr.dtype}."
            )
        self._check_values(arr, name)

    def _check_shape(self, shape, name):
        if tuple(shape[1:]) != self.data_shape:
            hint = ""
            if None not in shape and int(np.prod(shape[1:])) == int(np.prod(self.data_shape)):
                hint = f" Reshape it with x.reshape(-1, {', '.join(map(str, self.data_shape))})."
            raise DataError(
                f"Expected {name} of shape (n, {', '.join(map(str, self.data_shape))}), the "
                f"model's data_shape. Received: {name}.shape={tuple(shape)}.{hint}"
            )

    def _check_values(self, arr, name):
        if arr.size == 0:
            raise DataError(f"Expected at least one example in {name}. Received: {arr.shape}.")
        if not np.all(np.isfinite(arr)):
            bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
            raise DataError(
                f"Expected finite values in {name}. Received: {bad} NaN or infinite values. "
                f"Clean or impute the data before training."
            )
        self.likelihood_head.check_data(arr, name)

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

    # ----- saving -----------------------------------------------------------------------
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable}
        for slot in (s.name for s in SLOTS):
            spec = self._specs[slot]
            config[slot] = spec["config"]
            if spec["kwargs"]:
                config[f"{slot}_kwargs"] = dict(spec["kwargs"])
        config.update(
            latent_dim=self.latent_dim,
            data_shape=list(self.data_shape),
            beta=float(keras.ops.convert_to_numpy(self.beta)),
            num_samples=self.num_samples,
            objective=self.objective,
            kl=self.kl_method,
            seed=self.seed,
            free_bits=self.free_bits,
            condition=None if self.condition is None else self.condition.get_config(),
            providers={s.name: self._specs[s.name]["provider"] for s in SLOTS},
        )
        if self.dtype_policy.name != "float32":
            config["dtype"] = self.dtype_policy.name
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if "input_shape" in config:  # saved before data_shape was its name
            config["data_shape"] = config.pop("input_shape")
        providers = config.pop("providers", None) or {}
        for slot, group, *_ in SLOTS:
            value = config.get(slot)
            if isinstance(value, dict):  # a serialized layer instance
                config[slot] = keras.saving.deserialize_keras_object(value)
            elif isinstance(value, str):
                _require_component(slot, group, value, providers.get(slot))
        return cls(**config)


def _is_array(x):
    return isinstance(x, (np.ndarray, tf.Tensor)) and len(x.shape) >= 1


def _fast_path_ok(x, y, kwargs, conditional=False):
    """kvae feeds array data itself unless an option needs Keras' own array handling (a
    conditional VAE's ``y`` goes through kvae's pipeline with ``x``)."""
    if y is not None and y is not x and not conditional:
        return False
    if kwargs.get("validation_split") or kwargs.get("class_weight") is not None:
        return False
    if kwargs.get("steps_per_epoch") is not None:
        return False
    weights = kwargs.get("sample_weight")
    return weights is None or (isinstance(weights, np.ndarray) and weights.shape == x.shape[:1])


def steps_per_call(steps, wanted):
    """Steps per compiled call for an epoch of ``steps`` steps when ``wanted`` are asked for:
    the divisor of ``steps`` nearest to ``wanted`` (by ratio) within [wanted/2, 4*wanted], so
    that no call runs across an epoch boundary; ``steps`` itself when an epoch is short; None
    when no divisor is near (then each epoch is a fresh pass of whole calls)."""
    if steps <= 8 * wanted:
        candidates = [d for d in range(1, steps + 1) if steps % d == 0 and d >= wanted / 2]
        return min(candidates, key=lambda d: abs(math.log(d / wanted))) if candidates else steps
    near = [d for d in range(max(1, wanted // 2), 4 * wanted + 1) if steps % d == 0]
    return min(near, key=lambda d: abs(math.log(d / wanted))) if near else None


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


# Stacked batches of one fused call above this size are not worth the copy: Keras' loop.
_FUSED_MAX_BYTES = 256 * 2**20


def _fusable(model, steps, batch_size, x):
    """Whether ``fit`` on arrays runs ``steps`` steps per call in one XLA loop (see
    VAE._fused_train_function): XLA on, one device, not eager, steps > 1, and the stacked
    batches of one call small."""
    size = steps * batch_size * int(np.prod(x.shape[1:])) * 4
    return (
        steps > 1
        and bool(model.jit_compile)
        and not model.run_eagerly
        and not _replicated(model.distribute_strategy)
        and size <= _FUSED_MAX_BYTES
    )


def _multi_worker(strategy):
    """True under MultiWorkerMirroredStrategy with more than one worker."""
    in_multi_worker_mode = getattr(strategy.extended, "_in_multi_worker_mode", None)
    return callable(in_multi_worker_mode) and bool(in_multi_worker_mode())


def _replicated(strategy):
    """True under a strategy with several replicas (devices or workers)."""
    return strategy.num_replicas_in_sync > 1 or _multi_worker(strategy)


def _make_component(slot, group, spec, kwargs, build_args):
    """A layer from a registered name (plus kwargs) or a ready layer instance."""
    kwargs = dict(kwargs or {})
    if isinstance(spec, keras.layers.Layer):
        if kwargs:
            raise ConfigError(
                f"Expected no `{slot}_kwargs` with a ready {slot} layer. Received: {sorted(kwargs)}."
            )
        return spec, {
            "name": type(spec).__name__,
            "config": keras.saving.serialize_keras_object(spec),
            "kwargs": {},
            "provider": None,
        }
    if not isinstance(spec, str):
        raise ConfigError(
            f"Expected `{slot}` to be a registered name (one of {registry.names(group)}) or a "
            f"keras.layers.Layer. Received: {slot}={spec!r}"
        )
    factory = registry.get(group, spec)
    overlap = sorted(set(kwargs) & set(build_args))
    if overlap:
        raise ConfigError(
            f"Expected `{slot}_kwargs` without {overlap}: the VAE sets them. Received: {kwargs}."
        )
    build_args = _old_shape_keyword(slot, factory, build_args)
    try:
        layer = factory(**build_args, **kwargs)
    except KvaeError:
        raise
    except (TypeError, ValueError) as err:
        hint = _unknown_kwargs_hint(factory, kwargs, build_args, slot)
        raise ConfigError(
            f"Could not build {slot} {spec!r} with arguments {sorted({**build_args, **kwargs})}: "
            f"{err}.{hint} See `kvae plugins show {spec}` for its arguments."
        ) from err
    if not isinstance(layer, keras.layers.Layer):
        raise PluginError(
            f"The {slot} {spec!r} (group kvae.{group}) must build a keras.layers.Layer. "
            f"Received: {type(layer).__name__}."
        )
    dist, version = registry.provider(group, spec)
    return layer, {
        "name": spec,
        "config": spec,
        "kwargs": kwargs,
        "provider": [dist, version] if dist else None,
    }


def _old_shape_keyword(slot, factory, build_args):
    """``build_args`` for a plugin written before the rename, whose likelihood takes the shape
    of one example as ``event_shape`` (now ``data_shape``, as everywhere): renamed for it,
    with a DeprecationWarning."""
    if "data_shape" not in build_args:
        return build_args
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return build_args
    if "data_shape" in params or "event_shape" not in params:
        return build_args
    warnings.warn(
        f"The {slot} {getattr(factory, '__name__', factory)!r} takes `event_shape`; kvae now "
        "passes the shape of one example as `data_shape`. Rename the argument.",
        DeprecationWarning,
        stacklevel=3,
    )
    return {"event_shape": build_args["data_shape"]}


def _unknown_kwargs_hint(factory, kwargs, build_args, slot):
    """ " Unknown <slot>_kwargs key 'hiden' (did you mean 'hidden'?)." for the keys that are
    not named arguments of ``factory``, or "" when its signature cannot be read."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return ""
    named = [
        p.name
        for p in params
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in ("self", "cls")
        and p.name not in build_args
    ]
    unknown = [k for k in kwargs if k not in named]
    if not unknown:
        return ""
    described = []
    for key in unknown:
        close = difflib.get_close_matches(key, named, n=1)
        described.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    takes = ", ".join(named) or "none"
    return (
        f" Unknown `{slot}_kwargs` key{'s' if len(unknown) > 1 else ''}: "
        f"{', '.join(described)}; its arguments are: {takes}."
    )


def _require_component(slot, group, name, provider):
    """Before rebuilding a saved model, make sure its component can be imported."""
    from kvae.errors import ModelFileError, UnknownComponentError

    try:
        registry.get(group, name)
    except UnknownComponentError as err:
        if provider:
            dist, version = provider
            raise ModelFileError(
                f"This model needs the {slot} {name!r} (group kvae.{group}), provided by the "
                f"package {dist!r} (version {version}) when it was saved, which is not "
                f"installed. Install it (pip install {dist}=={version}) and load again."
            ) from err
        raise ModelFileError(f"This model needs the {slot} {name!r}: {err}") from err


def _num_steps(x, batch_size, steps):
    """Steps of an evaluate/predict call as Keras counts them, or None when unknown."""
    if steps is not None:
        return int(steps)
    if isinstance(x, tf.data.Dataset):
        n = int(x.cardinality())
        return n if n >= 0 else None
    if _is_array(x):
        return -(-int(x.shape[0]) // int(batch_size or 32))
    return None


class _LastStepCallbackList(keras.callbacks.CallbackList):
    """Keras' CallbackList, reporting at most step ``total - 1`` at the end of a batch."""

    def __init__(self, total, *args, **kwargs):
        self._last_step = int(total) - 1
        super().__init__(*args, **kwargs)

    def on_test_batch_end(self, batch, logs=None):
        super().on_test_batch_end(min(batch, self._last_step), logs)

    def on_predict_batch_end(self, batch, logs=None):
        super().on_predict_batch_end(min(batch, self._last_step), logs)


class _TruthfulProgbarLogger(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, except that an epoch stopped early (Ctrl-C, a NaN stop, any
    callback setting ``stop_training``) ends at the steps it ran, not at ``469/469``."""

    def _finalize_progbar(self, logs):
        stopped = getattr(self.model, "stop_training", False)
        if stopped and self.target is not None and 0 < self.seen < self.target:
            self.progbar.update(self.seen, list((logs or {}).items()), finalize=True)
            return
        super()._finalize_progbar(logs)


def _add_truthful_progbar(kwargs):
    """Put a :class:`_TruthfulProgbarLogger` into fit's callbacks where Keras would add its
    own progress bar (verbose not 0, none given, not a ready CallbackList)."""
    callbacks = kwargs.get("callbacks")
    if kwargs.get("verbose", "auto") == 0 or isinstance(callbacks, keras.callbacks.CallbackList):
        return
    callbacks = list(callbacks or [])
    if not any(isinstance(c, keras.callbacks.ProgbarLogger) for c in callbacks):
        kwargs["callbacks"] = [*callbacks, _TruthfulProgbarLogger()]
