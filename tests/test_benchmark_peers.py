"""The benchmark (scripts/benchmark.py) and its in-repo peers (scripts/peers/) run end to end
for a couple of epochs on a few hundred images and report what the README's table needs.
Functional only: no timing is asserted (figures belong in the README, with their machine)."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = ["--rounds", "1", "--epochs", "2", "--max-train-examples", "256"]
SMALL += ["--max-test-examples", "128"]


def _benchmark(*args):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "benchmark.py"), *SMALL, *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _check_row(row, name):
    assert row["runs"] == 1 and row["failed"] == 0, (name, row)
    assert row["samples_per_sec"] > 0 and row["median_epoch_samples_per_sec"] > 0, name
    assert row["peak_rss_mb"] > 100, name  # TensorFlow alone takes more
    (nats,) = row["test_neg_elbo_nats"]
    # Two epochs on 256 images: worse than a trained model (~100 nats), better than the
    # all-0.5 model's 784 log 2 = 543 nats plus a small KL.
    assert math.isfinite(nats) and 100 < nats < 600, (name, nats)


@pytest.mark.slow
def test_mlp_benchmark_runs_kvae_the_peers_and_the_floor():
    result = _benchmark("--model", "mlp", "--peers", "keras3_mlp_jit,tfp_layers_nojit,floor_jit")
    rows = result["summary"]
    assert set(rows) == {"kvae", "keras3_mlp_jit", "tfp_layers_nojit", "floor_jit"}
    for name, row in rows.items():
        _check_row(row, name)
    kvae = rows["kvae"]
    assert kvae["compile"]["requested"] == "auto" and kvae["compile"]["jit_compile"] is True
    # 784-512-2: 2 * 807,700 multiply-adds forward ~ 1.6 MFLOP per example, about 3x that
    # with the backward pass (the first layer's input gradient is not needed).
    per_example = kvae["step_flops"] / kvae["batch_size"]
    assert 3.5e6 < per_example < 5.0e6, per_example


@pytest.mark.slow
def test_conv_benchmark_runs_kvae_and_the_keras_io_example():
    result = _benchmark("--model", "conv", "--peers", "keras3_conv_nojit")
    rows = result["summary"]
    assert set(rows) == {"kvae", "keras3_conv_nojit"}
    for name, row in rows.items():
        _check_row(row, name)
    assert rows["kvae"]["step_flops"] > 128 * 1e7  # convolutions: tens of MFLOP per example
