#!/usr/bin/env python
"""float32 against bfloat16 (Keras' mixed_bfloat16) for kvae's training step, in one process:
one model per setting (precision x compile mode), all compiled first, then trained in
alternating rounds of two epochs; each setting's fastest epoch is reported. Alternating in
one process lets the settings share whatever else the machine is doing; the fastest epoch
is what the machine does when the process gets the cores (not a replacement for a quiet
run of scripts/benchmark.py).

    python scripts/compare_precision.py --model conv
    python scripts/compare_precision.py --model mlp --jit on,off
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "conv"], default="conv")
    p.add_argument("--jit", default="auto", help="compile modes, comma-separated: on,off,auto")
    p.add_argument("--examples", type=int, default=6400, help="training images per epoch")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    import keras
    import numpy as np

    import kvae
    from kvae._compile_mode import parse_jit
    from kvae.errors import ConfigError

    modes = args.jit.split(",")
    try:
        requested = {mode: parse_jit(mode, "--jit") for mode in modes}
    except ConfigError as err:
        p.error(str(err))

    (x, _), _ = kvae.datasets.load("mnist")
    x = np.asarray(x[: args.examples], np.float32)
    kw = (
        dict(encoder="conv", decoder="conv")
        if args.model == "conv"
        else dict(encoder_kwargs={"hidden": [512]}, decoder_kwargs={"hidden": [512]})
    )

    class EpochTimes(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self.start)

    models = {}
    for dtype in ("float32", "mixed_bfloat16"):
        for mode in modes:
            keras.utils.set_random_seed(0)
            model = kvae.VAE(data_shape=(28, 28, 1), dtype=dtype, **kw)
            model.compile(jit_compile=requested[mode])
            model.fit(x[:2560], epochs=1, batch_size=128, verbose=0)  # compile
            models[dtype, mode] = model
    best = dict.fromkeys(models, 0.0)
    for _ in range(args.rounds):
        for key, model in models.items():
            timer = EpochTimes()
            timer.times = []
            model.fit(x, epochs=2, batch_size=128, verbose=0, callbacks=[timer])
            best[key] = max(best[key], len(x) / min(timer.times))
    for (dtype, mode), rate in best.items():
        jit = models[dtype, mode].compile_choice.jit
        print(
            f"{args.model} jit={mode} (XLA={jit}) {dtype:15s} fastest epoch {rate:9,.0f} samples/s"
        )
    for mode in modes:
        ratio = best["mixed_bfloat16", mode] / best["float32", mode]
        print(f"bf16 / float32, jit={mode}: {ratio:.2f}")


if __name__ == "__main__":
    main()
