#!/usr/bin/env python
"""float32 against bfloat16 (Keras' mixed_bfloat16) for kvae's training step, in one process:
both models are compiled first, then timed in many short alternating bursts, and the
fastest burst of each is reported. The minimum over many bursts is what the machine can do
when the process gets the cores, so it survives other work on the machine better than the
mean of a few epochs (it does not replace a quiet-machine benchmark).

    python scripts/compare_precision.py --model conv --bursts 15
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "conv"], default="conv")
    p.add_argument("--jit", choices=["on", "off", "auto"], default="auto")
    p.add_argument("--steps", type=int, default=25, help="steps per burst")
    p.add_argument("--bursts", type=int, default=15)
    args = p.parse_args()
    import keras
    import numpy as np

    import kvae

    (x, _), _ = kvae.datasets.load("mnist")
    x = np.asarray(x[: 128 * args.steps], np.float32)
    kw = (
        dict(encoder="conv", decoder="conv")
        if args.model == "conv"
        else dict(encoder_kwargs={"hidden": [512]}, decoder_kwargs={"hidden": [512]})
    )
    jit = {"on": True, "off": False, "auto": "auto"}[args.jit]
    models = {}
    for dtype in ("float32", "mixed_bfloat16"):
        keras.utils.set_random_seed(0)
        model = kvae.VAE(input_shape=(28, 28, 1), dtype=dtype, **kw)
        model.compile(jit_compile=jit, steps_per_execution=args.steps)
        model.fit(x, epochs=1, batch_size=128, verbose=0)  # compile
        models[dtype] = model
    best = {k: float("inf") for k in models}
    for _ in range(args.bursts):
        for dtype, model in models.items():
            t = time.perf_counter()
            model.fit(x, epochs=1, batch_size=128, verbose=0)
            best[dtype] = min(best[dtype], time.perf_counter() - t)
    jit_used = models["float32"].compile_choice.jit
    for dtype, t in best.items():
        print(f"{args.model} XLA={jit_used} {dtype:15s} best burst {len(x) / t:9.0f} samples/s")
    print(f"bf16 / float32: {best['float32'] / best['mixed_bfloat16']:.2f}")


if __name__ == "__main__":
    main()
