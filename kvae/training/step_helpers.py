"""What a model's steps take from its trainer, as Keras' ``train_step`` takes
``compute_metrics`` from Keras' ``Trainer``: the metrics updated per example, the optimizer's
update, and under a replicated strategy each replica's pass compiled with XLA on its own.

``skip_nonfinite`` (``on_nan="skip"``; kvae.checkpointing sets it) makes a step whose loss or
gradients are not finite apply no gradient and leave the metrics alone, counted in
``skipped_steps``.

Duck-typed: the model gives ``trackers`` (name -> ``keras.metrics.Mean``),
``skip_nonfinite`` and ``skipped_steps``."""

import tensorflow as tf

from kvae import _compile_mode
from kvae.training.replicas import multi_worker, replicated

__all__ = ["StepHelpers"]


class StepHelpers:
    """Mixin for the model's ``train_step`` / ``test_step`` (see the module)."""

    _replica_jit = False  # compile() moved XLA into each replica's pass (below)

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
        if multi_worker(self.distribute_strategy):
            # Keras 3 reduces step outputs across workers with strategy.reduce(..., axis=0),
            # which needs rank >= 1 (tensorflow/tensorflow#72388).
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def _finite_gradients(self, loss, grads):
        """``(grads, ok)``: with ``skip_nonfinite``, ``ok`` says whether the loss and every
        gradient are finite, and a bad step's gradients are zeros."""
        ok = tf.constant(True)
        if self.skip_nonfinite:
            ok = tf.reduce_all(
                [tf.math.is_finite(loss)]
                + [tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None]
            )
            grads = [g if g is None else tf.where(ok, g, tf.zeros_like(g)) for g in grads]
        return grads, ok

    def _apply_gradients(self, grads, ok):
        """The optimizer's update, skipped when ``ok`` is False under ``skip_nonfinite``
        (counted in ``skipped_steps``)."""
        if self.skip_nonfinite and not replicated(self.distribute_strategy):
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

    def _compile_for_strategy(self):
        """After Keras' ``compile``: under a replicated strategy (not a TPU), XLA moves into
        each replica's pass and each call runs one step.

        Keras would XLA-compile ``strategy.run(step)`` as one cluster, which cannot reach the
        variables on the other replicas' devices (Keras' "auto" turns XLA off here for that
        reason). kvae compiles each replica's forward and backward pass instead
        (:meth:`_replica_fn`); the gradient all-reduce and the optimizer update run outside
        XLA. And Keras runs each step of a multi-step call inside a tf.cond, where
        tf.distribute cannot merge_call (the optimizer's update; see Keras'
        LossScaleOptimizer._tf_apply): one step per call. The saved compile config keeps the
        values asked for.
        """
        self._replica_fns = {}
        self._replica_jit = False
        strategy = self.distribute_strategy
        if replicated(strategy) and not isinstance(strategy, tf.distribute.TPUStrategy):
            self._replica_jit = bool(self.jit_compile)
            self.jit_compile = False
            self.steps_per_execution = 1

    def _replica_fn(self, name, fn):
        """``fn``, XLA-compiled per replica when compile() moved XLA there."""
        if not self._replica_jit:
            return fn
        if name not in self._replica_fns:
            self._replica_fns[name] = _compile_mode.function(fn, reduce_retracing=True)
        return self._replica_fns[name]
