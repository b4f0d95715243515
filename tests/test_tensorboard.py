"""kvae.callbacks: the TensorBoard callback's event files (read back), a real tensorboard
server asked over HTTP, and KL warm-up."""

import contextlib
import glob
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.callbacks import KLWarmup, TensorBoard
from kvae.errors import ConfigError

EPOCHS = 3


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Fit a tiny VAE on 256 digits for 3 epochs with the callback and a 2-epoch warm-up."""
    (x, _), (xt, yt) = kvae.datasets.load("digits")
    x, xt, yt = x[:256], xt[:100], yt[:100]
    log_dir = tmp_path_factory.mktemp("tb") / "logs"
    model = kvae.VAE(
        input_shape=(8, 8, 1),
        latent_dim=2,
        encoder_kwargs={"hidden": [32]},
        decoder_kwargs={"hidden": [32]},
        beta=2.0,
        seed=0,
    )
    model.compile(jit_compile=False, steps_per_execution=1)
    tb = TensorBoard(
        log_dir,
        x=xt,
        y=yt,
        image_every=2,
        num_images=8,
        hparams={"latent_dim": 2, "beta": 2.0, "binarize": None, "kw": {"a": 1}},
        trial_id="tiny",
    )
    warmup = KLWarmup(2)
    history = model.fit(
        x, validation_data=(xt,), epochs=EPOCHS, batch_size=64, callbacks=[tb, warmup], verbose=0
    )
    tb.log_metrics(
        {
            "elbo": -30.0,
            "kl_per_dim": [1, 2],
            "active_units": 2,
            "latent_dim": 2,
            "num_examples": 100,
            "epochs_completed": 3,
            "train_seconds": 1.25,
            "active_units_threshold": 0.01,
            "seconds": {"elbo": 0.5, "latent": 0.25},
        }
    )
    tb.close()
    return {"log_dir": str(log_dir), "model": model, "history": history.history}


def _events(folder):
    """{tag: (plugin name, [steps])} of the event files directly in ``folder``."""
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                entry = out.setdefault(value.tag, [plugin, []])
                entry[0] = entry[0] or plugin
                entry[1].append(event.step)
    return out


def _scalar_values(folder, tag):
    values = []
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values.append((event.step, float(tf.make_ndarray(value.tensor))))
    return values


def _text_values(folder, tag):
    for path in sorted(glob.glob(os.path.join(folder, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    return tf.make_ndarray(value.tensor).item().decode()
    return None


def test_train_run_scalars(run):
    events = _events(os.path.join(run["log_dir"], "train"))
    for tag in ("loss", "elbo", "reconstruction", "kl", "learning_rate", "beta"):
        plugin, steps = events[tag]
        assert plugin == "scalars" and steps == list(range(EPOCHS)), tag
    elbo = _scalar_values(os.path.join(run["log_dir"], "train"), "elbo")
    np.testing.assert_allclose([v for _, v in elbo], run["history"]["elbo"], rtol=1e-6)
    lr = _scalar_values(os.path.join(run["log_dir"], "train"), "learning_rate")
    np.testing.assert_allclose([v for _, v in lr], 1e-3, rtol=1e-6)


def test_validation_run_scalars_histograms_images(run):
    events = _events(os.path.join(run["log_dir"], "validation"))
    for tag in (
        "loss",
        "elbo",
        "reconstruction",
        "kl",
        "active_units",
        "kl_per_dim/z0",
        "kl_per_dim/z1",
    ):
        assert events[tag][0] == "scalars" and events[tag][1] == list(range(EPOCHS)), tag
    for tag in ("posterior/mean", "posterior/scale", "posterior/mean_z0", "posterior/mean_z1"):
        assert events[tag][0] == "histograms", tag
    # image_every=2: epoch index 1 (the 2nd), and after the last epoch (index 2)
    for tag in ("reconstructions", "samples", "traversal", "manifold", "posterior"):
        assert events[tag][0] == "images" and events[tag][1] == [1, 2], tag


def test_images_decode_to_grids(run):
    path = glob.glob(os.path.join(run["log_dir"], "validation", "events.out.tfevents.*"))[0]
    for event in tf.compat.v1.train.summary_iterator(path):
        for value in event.summary.value:
            if value.tag == "samples":
                width, height, png = tf.make_ndarray(value.tensor)[:3]
                image = tf.io.decode_png(png).numpy()
                assert image.shape[:2] == (int(height), int(width)) == (3 * 9 + 1, 3 * 9 + 1)
                return
    pytest.fail("no samples image")


def test_root_run_hparams_and_test_metrics(run):
    events = _events(run["log_dir"])
    assert events["_hparams_/session_start_info"][0] == "hparams"
    assert events["test/elbo"][0] == "scalars" and events["test/active_units"][0] == "scalars"
    assert "test/kl_per_dim" not in events  # lists are skipped
    assert _scalar_values(run["log_dir"], "test/elbo") == [(EPOCHS - 1, -30.0)]
    # facts about the run are one text table, not one-point scalar charts
    for name in ("latent_dim", "num_examples", "epochs_completed", "train_seconds"):
        assert f"test/{name}" not in events, name
    assert "test/active_units_threshold" not in events and "test/seconds" not in events
    assert events["test/run"][0] == "text"
    table = _text_values(run["log_dir"], "test/run")
    for row in (
        "| latent_dim | 2 |",
        "| num_examples | 100 |",
        "| epochs_completed | 3 |",
        "| train_seconds | 1.25 |",
        "| active_units_threshold | 0.01 |",
        "| seconds | elbo 0.5, latent 0.25 |",
    ):
        assert row in table, row


def test_projector_files(run):
    log_dir = run["log_dir"]
    with open(os.path.join(log_dir, "projector_config.pbtxt")) as f:
        config = f.read()
    assert 'tensor_path: "projector/embeddings.tsv"' in config
    assert 'metadata_path: "projector/metadata.tsv"' in config
    assert 'image_path: "projector/sprite.png"' in config
    embeddings = np.loadtxt(os.path.join(log_dir, "projector", "embeddings.tsv"), delimiter="\t")
    assert embeddings.shape == (100, 2)
    with open(os.path.join(log_dir, "projector", "metadata.tsv")) as f:
        assert len(f.read().splitlines()) == 100
    from PIL import Image

    with Image.open(os.path.join(log_dir, "projector", "sprite.png")) as sprite:
        assert sprite.size == (10 * 8, 10 * 8)


def test_projector_files_are_replaced_not_rewritten_in_place(run):
    """Every projector file is written to a temporary name and renamed onto its name (a
    reader never sees half a file): writing them again gives each a new inode. The old
    writer (np.savetxt, open(..., "w"), projector.visualize_embeddings) rewrote them in
    place, keeping the inode."""
    (_, _), (xt, yt) = kvae.datasets.load("digits")
    log_dir = run["log_dir"]
    names = [
        "projector_config.pbtxt",
        "projector/embeddings.tsv",
        "projector/metadata.tsv",
        "projector/sprite.png",
    ]
    before = {n: os.stat(os.path.join(log_dir, n)).st_ino for n in names}
    tb = TensorBoard(log_dir, x=xt[:50], y=yt[:50])
    tb.set_model(run["model"])
    tb.write_projector()
    after = {n: os.stat(os.path.join(log_dir, n)).st_ino for n in names}
    assert all(after[n] != before[n] for n in names), (before, after)
    assert not [n for n in os.listdir(os.path.join(log_dir, "projector")) if ".tmp" in n]
    # The rows are the posterior means of x (6 significant digits written).
    means = kvae.evaluation.posterior_moments(run["model"], xt[:50].astype("float32"))[0]
    got = np.loadtxt(os.path.join(log_dir, "projector", "embeddings.tsv"), delimiter="\t")
    np.testing.assert_allclose(got, means, rtol=1e-5, atol=1e-6)
    with open(os.path.join(log_dir, "projector", "metadata.tsv")) as f:
        assert f.read().split() == [str(v) for v in yt[:50]]


def test_kl_warmup_reaches_target_and_logs_beta(run):
    assert float(run["model"].beta.numpy()) == 2.0  # restored at the end of training
    betas = [v for _, v in _scalar_values(os.path.join(run["log_dir"], "train"), "beta")]
    # per-batch linear schedule over 2 epochs of 4 batches, read at each epoch's end:
    # after epoch 0 the last batch began at step 3 of 8 -> 2 * 3/8; after epoch 1, 2 * 7/8
    np.testing.assert_allclose(betas, [0.75, 1.75, 2.0], rtol=1e-6)


def test_kl_warmup_schedule_and_errors():
    w = KLWarmup(4, target=1.0)
    w._target = 1.0
    assert [w.value(e) for e in (0, 1, 2, 4, 10)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    with pytest.raises(ConfigError, match="epochs"):
        KLWarmup(0)
    with pytest.raises(ConfigError, match="target"):
        KLWarmup(2, target=-1)
    with pytest.raises(ConfigError, match="image_every"):
        TensorBoard("x", image_every=-1)


# ----- a real tensorboard server -------------------------------------------------------------
def _free_port():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def _poll_json(url, ready, deadline):
    last = None
    while time.monotonic() < deadline:
        try:
            last = json.loads(_get(url))
            if ready(last):
                return last
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
            pass
        time.sleep(0.5)
    pytest.fail(f"tensorboard did not answer {url} in time; last answer: {last!r}")


def test_tensorboard_server_serves_scalars_and_images(run):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    exe = os.path.join(os.path.dirname(sys.executable), "tensorboard")
    command = [exe] if os.path.exists(exe) else [sys.executable, "-m", "tensorboard.main"]
    proc = subprocess.Popen(
        [*command, "--logdir", run["log_dir"], "--port", str(port), "--host", "127.0.0.1"]
        + ["--load_fast", "false", "--reload_interval", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        tags = _poll_json(
            f"{base}/data/plugin/scalars/tags",
            lambda t: "elbo" in t.get("train", {}) and "elbo" in t.get("validation", {}),
            deadline,
        )
        assert {"loss", "reconstruction", "kl", "beta", "learning_rate"} <= set(tags["train"])
        assert "active_units" in tags["validation"]
        query = urllib.parse.urlencode({"run": "train", "tag": "elbo"})
        points = json.loads(_get(f"{base}/data/plugin/scalars/scalars?{query}"))
        assert [p[1] for p in points] == list(range(EPOCHS))
        np.testing.assert_allclose([p[2] for p in points], run["history"]["elbo"], rtol=1e-6)

        images = _poll_json(
            f"{base}/data/plugin/images/tags",
            lambda t: "samples" in t.get("validation", {}),
            deadline,
        )
        assert {"reconstructions", "samples", "traversal", "manifold"} <= set(images["validation"])
        query = urllib.parse.urlencode({"run": "validation", "tag": "samples"})
        entries = json.loads(_get(f"{base}/data/plugin/images/images?{query}"))
        assert [e["step"] for e in entries] == [1, 2]
        png = _get(f"{base}/data/plugin/images/individualImage?{entries[-1]['query']}")
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        proc.kill()
        proc.wait(timeout=10)
        proc.stderr.close()
