"""Where a model trains: on one device, or on several replicas (devices or workers) kept in
sync by a ``tf.distribute`` strategy. The array path, the fused loop and the VAE's steps ask
these two questions; both answer from the strategy's public properties."""

import tensorflow as tf

__all__ = ["multi_worker", "replicated"]


def multi_worker(strategy):
    """True under ``tf.distribute.MultiWorkerMirroredStrategy`` with more than one worker.

    Its replicas are this worker's devices (``strategy.extended.worker_devices``) times the
    number of workers, so more replicas than local devices means other workers take part.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)


def replicated(strategy):
    """True under a strategy with several replicas (devices or workers)."""
    return strategy.num_replicas_in_sync > 1 or multi_worker(strategy)
