"""Evaluation, log p(x), `kvae encode` and the TensorBoard pictures stream an image run's data
(issue 23, items 2 and 3): a tf.data stream gives the numbers the same images give as an
array, no step holds the test set whole, and a run's recorded preprocessing is applied again
to another folder.

Images are written by the tests with PIL (tiny colour crops of noise with structure), nothing
is downloaded.
"""

import glob
import json
import os
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import kvae
from kvae import datasets, evaluation
from kvae.config import TrainConfig
from kvae.datasets.sources import arrays_of, streamed_data


def _image(k, size, mode="RGB"):
    """A smooth, distinct picture: gradients whose phase depends on k."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rgb = np.stack([np.sin(6 * xx + k), np.cos(5 * yy + 0.7 * k), np.sin(4 * (xx + yy) + k)], -1)
    array = np.uint8(np.clip(127.5 * (rgb + 1), 0, 255))
    image = Image.fromarray(array, "RGB")
    return image if mode == "RGB" else image.convert("L")


def _folder(root, n, size=(16, 16), classes=("a", "b"), mode="RGB", start=0):
    for i in range(n):
        where = os.path.join(root, classes[i % len(classes)]) if classes else str(root)
        os.makedirs(where, exist_ok=True)
        _image(start + i, size, mode).save(os.path.join(where, f"im{i:04d}.png"))
    return str(root)


def _model(data_shape, latent_dim=3):
    model = kvae.VAE(
        data_shape=data_shape,
        latent_dim=latent_dim,
        encoder="conv",
        decoder="conv",
        encoder_kwargs={"filters": [4, 8]},
        decoder_kwargs={"filters": [8, 4]},
        likelihood="continuous-bernoulli",
        seed=0,
    )
    model.compile(jit_compile=False)
    return model


# ----- a stream gives the array's numbers ------------------------------------------------------
def test_evaluation_on_a_stream_equals_evaluation_on_the_array(tmp_path):
    # 25 test images in batches of 8: the last batch holds 1 image and 7 padded rows.
    root = _folder(tmp_path / "photos", 50)
    _, test, info = datasets.image_dataset(root, batch_size=8, test_fraction=0.5)
    x, _ = arrays_of(test)
    assert len(x) == info.num_test == 25
    model = _model(info.data_shape)
    state = model.seed_generator.state.numpy()
    streamed = evaluation.evaluate(model, test, num_samples=16, batch_size=8, seed=3)
    model.seed_generator.state.assign(state)
    arrays = evaluation.evaluate(model, x, num_samples=16, batch_size=8, seed=3)
    assert streamed["num_examples"] == arrays["num_examples"] == 25
    # Float32 sums of O(1) nats in another order: 1e-5 apart at most. A padded row counted or
    # an example dropped moves a mean by about 1 / 25 of an example's spread (> 1e-3 here).
    for key in ("elbo", "reconstruction", "kl", "log_likelihood", "log_likelihood_stderr"):
        np.testing.assert_allclose(streamed[key], arrays[key], rtol=1e-5, atol=1e-5, err_msg=key)
    for key in ("posterior_mean_variance", "kl_per_dim"):
        np.testing.assert_allclose(streamed[key], arrays[key], rtol=1e-5, atol=1e-5, err_msg=key)
    # Per example, in order, with a different chunking of the stream (batch 5 against 8).
    iwae = {"method": "iwae", "num_samples": 16, "batch_size": 5, "seed": 1}
    ll_stream = evaluation.log_likelihood(model, test, **iwae)
    ll_array = evaluation.log_likelihood(model, x, **iwae)
    np.testing.assert_allclose(ll_stream.estimate, ll_array.estimate, rtol=1e-6)
    means_stream, _ = evaluation.posterior_moments(model, test)
    np.testing.assert_allclose(means_stream, evaluation.posterior_moments(model, x)[0], rtol=1e-6)
    # max_examples: the first examples of the stream, as the array's first examples.
    first = evaluation.log_likelihood(model, test, **iwae, max_examples=7)
    np.testing.assert_allclose(
        first.estimate, evaluation.log_likelihood(model, x[:7], **iwae).estimate, rtol=1e-6
    )
    with pytest.raises(kvae.errors.ConfigError, match="max_examples"):
        evaluation.log_likelihood(model, test, method="ais")


def _peak(step):
    """The peak of memory traced (numpy arrays and Python objects) while ``step()`` runs,
    after one run to trace and compile it."""
    step()
    tracemalloc.start()
    try:
        result = step()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# 220 images of 32x32x3: test sets of 55 and of 200 images hold 0.66 MB and 2.46 MB of
# float32 as arrays; a batch of 8 is 98 kB. Streamed, the peak must not follow the test set.
_SIZES = {"small": 0.25, "large": 0.91}


def test_streamed_evaluation_does_not_grow_with_the_test_set(tmp_path):
    root = _folder(tmp_path / "big", 220, size=(32, 32), classes=None)
    peaks, wholes = {}, {}
    for name, fraction in _SIZES.items():
        _, test, info = datasets.image_dataset(root, batch_size=8, test_fraction=fraction)
        model = _model(info.data_shape)
        result, peaks[name] = _peak(
            lambda: evaluation.evaluate(model, test, num_samples=4, batch_size=8)  # noqa: B023
        )
        assert result["num_examples"] == info.num_test
        wholes[name] = info.num_test * 32 * 32 * 3 * 4
    grown = peaks["large"] - peaks["small"]
    assert grown < (wholes["large"] - wholes["small"]) / 4, (peaks, wholes)


def test_a_runs_test_metrics_stream_the_test_set(tmp_path):
    """kvae.train's own test-metric step on an image folder (the code `kvae train` runs
    after fitting), measured the same way."""
    from kvae import train as run

    root = _folder(tmp_path / "run_images", 220, size=(32, 32), classes=None)
    peaks, wholes = {}, {}
    for name, fraction in _SIZES.items():
        config = TrainConfig(
            dataset=root,
            dataset_kwargs={"test_fraction": fraction},
            likelihood="continuous-bernoulli",
            encoder="conv",
            decoder="conv",
            encoder_kwargs={"filters": [4, 8]},
            decoder_kwargs={"filters": [8, 4]},
            latent_dim=3,
            batch_size=8,
            eval_num_samples=4,
        )
        data = streamed_data(config)
        model = run.build_model(data.config, data.data_shape)
        metrics, peaks[name] = _peak(
            lambda: run._test_metrics(data.config, model, data, 0)  # noqa: B023
        )
        assert metrics["num_examples"] == data.num_test
        assert np.isfinite(metrics["log_likelihood"])
        wholes[name] = data.num_test * 32 * 32 * 3 * 4
    grown = peaks["large"] - peaks["small"]
    assert grown < (wholes["large"] - wholes["small"]) / 4, (peaks, wholes)


# ----- the command line -----------------------------------------------------------------------
def _kvae(*args):
    from click.testing import CliRunner

    from kvae.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], prog_name="kvae")


def _events(folder):
    tags = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, value)
    return tags


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """A run trained for one epoch on a folder of 16x16 colour images in two classes."""
    tmp = tmp_path_factory.mktemp("image_run")
    root = _folder(tmp / "photos", 40, size=(20, 20))
    run = tmp / "run"
    nets = ["--encoder", "conv", "--decoder", "conv"]
    nets += ["--encoder-kwargs", '{"filters": [4, 8]}', "--decoder-kwargs", '{"filters": [8, 4]}']
    result = _kvae(
        "train", "--dataset", root, "--image-size", "16", *nets, "--likelihood",
        "continuous-bernoulli", "-z", "2", "--epochs", "1", "-b", "8", "--progress", "none",
        "--eval-num-samples", "8", "--image-every", "1", "--run-dir", run,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return run, root


def test_an_image_run_evaluates_from_its_run_directory_alone(image_run, tmp_path):
    run, root = image_run
    # The folder can go: the run directory's config.json says how to prepare the images of
    # a folder, and the test set is the folder's; so the same folder is needed for evaluate.
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_examples"] == 4  # 40 images, every 10th held out
    evaluated = _kvae("evaluate", run, "--json", "-k", "8")
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads(evaluated.output)
    # The same model, batches and seed state: the ELBO of metrics.json again.
    for key in ("elbo", "reconstruction", "kl", "num_examples", "active_units"):
        np.testing.assert_allclose(again[key], metrics[key], rtol=1e-5, err_msg=key)
    # TensorBoard's pictures of a colour run, from the first test batch.
    shown = _events(run / "logs" / "validation")
    assert "reconstructions" in shown and "samples" in shown
    png = shown["reconstructions"].tensor.string_val[2]  # [width, height, png]
    assert tf.io.decode_png(png).shape[-1] == 3  # in colour
    # reconstruct and sample work on the image run.
    out = tmp_path / "recon.png"
    made = _kvae("reconstruct", run, "-n", "4", "-o", out)
    assert made.exit_code == 0, made.output
    assert Image.open(out).mode == "RGB"
    assert _kvae("sample", run, "-n", "4", "-o", tmp_path / "s.png").exit_code == 0


def test_encode_another_folder_with_the_runs_preprocessing(image_run, tmp_path):
    run, _ = image_run
    config = json.loads((run / "config.json").read_text())
    assert config["image_size"] == [16, 16] and config["dataset_kwargs"]["color_mode"] == "rgb"
    # Another folder: grey 32x24 images (another size and colour mode), its own classes.
    other = _folder(tmp_path / "other", 11, size=(32, 24), classes=("x", "y", "z"), mode="L")
    out = tmp_path / "codes.npz"
    result = _kvae("encode", run, "--dataset", other, "-o", out)
    assert result.exit_code == 0, result.output
    codes = np.load(out)
    assert codes["mean"].shape == (11, 2) and codes["scale"].shape == (11, 2)
    paths = codes["path"].tolist()
    assert len(paths) == 11 and all(p.startswith(other) for p in paths)
    assert codes["class_names"].tolist() == ["x", "y", "z"]
    # The same images prepared by hand as the run recorded (16x16, RGB, unit pixels):
    # centre-cropped to a square, resized, grey copied to three channels.
    model = kvae.saving.load_model(run / "model.keras")
    by_hand = []
    for path in paths:
        image = np.asarray(Image.open(path), np.float32)  # (32, 24)
        square = image[4:28, :]
        resized = tf.image.resize(square[..., None], (16, 16), antialias=True).numpy()
        by_hand.append(np.repeat(resized, 3, axis=-1) / 255.0)
    expected = evaluation.posterior_moments(model, np.clip(np.stack(by_hand), 0, 1))[0]
    np.testing.assert_allclose(codes["mean"], expected, atol=1e-4)
    labels = [os.path.basename(os.path.dirname(p)) for p in paths]
    assert [["x", "y", "z"][i] for i in codes["label"]] == labels
    # --max-examples: the first codes.
    few = tmp_path / "few.npz"
    assert _kvae("encode", run, "--dataset", other, "--max-examples", "3", "-o", few).exit_code == 0
    np.testing.assert_allclose(np.load(few)["mean"], codes["mean"][:3], atol=1e-6)


def test_encode_the_test_set_of_an_image_run(image_run, tmp_path):
    run, root = image_run
    out = tmp_path / "test_codes.npz"
    result = _kvae("encode", run, "-o", out)
    assert result.exit_code == 0, result.output
    codes = np.load(out)
    assert codes["mean"].shape == (4, 2) and len(codes["path"]) == 4
    # Sorted by class (20 in a/, then 20 in b/): files 9, 19 of a/ and 29, 39 of b/.
    assert codes["label"].tolist() == [0, 0, 1, 1]
    folders = [os.path.basename(os.path.dirname(p)) for p in codes["path"].tolist()]
    assert folders == ["a", "a", "b", "b"] and codes["class_names"].tolist() == ["a", "b"]


def test_encode_dataset_bad_input(image_run, tmp_path):
    run, _ = image_run
    out = tmp_path / "codes.npz"
    missing = _kvae("encode", run, "--dataset", tmp_path / "nowhere", "-o", out)
    assert missing.exit_code != 0 and "which does not exist" in missing.output
    assert len(missing.output.strip().splitlines()) == 1 and not out.exists()
    # A run on arrays has no recorded image preparation (its config and run files; the
    # refusal comes before the model is loaded).
    arrays_run = tmp_path / "digits_run"
    arrays_run.mkdir()
    config = json.loads((run / "config.json").read_text())
    config.update(dataset="digits", image_size=None, dataset_kwargs={})
    (arrays_run / "config.json").write_text(json.dumps(config))
    (arrays_run / "run.json").write_text((run / "run.json").read_text())
    refused = _kvae("encode", arrays_run, "--dataset", tmp_path, "-o", out)
    assert refused.exit_code != 0 and "image folder or TFRecord" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not out.exists()
