"""One definition of each choice kvae offers, and the table of a VAE's component slots.

The model, the config, the command line, the registry and ``kvae.testing`` all read these
names from here. This module imports nothing (the command line reads it without TensorFlow).
"""

from types import MappingProxyType
from typing import NamedTuple

OBJECTIVES = ("elbo", "iwae")
KL_METHODS = ("auto", "analytic", "mc")
BINARIZE = (None, "static", "dynamic")
STRATEGIES = ("default", "mirrored", "multi-worker", "tpu")
ON_NAN = ("stop", "skip")
# free bits: one floor on the whole KL, one per latent dimension (Kingma et al. 2016), one per
# layer of a hierarchical model
FREE_BITS_MODES = ("total", "dimension", "group")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LR_SCHEDULES = (None, "burda")
# Estimators of log p(x) (kvae.evaluation; "auto" picks the best that applies).
LOGLIK_METHODS = ("iwae", "exact", "quadrature", "ais")
# The options of AIS and their defaults (kvae.evaluation.ais; the command line shows them).
AIS_DEFAULTS = MappingProxyType(
    {
        "num_temperatures": 100,
        "num_chains": 16,
        "num_leapfrog_steps": 5,
        "warmup_chains": 4,
        "target_accept": 0.65,
        "init_step_size": None,
        "start": "posterior",
        "batch_size": 50,
        "seed": 0,
    }
)
# A run's precision -> the Keras dtype policy its model is built under (kvae._precision).
PRECISION_POLICIES = MappingProxyType({"float32": "float32", "bf16": "mixed_bfloat16"})
PRECISIONS = tuple(PRECISION_POLICIES)

# Training steps that one compiled call runs by default. At the Keras-example size
# (784-512-2, batch 128) the step's arithmetic takes ~1.5 ms on a 2-core CPU, so the
# per-call overhead of Keras' loop dominates unless several steps share one call.
DEFAULT_STEPS_PER_EXECUTION = 32

# The folder of a run directory that holds its checkpoints.
CHECKPOINT_DIR = "checkpoints"


class Slot(NamedTuple):
    """One component slot of a VAE.

    name: the VAE argument (``encoder``; ``encoder_kwargs`` holds its extra arguments).
    group: the registry group its names come from (``kvae.registry``).
    default: the default component name.
    shape_arg: the constructor argument kvae.VAE sets itself: the shape of one example
        (``data_shape``) or the size of z (``latent_dim``).
    attribute: where the VAE keeps the built layer.
    """

    name: str
    group: str
    default: str
    shape_arg: str
    attribute: str


SLOTS = (
    Slot("encoder", "encoders", "mlp", "data_shape", "encoder"),
    Slot("decoder", "decoders", "mlp", "data_shape", "decoder"),
    Slot("posterior", "posteriors", "gaussian", "latent_dim", "posterior_head"),
    Slot("likelihood", "likelihoods", "bernoulli", "data_shape", "likelihood_head"),
    Slot("prior", "priors", "standard-normal", "latent_dim", "prior"),
)

# Registry groups: one per slot, plus the data-set catalogue.
GROUPS = (*(slot.group for slot in SLOTS), "datasets")
