#!/usr/bin/env python
"""Profile kvae's training step with the TensorFlow profiler and print where the time goes,
by op type: the arithmetic (convolutions, matmuls and their gradients) against the rest.

    python scripts/profile_step.py --model conv              # kvae's default (auto) setting
    python scripts/profile_step.py --model conv --jit on --logdir /tmp/prof   # keep the trace
    python scripts/profile_step.py --model burda --batch-size 20   # Burda et al.'s MLP

The trace (an XSpace under --logdir) opens in TensorBoard's profile plugin; this script
reads it with TensorFlow's own converter (tool "framework_op_stats"), so nothing else is
needed. Timing figures from a machine shared with other work are indicative only.
"""

import argparse
import collections
import glob
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARITHMETIC = (
    "Conv2D",
    "Conv2DBackpropInput",
    "Conv2DBackpropFilter",
    "_FusedConv2D",
    "MatMul",
    "_FusedMatMul",
    "BatchMatMulV2",
    "_MklConv2D",
    "_MklNativeConv2D",
    "_MklNativeConv2DBackpropInput",
    "_MklNativeConv2DBackpropFilter",
    "_MklNativeFusedConv2D",
    "_MklMatMul",
    "_MklNativeFusedMatMul",
    "_MklNativeConv2DWithBias",
    "_MklNativeConv2DBackpropFilterWithBias",
    "XlaLaunch",  # with XLA the whole step is one op: see --jit on's trace instead
)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["mlp", "conv", "burda"], default="conv")
    p.add_argument("--jit", choices=["on", "off", "auto"], default="auto")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--precision", choices=["float32", "bf16"], default="float32")
    p.add_argument("--steps", type=int, default=64, help="steps profiled")
    p.add_argument("--logdir", default=None, help="keep the trace here")
    p.add_argument("--top", type=int, default=15)
    args = p.parse_args()
    import numpy as np
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as plugin

    import kvae

    (x, _), _ = kvae.datasets.load("mnist")
    x = np.asarray(x[: args.batch_size * args.steps], np.float32)
    burda = {"hidden": [200, 200], "activation": "tanh"}
    kw = {
        "conv": dict(encoder="conv", decoder="conv"),
        "mlp": dict(encoder_kwargs={"hidden": [512]}, decoder_kwargs={"hidden": [512]}),
        "burda": dict(encoder_kwargs=burda, decoder_kwargs=burda, latent_dim=50),
    }[args.model]
    from kvae import _precision

    model = kvae.VAE(data_shape=(28, 28, 1), dtype=_precision.policy(args.precision), **kw)
    model.compile(jit_compile={"on": True, "off": False, "auto": "auto"}[args.jit])
    model.fit(x, epochs=1, batch_size=args.batch_size, verbose=0)  # compile, warm up
    logdir = args.logdir or tempfile.mkdtemp(prefix="kvae-profile-")
    tf.profiler.experimental.start(logdir)
    model.fit(x, epochs=1, batch_size=args.batch_size, verbose=0)
    tf.profiler.experimental.stop()
    paths = glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb"))
    data, _ = plugin.xspace_to_tools_data(paths, "framework_op_stats", {})
    table = json.loads(data)
    table = table[0] if isinstance(table, list) else table
    cols = [c["id"] for c in table["cols"]]
    by_type = collections.Counter()
    for row in table["rows"]:
        values = dict(zip(cols, [c.get("v") for c in row["c"]], strict=False))
        if values.get("host_or_device", "Host") != "Host":
            continue
        by_type[values["type"]] += float(values.get("total_self_time") or 0.0)
    idle = by_type.pop("IDLE", 0.0)  # threads waiting: not the step's work
    total = sum(by_type.values()) or 1.0
    arith = sum(t for k, t in by_type.items() if k in ARITHMETIC)
    print(
        f"{args.model} {args.precision}, jit={model.compile_choice.jit} ({model.compile_choice.reason})"
    )
    print(
        f"op self time (all threads, idle excluded): {total / 1e3:.1f} ms over "
        f"{args.steps} steps; idle {idle / 1e3:.1f} ms"
    )
    print(f"arithmetic (conv/matmul ops): {100 * arith / total:.1f}%")
    for kind, t in by_type.most_common(args.top):
        mark = "*" if kind in ARITHMETIC else " "
        print(f" {mark} {kind:42s} {100 * t / total:5.1f}%  {t / args.steps:8.1f} us/step")
    print(f"trace: {logdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
