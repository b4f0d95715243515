"""The command line on the runs the library's figures did not expect (issue 22, bad input):
a conditional run's pictures use the run's own labels (or --class), and what cannot be
drawn is refused in one line, never a traceback."""

import numpy as np
import pytest
from test_cli import TINY, _kvae, _no_traceback, _png_size


def _refused(result, *words):
    assert result.exit_code == 1, result.output
    _no_traceback(result)
    assert len(result.output.strip().splitlines()) == 1, result.output
    for word in words:
        assert word in result.output, result.output


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cond") / "run"
    args = ["--epochs", 1, "--conditional", "--latent-dim", 2, "--no-projector", "--run-dir", run]
    result = _kvae("train", *TINY, *args)  # the last --epochs counts
    assert result.exit_code == 0, result.output
    return run


def test_posterior_plot_of_a_one_dimensional_latent_is_refused_in_one_line(tmp_path):
    """It was a numpy einsum traceback."""
    run = tmp_path / "run"
    args = ["--epochs", 1, "--latent-dim", 1, "--no-projector", "--run-dir", run]
    assert _kvae("train", *TINY, *args).exit_code == 0
    result = _kvae("plot", run, "--kind", "posterior", "-o", tmp_path / "p.png")
    _refused(result, "latent_dim", "Received: latent_dim=1")
    assert not (tmp_path / "p.png").exists()


def test_posterior_plot_of_a_conditional_run_is_refused_in_one_line(conditional_run, tmp_path):
    """It was a Keras shape traceback: the quadrature takes no condition."""
    result = _kvae("plot", conditional_run, "--kind", "posterior", "-o", tmp_path / "p.png")
    _refused(result, "conditional")


def test_a_conditional_runs_pictures_use_its_labels(conditional_run, tmp_path):
    """reconstruct, interpolate, encode and the latent scatter failed with "pass y", which
    the command line cannot do: they take the test set's labels."""
    for command, extra in (
        ("reconstruct", ["-n", 4]),
        ("interpolate", ["--rows", 2, "--steps", 3]),
    ):
        out = tmp_path / f"{command}.png"
        result = _kvae(command, conditional_run, *extra, "-o", out)
        assert result.exit_code == 0, result.output
        assert _png_size(out)[0] > 0
    out = tmp_path / "latent.png"
    result = _kvae("plot", conditional_run, "--kind", "latent", "-o", out, "--max-examples", 50)
    assert result.exit_code == 0, result.output
    codes = tmp_path / "codes.npz"
    result = _kvae("encode", conditional_run, "-o", codes, "--max-examples", 20)
    assert result.exit_code == 0, result.output
    with np.load(codes) as saved:
        assert saved["mean"].shape == (20, 2) and saved["label"].shape == (20,)


def test_a_conditional_runs_manifold_takes_a_class(conditional_run, tmp_path):
    out = tmp_path / "manifold.png"
    _refused(
        _kvae("plot", conditional_run, "--kind", "manifold", "-o", out), "--class", "conditional"
    )
    _refused(_kvae("plot", conditional_run, "--kind", "manifold", "--class", 99, "-o", out), "0..9")
    result = _kvae("plot", conditional_run, "--kind", "manifold", "--class", 3, "-o", out)
    assert result.exit_code == 0, result.output
    assert _png_size(out)[0] > 0


def test_the_command_line_hides_start_up_noise_by_filter_and_shows_tensorflows_errors():
    """What `kvae` does before TensorFlow starts, in a fresh process without
    TF_CPP_MIN_LOG_LEVEL: the start-up lines and the cuInit error are gone, and a later log
    of TensorFlow's (here the warning of a failed op; an out-of-memory report is the same
    kind of line) is shown. Before, TF_CPP_MIN_LOG_LEVEL=3 hid every later error too."""
    import os
    import subprocess
    import sys

    from test_cli import _tf_log_sources

    code = (
        "from kvae.cli._quiet import quiet_tensorflow\n"
        "quiet_tensorflow()\n"
        "import tensorflow as tf\n"
        "try:\n"
        "    tf.reshape(tf.zeros(3), [2])\n"
        "except tf.errors.InvalidArgumentError:\n"
        "    print('refused')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KVAE_VERBOSE")}
    env["KVAE_LAZY_IMPORT"] = "1"  # as in the console script: TensorFlow not imported yet
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert out.returncode == 0 and out.stdout == "refused\n", out.stderr[-2000:]
    assert "cuInit" not in out.stderr and "absl::InitializeLog" not in out.stderr
    assert "Input to reshape is a tensor with 3 values" in out.stderr, out.stderr[-2000:]
    shown = {line for line in out.stderr.splitlines() if _tf_log_sources(line)}
    assert all("reshape" in line for line in shown), shown


def test_start_up_noise_filter_keeps_other_errors():
    from kvae.cli._quiet import is_start_up_noise

    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796636092.416883   30348 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1796636043.554038   29310 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild",
    ]
    kept = [
        "E0000 00:00:1796636043.554038   29310 xla_compiler.cc:10] XLA compilation failed",
        "Traceback (most recent call last):",
        "ImportError: libcudart.so.12: cannot open shared object file",
    ]
    assert all(is_start_up_noise(line) for line in noise)
    assert not any(is_start_up_noise(line) for line in kept)


def test_evaluate_shows_the_errors_a_standard_error_does_not(tmp_path):
    """The quadrature's resolution check and AIS's bias indicator are in the table, the
    JSON and, for the gaps, the run's metrics.json (issue 22 items 3 and 4)."""
    import json

    run = tmp_path / "run"
    args = ["--epochs", 1, "--latent-dim", 2, "--no-projector", "--run-dir", run]
    assert _kvae("train", *TINY, *args).exit_code == 0
    result = _kvae(
        "evaluate",
        run,
        "--method",
        "quadrature",
        "--gaps",
        "--gap-examples",
        4,
        "--max-examples",
        8,
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("grid resolution check") == 2, result.output  # log p(x), gaps
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["gap_log_likelihood_resolution_error"] < saved["gap_log_likelihood_resolution_tol"]
    ais = ["evaluate", run, "--method", "ais", "--ais-temperatures", 10, "--ais-chains", 4]
    result = _kvae(*ais, "--max-examples", 4, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert np.isfinite(metrics["log_likelihood_bias_indicator"])
    result = _kvae(*ais, "--max-examples", 4)
    assert "AIS bias indicator" in result.output and "chain noise" in result.output
