"""Named training recipes: ``kvae train --recipe NAME``, inert config data.

Each recipe is a partial :class:`kvae.config.TrainConfig` (a plain dict) that reproduces a
published setting on dynamically binarised MNIST:

* ``burda-vae``: Burda et al. (2016)'s 1-layer network: encoder and decoder with two
  deterministic layers of 200 tanh units, 50 latent dimensions, Bernoulli likelihood, the
  ELBO, batch 20, Adam with their learning-rate schedule (``lr_schedule="burda"``: 3^i epochs
  at 1e-3 * 10^(-i/7) for i = 0..7, 3,280 epochs in all). Published test NLL 86.76.
* ``burda-iwae``: the same with the importance-weighted bound, k = 5 (published 85.54).
* ``vamp``: the same network with a VampPrior of 500 pseudo-inputs initialised from
  training examples (Tomczak and Welling 2018), and free bits (Kingma et al. 2016) of 0.25
  nats per latent dimension. Without them the model collapsed onto its prior in the first
  epoch (KL 0.01 nats, test NLL 196-198, the pixel-marginal model) at every setting tried:
  a KL warm-up of 1, 2 or 5 epochs, pseudo-inputs from data or at random. A VampPrior is
  made of the encoder's own posteriors, so an encoder that ignores x matches it exactly;
  this network does not use z for its first few hundred steps even at beta = 0, and by then
  the pull of the KL has won. Tomczak and Welling warm the KL up over 100 epochs, more than
  a short budget has; with free bits the KL grew (4.4, 9.6, 12.1 nats in epochs 1-3) and
  the test NLL after 3 epochs was 131 instead of 196.
* ``iaf``: the same network with an IAF posterior (2 steps of 200-200 masked networks,
  context 50; Kingma et al. 2016).
* ``hvae``: Burda et al.'s 2-layer network (``posterior``/``prior="hierarchical"``, z1 of
  100 and z2 of 50; see kvae.hierarchical), the ELBO (published 85.33), and free bits of
  0.1 nats per dimension: without them its learned p(z1|z2) let it sit near collapse (KL
  3.5 nats after 3 epochs) and 20 epochs gave 135-159 nats over three seeds; with them
  111.6-111.9, still behind ``burda-vae`` at that budget: its layers are half as wide and
  its top layer z2 stays inactive (docs/families.md has the measurements).

``--epochs N`` (or ``epochs`` in a config) runs a shortened schedule: the first N epochs of
Burda's, as their run had them (N = 20: 1 epoch at 1e-3, 3 at 7.2e-4, 9 at 5.2e-4, 7 at
3.7e-4), so a short run is the start of the published one. (Squeezing every stage into its
share of N instead left one epoch at 1e-3 and the rest at <= 1.9e-4: at N = 20 the 1-layer
VAE reached a test NLL of 115.6, no better than 3 epochs at 1e-3.) Anything else may be
overridden too.
"""

import copy

__all__ = ["RECIPES", "burda_learning_rate", "names", "recipe"]

_NET = {"hidden": [200, 200], "activation": "tanh"}
_NET2 = {"hidden": [100, 100], "activation": "tanh"}
_SPLIT = {"z1_dim": 100, "z2_dim": 50, "hidden": [50, 50]}
_BURDA = {
    "dataset": "mnist",
    "binarize": "dynamic",
    "encoder": "mlp",
    "encoder_kwargs": _NET,
    "decoder": "mlp",
    "decoder_kwargs": _NET,
    "likelihood": "bernoulli",
    "latent_dim": 50,
    "batch_size": 20,
    "learning_rate": 1e-3,
    "optimizer": "adam",
    "lr_schedule": "burda",
    "epochs": 3280,
    "eval_num_samples": 5000,
}

RECIPES = {
    "burda-vae": dict(_BURDA),
    "burda-iwae": dict(_BURDA, objective="iwae", num_samples=5),
    # Free bits: the KL gets no gradient while below 0.25 nats per latent dimension (see
    # the module docstring for why the VampPrior needs it at short budgets).
    "vamp": dict(
        _BURDA,
        prior="vamp",
        prior_kwargs={"num_components": 500, "init": "data"},
        free_bits=0.25,
    ),
    "iaf": dict(
        _BURDA,
        posterior="iaf",
        posterior_kwargs={"num_steps": 2, "hidden_units": [200, 200], "context_dim": 50},
    ),
    # Burda et al.'s 2-layer network: x -> 100-100 tanh -> z1 (100) -> 50-50 tanh -> z2 (50).
    "hvae": dict(
        _BURDA,
        encoder_kwargs=_NET2,
        decoder_kwargs=_NET2,
        latent_dim=150,
        posterior="hierarchical",
        posterior_kwargs=_SPLIT,
        prior="hierarchical",
        prior_kwargs=_SPLIT,
        free_bits=0.1,
    ),
}

# Burda et al. 2016, section 5: 3^i passes at learning rate 0.001 * 10^(-i/7), i = 0..7.
_STAGES = 8


def names():
    return sorted(RECIPES)


def recipe(name):
    """The recipe's config keys (a fresh copy)."""
    from kvae.errors import ConfigError

    if name not in RECIPES:
        raise ConfigError(f"Expected a recipe in {names()}. Received: recipe={name!r}.")
    return copy.deepcopy(RECIPES[name])


def burda_learning_rate(epoch, base=1e-3):
    """The learning rate of ``epoch`` (0-based) in Burda's schedule: stage i (i = 0..7)
    lasts 3^i epochs at ``base * 10^(-i/7)``; from epoch 3,280 on, the last stage's rate."""
    start = 0
    for i in range(_STAGES):
        start += 3**i
        if epoch < start:
            return base * 10 ** (-i / 7)
    return base * 10 ** (-(_STAGES - 1) / 7)
