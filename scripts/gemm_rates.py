#!/usr/bin/env python
"""The GEMM chain of one training step of the 784-H-L MLP VAE, timed in float32 and
bfloat16, with TensorFlow's kernels (oneDNN on x86) and with XLA: what each setting's
matrix products alone allow, in GFLOP/s and as a samples/s bound.

    python scripts/gemm_rates.py                 # 784-512-2 at batch 128
    python scripts/gemm_rates.py --hidden 200,200 --latent 50 --batch-size 20

Every product of the step runs back to back in one ``tf.function``: the forward ones, the
weight gradients, and the input gradients of every layer but the first (the images need
none). Nothing else of the step (activations, loss, sampling, Adam, input pipeline) is
timed, so the bound is one no training step reaches. Each setting is timed in several
alternating rounds and its fastest round is kept. This is what shows, on a CPU with AMX,
that bfloat16 products are fast in oneDNN but not in XLA (see docs/performance.md).
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def gemm_shapes(b, d, hidden, latent):
    """(M, K, N, transpose_a, transpose_b) of every matrix product of one training step."""
    enc = [d, *hidden]
    dec = [latent, *hidden[::-1], d]
    pairs = [*zip(enc[:-1], enc[1:], strict=True), (hidden[-1], 2 * latent)]
    layers = [*pairs, *zip(dec[:-1], dec[1:], strict=True)]
    shapes = [(b, k, n, False, False) for k, n in layers]  # forward
    shapes += [(k, b, n, True, False) for k, n in layers]  # weight gradients
    shapes += [(b, n, k, False, True) for k, n in layers[1:]]  # input gradients
    return shapes


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--hidden", default="512", help="hidden widths, comma-separated")
    p.add_argument("--latent", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    import tensorflow as tf

    hidden = [int(h) for h in args.hidden.split(",")]
    shapes = gemm_shapes(args.batch_size, 784, hidden, args.latent)
    flops = sum(2 * m * k * n for m, k, n, _, _ in shapes)
    repeats = 20

    def chain(dtype, jit):
        operands = [
            (
                tf.cast(tf.random.normal([k, m] if ta else [m, k]), dtype),
                tf.cast(tf.random.normal([n, k] if tb else [k, n]), dtype),
            )
            for m, k, n, ta, tb in shapes
        ]

        @tf.function(jit_compile=jit)
        def run(operands):
            total = tf.zeros([], tf.float32)
            for i in range(repeats):
                for (a, w), (_, _, _, ta, tb) in zip(operands, shapes, strict=True):
                    # A data dependency between repeats keeps XLA from merging them.
                    y = tf.matmul(a + tf.cast(i, dtype), w, transpose_a=ta, transpose_b=tb)
                    total += tf.cast(y[0, 0], tf.float32)
            return total

        run(operands).numpy()  # compile
        return lambda: run(operands).numpy()

    settings = {
        (dtype, jit): chain(getattr(tf, dtype), jit)
        for dtype in ("float32", "bfloat16")
        for jit in (False, True)
    }
    best = dict.fromkeys(settings, float("inf"))
    for _ in range(args.rounds):
        for key, fn in settings.items():
            start = time.perf_counter()
            fn()
            best[key] = min(best[key], (time.perf_counter() - start) / repeats)
    print(
        f"784-{'-'.join(map(str, hidden))}-{args.latent} at batch {args.batch_size}: {len(shapes)} products, "
        f"{flops / 1e6:.1f} MFLOP per step"
    )
    for (dtype, jit), seconds in best.items():
        print(
            f"  {dtype:8s} {'XLA' if jit else 'oneDNN/TF':10s} {flops / seconds / 1e9:7.1f} GFLOP/s"
            f"  {seconds * 1e3:6.3f} ms/step  bound {args.batch_size / seconds:9,.0f} samples/s"
        )


if __name__ == "__main__":
    main()
