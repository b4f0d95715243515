#!/usr/bin/env python
"""Train one model shape with kvae and with the in-repo peers of that shape (scripts/peers/),
one process at a time in interleaved rounds, and report samples/s (whole run and median
epoch), the FLOPs of a step, peak memory and the test negative ELBO over seeds.

Shapes (``--model``):
    mlp    the Keras example's 784-512-2 relu MLP VAE, batch 128. Peers: the Keras 3 MLP
           example and the TFP-layers VAE (each with and without XLA), and the hand-written
           minimal step (the floor).
    conv   the keras.io conv VAE (Conv2D 32/64 stride 2, Dense 16, latent 2), batch 128.
           Peer: the keras.io conv example with and without XLA; also kvae with bf16
           (kvae_bf16, opt-in: oneDNN runs bfloat16 convolutions on AMX) and kvae with XLA
           forced on (kvae_xla, compile(jit_compile=True): what kvae's rule picks on a GPU
           or TPU; its steps run in Keras' loop, one XLA computation per step, since XLA's
           CPU compiler makes convolutions inside kvae's fused loop ~30x slower, issue 23).
    burda  Burda et al.'s 784-200-200-50 tanh MLP VAE at batch 20 and 100. Peer: the
           hand-written minimal step with and without XLA (the floor).

Protocol (scripts/peers/_protocol.py): MNIST from kvae.datasets (uint8/256), Adam 1e-3,
shuffled every epoch. samples/s = examples * (N-1) / (end of epoch N - end of epoch 1)
(whole run: pauses between epochs count); median epoch = examples / the median of epochs
2..N (a pause at one epoch start does not count). Test negative ELBO: one z per test image,
analytic KL. Peak RSS: ru_maxrss of the run's process. FLOPs: the multiply-adds (x2) of the
matmuls and convolutions of one training step (forward and backward), counted by TF's
graph profiler; GFLOP/s = FLOPs per example * samples/s.

    python scripts/benchmark.py --model conv --rounds 3 --epochs 3 --seeds 0,1,2
    python scripts/benchmark.py --model mlp --epochs 2 --max-train-examples 6400   # smoke
    python scripts/benchmark.py --model mlp --precision bf16 --peers none         # bf16
"""

import argparse
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
PEER_DIR = HERE / "peers"

MLP = dict(encoder="mlp", decoder="mlp", hidden=[512], activation="relu", latent_dim=2)
CONV = dict(encoder="conv", decoder="conv", hidden=None, activation="relu", latent_dim=2)
BURDA = dict(encoder="mlp", decoder="mlp", hidden=[200, 200], activation="tanh", latent_dim=50)
FLOOR_MLP = ["--hidden", "512", "--activation", "relu", "--latent-dim", "2"]

# model -> [(setting name, batch size, kvae shape or None, peer script, peer arguments)]
SETTINGS = {
    "mlp": [
        ("kvae", 128, MLP, None, []),
        ("keras3_mlp_jit", 128, None, "keras3_mlp_example.py", ["--jit", "true"]),
        ("keras3_mlp_nojit", 128, None, "keras3_mlp_example.py", ["--jit", "false"]),
        ("tfp_layers_jit", 128, None, "tfp_layers.py", ["--jit", "true"]),
        ("tfp_layers_nojit", 128, None, "tfp_layers.py", ["--jit", "false"]),
        ("floor_jit", 128, None, "minimal_step.py", [*FLOOR_MLP, "--jit", "true"]),
        ("floor_nojit", 128, None, "minimal_step.py", [*FLOOR_MLP, "--jit", "false"]),
    ],
    "conv": [
        ("kvae", 128, CONV, None, []),
        ("kvae_bf16", 128, CONV, None, ["--precision", "bf16"]),  # opt-in: AMX convolutions
        ("kvae_xla", 128, CONV, None, ["--kvae-jit", "on"]),  # the GPU/TPU choice, on CPU
        ("keras3_conv_jit", 128, None, "keras3_conv_example.py", ["--jit", "true"]),
        ("keras3_conv_nojit", 128, None, "keras3_conv_example.py", ["--jit", "false"]),
    ],
    "burda": [
        (f"{name}_b{b}", b, shape, script, extra)
        for b in (20, 100)
        for name, shape, script, extra in (
            ("kvae", BURDA, None, []),
            ("floor_jit", None, "minimal_step.py", ["--jit", "true"]),
            ("floor_nojit", None, "minimal_step.py", ["--jit", "false"]),
        )
    ],
}


