"""compile(jit_compile="auto"): kvae's measured rule resolves to a bool, which is what Keras
runs with, what the saved model remembers ("auto"), and what a run directory and its
TensorBoard hparams record. No timings here (the rule's table is in scripts/)."""

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

import kvae
from kvae import _compile_mode
from kvae.errors import ConfigError

ON_ACCELERATOR = bool(
    tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU")
)


def _mlp():
    return kvae.VAE(
        data_shape=(8, 8, 1),
        encoder_kwargs={"hidden": [16]},
        decoder_kwargs={"hidden": [16]},
        seed=0,
    )


def _conv():
    return kvae.VAE(encoder="conv", decoder="conv", data_shape=(8, 8, 1), seed=0)


def test_auto_is_the_default_and_resolves_to_a_bool_per_model(caplog):
    mlp, conv = _mlp(), _conv()
    with caplog.at_level(logging.INFO, logger="kvae"):
        mlp.compile()
        conv.compile()
    for model in (mlp, conv):
        assert model.compile_choice.requested == "auto"
        assert isinstance(model.compile_choice.jit, bool)
        assert model.jit_compile is model.compile_choice.jit  # what Keras really runs with
    assert mlp.compile_choice.jit is True
    # On a CPU a model with convolutions trains without XLA; on a GPU/TPU with it.
    assert conv.compile_choice.jit is ON_ACCELERATOR
    if not ON_ACCELERATOR:
        assert "Conv2D" in conv.compile_choice.reason
    lines = [r.getMessage() for r in caplog.records if r.name == "kvae"]
    assert len(lines) == 2 and "jit_compile='auto' -> XLA on" in lines[0], lines


@pytest.mark.parametrize("asked", [True, False])
def test_true_and_false_are_taken_as_given(asked):
    for model in (_mlp(), _conv()):
        model.compile(jit_compile=asked, steps_per_execution=1)
        assert model.jit_compile is asked
        record = model.compile_choice.to_dict()
        assert {k: record[k] for k in ("requested", "jit_compile", "reason")} == {
            "requested": asked,
            "jit_compile": asked,
            "reason": "asked for",
        }
        assert record["loop"] in ("fused", "keras") and record["loop_reason"]


def _fit_loop(model, jit):
    """Which loop ``fit`` on arrays ran: the fused loop's steps per call, or None for
    Keras' own loop."""
    model.compile(jit_compile=jit, steps_per_execution=2)
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(self.model._train_function_fused)

    x = (np.random.default_rng(0).random((64, 8, 8, 1)) < 0.3).astype("float32")
    model.fit(x, epochs=1, batch_size=16, verbose=0, callbacks=[Spy()])
    return seen[-1], model.compile_choice


@pytest.mark.parametrize("jit", [True, "auto", False])
def test_no_jit_setting_puts_a_convolution_inside_the_fused_xla_loop(jit):
    """Issue 23: inside an XLA while loop, XLA's CPU compiler leaves the backward and
    transposed convolutions in a layout its fast kernel does not take (about 30x slower a
    step than Keras' loop with XLA, measured). With any jit_compile, a conv model's fit on
    arrays runs Keras' loop and says so; a dense model with XLA keeps the fused loop."""
    fused, choice = _fit_loop(_conv(), jit)
    assert fused is None
    assert choice.loop == "keras"
    if choice.jit:
        assert "Conv2D" in choice.loop_reason
    dense, dense_choice = _fit_loop(_mlp(), True)
    assert dense == 2 and dense_choice.loop == "fused"


def test_run_eagerly_turns_xla_off_and_says_so():
    model = _mlp()
    model.compile(run_eagerly=True)
    assert model.jit_compile is False and model.compile_choice.reason == "run_eagerly=True"


@pytest.mark.parametrize("bad", ["maybe", 1, None])
def test_bad_values_are_refused_before_compiling(bad):
    model = _mlp()
    with pytest.raises(ConfigError, match="True, False or 'auto'"):
        model.compile(jit_compile=bad)
    assert not model.compiled


def test_spellings_of_the_three_values():
    for word, want in (("auto", "auto"), (" On", True), ("off", False), ("TRUE", True)):
        assert _compile_mode.parse_jit(word) == want


def test_a_saved_model_remembers_auto_and_decides_again(tmp_path):
    model = _conv()
    model.compile(steps_per_execution=1)
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype("float32")
    model.fit(x, epochs=1, batch_size=16, verbose=0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.compile_choice.requested == "auto"
    assert loaded.jit_compile is model.jit_compile is ON_ACCELERATOR


def _hparams(log_dir):
    from tensorboard.plugins.hparams import plugin_data_pb2

    for name in os.listdir(log_dir):
        if name.startswith("events.out.tfevents"):
            for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, name)):
                for value in event.summary.value:
                    if value.tag == "_hparams_/session_start_info":
                        data = plugin_data_pb2.HParamsPluginData.FromString(
                            value.metadata.plugin_data.content
                        )
                        return dict(data.session_start_info.hparams)
    raise AssertionError(f"no hparams in {log_dir}")


