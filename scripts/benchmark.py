#!/usr/bin/env python
"""Train the Keras example's 784-512-2 MLP VAE on MNIST with kvae and with the peer scripts
in ../shared/bench/, alternating runs, and report training samples/s, their ratios, the
final test negative ELBO and peak memory.

Protocol (the same as ../shared/bench/README.md): batch 128, Adam 1e-3, 60,000 training
images (uint8/256), samples/s = (N-1) * 60000 / (end of epoch N - end of epoch 1), i.e.
epochs 2..N including whatever happens between epochs; test negative ELBO = one z sample per
test image with the analytic KL, averaged over the 10,000 test images; peak RSS = ru_maxrss.
Every run is its own process, one at a time, in interleaved rounds.

    python scripts/benchmark.py                      # 3 rounds: kvae, keras3 (jit), tfp (jit)
    python scripts/benchmark.py --rounds 5 --epochs 10 --peers keras3_jit,tfp_jit,keras3_nojit
    python scripts/benchmark.py --pythae-python ~/ptenv/bin/python   # adds pythae
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
DEFAULT_BENCH = HERE.parent.parent / "shared" / "bench"

PEERS = {
    "keras3_jit": ("keras3_example_vae.py", ["--jit", "true"]),
    "keras3_nojit": ("keras3_example_vae.py", ["--jit", "false"]),
    "tfp_jit": ("tfp_layers_vae.py", ["--jit", "true"]),
    "tfp_nojit": ("tfp_layers_vae.py", ["--jit", "false"]),
    "pythae_plain": ("pythae_vae.py", ["--trainer", "plain"]),
}


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_kvae_child(args):
    """One kvae training run in this process; prints one JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import kvae

    t_import = peak_rss_mb()
    (x_train, _), (x_test, _) = kvae.datasets.load("mnist")
    keras.utils.set_random_seed(args.seed)
    model = kvae.VAE(
        encoder="mlp",
        decoder="mlp",
        latent_dim=2,
        data_shape=(28, 28, 1),
        likelihood="bernoulli",
        encoder_kwargs={"hidden": [512]},
        decoder_kwargs={"hidden": [512]},
    )
    compile_kwargs = {}
    if args.steps_per_execution:
        compile_kwargs["steps_per_execution"] = args.steps_per_execution
    model.compile(optimizer=keras.optimizers.Adam(args.lr), **compile_kwargs)

    ends = []

    class EpochClock(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            ends.append(time.perf_counter())

    start = time.perf_counter()
    history = model.fit(
        x_train, epochs=args.epochs, batch_size=128, verbose=0, callbacks=[EpochClock()]
    )
    t0 = time.perf_counter()
    metrics = model.evaluate(x_test, batch_size=500, return_dict=True, verbose=0)
    eval_seconds = time.perf_counter() - t0
    peak_after_training = peak_rss_mb()  # before the extra metric below, which peers lack
    keras_style = keras_bce_neg_elbo(model, x_test, args.seed)
    n = len(x_train)
    record = {
        "script": "kvae",
        "framework": f"kvae {kvae.__version__} / keras {keras.__version__}",
        "steps_per_execution": int(model.steps_per_execution),
        "epochs": args.epochs,
        "batch_size": 128,
        "lr": args.lr,
        "n_train": n,
        "n_params": int(model.count_params()),
        "samples_per_sec": (len(ends) - 1) * n / (ends[-1] - ends[0]) if len(ends) > 1 else None,
        "first_epoch_seconds": ends[0] - start,
        "epoch_seconds": [ends[0] - start] + [b - a for a, b in zip(ends, ends[1:], strict=False)],
        "train_loss_per_epoch": history.history["loss"],
        "test_neg_elbo_nats": metrics["loss"],
        "test_recon_nats": metrics["reconstruction"],
        "test_kl_nats": metrics["kl"],
        "test_neg_elbo_keras_bce_nats": keras_style,
        "test_eval_seconds": eval_seconds,
        "rss_after_import_mb": t_import,
        "peak_rss_mb": peak_after_training,
        "python": platform.python_version(),
    }
    print(json.dumps(record))


def keras_bce_neg_elbo(model, x, seed):
    """The test negative ELBO as the Keras example computes it: binary cross-entropy on
    probabilities clipped to [1e-7, 1 - 1e-7] (Keras' epsilon) instead of the exact Bernoulli
    log-probability kvae reports. Clipping caps each pixel's loss at -log(1e-7) = 16.1 nats,
    so it reads lower than the exact value: compare peers' numbers with this one."""
    import numpy as np
    import tensorflow as tf

    total = []
    for start in range(0, len(x), 1000):
        xs = tf.constant(x[start : start + 1000])
        q = model.encode(xs)
        z = q.sample(seed=tf.constant([seed, start]))
        probs = tf.clip_by_value(tf.sigmoid(model.decoder_params(z)[..., 0]), 1e-7, 1 - 1e-7)
        bce = -(xs * tf.math.log(probs) + (1 - xs) * tf.math.log(1 - probs))
        recon = tf.reduce_sum(tf.reshape(bce, (len(xs), -1)), axis=1)
        total.append((recon + q.kl_divergence(model.prior_distribution())).numpy())
    return float(np.mean(np.concatenate(total)))


def run(cmd, cwd, timeout):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"failed_rc": proc.returncode, "stderr_tail": proc.stderr[-2000:]}
    return json.loads(lines[-1])


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peers", default="keras3_jit,tfp_jit", help=f"any of {sorted(PEERS)}")
    p.add_argument("--bench-dir", default=str(DEFAULT_BENCH), help="folder of the peer scripts")
    p.add_argument("--pythae-python", default=None, help="python of an env with torch + pythae")
    p.add_argument("--steps-per-execution", type=int, default=None, help="kvae only")
    p.add_argument("--out", default=None, help="append every record to this JSON-lines file")
    p.add_argument("--timeout", type=int, default=900)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return run_kvae_child(args)

    peers = [s for s in args.peers.split(",") if s]
    if args.pythae_python and "pythae_plain" not in peers:
        peers.append("pythae_plain")
    unknown = sorted(set(peers) - set(PEERS))
    if unknown:
        p.error(f"unknown peer(s) {unknown}; choose from {sorted(PEERS)}")
    bench = pathlib.Path(args.bench_dir)
    if peers and not (bench / "mnist_data.py").exists():
        p.error(f"no peer scripts in {bench}; pass --bench-dir")

    results = {name: [] for name in ["kvae", *peers]}
    common = ["--epochs", str(args.epochs), "--lr", str(args.lr), "--seed", str(args.seed)]
    for rnd in range(args.rounds):
        for name in results:
            if name == "kvae":
                cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", *common]
                if args.steps_per_execution:
                    cmd += ["--steps-per-execution", str(args.steps_per_execution)]
                cwd = str(HERE)
            else:
                script, extra = PEERS[name]
                py = args.pythae_python if name.startswith("pythae") else sys.executable
                cmd = [py, script, *common, *extra]
                cwd = str(bench)
            record = run(cmd, cwd, args.timeout)
            record.update(run=name, round=rnd)
            results[name].append(record)
            sps = record.get("samples_per_sec")
            print(
                f"round {rnd} {name:14s} "
                + (f"{sps:9.0f} samples/s" if sps else f"FAILED rc={record.get('failed_rc')}"),
                file=sys.stderr,
                flush=True,
            )
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(record) + "\n")

    summary = {}
    for name, records in results.items():
        ok = [r for r in records if "samples_per_sec" in r]
        summary[name] = {
            "runs": len(ok),
            "samples_per_sec_median": median([r["samples_per_sec"] for r in ok]),
            "samples_per_sec_all": [round(r["samples_per_sec"]) for r in ok],
            "best_epoch_samples_per_sec_median": median(
                [60000 / min(r["epoch_seconds"][1:]) for r in ok if len(r["epoch_seconds"]) > 1]
            ),
            "test_neg_elbo_nats_median": median([r["test_neg_elbo_nats"] for r in ok]),
            "test_neg_elbo_keras_bce_nats_median": median(
                [r.get("test_neg_elbo_keras_bce_nats") for r in ok]
            ),
            "peak_rss_mb_median": median([r["peak_rss_mb"] for r in ok]),
            "first_epoch_seconds_median": median([r["first_epoch_seconds"] for r in ok]),
        }
    base = summary["kvae"]["samples_per_sec_median"]
    print(
        f"\n{'setting':16s} {'samples/s':>10s} {'kvae/peer':>10s} {'neg-ELBO':>9s} {'peak MB':>8s}"
    )
    for name, s in summary.items():
        ratio = base / s["samples_per_sec_median"] if s["samples_per_sec_median"] else float("nan")
        s["kvae_speed_ratio"] = ratio
        print(
            f"{name:16s} {s['samples_per_sec_median']:10.0f} {ratio:10.2f} "
            f"{s['test_neg_elbo_nats_median']:9.2f} {s['peak_rss_mb_median']:8.0f}"
        )
    print(json.dumps({"summary": summary, "rounds": args.rounds, "epochs": args.epochs}))


if __name__ == "__main__":
    sys.exit(main())
