"""The kvae command line: every command through click's CliRunner, bad input, the fast
--help, and one end-to-end train -> evaluate -> sample -> plot in subprocesses."""

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from kvae.cli import main

COMMANDS = [
    "train",
    "evaluate",
    "sample",
    "reconstruct",
    "interpolate",
    "encode",
    "plot",
    "impute",
    "score",
]
TINY = [
    "--dataset",
    "digits",
    "--max-train-examples",
    "256",
    "--max-test-examples",
    "100",
    "--epochs",
    "2",
    "--batch-size",
    "64",
    "--no-jit",
    "--progress",
    "none",
]


def _kvae(*args):
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="kvae")


def _png_size(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size[1], image.size[0]


def _no_traceback(result):
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    result = _kvae("train", *TINY, "--latent-dim", "2", "--run-dir", run)
    assert result.exit_code == 0, result.output
    assert f"Run directory: {run}" in result.stdout
    assert f"tensorboard --logdir {run}" in result.stdout
    return run


# ----- help and version -------------------------------------------------------------------------
def test_version():
    from kvae import __version__

    result = _kvae("--version")
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize("command", [[], *([c] for c in COMMANDS)])
def test_help(command):
    result = _kvae(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage: kvae" in result.output


def test_plugins_group_is_added_when_present():
    import importlib.util

    listed = "plugins" in _kvae("--help").output
    assert listed == (importlib.util.find_spec("kvae.cli.plugins") is not None)


def test_train_help_lists_every_config_option():
    text = _kvae("train", "--help").output
    for option in (
        "--config",
        "--dataset",
        "--encoder",
        "--decoder",
        "--posterior",
        "--likelihood",
    ):
        assert option in text
    for option in ("--prior", "--latent-dim", "--beta", "--kl-warmup-epochs", "--objective"):
        assert option in text
    for option in ("--num-samples", "--epochs", "--batch-size", "--learning-rate", "--seed"):
        assert option in text
    for option in (
        "--jit [on|off|auto]",
        "--no-jit",
        "--run-dir",
        "--resume",
        "--strategy",
        "--binarize",
    ):
        assert option in text


@pytest.mark.slow  # starts a process (a TensorBoard server, or the kvae script)
def test_help_is_fast_and_imports_no_tensorflow():
    """`kvae --help` through the installed console script, with -X importtime."""
    exe = os.path.join(os.path.dirname(sys.executable), "kvae")
    if not os.path.exists(exe):
        pytest.skip("the kvae console script is not installed (pip install -e .)")
    for args in (["--help"], ["--version"], *([c, "--help"] for c in COMMANDS)):
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-X", "importtime", exe, *args],
            capture_output=True,
            text=True,
            check=True,
        )
        elapsed = time.perf_counter() - start
        assert "Usage: kvae" in out.stdout or "version" in out.stdout
        imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines()}
        assert "tensorflow" not in imported and "keras" not in imported, args
        assert elapsed < 2.0, (args, elapsed)