def test_train_records_the_choice_in_the_run_directory_and_hparams(tmp_path):
    from kvae.config import TrainConfig
    from kvae.train import train

    config = TrainConfig(
        dataset="digits",
        encoder="conv",
        decoder="conv",
        epochs=1,
        max_train_examples=64,
        max_test_examples=32,
        batch_size=32,
        image_every=0,
        projector=False,
        validation="none",
    )
    assert config.jit == "auto"
    result = train(config, str(tmp_path / "run"), verbose=0)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["jit"] == "auto"
    assert run["compile"]["requested"] == "auto"
    assert run["compile"]["jit_compile"] is ON_ACCELERATOR is result.model.jit_compile
    hparams = _hparams(str(tmp_path / "run" / "logs"))
    # The hparams table shows what compile chose; the requested flag ("auto") is operational
    # (issue 12) and stays in config.json and run.json, checked above.
    assert "jit" not in hparams
    assert hparams["jit_compile"].bool_value is ON_ACCELERATOR


def test_cli_jit_flag_values_and_conflicts(tmp_path):
    from kvae.cli import main

    base = ["train", "--dataset", "digits", "--max-train-examples", "64", "--epochs", "1"]
    base += ["--max-test-examples", "32", "--image-every", "0", "--no-projector"]
    base += ["--validation", "none", "--progress", "none"]
    for flag, want in ((["--jit", "on"], True), (["--no-jit"], False), ([], "auto")):
        run = tmp_path / f"run{len(flag)}{want}"
        result = CliRunner().invoke(main, [*base, *flag, "--run-dir", str(run)])
        assert result.exit_code == 0, result.output
        assert json.loads((run / "config.json").read_text())["jit"] == want
        resolved = json.loads((run / "run.json").read_text())["compile"]["jit_compile"]
        assert resolved is (want if want != "auto" else True)  # an MLP: XLA under auto
        assert "kvae: XLA" not in result.stdout  # progress none prints nothing extra
    for bad in (["--jit", "on", "--no-jit"], ["--jit", "yes"]):
        result = CliRunner().invoke(main, [*base, *bad, "--run-dir", str(tmp_path / "bad")])
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert not (tmp_path / "bad").exists()


def _mixed():
    """A dense encoder with a convolutional decoder: one Conv2DTranspose is enough."""
    return kvae.VAE(encoder="mlp", decoder="conv", data_shape=(8, 8, 1), seed=0)


# The rule's decisions, written out by hand (module docstring of kvae/_compile_mode.py):
# (model, requested, device) -> (XLA?, loop, a word the reason must hold).
_EXPECTED = [
    (_conv, "auto", "CPU", False, "keras", "Conv2D"),
    (_mixed, "auto", "CPU", False, "keras", "Conv2DTranspose"),
    (_mlp, "auto", "CPU", True, "fused", "no convolution"),
    (_conv, "auto", "GPU", True, "keras", "GPU"),
    (_mlp, "auto", "GPU", True, "fused", "GPU"),
    (_conv, True, "CPU", True, "keras", "asked for"),
    (_mlp, False, "CPU", False, "keras", "asked for"),
]


@pytest.mark.parametrize("build, requested, device, jit, loop, word", _EXPECTED)
def test_the_rule_decides_as_written(monkeypatch, build, requested, device, jit, loop, word):
    """The rule against hand-written expectations, not against the table it was built
    from: on a CPU a model with any convolution trains without XLA and a dense one with
    it; on a GPU always with XLA; a convolution never runs in the fused loop."""
    model = build()
    if device == "GPU":  # what a machine with one GPU answers; the rule asks nothing else
        real = tf.config.list_logical_devices
        monkeypatch.setattr(
            tf.config,
            "list_logical_devices",
            lambda kind=None: (
                [tf.config.LogicalDevice("/GPU:0", "GPU")] if kind == "GPU" else real(kind)
            ),
        )
    elif ON_ACCELERATOR:
        pytest.skip("a CPU expectation")
    choice = _compile_mode.resolve(requested, model)
    assert (choice.jit, choice.loop) == (jit, loop), choice
    assert word in choice.reason or word in choice.loop_reason, choice
    if loop == "keras" and jit:
        assert "convolution" in choice.loop_reason


def test_the_figures_the_rule_quotes_are_the_checked_in_tables():
    """The speed-ups the rule's docstring and docs/performance.md quote come from
    scripts/compile_mode_table.json (a re-measured table with stale prose fails here)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "scripts", "compile_mode_table.json")) as f:
        rows = {row["shape"]: row for row in json.load(f)["rows"]}
    with open(os.path.join(root, "docs", "performance.md")) as f:
        performance = f.read()
    for shape in ("mlp", "burda-b20", "burda-b100", "conv"):
        quoted = f"{rows[shape]['xla_over_no_xla']:.2f}x"
        assert quoted in _compile_mode.__doc__, (shape, quoted)
        assert quoted in performance, (shape, quoted)
