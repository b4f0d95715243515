#!/usr/bin/env python
"""kvae against PyTorch on the same folder of 64x64 colour PNGs (issue 23): PyTorch-VAE's
vanilla VAE (the CelebA 64x64 network) trained by kvae from ``kvae.datasets.image_dataset``
and by PyTorch from a ``DataLoader`` (scripts/peers/pytorch_vae_folder.py), each side a
subprocess, interleaved in rounds; the peak RSS of each side's whole process tree (its
loader workers included) is polled from /proc by this driver.

Modes:
    train     rounds of (kvae, peer), the order alternating by round: samples/s (epochs
              2..N), median epoch, peak RSS of the process tree (sum of RSS, and of PSS,
              which counts pages the workers share with their parent once), test negative
              ELBO in nats (kvae) and test MSE of the reconstruction at z = mu (both), the
              FLOPs of one training step per example and the GFLOP/s reached.
    pipeline  decoded images/s of each side's input pipeline alone with default settings
              (kvae: ``image_dataset`` iterated; PyTorch: the DataLoader iterated), against
              each side's training rate from one training run here (ratio: should be >= 3).
    rss       kvae (and the peer) training for ``--max-steps`` steps on each of
              ``--folders`` (a 10,000- and a 40,000-image folder): streaming keeps the peak
              RSS the same whatever the folder's size.

Data: a folder of ``train/img/*.png`` and ``test/img/*.png`` written by
scripts/make_image_folder.py; kvae uses train/ + test/ as its split, ImageFolder too.
The network on both sides: five stride-2 3x3 convolutions of 32-512 filters with batch
normalisation and leaky ReLU, latent 128, the mirrored transposed-convolution decoder
(kvae's one-line config of docs/images.md; its likelihood head is a 1x1 projection where
PyTorch-VAE ends with a 3x3 convolution and tanh; kvae's Gaussian likelihood is the
MSE up to its learned scale, PyTorch-VAE's loss MSE + (batch / n_train) x KL). Adam, batch
64, the same learning rate, the same number of epochs. kvae runs with its defaults
(``compile()``: the measured jit_compile/loop rule).

    python scripts/make_image_folder.py /tmp/photos20k --count 20000
    python scripts/benchmark_images.py --mode train --folder /tmp/photos20k \\
        --torch-python /work/venv-torch/bin/python --rounds 3 --epochs 3 --seeds 0,1,2
    python scripts/benchmark_images.py --mode pipeline --folder /tmp/photos20k
    python scripts/benchmark_images.py --mode rss --folders /tmp/photos10k,/tmp/photos40k

The markdown table goes to stdout, then the JSON of everything as the last line.
"""

import argparse
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
PEER = HERE / "peers" / "pytorch_vae_folder.py"

ENCODER = {
    "filters": [32, 64, 128, 256, 512],
    "dense": 0,
    "normalization": "batch",
    "activation": "leaky_relu",
}
DECODER = {
    "filters": [256, 128, 64, 32, 32],
    "base_filters": 512,
    "normalization": "batch",
    "activation": "leaky_relu",
}