# ----- train and the run directory ------------------------------------------------------------------
def test_run_directory_layout(run_dir):
    for name in ("run.json", "config.json", "model.keras", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints").is_dir() and os.listdir(run_dir / "checkpoints")
    # every file of a finished run is listed in `kvae train --help`
    listing = _kvae("train", "--help").stdout
    for name in os.listdir(run_dir):
        assert f"{name}/" in listing if (run_dir / name).is_dir() else name in listing, name
    assert "backup/" in listing and "run.json" in listing and "history.csv" in listing
    assert os.listdir(run_dir / "logs" / "train")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["dataset"] == "digits" and config["epochs"] == 2 and config["jit"] is False
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_completed"] == 2
    assert not [n for n in os.listdir(run_dir) if n.startswith(".")]  # no temporary files


def test_hparams_table_has_model_settings_not_operational_flags(run_dir):
    import glob

    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    keys = None
    for path in glob.glob(str(run_dir / "logs" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    keys = set(data.session_start_info.hparams)
    assert keys is not None, "no hparams session"
    assert {"latent_dim", "beta", "learning_rate", "likelihood", "encoder"} <= keys
    for flag in ("image_every", "checkpoint_every", "projector", "resume", "on_nan", "jit"):
        assert flag not in keys, flag
    config = json.loads((run_dir / "config.json").read_text())
    assert "image_every" in config and "jit" in config  # config.json still has them all


def test_metrics_json_matches_model_evaluate(run_dir):
    from kvae.train import load_run, load_test_data

    metrics = json.loads((run_dir / "metrics.json").read_text())
    config, model = load_run(run_dir)
    x, _ = load_test_data(config)
    assert metrics["num_examples"] == len(x) == 100
    again = model.evaluate(x, batch_size=config.batch_size, return_dict=True, verbose=0)
    # The saved model carries its sampling state, so the same draws are made again.
    for key in ("loss", "elbo", "reconstruction", "kl"):
        np.testing.assert_allclose(metrics[key], again[key], rtol=1e-5, err_msg=key)
    assert metrics["active_units"] <= metrics["latent_dim"] == 2
    assert len(metrics["kl_per_dim"]) == 2


def test_evaluate_json(run_dir):
    result = _kvae("evaluate", run_dir, "--num-samples", 20, "--json")
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["log_likelihood_num_samples"] == 20 and m["num_examples"] == 100
    for key in ("elbo", "reconstruction", "kl", "log_likelihood", "active_units", "kl_per_dim"):
        assert key in m
    # how long each estimate took, in seconds (the same keys in metrics.json from training)
    assert set(m["seconds"]) == {"elbo", "log_likelihood", "latent"}
    assert all(0 <= v < 600 for v in m["seconds"].values())
    saved = json.loads((run_dir / "metrics.json").read_text())  # eval_num_samples=0: no log p(x)
    assert "log_likelihood" not in saved and set(saved["seconds"]) == {"elbo", "latent"}
    assert all(0 <= v < 600 for v in saved["seconds"].values())


def test_evaluate_table(run_dir):
    result = _kvae("evaluate", run_dir, "-k", 5, "--max-examples", 30)
    assert result.exit_code == 0, result.output
    for text in (
        "ELBO",
        "reconstruction",
        "log p(x) (IWAE K=5)",
        "active units",
        "30 test examples",
        "time                 ELBO ",
    ):
        assert text in result.stdout
    assert "━" not in result.stdout  # no progress bar when the output is not a terminal


def test_evaluate_gaps_method_and_records(run_dir):
    result = _kvae(
        "evaluate",
        run_dir,
        "--method",
        "quadrature",
        "--gaps",
        "--gap-examples",
        6,
        "--max-examples",
        12,
        "--json",
    )
    assert result.exit_code == 0, result.output
    m = json.loads(result.stdout)
    assert m["log_likelihood_method"] == "quadrature" and m["gap_method"] == "quadrature"
    assert m["gap_num_examples"] == 6
    # The gaps reuse evaluate's quadrature of the same first 6 examples, not a second run.
    assert m["gap_log_likelihood_given"] is True
    assert m["gap_q_star_over"].startswith("the whole family (the head's outputs are all")
    assert m["seconds"]["gaps"] > 0  # the time row counts the gaps like every estimate
    # The identity: inference = approximation + amortisation (per example, so in the means).
    total = m["gap_approximation"] + m["gap_amortisation"]
    assert m["gap_inference"] == pytest.approx(total, abs=1e-9)
    assert m["gap_inference"] > 0 and m["gap_amortisation"] >= -3 * m["gap_amortisation_stderr"]
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["gap_inference"] == m["gap_inference"] and "elbo" in saved  # merged
    # ... and into TensorBoard's top-level run, where the hparams dashboard reads metrics.
    import glob

    import tensorflow as tf

    tags = {}
    for path in glob.glob(str(run_dir / "logs" / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("test/") and value.tag != "test/run":  # run: text
                    tags[value.tag] = float(tf.make_ndarray(value.tensor))
    assert tags["test/gap_inference"] == pytest.approx(m["gap_inference"], rel=1e-6)
    assert "test/gap_amortisation_stderr" in tags
    table = _kvae("evaluate", run_dir, "--method", "auto", "--max-examples", 5)
    assert table.exit_code == 0, table.output
    assert "log p(x) (quadrature)" in table.stdout


def test_plot_posterior(run_dir, tmp_path):
    out = tmp_path / "posterior.png"
    result = _kvae("plot", run_dir, "--kind", "posterior", "-n", 2, "-o", out)
    assert result.exit_code == 0, result.output
    h, w = _png_size(out)
    assert h > w / 2 and f"Wrote {out}" in result.stdout


def test_evaluate_refuses_a_method_that_does_not_apply(run_dir):
    result = _kvae("evaluate", run_dir, "--method", "exact")
    assert result.exit_code != 0
    _no_traceback(result)
    assert "['iwae', 'quadrature', 'ais']" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_pictures(run_dir, tmp_path):
    # digits are 8x8: default scale 6, 1-pixel separators scaled too
    out = tmp_path / "s.png"
    assert _kvae("sample", run_dir, "-n", 16, "-o", out).exit_code == 0
    assert _png_size(out) == (6 * (4 * 9 + 1), 6 * (4 * 9 + 1))
    out = tmp_path / "r.png"
    result = _kvae("reconstruct", run_dir, "-n", 8, "-o", out, "--scale", 2)
    assert result.exit_code == 0, result.output
    height, width = _png_size(out)  # a margin on the left labels the rows
    assert height == 2 * (2 * 9 + 1) and width > 2 * (8 * 9 + 1) + 40
    with Image.open(out) as image:
        margin = np.asarray(image)[:, : width - 2 * (8 * 9 + 1)]
    assert (margin < 128).sum() > 20  # the labels' text
    out = tmp_path / "i.png"
    assert (
        _kvae("interpolate", run_dir, "--rows", 2, "--steps", 5, "-o", out, "--scale", 1).exit_code
        == 0
    )
    assert _png_size(out) == (2 * 9 + 1, 7 * 9 + 1)
    for kind in ("manifold", "latent"):
        out = tmp_path / f"{kind}.png"
        result = _kvae("plot", run_dir, "--kind", kind, "-o", out, "--grid", 5)
        assert result.exit_code == 0, result.output
        assert _png_size(out) == (800, 800)
        assert f"Wrote {out}" in result.stdout
    assert sorted(os.listdir(tmp_path)) == ["i.png", "latent.png", "manifold.png", "r.png", "s.png"]


def test_plot_default_output_is_shown_and_reported(run_dir, tmp_path, monkeypatch):
    assert "[default: (KIND.png in the current directory)]" in " ".join(
        _kvae("plot", "--help").stdout.split()
    )
    monkeypatch.chdir(tmp_path)
    result = _kvae("plot", run_dir, "--kind", "latent")
    assert result.exit_code == 0, result.output
    assert f"Wrote {tmp_path / 'latent.png'} (800 x 800 pixels)" in result.stdout
    assert os.listdir(tmp_path) == ["latent.png"]


def test_reconstruct_help_names_the_rows():
    text = " ".join(_kvae("reconstruct", "--help").stdout.split())
    assert '"original"' in text and '"reconstruction"' in text


def test_encode(run_dir, tmp_path):
    out = tmp_path / "codes.npz"
    result = _kvae("encode", run_dir, "-o", out)
    assert result.exit_code == 0, result.output
    with np.load(out) as codes:
        assert codes["mean"].shape == codes["scale"].shape == (100, 2)
        assert codes["label"].shape == (100,) and np.all(codes["scale"] > 0)


# ----- config files and overrides -------------------------------------------------------------
def test_config_file_with_command_line_override(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "dataset: digits\nlatent_dim: 3\nepochs: 5\nimage_every: 0\nprojector: false\n"
    )
    run = tmp_path / "run"
    args = [
        "--max-train-examples",
        128,
        "--max-test-examples",
        50,
        "--no-jit",
        "--progress",
        "none",
    ]
    result = _kvae("train", "--config", config, "--epochs", 1, *args, "--run-dir", run)
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["latent_dim"] == 3 and saved["epochs"] == 1 and saved["image_every"] == 0
    # manifold of a 3-D latent space: refused without --method, drawn with --method pca
    result = _kvae("plot", run, "--kind", "manifold", "-o", tmp_path / "m.png")
    assert (
        result.exit_code == 1
        and "latent_dim=2" in result.output
        and "--method pca" in result.output
    )
    _no_traceback(result)
    assert not (tmp_path / "m.png").exists()
    result = _kvae(
        "plot", run, "--kind", "manifold", "--method", "pca", "-o", tmp_path / "m.png", "--grid", 4
    )
    assert result.exit_code == 0, result.output
    assert _png_size(tmp_path / "m.png") == (800, 800)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("latnt_dim: 2\n", ["Unknown config key 'latnt_dim'", "Did you mean 'latent_dim'"]),
        ("latent_dim: two\n", ["`latent_dim`", "an integer >= 1", "Received: latent_dim='two'"]),
        ("binarize: always\n", ["`binarize`", "'static', 'dynamic'"]),
    ],
)
def test_bad_config_files(tmp_path, text, expected):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = _kvae("train", "--config", config, "--run-dir", tmp_path / "run")
    assert result.exit_code == 1
    for part in expected:
        assert part in result.output
    _no_traceback(result)
    assert not (tmp_path / "run").exists()


def test_unknown_component_is_named_before_data_is_loaded(tmp_path):
    result = _kvae("train", "--encoder", "resnett", "--run-dir", tmp_path / "run")
    assert result.exit_code == 1 and "'resnett'" in result.output and "mlp" in result.output
    _no_traceback(result)


def test_unknown_likelihood_wording(tmp_path):
    result = _kvae("train", "--likelihood", "gausian", "--run-dir", tmp_path / "run")
    assert result.exit_code == 1
    assert "Error: Unknown likelihood 'gausian'. Did you mean 'gaussian'?" in result.output
    assert "likelihoods name" not in result.output
    assert "register" not in result.output  # no advice to register the misspelt name
    result = _kvae("train", "--likelihood", "zzzz", "--run-dir", tmp_path / "run")
    assert result.exit_code == 1 and "Unknown likelihood 'zzzz'." in result.output
    assert "Did you mean" not in result.output
    assert "register('likelihoods', 'my-name')" in result.output and "'zzzz')" not in result.output
    _no_traceback(result)


def test_unknown_kwargs_key_suggests_the_nearest_argument(tmp_path):
    result = _kvae(
        "train", *TINY, "--encoder-kwargs", '{"hiden": [8]}', "--run-dir", tmp_path / "run"
    )
    assert result.exit_code == 1
    assert "Unknown `encoder_kwargs` key: 'hiden' (did you mean 'hidden'?)" in result.output
    assert "its arguments are: hidden, activation" in result.output
    assert len(result.output.strip().splitlines()[-1]) > 0 and "Error: " in result.output
    _no_traceback(result)


def test_plugins_show_gives_the_command_line_form():
    result = _kvae("plugins", "show", "gaussian", "--group", "likelihoods")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "kvae.VAE(likelihood='gaussian', likelihood_kwargs={...})" in text
    line = next(ln for ln in text.splitlines() if "kvae train --likelihood gaussian" in ln)
    example = json.loads(line.split("--likelihood-kwargs ")[1].strip("'"))
    assert example == {"scale": "fixed"}  # a real argument at its default, valid JSON


def test_existing_run_dir_is_refused(run_dir):
    result = _kvae("train", *TINY, "--run-dir", run_dir)
    assert result.exit_code == 1 and "already holds files" in result.output
    _no_traceback(result)


# ----- bad input on run directories -------------------------------------------------------------
def test_missing_and_foreign_run_dirs(tmp_path):
    result = _kvae("evaluate", tmp_path / "nope")
    assert result.exit_code == 1 and "does not exist" in result.output
    _no_traceback(result)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.keras").write_bytes(b"not a model")
    for command in ("evaluate", "sample", "encode"):
        result = (
            _kvae(command, foreign, "-o", tmp_path / "x.png")
            if command == "sample"
            else _kvae(command, foreign)
        )
        assert result.exit_code == 1 and "not a kvae run" in result.output, result.output
        _no_traceback(result)


def test_unfinished_run_dir(run_dir, tmp_path):
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    os.remove(partial / "model.keras")
    result = _kvae("sample", partial, "-o", tmp_path / "s.png")
    assert (
        result.exit_code == 1 and "did not finish" in result.output and "--resume" in result.output
    )
    assert not (tmp_path / "s.png").exists()


def test_sample_count_below_one(run_dir, tmp_path):
    result = _kvae("sample", run_dir, "-n", 0, "-o", tmp_path / "s.png")
    assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output
    result = _kvae("evaluate", run_dir, "--num-samples", 0)
    assert result.exit_code == 2
    assert os.listdir(tmp_path) == []


def test_unwritable_output_paths(run_dir, tmp_path):
    cases = [
        (tmp_path / "missing" / "s.png", 1, "does not exist"),
        (tmp_path / "s.jpg", 1, "end in .png"),
        (tmp_path, 2, "is a directory"),  # click's own check of -o
    ]
    for path, code, message in cases:
        result = _kvae("sample", run_dir, "-o", path)
        assert result.exit_code == code and message in result.output, result.output
        _no_traceback(result)
    result = _kvae("encode", run_dir, "-o", tmp_path / "codes.txt")
    assert result.exit_code == 1 and "end in .npz" in result.output
    assert os.listdir(tmp_path) == []


def test_plot_needs_a_kind(run_dir):
    result = _kvae("plot", run_dir)
    assert result.exit_code == 2 and "--kind" in result.output


# ----- end to end, in subprocesses, as a user runs it ------------------------------------------
@pytest.mark.slow  # four processes that each import TensorFlow: 15-45 s on 2 cores
def test_end_to_end_subprocess(tmp_path):
    """The installed script as a user runs it (no TF_CPP_MIN_LOG_LEVEL set): every command
    works, and none shows TensorFlow's start-up logs (see the next tests for -v)."""
    exe = os.path.join(os.path.dirname(sys.executable), "kvae")
    kvae = [exe] if os.path.exists(exe) else [sys.executable, "-m", "kvae"]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KVAE_VERBOSE")}

    def run(*args):
        out = subprocess.run(
            [*kvae, *map(str, args)],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            check=False,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert _tf_log_sources(out.stderr) == set(), out.stderr[-3000:]
        return out.stdout

    stdout = run("train", *TINY, "--epochs", 1, "--run-dir", "run")
    assert "Run directory: run" in stdout and "tensorboard --logdir run" in stdout
    metrics = json.loads(run("evaluate", "run", "--num-samples", 10, "--json"))  # JSON only
    assert metrics["num_examples"] == 100  # TINY's --max-test-examples
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # `kvae evaluate` reloads the model with its sampling state: the same draws, same ELBO
    np.testing.assert_allclose(metrics["elbo"], saved["elbo"], rtol=1e-5)
    run("sample", "run", "-n", 9, "-o", "samples.png")
    assert _png_size(tmp_path / "samples.png") == (6 * (3 * 9 + 1), 6 * (3 * 9 + 1))
    run("plot", "run", "--kind", "latent", "-o", "latent.png")
    assert _png_size(tmp_path / "latent.png") == (800, 800)


# TensorFlow's C++ log lines ("I0000 00:00:1795930010.880493 8192 port.cc:153] ...") and the
# absl line printed before them; the timestamps and thread ids differ from run to run.
_TF_LOG = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ ([\w.]+:\d+)\]|WARNING: All log)")


def _tf_log_sources(stderr):
    """The set of 'file.cc:line' (or 'absl') of TensorFlow's C++ log lines in ``stderr``."""
    found = set()
    for line in stderr.splitlines():
        match = _TF_LOG.match(line)
        if match:
            found.add(match.group(1) or "absl")
    return found


def test_quiet_import_hides_fd2_but_replays_it_when_the_import_fails(capfd):
    from kvae.cli._quiet import _fd2_captured

    with _fd2_captured():
        os.write(2, b"C++ start-up note\n")
    assert "C++ start-up note" not in capfd.readouterr().err
    with pytest.raises(ImportError), _fd2_captured():
        os.write(2, b"why the import failed\n")
        raise ImportError("libfoo.so not found")
    assert "why the import failed" in capfd.readouterr().err
    os.write(2, b"after\n")  # file descriptor 2 is the real stderr again
    assert capfd.readouterr().err == "after\n"


@pytest.mark.slow  # three processes that each import TensorFlow: 15-45 s on 2 cores
def test_start_up_logs_are_hidden_unless_verbose(run_dir, tmp_path):
    """Through the installed script as a user runs it (no TF_CPP_MIN_LOG_LEVEL set)."""
    import pty

    exe = os.path.join(os.path.dirname(sys.executable), "kvae")
    kvae = [exe] if os.path.exists(exe) else [sys.executable, "-m", "kvae"]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "KVAE_VERBOSE")}

    def run(args, **kwargs):
        return subprocess.run(
            [*map(str, args)], text=True, cwd=tmp_path, env=env, check=False, **kwargs
        )

    # What TensorFlow itself prints on this machine, with kvae imported first: `import kvae`
    # must not hide it (nor set TF_CPP_MIN_LOG_LEVEL behind a Python user's back).
    code = "import os, kvae, tensorflow as tf; tf.zeros(1); print(os.environ.get('TF_CPP_MIN_LOG_LEVEL'))"
    out = run([sys.executable, "-c", code], capture_output=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "None"
    baseline = _tf_log_sources(out.stderr)

    # Without a terminal, each command's own output only: test_end_to_end_subprocess.
    args = ["evaluate", run_dir, "-k", 3, "--max-examples", 20]

    # On a terminal: progress bars with the time left, still no TensorFlow logs on stderr.
    primary, secondary = pty.openpty()
    try:
        proc = run([*kvae, *args], stdout=secondary, stderr=subprocess.PIPE)
        os.close(secondary)
        chunks = []
        with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
            while chunk := os.read(primary, 65536):
                chunks.append(chunk)
    finally:
        os.close(primary)
    screen = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert _tf_log_sources(proc.stderr) == set(), proc.stderr[-2000:]
    assert "log p(x): importance-weighted bound, K=3" in screen
    assert "1/1" in screen and "━" in screen  # Keras' bar: 20 examples, batch 64: one step
    assert "time                 ELBO" in screen

    # -v (or KVAE_VERBOSE=1) shows TensorFlow's logs again: the same ones as a plain import.
    if not baseline:
        pytest.skip("TensorFlow prints no start-up logs on this machine: nothing to show")
    out = run([*kvae, "-v", *args, "--json"], capture_output=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert baseline <= _tf_log_sources(out.stderr), out.stderr[-2000:]
    assert json.loads(out.stdout)["num_examples"] == 20  # logs go to stderr only


# ----- the Python API behind `kvae train` ------------------------------------------------------
def test_train_from_python_with_arrays(tmp_path):
    from kvae.config import TrainConfig
    from kvae.train import load_data, load_run, train

    rng = np.random.default_rng(0)
    x, xt = rng.random((120, 4, 4, 1), np.float32), rng.random((30, 4, 4, 1), np.float32)
    arrays = ((x, None), (xt, None))
    config = TrainConfig(
        dataset="synthetic",
        encoder_kwargs={"hidden": [8]},
        decoder_kwargs={"hidden": [8]},
        epochs=2,
        batch_size=32,
        jit=False,
        binarize="dynamic",
        validation=0.25,
        kl_warmup_epochs=1,
        image_every=0,
        projector=False,
        eval_num_samples=5,
    )
    data = load_data(config, arrays)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (90, 30, 30)
    assert set(np.unique(data.x_test)) <= {0.0, 1.0}  # binarised once, with the seed
    np.testing.assert_array_equal(data.x_test, load_data(config, arrays).x_test)

    result = train(config, tmp_path / "run", verbose=0, data=arrays)
    assert result.run_dir == str(tmp_path / "run") and result.config == config
    assert len(result.history["val_elbo"]) == 2
    assert result.metrics["log_likelihood_num_samples"] == 5
    assert float(result.model.beta.numpy()) == 1.0  # warm-up over, target restored
    assert "Open TensorBoard:  tensorboard --logdir" in result.summary()
    saved, model = load_run(result.run_dir)
    assert saved == config and model.latent_dim == 2


def test_validation_fraction_must_leave_examples():
    from kvae.config import TrainConfig
    from kvae.errors import ConfigError
    from kvae.train import load_data

    x = np.zeros((3, 2, 2, 1), np.float32)
    with pytest.raises(ConfigError, match="hold out between 1 and 2"):
        load_data(TrainConfig(validation=0.1), ((x, None), (x, None)))


def test_resume_needs_an_existing_run(tmp_path):
    result = _kvae("train", "--resume", tmp_path / "nope")
    assert result.exit_code == 1 and "does not exist" in result.output
    _no_traceback(result)
    result = _kvae("train", "--resume", tmp_path, "--config", tmp_path / "c.yaml")
    assert result.exit_code == 2


def test_failed_start_leaves_no_run_dir(tmp_path, monkeypatch):
    run = tmp_path / "run"
    result = _kvae("train", "--dataset", "no-such-data", "--run-dir", run)
    assert result.exit_code == 1 and "no-such-data" in result.output and "digits" in result.output
    assert "writing the run to" not in result.output  # the config is checked before that
    monkeypatch.chdir(tmp_path)
    result = _kvae("train", "--dataset", "nope")  # the default runs/<time>-<name>
    assert result.exit_code == 1 and "writing the run to" not in result.output
    assert not (tmp_path / "runs").exists()
    result = _kvae("train", "--dataset", "digits", "--free-bits", "1", "--objective", "iwae")
    assert result.exit_code == 1 and "free_bits=0 with objective='iwae'" in result.output
    assert "writing the run to" not in result.output and not (tmp_path / "runs").exists()
    result = _kvae(
        "train", "--dataset", "digits", "--encoder-kwargs", '{"hidden": [0]}', "--run-dir", run
    )
    assert result.exit_code == 1 and "hidden" in result.output, result.output
    _no_traceback(result)
    assert not run.exists()


def test_every_advertised_module_is_reachable_from_import_kvae():
    """README's Python API: kvae.callbacks, kvae.train, kvae.evaluation, kvae.plots (and
    every other name of __all__) are attributes of the package after `import kvae`."""
    code = (
        "import json, kvae\n"
        "ok = {n: getattr(kvae, n) is not None for n in kvae.__all__}\n"
        "api = [kvae.callbacks.TensorBoard, kvae.callbacks.KLWarmup, kvae.train.train,\n"
        "       kvae.evaluation.evaluate, kvae.plots, kvae.testing.check_likelihood]\n"
        "print(json.dumps({'all': ok, 'api': len(api), 'dir': sorted(dir(kvae))}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "KVAE_LAZY_IMPORT"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert all(result["all"].values()) and result["api"] == 6
    for name in ("callbacks", "train", "evaluation", "plots", "VAE", "load_model"):
        assert name in result["all"] and name in result["dir"]


def test_resume_a_finished_run_trains_longer_or_says_it_is_finished(run_dir, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(run_dir, run)
    # As many epochs as it trained: nothing to do, said plainly, exit status 0.
    result = _kvae("train", "--resume", run)
    assert result.exit_code == 0, result.output
    assert "is finished: it trained 2 epochs" in result.output
    assert f"kvae train --resume {run} --epochs 3" in result.output
    assert "Resuming" not in result.output
    # More epochs: it goes on from epoch 2 (not from 0) and records what ran.
    result = _kvae("train", "--resume", run, "--epochs", "3", "--steps-per-execution", "3")
    assert result.exit_code == 0, result.output
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "finished" and info["epochs_completed"] == 3
    # 256 examples in batches of 64 = 4 steps per epoch; VAE.fit moves 3 steps per compiled
    # call to a divisor of 4 (2 or 4): run.json records the one that ran, not the 3 asked.
    assert info["steps_per_execution"] in (2, 4), info
    assert json.loads((run / "config.json").read_text())["steps_per_execution"] == 3
    assert _hparam(run / "logs", "steps_per_execution") == info["steps_per_execution"]
    with open(run / "history.csv") as f:
        assert [row.split(",")[0] for row in f.read().split()[1:]] == ["0", "1", "2"]
    from kvae.saving import load_model

    model = load_model(run / "checkpoints" / "last.keras")
    assert int(model.optimizer.iterations.numpy()) == 3 * 4  # 2 epochs before, 1 now


def _hparam(log_dir, name):
    """The value of hparam ``name`` in the latest hparams session written under ``log_dir``."""
    import glob

    import tensorflow as tf
    from tensorboard.plugins.hparams import plugin_data_pb2

    found = []
    for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == "_hparams_/session_start_info":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    found.append((event.wall_time, data.session_start_info.hparams[name]))
    return max(found, key=lambda pair: pair[0])[1].number_value


def _one_step_update(tmp_path, name, *options):
    """Train one step (64 examples, one batch) through the CLI; the change of the weights."""
    import keras

    from kvae.config import TrainConfig
    from kvae.saving import load_model
    from kvae.train import build_model, load_config

    run = tmp_path / name
    args = [*TINY, "--max-train-examples", "64", "--max-test-examples", "16", "--epochs", "1"]
    args += ["--validation", "none", "--image-every", "0", "--no-projector"]
    result = _kvae("train", *args, "--eval-num-samples", "0", *options, "--run-dir", run)
    assert result.exit_code == 0, result.output
    config = load_config(run)
    assert isinstance(config, TrainConfig)
    keras.utils.set_random_seed(config.seed)  # the initial weights train() started from
    start = build_model(config, (8, 8, 1), steps_per_epoch=1).trainable_weights
    end = load_model(run / "model.keras").trainable_weights
    return np.concatenate(
        [(np.asarray(b) - np.asarray(a)).ravel() for a, b in zip(start, end, strict=True)]
    )


def test_clip_norm_and_optimizer_shape_the_step(tmp_path):
    """One step from the same initial weights. SGD with learning rate 1 and --clip-norm c
    moves the weights by exactly c (the gradient's norm, far above c, is clipped to c).
    Adam's first step moves every weight with a non-zero gradient by lr * |g| / (|g| + 1e-7),
    i.e. lr to 1e-4 relative for |g| >> 1e-7: a largest move of lr, and a norm of many lr."""
    sgd = _one_step_update(
        tmp_path, "sgd", "--optimizer", "sgd", "--learning-rate", "1", "--clip-norm", "0.001"
    )
    np.testing.assert_allclose(np.linalg.norm(sgd), 0.001, rtol=1e-3)
    adam = _one_step_update(tmp_path, "adam", "--optimizer", "adam", "--learning-rate", "0.001")
    np.testing.assert_allclose(np.max(np.abs(adam)), 0.001, rtol=1e-3)
    assert np.linalg.norm(adam) > 10 * 0.001


def test_evaluate_help_lists_methods_and_gaps():
    result = _kvae("evaluate", "--help")
    assert result.exit_code == 0
    for text in ("iwae|exact|quadrature|ais|auto", "--gaps", "--gap-examples", "--ais-chains"):
        assert text in result.output
    from kvae.evaluation.family import FAMILIES

    # The CLI's literal choices (it imports no TensorFlow for --help) are the library's.
    assert f"--gaps-family [{'|'.join(FAMILIES)}]" in result.output


def test_evaluate_ais_defaults_are_the_librarys():
    """The AIS options' defaults are read from the library's one table, not retyped."""
    from kvae.cli.run import evaluate
    from kvae.evaluation import ais

    defaults = {p.name: p.default for p in evaluate.params}
    assert defaults["ais_temperatures"] == ais.check_ais_options()["num_temperatures"]
    assert defaults["ais_chains"] == ais.check_ais_options()["num_chains"]


def test_evaluate_a_conditional_run_has_iwae_only(tmp_path):
    """Another method, or --gaps, is refused for a conditional run in one line, before any
    estimate, naming the method that applies; --method auto is IWAE there."""
    run = tmp_path / "run"
    args = ["--epochs", 1, "--conditional", "--no-projector", "--run-dir", run]
    result = _kvae("train", *TINY, *args)  # the last --epochs counts
    assert result.exit_code == 0, result.output
    for args in (("--method", "ais"), ("--gaps",), ("--method", "quadrature", "--gaps")):
        result = _kvae("evaluate", run, *args, "--max-examples", 8)
        assert result.exit_code == 1, result.output
        _no_traceback(result)
        assert "['iwae']" in result.output and "conditional" in result.output
        assert len(result.output.strip().splitlines()) == 1
    result = _kvae("evaluate", run, "--method", "auto", "-k", 4, "--max-examples", 8, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["log_likelihood_method"] == "iwae"
