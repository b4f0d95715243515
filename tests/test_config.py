"""TrainConfig: inert, validated, round-trips through dicts, JSON and YAML files."""

import dataclasses
import json
import subprocess
import sys

import pytest

from kvae.config import TrainConfig
from kvae.errors import ConfigError


def test_defaults_are_the_keras_example():
    c = TrainConfig()
    assert (c.dataset, c.encoder, c.decoder, c.likelihood, c.prior) == (
        "mnist",
        "mlp",
        "mlp",
        "bernoulli",
        "standard-normal",
    )
    assert (c.latent_dim, c.beta, c.batch_size, c.learning_rate) == (2, 1.0, 128, 1e-3)
    assert (c.objective, c.num_samples, c.jit, c.strategy, c.binarize) == (
        "elbo",
        1,
        "auto",
        "default",
        None,
    )
    # keys reserved for checkpointing/distribution exist with their defaults
    assert (c.resume, c.on_nan, c.clip_norm, c.free_bits, c.checkpoint_every) == (
        False,
        "stop",
        None,
        0.0,
        1,
    )


def test_every_field_is_validated():
    from kvae import config as module

    assert set(module._CHECKS) == set(TrainConfig.keys())


def test_dict_round_trip_and_json():
    c = TrainConfig(
        dataset="digits", latent_dim=3, encoder_kwargs={"hidden": [64]}, binarize="dynamic"
    )
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert TrainConfig.from_dict(d) == c


def test_frozen_and_kwargs_copied():
    kwargs = {"hidden": [64]}
    c = TrainConfig(encoder_kwargs=kwargs)
    kwargs["hidden"].append(1)
    assert c.encoder_kwargs == {"hidden": [64]}
    c.to_dict()["encoder_kwargs"]["hidden"].append(2)
    assert c.encoder_kwargs == {"hidden": [64]}
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.latent_dim = 5


def test_replace_validates_and_refuses_unknown_keys():
    c = TrainConfig().replace(epochs=3)
    assert c.epochs == 3
    with pytest.raises(ConfigError, match="latent_dim"):
        TrainConfig().replace(latent_dim=0)
    with pytest.raises(ConfigError, match="Did you mean 'epochs'"):
        TrainConfig().replace(epoch=3)


def test_unknown_key_names_nearest_and_allowed_keys():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict({"latnt_dim": 2})
    msg = str(info.value)
    assert "'latnt_dim'" in msg and "Did you mean 'latent_dim'" in msg and "batch_size" in msg


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("latent_dim", "two", "an integer >= 1"),
        ("latent_dim", 2.0, "an integer >= 1"),
        ("latent_dim", True, "an integer >= 1"),
        ("epochs", 0, "an integer >= 1"),
        ("beta", -1, "a finite number >= 0.0"),
        ("learning_rate", 0, "a finite number > 0.0"),
        ("learning_rate", "1e-3", "a finite number > 0.0"),
        ("jit", "yes", "true, false or 'auto'"),
        ("jit", 1, "true, false or 'auto'"),
        ("binarize", "always", "one of null/None, 'static', 'dynamic'"),
        ("objective", "vae", "one of 'elbo', 'iwae'"),
        ("strategy", "gpu", "'mirrored'"),
        ("on_nan", "ignore", "'stop', 'skip'"),
        ("validation", 1.5, "'test', 'none' or a fraction"),
        ("encoder", "", "a non-empty string"),
        ("encoder_kwargs", [1], "a mapping"),
        ("clip_norm", -1.0, "or null/None"),
        ("image_size", "64x", "'HxW' such as '64x48'"),
        ("image_size", [0, 4], "[height, width]"),
        ("image_size", True, "an integer (square)"),
        ("on_bad_file", "ignore", "one of 'error', 'skip'"),
    ],
)
def test_wrong_values_name_key_value_and_allowed(key, value, expected):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{key: value})
    msg = str(info.value)
    assert f"`{key}`" in msg and f"Received: {key}={value!r}" in msg and expected in msg


def test_image_size_is_stored_as_a_pair_and_old_configs_load():
    assert TrainConfig(image_size=64).image_size == [64, 64]
    assert TrainConfig(image_size="32x48").image_size == [32, 48]
    config = TrainConfig(image_size=[32, 48], on_bad_file="skip")
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    # A config.json written before these keys existed still loads, with their defaults.
    old = {
        k: v for k, v in TrainConfig().to_dict().items() if k not in ("image_size", "on_bad_file")
    }
    assert TrainConfig.from_dict(old) == TrainConfig()


def test_kwargs_must_be_json():
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        TrainConfig(encoder_kwargs={"f": object()})


def test_iwae_refuses_beta():
    with pytest.raises(ConfigError, match="beta=1 with objective='iwae'"):
        TrainConfig(objective="iwae", num_samples=5, beta=0.5)
    assert TrainConfig(objective="iwae", num_samples=5).short_name.endswith("iwae5")


def test_from_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "dataset: digits\nlearning_rate: 1e-3\nbeta: 2\nbinarize: null\n"
        "encoder_kwargs:\n  hidden: [32, 16]\nvalidation: 0.1\n"
    )
    c = TrainConfig.from_file(path)
    assert c.learning_rate == 1e-3 and isinstance(c.learning_rate, float)
    assert c.beta == 2.0 and c.binarize is None and c.validation == 0.1
    assert c.encoder_kwargs == {"hidden": [32, 16]}


def test_from_json_file_and_config_json_round_trip(tmp_path):
    c = TrainConfig(dataset="digits", epochs=4, clip_norm=1.0)
    path = tmp_path / "config.json"
    path.write_text(c.to_json())
    assert TrainConfig.from_file(path) == c


@pytest.mark.parametrize(
    "name, text, match",
    [
        ("c.toml", "", "ending in .yaml, .yml or .json"),
        ("c.yaml", "epochs: [1\n", "not valid yaml"),
        ("c.json", "{", "not valid json"),
        ("c.yaml", "- 1\n- 2\n", "a mapping of config keys"),
        ("c.yml", "epochs: ten\n", "Received: epochs='ten'"),
        ("c.yml", "epoch: 10\n", "Did you mean 'epochs'"),
    ],
)
def test_bad_files(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.from_file(tmp_path / "nope.yaml")


def test_empty_yaml_is_defaults(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# nothing\n")
    assert TrainConfig.from_file(path) == TrainConfig()


def test_short_name_is_safe():
    assert TrainConfig(dataset="/data/my set.npz", latent_dim=8).short_name == "my_set-mlp-z8"


def test_importing_config_is_light():
    code = "import sys, kvae.config; print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"KVAE_LAZY_IMPORT": "1", "PATH": ""},
        check=True,
    )
    assert out.stdout.split() == ["False", "False"]
