"""kvae.training: the trainer apart from the model. Its fit paths, fused loop and steps per
call are tested where a user meets them (tests/test_model.py); here, what the split itself
promises: the progress bar kvae draws for fit reads as Keras' own, the strategy questions, and
no import of the model."""

import ast
import pathlib
import re

import keras
import numpy as np
import tensorflow as tf

import kvae
from kvae.training import progress, replicas


def _binary(n, shape=(6, 6, 1), seed=0):
    return (np.random.default_rng(seed).random((n, *shape)) < 0.3).astype("float32")


def _fit_output(capsys, verbose, callbacks):
    keras.utils.set_random_seed(0)
    model = kvae.VAE(
        data_shape=(6, 6, 1),
        latent_dim=2,
        encoder_kwargs={"hidden": [8]},
        decoder_kwargs={"hidden": [8]},
        seed=0,
    )
    model.compile(jit_compile=False, steps_per_execution=1)
    x = _binary(40)
    capsys.readouterr()
    model.fit(
        x,
        batch_size=8,
        epochs=2,
        verbose=verbose,
        validation_data=(x[:16],),
        callbacks=callbacks,
    )
    out = capsys.readouterr().out
    # What each line ends as (verbose=1 redraws a line, as often as time allows), without the
    # times, which differ from run to run; everything else must not.
    out = "\n".join(line.split("\r")[-1] for line in out.split("\n"))
    return re.sub(r"\d+(\.\d+)?(s|ms|us)(/step)?", "<t>", out)


def test_fit_progress_bar_reads_as_keras_own(capsys):
    """kvae draws fit's bar itself (public callback hooks and keras.utils.Progbar, so that a
    stopped epoch can end at the steps it ran). For epochs that run to the end it prints what
    Keras' own ProgbarLogger prints, character for character, at verbose 1 and 2 (validation
    silent inside fit)."""
    for verbose in (1, 2):
        ours = _fit_output(capsys, verbose, None)
        keras_own = _fit_output(capsys, verbose, [keras.callbacks.ProgbarLogger()])
        assert "Epoch 2/2" in ours and "5/5" in ours
        assert ours == keras_own, (verbose, ours, keras_own)


def test_truthful_bar_is_the_one_fit_adds():
    kwargs = {"verbose": 2}
    progress.add_truthful_progbar(kwargs)
    assert [type(c) for c in kwargs["callbacks"]] == [progress.TruthfulProgbarLogger]
    given = keras.callbacks.ProgbarLogger()
    for kwargs in ({"verbose": 0}, {"callbacks": [given]}):
        before = dict(kwargs)
        progress.add_truthful_progbar(kwargs)
        assert kwargs == before  # silent, or a bar given: nothing added


def test_one_device_is_neither_replicated_nor_multi_worker():
    for strategy in (tf.distribute.get_strategy(), tf.distribute.MirroredStrategy(["/cpu:0"])):
        assert not replicas.replicated(strategy)
        assert not replicas.multi_worker(strategy)


def test_kvae_training_imports_no_model():
    """kvae.training sits below kvae.model (DESIGN.md's layering): duck-typed on the model."""
    package = pathlib.Path(kvae.__file__).parent / "training"
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            bad = [n for n in names if n in ("kvae.model", "kvae.saving", "kvae.export")]
            assert not bad, f"{path.name} imports {bad}: kvae.training must not import the model"


def test_a_conditional_run_checks_its_classes_before_training(tmp_path):
    """A conditional run learns the classes of its training labels. With max_train_examples
    cutting the top class off (digits are ordered 0-9 repeating: 9 examples hold 0-8), the
    run used to train fully and then fail on the test labels (issue 22): now it stops
    before any run directory is made, naming the class and what to do."""
    import pytest

    from kvae.config import TrainConfig
    from kvae.errors import DataError
    from kvae.train import train

    config = TrainConfig(
        dataset="digits",
        conditional=True,
        epochs=1,
        max_train_examples=9,
        max_test_examples=40,
        batch_size=9,
        image_every=0,
        projector=False,
        validation="none",
    )
    with pytest.raises(DataError, match=r"test classes \[9\] not in the 9 training examples"):
        train(config, str(tmp_path / "run"), verbose=0)
    assert not (tmp_path / "run").exists()
