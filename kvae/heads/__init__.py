"""Distribution heads: Keras 3 layers that map features to distribution parameters.

A head is a layer (features -> a parameter tensor) plus a ``distribution(params)`` method
that builds the TensorFlow Probability distribution from those parameters. Keras 3 layers
must return tensors, so the distribution is built where the loss needs it; this is kvae's
Keras 3 answer to ``tfp.layers`` (which needs Keras 2). Heads compute in float32 even under
a mixed-precision policy, so distribution parameters are always float32.
"""

from kvae.heads.likelihoods import (
    Bernoulli,
    ContinuousBernoulli,
    DiscretizedLogistic,
    Gaussian,
    LikelihoodHead,
)
from kvae.heads.posteriors import DiagonalGaussian, FullCovarianceGaussian, PosteriorHead

__all__ = [
    "Bernoulli",
    "ContinuousBernoulli",
    "DiagonalGaussian",
    "DiscretizedLogistic",
    "FullCovarianceGaussian",
    "Gaussian",
    "LikelihoodHead",
    "PosteriorHead",
]