# ----- the kvae side (a child process) ------------------------------------------------------
def kvae_child(args):
    """Train (or, with --pipeline-only, iterate) from the folder as a kvae user does; print
    one JSON line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(HERE / "peers"))
    sys.path.insert(0, str(HERE))
    import _protocol
    import keras
    import numpy as np

    import kvae
    from kvae import _precision

    keras.utils.set_random_seed(args.seed)
    train, test, info = kvae.datasets.image_dataset(
        args.folder, batch_size=args.batch_size, seed=args.seed
    )
    fields = {
        "script": "kvae",
        "framework": f"kvae {kvae.__version__} / keras {keras.__version__}",
        "batch_size": args.batch_size,
        "seed": args.seed,
        "n_train": info.num_train,
        "n_test": info.num_test,
        "data_shape": list(info.data_shape),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
    }
    if args.max_steps:
        train = train.take(args.max_steps)
    if args.pipeline_only:
        count, t0 = 0, None
        for i, (x, *_) in enumerate(train):
            if i == 0:  # the first batch (the pipeline's start) is not counted
                t0 = time.perf_counter()
                continue
            count += int(x.shape[0])
        seconds = time.perf_counter() - t0
        print(json.dumps({**fields, "images": count, "seconds": seconds,
                          "images_per_sec": count / seconds}), flush=True)  # fmt: skip
        return 0

    model = kvae.VAE(
        data_shape=info.data_shape,
        encoder="conv",
        decoder="conv",
        encoder_kwargs=ENCODER,
        decoder_kwargs=DECODER,
        latent_dim=128,
        likelihood="gaussian",
        dtype=_precision.policy(args.kvae_precision),
    )
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    clock = _protocol.Clock()
    clock.start()
    model.fit(
        train,
        epochs=args.epochs,
        verbose=0,
        callbacks=[clock.keras_callback(keras.callbacks.Callback)],
    )
    n_epoch = min(info.num_train, (args.max_steps or info.num_train) * args.batch_size)
    nats = model.evaluate(test, return_dict=True, verbose=0)["loss"]
    squared, weight = 0.0, 0.0
    for x, _, w in test:  # reconstruction at z = E[q(z|x)], weight 0 for the padding
        err = np.mean((np.asarray(model(x, training=False)) - np.asarray(x)) ** 2, (1, 2, 3))
        squared += float(np.sum(err * np.asarray(w)))
        weight += float(np.sum(w))
    peak = _protocol.peak_rss_mb()  # before counting FLOPs, which the peer does not pay
    flops = None
    if not args.no_flops:
        from benchmark import step_flops

        flops = step_flops(model, args.batch_size)
    print(
        json.dumps(
            {
                **fields,
                **clock.rates(n_epoch),
                "epochs": args.epochs,
                "lr": args.lr,
                "n_params": int(model.count_params()),
                "compile": model.compile_choice.to_dict(),
                "jit_compile": bool(model.compile_choice.jit),
                "precision": args.kvae_precision,
                "steps_per_execution": int(model.steps_per_execution),
                "test_neg_elbo_nats": float(nats),
                "test_mse": squared / weight,
                "peak_rss_mb": peak,
                "step_flops": flops,
            }
        ),
        flush=True,
    )
    return 0


# ----- the driver: process-tree memory ------------------------------------------------------
def _children_map():
    kids = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def _kib(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_memory(root):
    """(sum of VmRSS, sum of Pss, number of processes) in MB of ``root`` and its descendants."""
    kids, todo, pids = _children_map(), [root], []
    while todo:
        pid = todo.pop()
        pids.append(pid)
        todo.extend(kids.get(pid, ()))
    rss = sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return rss / 1024.0, pss / 1024.0, len(pids)


class TreePeak:
    """Polls the memory of a process tree every ``interval`` s in a thread; keeps the peaks."""

    def __init__(self, pid, interval=0.2):
        self.pid, self.interval = pid, interval
        self.rss = self.pss = 0.0
        self.processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self):
        while not self._stop.is_set():
            rss, pss, n = tree_memory(self.pid)
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self.processes = max(self.processes, n)
            self._stop.wait(self.interval)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return {
            "peak_tree_rss_mb": self.rss,
            "peak_tree_pss_mb": self.pss,
            "max_processes": self.processes,
        }


def run(cmd, timeout):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = TreePeak(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        peak.stop()
        return {"failed": f"timeout after {timeout} s"}
    memory = peak.stop()
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"failed": f"exit code {proc.returncode}", "stderr_tail": err[-2000:]}
    return {**json.loads(lines[-1]), **memory}


def side_command(side, args, folder, seed, extra=()):
    common = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]
    common += ["--lr", str(args.lr), "--seed", str(seed), *extra]
    if args.max_steps:
        common += ["--max-steps", str(args.max_steps)]
    if side == "kvae":
        script = str(pathlib.Path(__file__).resolve())
        precision = ["--kvae-precision", args.kvae_precision]
        return [sys.executable, script, "--child", "--folder", folder, *precision, *common]
    cmd = [args.torch_python, str(PEER), folder, *common]
    return cmd if args.workers is None else [*cmd, "--workers", str(args.workers)]


def log(message):
    print(message, file=sys.stderr, flush=True)


# ----- the driver: modes --------------------------------------------------------------------
def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize_training(records):
    ok = [r for r in records if "samples_per_sec" in r]
    sps = median([r["samples_per_sec"] for r in ok])
    flops = next((r["step_flops"] for r in ok if r.get("step_flops")), None)
    per_example = flops / ok[0]["batch_size"] if flops else None
    row = {
        "runs": len(ok),
        "failed": len(records) - len(ok),
        "samples_per_sec": sps,
        "samples_per_sec_all": [r["samples_per_sec"] for r in ok],
        "median_epoch_samples_per_sec": median([r["median_epoch_samples_per_sec"] for r in ok]),
        "peak_tree_rss_mb": median([r["peak_tree_rss_mb"] for r in ok]),
        "peak_tree_pss_mb": median([r["peak_tree_pss_mb"] for r in ok]),
        "max_processes": max([r["max_processes"] for r in ok], default=None),
        "test_mse": [r["test_mse"] for r in ok],
        "test_neg_elbo_nats": [r["test_neg_elbo_nats"] for r in ok if "test_neg_elbo_nats" in r],
        "seeds": [r["seed"] for r in ok],
        "flops_per_example": per_example,
        "gflops_per_sec": per_example * sps / 1e9 if per_example and sps else None,
    }
    for key in ("compile", "precision", "loader", "workers", "torch_threads", "n_train", "n_test"):
        if ok and key in ok[-1]:
            row[key] = ok[-1][key]
    return row


def mode_train(args, sides):
    results = {side: [] for side in sides}
    seeds = [int(s) for s in args.seeds.split(",") if s]
    for rnd in range(args.rounds):
        seed = seeds[rnd % len(seeds)]
        order = sides if rnd % 2 == 0 else list(reversed(sides))
        for side in order:
            record = run(side_command(side, args, args.folder, seed), args.timeout)
            record.update(side=side, round=rnd)
            results[side].append(record)
            sps = record.get("samples_per_sec")
            log(f"round {rnd} seed {seed} {side:5s} " + (
                f"{sps:8.1f} samples/s, tree RSS {record['peak_tree_rss_mb']:.0f} MB"
                if sps else f"FAILED {record.get('failed')}\n{record.get('stderr_tail', '')}"
            ))  # fmt: skip
    rows = {side: summarize_training(records) for side, records in results.items()}
    if rows.get("kvae", {}).get("samples_per_sec") and rows.get("peer", {}).get("samples_per_sec"):
        rows["kvae"]["speedup_vs_peer"] = (
            rows["kvae"]["samples_per_sec"] / rows["peer"]["samples_per_sec"]
        )
    print("| side | samples/s | median epoch | GFLOP/s | peak RSS tree (PSS) MB | "
          "test MSE per seed | test nats per seed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for side, r in rows.items():
        if not r["runs"]:
            print(f"| {side} | failed | | | | | |")
            continue
        mse = ", ".join(f"{v:.4f}" for v in r["test_mse"])
        nats = ", ".join(f"{v:.0f}" for v in r["test_neg_elbo_nats"]) or "-"
        gf = f"{r['gflops_per_sec']:.1f}" if r["gflops_per_sec"] else "-"
        print(
            f"| {side} | {r['samples_per_sec']:.1f} | {r['median_epoch_samples_per_sec']:.1f} | "
            f"{gf} | {r['peak_tree_rss_mb']:.0f} ({r['peak_tree_pss_mb']:.0f}) | {mse} | {nats} |"
        )
    return {"summary": rows, "records": results}


def mode_pipeline(args, sides):
    rows, records = {}, {}
    for side in sides:
        pipe = run(side_command(side, args, args.folder, 0, ["--pipeline-only"]), args.timeout)
        trained = run(side_command(side, args, args.folder, 0, ["--no-flops"]), args.timeout)
        records[side] = {"pipeline": pipe, "train": trained}
        ips, sps = pipe.get("images_per_sec"), trained.get("samples_per_sec")
        rows[side] = {
            "pipeline_images_per_sec": ips,
            "train_samples_per_sec": sps,
            "ratio": ips / sps if ips and sps else None,
            "pipeline_peak_tree_rss_mb": pipe.get("peak_tree_rss_mb"),
        }
        log(f"{side}: pipeline {ips} images/s, training {sps} samples/s")
        for rec in (pipe, trained):
            if "failed" in rec:
                log(f"FAILED {rec['failed']}\n{rec.get('stderr_tail', '')}")
    print("| side | pipeline images/s | training samples/s | ratio (target >= 3) |")
    print("|---|---|---|---|")
    for side, r in rows.items():
        cells = [
            f"{r[k]:.1f}" if r[k] else "failed"
            for k in ("pipeline_images_per_sec", "train_samples_per_sec", "ratio")
        ]
        print(f"| {side} | " + " | ".join(cells) + " |")
    return {"summary": rows, "records": records}


def mode_rss(args, sides):
    folders = [f for f in args.folders.split(",") if f]
    rows, records = {}, {}
    for side in sides:
        for folder in folders:
            extra = ["--no-flops"]
            record = run(side_command(side, args, folder, 0, extra), args.timeout)
            records[f"{side} {folder}"] = record
            rows.setdefault(side, {})[folder] = {
                k: record.get(k)
                for k in ("n_train", "peak_tree_rss_mb", "peak_tree_pss_mb", "max_processes")
            }
            log(f"{side} {folder}: {record.get('peak_tree_rss_mb') or record}")
        peaks = [rows[side][f]["peak_tree_rss_mb"] for f in folders]
        if all(peaks):
            rows[side]["spread_mb"] = max(peaks) - min(peaks)
    print("| side | folder | training images | peak RSS tree MB | peak PSS tree MB |")
    print("|---|---|---|---|---|")
    for side, per in rows.items():
        for folder in folders:
            r = per[folder]
            rss, pss = r["peak_tree_rss_mb"], r["peak_tree_pss_mb"]
            cells = f"{rss:.0f} | {pss:.0f}" if rss else "failed | failed"
            print(f"| {side} | {folder} | {r['n_train']} | {cells} |")
        if "spread_mb" in per:
            print(f"| {side} | spread (target < 200 MB) | | {per['spread_mb']:.0f} | |")
    return {"summary": rows, "records": records}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["train", "pipeline", "rss"], default="train")
    p.add_argument("--folder", help="train and pipeline modes: the image folder")
    p.add_argument("--folders", help="rss mode: comma-separated folders (10k, 40k)")
    p.add_argument("--sides", default="kvae,peer", help="kvae, peer, or both (comma-separated)")
    p.add_argument("--torch-python", default=sys.executable, help="the peer's interpreter")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", default="0,1,2", help="comma-separated; round r uses seed r")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument(
        "--kvae-precision",
        choices=["float32", "bf16"],
        default="float32",
        help="kvae's dtype policy (bf16: opt-in, oneDNN's bfloat16 convolutions)",
    )
    p.add_argument("--workers", type=int, default=None, help="peer's DataLoader workers")
    p.add_argument("--max-steps", type=int, default=0, help="steps per epoch (0: all)")
    p.add_argument("--timeout", type=int, default=7200, help="seconds per run")
    p.add_argument("--out", default=None, help="also write the JSON to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--pipeline-only", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--no-flops", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return kvae_child(args)
    sides = [s for s in args.sides.split(",") if s]
    if not sides or set(sides) - {"kvae", "peer"}:
        p.error(f"Expected --sides of kvae and/or peer. Received: {args.sides!r}")
    if args.mode in ("train", "pipeline") and not args.folder:
        p.error(f"--mode {args.mode} needs --folder")
    if args.mode == "rss" and not args.folders:
        p.error("--mode rss needs --folders (comma-separated)")
    if args.mode == "train" and args.epochs < 2:
        p.error("--epochs must be >= 2 (samples/s is measured over epochs 2..N)")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()
    result = {"train": mode_train, "pipeline": mode_pipeline, "rss": mode_rss}[args.mode](
        args, sides
    )
    result.update(
        mode=args.mode,
        settings={k: v for k, v in vars(args).items() if k not in ("child", "seed")},
        started=started,
        machine=f"{platform.machine()}, {os.cpu_count()} cpus",
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
    )
    text = json.dumps(result)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
