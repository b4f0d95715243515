#!/usr/bin/env python
"""Measure kvae's training step with and without XLA for each model shape on this machine,
and write the table that ``kvae._compile_mode`` documents its rule with.

For each shape (the MLP of the Keras example, the keras.io conv example, Burda's MLP at
batch 20 and 100) and each setting, a model is trained on the first ``--examples`` MNIST
images for ``--epochs`` epochs, in interleaved rounds; the rate is samples/s of the median
epoch after the first (which holds the compilation). The settings: ``xla``
(``jit_compile=True``, ``fit`` on arrays: the loop kvae's rule picks, its fused XLA loop or
Keras' own, recorded as ``loop``), ``xla_keras_loop`` (``jit_compile=True``, ``fit`` on a
``make_dataset`` pipeline: Keras' own loop, one XLA computation per step) and ``no_xla``.
``kvae_loop_over_keras_loop`` below 1 would mean kvae's loop choice costs speed (issue 23:
the fused loop ran the conv shape at 1/18-1/30 of Keras' loop before the rule took it out).

    python scripts/measure_compile_mode.py                   # prints the table
    python scripts/measure_compile_mode.py --out scripts/compile_mode_table.json
    python scripts/measure_compile_mode.py --shapes conv --out scripts/compile_mode_table.json \
        --merge          # re-measure one shape, keep the other rows

On a machine shared with other work the figures move by up to 2x between runs: compare
only settings measured in the same interleaved rounds, and say so next to the figures.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
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


SETTINGS = {"xla": (True, False), "xla_keras_loop": (True, True), "no_xla": (False, False)}


def one_run(shape, setting, x, epochs):
    import keras

    import kvae
    from kvae.datasets import make_dataset

    jit, keras_loop = SETTINGS[setting]

    spec = SHAPES[shape]
    keras.utils.set_random_seed(0)
    model = kvae.VAE(data_shape=(28, 28, 1), **spec["model"])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit)
    ends = []

    class Clock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    batch = spec["batch_size"]
    data, extra = x, {"batch_size": batch}
    if keras_loop:  # a tf.data pipeline: Keras' own loop, whatever kvae's rule says
        data = make_dataset(x, batch, pad=True, repeat=True, seed=0)
        extra = {"steps_per_epoch": -(-len(x) // batch)}
    start = time.perf_counter()
    model.fit(data, epochs=epochs, verbose=0, callbacks=[Clock()], **extra)
    times = [b - a for a, b in zip([start, *ends], ends, strict=False)]
    return len(x) / statistics.median(times[1:]), times[0], model.compile_choice.loop


def _cpu_model():
    """``lscpu``'s model name (``/proc/cpuinfo`` where lscpu is missing), or ''."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        text = out or open("/proc/cpuinfo").read()
    except OSError:
        return ""
    for line in text.splitlines():
        if line.lower().startswith(("model name", "model name:")):
            return line.split(":", 1)[1].strip()
    return ""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"any of {list(SHAPES)}")
    p.add_argument("--examples", type=int, default=12800)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", default=None, help="write the table as JSON here")
    p.add_argument("--note", default="", help="conditions to record (e.g. 'quiet machine')")
    p.add_argument("--merge", action="store_true", help="keep --out's rows of other shapes")
    args = p.parse_args()
    import numpy as np
    import tensorflow as tf

    import kvae

    (x, _), _ = kvae.datasets.load("mnist")
    x = np.asarray(x[: args.examples], np.float32)
    shapes = [s for s in args.shapes.split(",") if s]
    rates = {(s, k): [] for s in shapes for k in SETTINGS}
    first, loops = {}, {}
    for rnd in range(args.rounds):
        for s in shapes:
            for k in SETTINGS:
                rate, t0, loop = one_run(s, k, x, args.epochs)
                rates[(s, k)].append(rate)
                first[(s, k)], loops[(s, k)] = t0, loop
                print(
                    f"round {rnd} {s:11s} {k:14s} {rate:9.0f} samples/s "
                    f"(first epoch {t0:.1f} s, fit on arrays picks the {loop} loop)",
                    file=sys.stderr,
                    flush=True,
                )
    rows = []
    for s in shapes:
        on, keras_loop, off = (statistics.median(rates[(s, k)]) for k in SETTINGS)
        rows.append(
            {
                "shape": s,
                "batch_size": SHAPES[s]["batch_size"],
                "date": time.strftime("%Y-%m-%d", time.gmtime()),
                "loop": loops[(s, "xla")],
                "xla_samples_per_sec": round(on),
                "xla_keras_loop_samples_per_sec": round(keras_loop),
                "no_xla_samples_per_sec": round(off),
                "xla_over_no_xla": round(on / off, 3),
                "kvae_loop_over_keras_loop": round(on / keras_loop, 3),
                "first_epoch_s_xla": round(first[(s, "xla")], 2),
                "first_epoch_s_no_xla": round(first[(s, "no_xla")], 2),
            }
        )
        print(
            f"{s:11s} XLA {on:9.0f} ({loops[(s, 'xla')]} loop)  XLA in Keras' loop "
            f"{keras_loop:9.0f}  no XLA {off:9.0f}  ratios {on / off:.2f}, {on / keras_loop:.2f}"
        )
    if args.merge and args.out and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
        where = f"{old.get('machine')}, {old.get('cpu_model') or old.get('cpu_flags')}"
        kept = [
            {"date": old.get("date"), "measured_on": where, **r}
            for r in old["rows"]
            if r["shape"] not in shapes
        ]
        rows = kept + rows
    devices = [d.device_type for d in tf.config.list_logical_devices()]
    table = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, devices {sorted(set(devices))}",
        "cpu_model": _cpu_model(),
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
