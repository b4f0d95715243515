"""precision="bf16": Keras' mixed_bfloat16 policy for the networks, float32 for the weights,
the heads and the loss; the global policy is left as it was."""

import json

import keras
import numpy as np
import pytest
from click.testing import CliRunner

import kvae
from kvae.config import TrainConfig
from kvae.errors import ConfigError

TINY = dict(
    dataset="digits",
    epochs=1,
    max_train_examples=64,
    max_test_examples=32,
    batch_size=32,
    image_every=0,
    projector=False,
    validation="none",
)


@pytest.mark.parametrize("encoder", ["mlp", "conv"])
def test_bf16_networks_float32_weights_heads_and_loss(tmp_path, encoder):
    from kvae.train import train

    config = TrainConfig(**TINY, encoder=encoder, decoder=encoder, precision="bf16")
    result = train(config, str(tmp_path / "run"), verbose=0)
    model = result.model
    assert keras.mixed_precision.global_policy().name == "float32"  # restored
    assert model.encoder.compute_dtype == model.decoder.compute_dtype == "bfloat16"
    for head in (model.posterior_head, model.likelihood_head):
        assert head.compute_dtype == "float32"
    assert {w.dtype for w in model.weights} == {"float32"}
    x = np.asarray(kvae.datasets.load("digits")[1][0][:8], np.float32)
    terms = model.compute_terms(x, seed=np.array([0, 0], np.int32))
    assert {str(v.dtype.name) for v in terms.values()} == {"float32"}
    assert np.isfinite(result.metrics["elbo"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["precision"] == "bf16"
    # The saved model keeps the networks' policy.
    loaded = keras.saving.load_model(str(tmp_path / "run" / "model.keras"))
    assert loaded.encoder.compute_dtype == "bfloat16"


def test_float32_is_the_default_and_unknown_precisions_are_refused():
    assert TrainConfig().precision == "float32"
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp16")


def test_cli_precision_flag(tmp_path):
    from kvae.cli import main

    args = ["train", "--dataset", "digits", "--max-train-examples", "64", "--epochs", "1"]
    args += ["--max-test-examples", "32", "--image-every", "0", "--no-projector"]
    args += ["--validation", "none", "--progress", "none", "--precision", "bf16"]
    result = CliRunner().invoke(main, [*args, "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "run" / "config.json").read_text())["precision"] == "bf16"
    bad = CliRunner().invoke(main, [*args[:-1], "fp16", "--run-dir", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
    assert not (tmp_path / "bad").exists()


def test_one_precision_table():
    """kvae._choices holds the one table of precisions and their Keras policies: the config,
    the command line and the model builder all read it."""
    from kvae import _choices, _precision
    from kvae.cli.train import train as train_command

    assert dict(_choices.PRECISION_POLICIES) == {"float32": "float32", "bf16": "mixed_bfloat16"}
    assert _precision.PRECISIONS == _choices.PRECISIONS == ("float32", "bf16")
    for name, policy in _choices.PRECISION_POLICIES.items():
        assert _precision.policy(name) == policy
        assert keras.mixed_precision.Policy(policy).name == policy  # a policy Keras knows
        assert TrainConfig(precision=name).precision == name
    option = next(p for p in train_command.params if p.name == "precision")
    assert tuple(option.type.choices) == _choices.PRECISIONS
    with pytest.raises(ConfigError, match=r"\['bf16', 'float32'\]"):
        _precision.policy("fp16")
