#!/usr/bin/env python
"""Measure kvae's training step with and without XLA for each model shape on this machine,
and write the table that ``kvae._compile_mode`` documents its rule with.

For each shape (the MLP of the Keras example, the keras.io conv example, Burda's MLP at
batch 20 and 100) and each ``jit_compile`` setting, a model is trained on the first
``--examples`` MNIST images for ``--epochs`` epochs, in interleaved rounds; the rate is
samples/s of the median epoch after the first (which holds the compilation).

    python scripts/measure_compile_mode.py                   # prints the table
    python scripts/measure_compile_mode.py --out scripts/compile_mode_table.json

On a machine shared with other work the figures move by up to 2x between runs: compare
only settings measured in the same interleaved rounds, and say so next to the figures.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHAPES = {
    "mlp": dict(
        model=dict(
            encoder_kwargs={"hidden": [512]}, decoder_kwargs={"hidden": [512]}, latent_dim=2
        ),
        batch_size=128,
    ),
    "conv": dict(model=dict(encoder="conv", decoder="conv", latent_dim=2), batch_size=128),
    "burda-b20": dict(
        model=dict(
            encoder_kwargs={"hidden": [200, 200], "activation": "tanh"},
            decoder_kwargs={"hidden": [200, 200], "activation": "tanh"},
            latent_dim=50,
        ),
        batch_size=20,
    ),
    "burda-b100": dict(
        model=dict(
            encoder_kwargs={"hidden": [200, 200], "activation": "tanh"},
            decoder_kwargs={"hidden": [200, 200], "activation": "tanh"},
            latent_dim=50,
        ),
        batch_size=100,
    ),
}


def one_run(shape, jit, x, epochs):
    import keras

    import kvae

    spec = SHAPES[shape]
    keras.utils.set_random_seed(0)
    model = kvae.VAE(input_shape=(28, 28, 1), **spec["model"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    ends = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    start = time.perf_counter()
    model.fit(x, epochs=epochs, batch_size=spec["batch_size"], verbose=0, callbacks=[Clock()])
    times = [b - a for a, b in zip([start, *ends], ends, strict=False)]
    return len(x) / statistics.median(times[1:]), times[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"any of {list(SHAPES)}")
    p.add_argument("--examples", type=int, default=12800)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=None, help="write the table as JSON here")
    p.add_argument("--note", default="", help="conditions to record (e.g. 'quiet machine')")
    args = p.parse_args()
    import numpy as np
    import tensorflow as tf

    import kvae

    (x, _), _ = kvae.datasets.load("mnist")
    x = np.asarray(x[: args.examples], np.float32)
    shapes = [s for s in args.shapes.split(",") if s]
    rates = {(s, j): [] for s in shapes for j in (True, False)}
    first = {}
    for rnd in range(args.rounds):
        for s in shapes:
            for jit in (True, False):
                rate, t0 = one_run(s, jit, x, args.epochs)
                rates[(s, jit)].append(rate)
                first[(s, jit)] = t0
                print(
                    f"round {rnd} {s:11s} jit={jit!s:5s} {rate:9.0f} samples/s "
                    f"(first epoch {t0:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    rows = []
    for s in shapes:
        on, off = statistics.median(rates[(s, True)]), statistics.median(rates[(s, False)])
        rows.append(
            {
                "shape": s,
                "batch_size": SHAPES[s]["batch_size"],
                "xla_samples_per_sec": round(on),
                "no_xla_samples_per_sec": round(off),
                "xla_over_no_xla": round(on / off, 3),
                "first_epoch_s_xla": round(first[(s, True)], 2),
                "first_epoch_s_no_xla": round(first[(s, False)], 2),
            }
        )
        print(f"{s:11s} XLA {on:9.0f}  no XLA {off:9.0f}  ratio {on / off:.2f}")
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    table = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, devices {sorted(set(devices))}",
        "cpu_flags": sorted(
            {f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in open("/proc/cpuinfo").read()}
        )
        if os.path.exists("/proc/cpuinfo")
        else [],
        "versions": {"kvae": kvae.__version__, "tensorflow": tf.__version__},
        "protocol": {
            "examples": args.examples,
            "epochs": args.epochs,
            "rounds": args.rounds,
            "rate": "median epoch after the first, median over rounds",
        },
        "note": args.note,
        "rows": rows,
    }
    if args.out:
        tmp = args.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(table, f, indent=1)
            f.write("\n")
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