# ----- one kvae run (a child process) -------------------------------------------------------
def step_flops(model, batch_size):
    """FLOPs of one training step's matmuls/convolutions (forward + backward), from TF's
    graph profiler on the step traced without XLA at a fixed batch shape."""
    import tensorflow as tf
    from tensorflow.python.framework import ops as tf_ops

    seed = tf.constant([0, 0])

    @tf.function
    def grads(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.compute_terms(x, seed, training=True)["loss"])
        return tape.gradient(loss, model.trainable_weights)

    graph = grads.get_concrete_function(
        tf.TensorSpec((batch_size, *model.data_shape), tf.float32)
    ).graph
    counted = {"MatMul", "BatchMatMulV2", "Conv2D", "Conv2DBackpropInput", "Conv2DBackpropFilter"}
    total = 0
    for op in graph.get_operations():
        if op.type not in counted:
            continue
        try:
            stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
        except (ValueError, LookupError):
            continue
        total += stats.value or 0
    return int(total)


def run_kvae_child(args):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(PEER_DIR))
    import _protocol
    import keras

    import kvae
    from kvae import _precision

    shape = {"mlp": MLP, "conv": CONV, "burda": BURDA}[args.model]
    keras.utils.set_random_seed(args.seed)
    x_train, x_test = _protocol.mnist(args, flat=False)
    kwargs = {}
    if shape["hidden"] is not None:
        net = {"hidden": shape["hidden"], "activation": shape["activation"]}
        kwargs = {"encoder_kwargs": net, "decoder_kwargs": net}
    model = kvae.VAE(
        encoder=shape["encoder"],
        decoder=shape["decoder"],
        latent_dim=shape["latent_dim"],
        data_shape=(28, 28, 1),
        dtype=_precision.policy(args.precision),
        **kwargs,
    )
    jit = {"on": True, "off": False, "auto": "auto"}[args.kvae_jit]
    model.compile(optimizer=keras.optimizers.Adam(args.lr), jit_compile=jit)
    clock = _protocol.Clock()
    clock.start()
    model.fit(
        x_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        verbose=0,
        callbacks=[clock.keras_callback(keras.callbacks.Callback)],
    )
    test = model.evaluate(x_test, batch_size=500, return_dict=True, verbose=0)["loss"]
    args.jit = "true" if model.compile_choice.jit else "false"
    peak = _protocol.peak_rss_mb()  # before counting FLOPs, which the peers do not do
    flops = step_flops(model, args.batch_size)
    _protocol.report(
        "kvae",
        args,
        clock,
        len(x_train),
        len(x_test),
        framework=f"kvae {kvae.__version__} / keras {keras.__version__}",
        n_params=int(model.count_params()),
        test_neg_elbo_nats=float(test),
        compile=model.compile_choice.to_dict(),
        precision=args.precision,
        steps_per_execution=int(model.steps_per_execution),
        step_flops=flops,
        peak_rss_mb=peak,
    )


