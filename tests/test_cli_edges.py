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
