"""The TensorBoard callback skips a figure it cannot draw with one warning, never failing
the run (issue 22 item 5)."""

import glob
import warnings

import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.callbacks import TensorBoard
from kvae.errors import ConfigError


def _tiny(**kwargs):
    """A 2-D VAE of 8 x 8 digits with one hidden layer of 8 units each side."""
    net = {"hidden": [8]}
    return kvae.VAE(
        data_shape=(8, 8, 1), latent_dim=2, encoder_kwargs=net, decoder_kwargs=net, seed=0, **kwargs
    )


def test_a_figure_that_cannot_be_drawn_is_skipped_with_one_warning(tmp_path):
    """A 2-D model whose q has NaN scales: the posterior figure cannot be drawn (its axis
    limits are NaN; before, the ValueError ended fit). Two image epochs give one warning
    naming it, the other images are written both times."""
    (_, _), (xt, _) = kvae.datasets.load("digits")
    model = _tiny()
    head = model.posterior_head
    weights = head.get_weights()
    weights[-1] = np.full_like(weights[-1], np.nan)
    head.set_weights(weights)
    tb = TensorBoard(tmp_path, x=xt[:20], image_every=1, num_images=4, projector=False)
    tb.set_model(model)
    tb.set_params({"epochs": 2})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tb.on_epoch_end(0, {"loss": 1.0})
        tb.on_epoch_end(1, {"loss": 1.0})
    tb.close()
    skipped = [w for w in caught if "skipped" in str(w.message)]
    assert len(skipped) == 1 and issubclass(skipped[0].category, RuntimeWarning)
    assert "'posterior'" in str(skipped[0].message)
    assert "ValueError" in str(skipped[0].message)
    tags = {}
    for path in glob.glob(str(tmp_path / "validation" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                tags.setdefault(value.tag, []).append(event.step)
    assert tags["manifold"] == [0, 1] and tags["samples"] == [0, 1]
    assert "posterior" not in tags


def test_a_failing_figure_is_not_hidden_outside_the_callback():
    """The library function still raises: only the callback skips."""
    (_, _), (xt, _) = kvae.datasets.load("digits")
    model = kvae.VAE(data_shape=(8, 8, 1), latent_dim=2, seed=0)
    head = model.posterior_head
    head.set_weights([np.full_like(w, np.nan) for w in head.get_weights()])
    with pytest.raises(ValueError):
        kvae.plots.posterior(model, np.asarray(xt[:2], np.float32), n=2)


def test_a_conditional_model_gets_its_pictures_from_the_labels(tmp_path):
    """The callback's y are the conditions of x: every picture and statistic is written,
    none skipped (before, each raised "pass y"; kvae.train gave such runs scalars only)."""
    (x, y), (xt, yt) = kvae.datasets.load("digits")
    model = _tiny(condition=10)
    model.compile(jit_compile=False, steps_per_execution=1)
    tb = TensorBoard(tmp_path, x=xt[:20], y=yt[:20], num_images=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a skipped figure fails the test
        model.fit(x[:64], y[:64], epochs=1, batch_size=32, callbacks=[tb], verbose=0)
    tags = set()
    for path in glob.glob(str(tmp_path / "validation" / "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    assert {"reconstructions", "samples", "traversal", "manifold", "active_units"} <= tags
    assert "posterior" not in tags  # it takes no condition
    assert (tmp_path / "projector" / "embeddings.tsv").exists()
    with pytest.raises(ConfigError, match="conditions of x"):
        model.fit(x[:64], y[:64], epochs=1, callbacks=[TensorBoard(tmp_path, x=xt[:8])])