# ----- the driver ---------------------------------------------------------------------------
def run(cmd, cwd, timeout):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return {"failed": f"timeout after {timeout} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"failed": f"exit code {proc.returncode}", "stderr_tail": proc.stderr[-2000:]}
    return json.loads(lines[-1])


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def summarize(results):
    rows = {}
    for name, records in results.items():
        ok = [r for r in records if "samples_per_sec" in r]
        nats = [r["test_neg_elbo_nats"] for r in ok]
        rows[name] = {
            "runs": len(ok),
            "failed": len(records) - len(ok),
            "samples_per_sec": median([r["samples_per_sec"] for r in ok]),
            "median_epoch_samples_per_sec": median([r["median_epoch_samples_per_sec"] for r in ok]),
            "samples_per_sec_all": [round(r["samples_per_sec"]) for r in ok],
            "peak_rss_mb": median([r["peak_rss_mb"] for r in ok]),
            "test_neg_elbo_nats": nats,
            "test_neg_elbo_spread": [min(nats), max(nats)] if nats else None,
            "batch_size": ok[-1]["batch_size"] if ok else None,
        }
        if name.startswith("kvae") and ok:
            rows[name]["compile"] = ok[-1].get("compile")
            rows[name]["step_flops"] = ok[-1].get("step_flops")
    return rows


def print_table(rows, out=sys.stdout):
    """One line per setting. GFLOP/s uses kvae's FLOPs per example of the same shape (the
    peers compute the same network; the keras.io conv example's last layer is a 3x3
    transposed convolution where kvae's head is 1x1, so its figure is a slight undercount)."""
    print(
        f"\n{'setting':18s} {'samples/s':>10s} {'median ep':>10s} {'ms/step':>8s} "
        f"{'GFLOP/s':>8s} {'peak MB':>8s}  test neg-ELBO (nats, per seed)",
        file=out,
    )
    for name, r in rows.items():
        suffix = name[name.rfind("_b") :] if "_b" in name else ""
        kvae_row = rows.get(f"kvae{suffix}") or {}
        flops, batch = kvae_row.get("step_flops"), r.get("batch_size")
        sps = r["samples_per_sec"]
        per_example = flops / kvae_row["batch_size"] if flops else None
        gflops = f"{per_example * sps / 1e9:8.1f}" if per_example else f"{'':8s}"
        step_ms = f"{1000 * batch / sps:8.2f}" if batch and sps == sps else f"{'':8s}"
        nats = ", ".join(f"{v:.2f}" for v in r["test_neg_elbo_nats"])
        print(
            f"{name:18s} {sps:10.0f} {r['median_epoch_samples_per_sec']:10.0f} {step_ms} "
            f"{gflops} {r['peak_rss_mb']:8.0f}  {nats}",
            file=out,
        )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=sorted(SETTINGS), default="mlp")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seeds", default="0", help="comma-separated; each round uses the next")
    p.add_argument("--peers", default="all", help="comma-separated setting names, all or none")
    p.add_argument("--kvae-jit", choices=["on", "off", "auto"], default="auto")
    p.add_argument("--precision", choices=["float32", "bf16"], default="float32", help="kvae")
    p.add_argument("--max-train-examples", type=int, default=None)
    p.add_argument("--max-test-examples", type=int, default=None)
    p.add_argument("--out", default=None, help="append every record to this JSON-lines file")
    p.add_argument("--timeout", type=int, default=1800, help="seconds per run")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=128, help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        run_kvae_child(args)
        return 0
    if args.epochs < 2:
        p.error("--epochs must be >= 2 (samples/s is measured over epochs 2..N)")
    seeds = [int(s) for s in args.seeds.split(",") if s]
    settings = SETTINGS[args.model]
    # kvae at its defaults always runs; peers and kvae variants (kvae_bf16) are --peers.
    always = [s for s in settings if s[2] is not None and not s[4]]
    if args.peers == "none":
        settings = always
    elif args.peers != "all":
        wanted = set(args.peers.split(","))
        unknown = wanted - {s[0] for s in settings}
        if unknown:
            p.error(f"unknown setting(s) {sorted(unknown)}; choose from {[s[0] for s in settings]}")
        settings = [s for s in settings if s in always or s[0] in wanted]

    common = ["--epochs", str(args.epochs), "--lr", str(args.lr)]
    for flag in ("max_train_examples", "max_test_examples"):
        if getattr(args, flag) is not None:
            common += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    results = {s[0]: [] for s in settings}
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for rnd in range(args.rounds):
        seed = seeds[rnd % len(seeds)]
        for name, batch, shape, script, extra in settings:
            run_args = [*common, "--seed", str(seed), "--batch-size", str(batch)]
            if shape is not None:
                cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child"]
                cmd += ["--model", args.model, "--kvae-jit", args.kvae_jit]
                cmd += ["--precision", args.precision, *run_args, *extra]
            else:
                cmd = [sys.executable, str(PEER_DIR / script), *run_args, *extra]
            record = run(cmd, str(PEER_DIR), args.timeout)
            record.update(setting=name, round=rnd, model=args.model)
            results[name].append(record)
            sps = record.get("samples_per_sec")
            print(
                f"round {rnd} seed {seed} {name:18s} "
                + (f"{sps:9.0f} samples/s" if sps else f"FAILED {record.get('failed')}"),
                file=sys.stderr,
                flush=True,
            )
            if "failed" in record:
                print(record.get("stderr_tail", ""), file=sys.stderr)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")
    rows = summarize(results)
    print_table(rows)
    print(
        json.dumps(
            {
                "summary": rows,
                "model": args.model,
                "rounds": args.rounds,
                "epochs": args.epochs,
                "seeds": seeds,
                "precision": args.precision,
                "max_train_examples": args.max_train_examples,
                "started": started,
                "machine": f"{platform.machine()}, {os.cpu_count()} cpus",
                "load_average": os.getloadavg(),
                "peak_rss_mb_driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
