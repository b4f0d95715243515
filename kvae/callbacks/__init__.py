"""Keras callbacks for kvae models.

* :class:`TensorBoard`: scalars (the ELBO and its parts, per-dimension KL, active units,
  learning rate, beta), images (reconstructions, prior samples, a latent traversal, the 2-D
  manifold), histograms of the posterior, the embedding projector and the hparams dashboard.
* :class:`KLWarmup`: linear KL warm-up of ``model.beta``.

Both are ordinary ``keras.callbacks.Callback`` objects: pass them to ``model.fit``.
"""

from kvae.callbacks.annealing import KLWarmup
from kvae.callbacks.tensorboard import TensorBoard

__all__ = ["KLWarmup", "TensorBoard"]
