#!/usr/bin/env python
"""Speed of kvae's log p(x) methods on the 784-512-2 MNIST VAE (issue 8, section 5).

Measured in one run, on one machine:

* IWAE with K samples on the test images: decoder samples per second, against the bound
  of the decoder's two matrix multiplications alone (XLA, relu(z W1 + b1) W2 + b2 on batches
  of 10,000 rows; the same arithmetic without sampling, the likelihood or the reductions).
* Quadrature (default grid) over the test images.
* AIS (default settings) on ``--ais-examples`` images, with the quadrature value on the same
  images beside it.
* pythae's ``VAE.get_nll`` (PyTorch; its default 784-512-2 MLP) at the same K, in a
  subprocess, on ``--pythae-examples`` images (it loops over images in Python; its rate is
  per decoder sample, so a few images measure it).

The defaults are the issue's full sizes (10,000 images, K = 5000, 1,000 AIS images): several
minutes. For a smoke run: ``--examples 200 --num-samples 500 --ais-examples 50
--train-examples 5000 --epochs 1 --pythae-examples 4``.

The last line printed is one JSON object with every figure.
"""

import argparse
import json
import os
import subprocess
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=10000, help="test images (IWAE, quadrature)")
    p.add_argument("--num-samples", type=int, default=5000, help="K of IWAE (and pythae)")
    p.add_argument("--ais-examples", type=int, default=1000)
    p.add_argument("--pythae-examples", type=int, default=20)
    p.add_argument("--skip-pythae", action="store_true")
    p.add_argument("--train-examples", type=int, default=60000)
    p.add_argument("--epochs", type=int, default=5, help="training epochs before measuring")
    p.add_argument("--batch-size", type=int, default=100, help="IWAE examples per batch")
    p.add_argument("--pythae-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def _pythae_worker(args):
    """In its own process (torch and TensorFlow each want the cores): time get_nll."""
    import numpy as np
    import torch
    from pythae.models import VAE, VAEConfig

    torch.manual_seed(0)
    model = VAE(VAEConfig(input_dim=(784,), latent_dim=2, reconstruction_loss="bce"))
    model.eval()
    x = torch.tensor(np.load(os.environ["KVAE_BENCH_X"]))
    model.get_nll(x[:1], n_samples=min(args.num_samples, 100), batch_size=100)  # warm up
    start = time.perf_counter()
    nll = model.get_nll(x, n_samples=args.num_samples, batch_size=100)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "examples": len(x), "nll": float(nll)}))


def _matmul_bound(model, rows_total):
    """Decoder rows per second of the two matmuls alone (XLA, batches of 10,000 rows)."""
    import tensorflow as tf

    dense = model.decoder.dense_layers[0]
    w1, b1 = dense.kernel, dense.bias
    w2, b2 = model.likelihood_head.projection.kernel, model.likelihood_head.projection.bias

    @tf.function(jit_compile=True)
    def two_matmuls(z):
        return tf.reduce_sum(tf.nn.relu(z @ w1 + b1) @ w2 + b2)

    z = tf.random.normal((10000, 2))
    two_matmuls(z).numpy()
    batches = max(1, rows_total // 10000)
    start = time.perf_counter()
    for _ in range(batches):
        s = two_matmuls(z)
    s.numpy()
    return batches * 10000 / (time.perf_counter() - start)


def main():
    args = _parse()
    if args.pythae_worker:
        return _pythae_worker(args)
    import keras
    import numpy as np

    import kvae
    from kvae import evaluation

    out = {"examples": args.examples, "num_samples": args.num_samples}
    (x_train, _), (x_test, _) = kvae.datasets.load("mnist")
    x = np.asarray(x_test[: args.examples], np.float32)
    keras.utils.set_random_seed(0)
    model = kvae.VAE(latent_dim=2, seed=0)  # 784-512-2 MLPs, Bernoulli likelihood
    model.compile(optimizer="adam")
    if args.epochs:
        t = time.perf_counter()
        model.fit(x_train[: args.train_examples], epochs=args.epochs, batch_size=128, verbose=0)
        out["train_seconds"] = time.perf_counter() - t

    rows = args.examples * args.num_samples
    out["matmul_bound_samples_per_s"] = _matmul_bound(model, min(rows, 20_000_000))

    model.log_likelihood(x[: args.batch_size], num_samples=min(args.num_samples, 100))  # compile
    t = time.perf_counter()
    ll = model.log_likelihood(
        x, method="iwae", num_samples=args.num_samples, batch_size=args.batch_size, seed=0
    )
    seconds = time.perf_counter() - t
    out.update(
        iwae_seconds=seconds,
        iwae_samples_per_s=rows / seconds,
        iwae_log_likelihood=ll.mean(),
        iwae_fraction_of_bound=rows / seconds / out["matmul_bound_samples_per_s"],
    )
    print(
        f"IWAE K={args.num_samples} on {args.examples} images: {seconds:.1f} s, "
        f"{rows / seconds:,.0f} samples/s = {out['iwae_fraction_of_bound']:.0%} of the "
        f"matmul bound ({out['matmul_bound_samples_per_s']:,.0f}/s)",
        flush=True,
    )

    evaluation.quadrature_log_likelihood(model, x[:16])  # compile
    t = time.perf_counter()
    quad = evaluation.quadrature_log_likelihood(model, x)
    out.update(quadrature_seconds=time.perf_counter() - t, quadrature_log_likelihood=quad.mean())
    print(f"quadrature on {args.examples} images: {out['quadrature_seconds']:.1f} s", flush=True)

    xa = x[: args.ais_examples]
    evaluation.ais_log_likelihood(model, xa[:50])  # compile
    t = time.perf_counter()
    ais = evaluation.ais_log_likelihood(model, xa)
    out.update(
        ais_examples=len(xa),
        ais_seconds=time.perf_counter() - t,
        ais_log_likelihood=ais.mean(),
        ais_mean_stderr=float(np.sqrt(np.sum(ais.stderr**2)) / len(xa)),
        quadrature_log_likelihood_same_images=float(np.mean(quad.estimate[: len(xa)])),
    )
    out["ais_minus_quadrature"] = (
        out["ais_log_likelihood"] - out["quadrature_log_likelihood_same_images"]
    )
    print(
        f"AIS on {len(xa)} images: {out['ais_seconds']:.1f} s, {out['ais_log_likelihood']:.3f}"
        f" vs quadrature {out['quadrature_log_likelihood_same_images']:.3f}",
        flush=True,
    )

    if not args.skip_pythae:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "x.npy")
            np.save(path, x[: args.pythae_examples].reshape(-1, 784))
            env = dict(os.environ, KVAE_BENCH_X=path)
            cmd = [
                sys.executable,
                __file__,
                "--pythae-worker",
                "--num-samples",
                str(args.num_samples),
            ]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rate = r["examples"] * args.num_samples / r["seconds"]
            out.update(
                pythae_examples=r["examples"],
                pythae_seconds=r["seconds"],
                pythae_samples_per_s=rate,
                kvae_speedup_over_pythae=out["iwae_samples_per_s"] / rate,
            )
            print(
                f"pythae get_nll: {rate:,.0f} samples/s; kvae IWAE is "
                f"{out['kvae_speedup_over_pythae']:.1f}x faster",
                flush=True,
            )
        else:
            out["pythae_error"] = (proc.stderr.strip().splitlines() or ["failed"])[-1]
            print(f"pythae not measured: {out['pythae_error']}", flush=True)
    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
