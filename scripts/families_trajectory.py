#!/usr/bin/env python
"""Why a family does or does not rank: its test NLL and active units along one training run.

Trains one recipe (kvae.recipes) with optional overrides and, every --every epochs, prints
a JSON line: test NLL by the importance-weighted bound (K = --k) on the first
--test-examples statically binarised test images, the epoch's training loss and KL, and
the active units of each latent block (Burda et al. 2016's criterion: a unit u is active
when Cov_x(E_q[u|x]) > 1e-2; E_q is exact for Gaussian posteriors and a 1,000-sample mean
otherwise, whose Monte Carlo variance, about 1e-3, stays below the threshold).

    # docs/families.md's diagnosis of the 2-layer model (docs/families/trajectories.jsonl)
    python scripts/families_trajectory.py burda-vae --epochs 60 --every 10
    python scripts/families_trajectory.py hvae --epochs 60 --every 10
    python scripts/families_trajectory.py burda-vae --epochs 20 --tag narrow \\
        --set '{"encoder_kwargs": {"hidden": [100, 100]}, "decoder_kwargs": {"hidden": [100, 100]}, "latent_dim": 100}'
    python scripts/families_trajectory.py hvae --epochs 20 --tag wide \\
        --set '{"encoder_kwargs": {"hidden": [200, 200]}, "decoder_kwargs": {"hidden": [200, 200]}}'
"""

import argparse
import json
import os
import sys
import tempfile
import time


def _blocks(model):
    head = model.posterior_head
    if getattr(head, "z1_dim", None) is not None:
        return [head.z1_dim, head.z2_dim]
    return [model.latent_dim]


def active_units(model, x, seed=1):
    """Active units of each latent block (Burda et al.'s criterion)."""
    import numpy as np
    import tensorflow as tf

    q = model.encode(x)
    blocks = _blocks(model)
    if len(blocks) == 1:
        mean = q.mean()
    else:
        mean = tf.reduce_mean(q.sample(1000, seed=seed), axis=0)
    var = np.asarray(mean).var(axis=0)
    counts, start = [], 0
    for size in blocks:
        counts.append(int((var[start : start + size] > 1e-2).sum()))
        start += size
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("recipe")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--train-examples", type=int, default=None)
    parser.add_argument("--test-examples", type=int, default=500)
    parser.add_argument("--k", type=int, default=1000)
    parser.add_argument("--set", default="{}", help="Config keys to override (a JSON object).")
    parser.add_argument("--tag", default=None, help="A name for this run in the output.")
    parser.add_argument("--out", default=None, help="Append the JSON lines here too.")
    args = parser.parse_args(argv)
    overrides = json.loads(args.set)
    if not isinstance(overrides, dict):
        parser.error(f"Expected --set to be a JSON object. Received: {args.set!r}.")

    import keras
    import numpy as np
    from families_table import recipe_config  # this folder is on sys.path when run

    from kvae.train import load_test_data, train

    config = recipe_config(
        args.recipe,
        epochs=args.epochs,
        seed=args.seed,
        train_examples=args.train_examples,
        test_examples=args.test_examples,
        batch_size=args.batch_size,
        **overrides,
    )
    x_test, _ = load_test_data(config)
    tag = args.tag or args.recipe
    start = time.perf_counter()

    class Trajectory(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            done = epoch + 1
            if done % args.every and done != args.epochs:
                return
            ll = self.model.log_likelihood(x_test, num_samples=args.k, seed=args.seed)
            row = {
                "tag": tag,
                "recipe": args.recipe,
                "set": overrides,
                "seed": args.seed,
                "epoch": done,
                "k": args.k,
                "test_examples": int(len(x_test)),
                "nll": round(float(-np.mean(ll)), 3),
                "nll_stderr": round(float(np.std(ll, ddof=1) / np.sqrt(len(ll))), 3),
                "train_loss": round(float(logs["loss"]), 3),
                "train_kl": round(float(logs["kl"]), 3),
                "active_units": active_units(self.model, x_test),
                "seconds": round(time.perf_counter() - start, 1),
            }
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")

    with tempfile.TemporaryDirectory() as workdir:
        train(config, os.path.join(workdir, tag), verbose=0, callbacks=[Trajectory()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
