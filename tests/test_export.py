"""kvae.export: SavedModels of every posterior family, loaded with tf.saved_model.load in a
fresh process that cannot import kvae, give what the Python model gives."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import kvae
from kvae.errors import ConfigError
from kvae.export import ENDPOINTS, call_input_signature, export_saved_model

MLP = {"encoder_kwargs": {"hidden": [8]}, "decoder_kwargs": {"hidden": [8]}}
LAYERS = {"z1_dim": 2, "z2_dim": 1, "hidden": [8]}
MODELS = {
    # name -> kvae.VAE arguments (data_shape (6,) unless given)
    "gaussian": dict(MLP, posterior="gaussian", likelihood="bernoulli"),
    "full-gaussian": dict(
        MLP,
        posterior="full-gaussian",
        likelihood="gaussian",
        likelihood_kwargs={"scale": "per_dim", "init_scale": 0.5},
        prior="mixture",
        prior_kwargs={"num_components": 3},
        latent_dim=3,
        condition={"dim": 2},
    ),
    "iaf": dict(
        MLP,
        posterior="iaf",
        posterior_kwargs={"num_steps": 2, "hidden_units": [8], "context_dim": 4},
        likelihood="discretized-logistic",
        likelihood_kwargs={"num_bins": 16},
    ),
    "hierarchical": dict(
        MLP,
        posterior="hierarchical",
        prior="hierarchical",
        posterior_kwargs=LAYERS,
        prior_kwargs=LAYERS,
        likelihood="continuous-bernoulli",
        latent_dim=3,
    ),
    "conditional": dict(MLP, condition=3),
    "conv": dict(
        data_shape=(8, 8, 1),
        encoder="conv",
        decoder="conv",
        encoder_kwargs={"filters": [4], "dense": 8},
        decoder_kwargs={"filters": [4]},
        prior="vamp",
        prior_kwargs={"num_components": 4},
    ),
}
# The closed-form parameters each family exports besides z and mean.
ENCODE_KEYS = {
    "gaussian": {"loc", "scale"},
    "full-gaussian": {"loc", "scale_tril"},
    "iaf": set(),
    "hierarchical": set(),
    "conditional": {"loc", "scale"},
    "conv": {"loc", "scale"},
}
DECODE_KEYS = {
    "gaussian": {"logits"},
    "full-gaussian": {"loc", "scale"},
    "iaf": set(),
    "hierarchical": {"logits"},
    "conditional": {"logits"},
    "conv": {"logits"},
}
BATCH, N, SEED, OTHER_SEED = 5, 4, 7, 8

# Runs in a fresh interpreter: loads every export with TensorFlow alone (neither kvae nor
# TensorFlow Probability can even be imported there) and calls each serving signature, as TF Serving would, by keyword.
SERVE = textwrap.dedent("""
    import importlib.abc, json, sys

    class NoKvae(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("kvae", "tensorflow_probability"):
                raise ImportError(f"{name} must not be needed to serve an export")

    sys.meta_path.insert(0, NoKvae())
    import numpy as np
    import tensorflow as tf

    plan = json.load(open(sys.argv[1]))
    outputs, errors = {}, {}

    def keep(prefix, result):
        for key, value in result.items():
            outputs[f"{prefix}/{key}"] = value.numpy()

    for name, item in plan.items():
        served = tf.saved_model.load(item["path"])
        sig = served.signatures
        data = np.load(item["inputs"])
        cond = {"y": data["y"]} if item["conditional"] else {}
        keep(f"{name}/reconstruct", sig["reconstruct"](x=data["x"], **cond))
        keep(f"{name}/serving_default", sig["serving_default"](x=data["x"], **cond))
        for tag, seed in (("a", 7), ("b", 7), ("c", 8)):
            keep(f"{name}/encode_{tag}", sig["encode"](x=data["x"], seed=seed, **cond))
            n_cond = {"y": data["y_n"]} if item["conditional"] else {}
            keep(f"{name}/sample_{tag}", sig["sample"](n=4, seed=seed, **n_cond))
        keep(f"{name}/decode", sig["decode"](z=data["z"], **cond))
        # The Python-side functions too, positionally.
        keep(f"{name}/encode_fn", served.encode(data["x"], *cond.values(), 7))
        if item["conditional"]:
            keep(f"{name}/sample_one_y", sig["sample"](n=4, seed=7, y=data["y_n"][:1]))
            bad = {
                "y_rows": lambda: sig["encode"](x=data["x"], y=data["y"][:2], seed=7),
                "sample_rows": lambda: sig["sample"](n=4, seed=7, y=data["y_n"][:2]),
                "negative_n": lambda: sig["sample"](n=-1, seed=7, y=data["y_n"][:1]),
            }
            if data["y"].dtype == np.int32:
                bad["label"] = lambda: sig["reconstruct"](x=data["x"], y=data["y"] + 3)
            for what, call in bad.items():
                try:
                    call()
                    errors[f"{name}/{what}"] = "no error"
                except tf.errors.InvalidArgumentError as err:
                    errors[f"{name}/{what}"] = err.message
    assert not {m.split(".")[0] for m in sys.modules} & {"kvae", "tensorflow_probability"}
    np.savez(sys.argv[2], **outputs)
    json.dump(errors, open(sys.argv[3], "w"))
""")


def _conditions(model, rng, n):
    if model.condition is None:
        return None
    if model.condition.is_classes:
        return rng.integers(0, model.condition.num_classes, n).astype(np.int32)
    return rng.normal(size=(n, model.condition.dim)).astype(np.float32)


def _build(name, rng):
    kwargs = dict(MODELS[name])
    kwargs.setdefault("data_shape", (6,))
    kwargs.setdefault("latent_dim", 2)
    keras.utils.set_random_seed(0)
    model = kvae.VAE(seed=0, **kwargs)
    if name == "gaussian":  # one training step: the export carries the trained weights
        x = (rng.random((16, 6)) < 0.5).astype(np.float32)
        model.compile(optimizer="adam")
        model.fit(x, epochs=1, batch_size=16, verbose=0)
    return model


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """name -> (model, inputs, outputs of the served model); errors of the served model."""
    root = tmp_path_factory.mktemp("export")
    rng = np.random.default_rng(0)
    models, inputs, plan = {}, {}, {}
    for name in MODELS:
        model = models[name] = _build(name, rng)
        x = rng.random((BATCH, *model.data_shape)).astype(np.float32)
        data = {"x": x, "z": rng.normal(size=(BATCH, model.latent_dim)).astype(np.float32)}
        if model.condition is not None:
            data["y"] = _conditions(model, rng, BATCH)
            data["y_n"] = _conditions(model, rng, N)
        inputs[name] = data
        np.savez(root / f"{name}.npz", **data)
        export_saved_model(model, root / name, verbose=False)
        plan[name] = {
            "path": str(root / name),
            "inputs": str(root / f"{name}.npz"),
            "conditional": model.condition is not None,
        }
    (root / "plan.json").write_text(json.dumps(plan))
    (root / "serve.py").write_text(SERVE)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(
        [
            sys.executable,
            root / "serve.py",
            root / "plan.json",
            root / "out.npz",
            root / "err.json",
        ],
        check=True,
        timeout=300,
        env=env,
    )
    with np.load(root / "out.npz") as out:
        outputs = dict(out)
    errors = json.loads((root / "err.json").read_text())
    return models, inputs, outputs, errors


def _out(outputs, name, endpoint):
    prefix = f"{name}/{endpoint}/"
    return {k[len(prefix) :]: v for k, v in outputs.items() if k.startswith(prefix)}


def _case(served, name, endpoint):
    """(the model, its inputs, the served endpoint's outputs) of one export."""
    models, inputs, outputs, _ = served
    return models[name], inputs[name], _out(outputs, name, endpoint)


def _close(actual, expected):
    np.testing.assert_allclose(actual, np.asarray(expected), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_reconstruct_is_the_models_call(served, name):
    model, data, got = _case(served, name, "reconstruct")
    assert set(got) == {"mean", "z"}
    args = data["x"] if model.condition is None else (data["x"], data["y"])
    _close(got["mean"], model(args))
    _close(got["z"], model.encode(data["x"], data.get("y")).mean())
    assert got["mean"].shape == (BATCH, *model.data_shape)
    # serving_default (what TF Serving calls by default) is reconstruct.
    default = _case(served, name, "serving_default")[2]
    np.testing.assert_array_equal(default["mean"], got["mean"])


@pytest.mark.parametrize("name", MODELS)
def test_encode_parameters_are_the_posteriors(served, name):
    model, data, got = _case(served, name, "encode_a")
    assert set(got) == {"z", "mean"} | ENCODE_KEYS[name]
    q = model.encode(data["x"], data.get("y"))
    _close(got["mean"], q.mean())
    if "scale" in got:
        _close(got["loc"], q.mean())
        _close(got["scale"], q.stddev())
    if "scale_tril" in got:
        _close(got["loc"], q.mean())
        tril = got["scale_tril"]
        np.testing.assert_array_equal(tril, np.tril(tril))
        _close(tril @ np.swapaxes(tril, -1, -2), q.covariance())


@pytest.mark.parametrize("name", MODELS)
def test_encode_draw_follows_its_seed(served, name):
    model, data, _ = _case(served, name, "encode_a")
    a, b, c = (_case(served, name, f"encode_{t}")[2]["z"] for t in "abc")
    np.testing.assert_array_equal(a, b)
    assert np.all(np.abs(a - c) > 1e-6)
    # The same draw as the Python model's with the stateless seed [seed, 0].
    q = model.encode(data["x"], data.get("y"))
    _close(a, q.sample(seed=tf.constant([SEED, 0])))
    assert a.shape == (BATCH, model.latent_dim)
    np.testing.assert_array_equal(_case(served, name, "encode_fn")[2]["z"], a)


@pytest.mark.parametrize("name", MODELS)
def test_decode_gives_the_likelihoods_mean_and_parameters(served, name):
    model, data, got = _case(served, name, "decode")
    assert set(got) == {"mean", "params"} | DECODE_KEYS[name]
    params = model.decoder_params(data["z"], data.get("y"))
    _close(got["params"], params)
    _close(got["mean"], model.likelihood_head.mean(params))
    assert got["mean"].shape == (BATCH, *model.data_shape)
    p = model.decode(data["z"], data.get("y"))
    if name != "iaf":  # a discretised logistic's mean is the head's (in the data's units)
        _close(got["mean"], p.mean())
    if "logits" in got:
        _close(got["logits"], p.distribution.logits)
    if "scale" in got:
        _close(got["loc"], p.mean())
        _close(got["scale"], p.stddev())


@pytest.mark.parametrize("name", MODELS)
def test_sample_follows_its_seed(served, name):
    model, data, _ = _case(served, name, "sample_a")
    a, b, c = (_case(served, name, f"sample_{t}")[2] for t in "abc")
    np.testing.assert_array_equal(a["mean"], b["mean"])
    assert not np.allclose(a["mean"], c["mean"])
    _close(a["mean"], model.sample(N, seed=SEED, y=data.get("y_n")))
    _close(a["z"], model.prior_distribution().sample(N, seed=tf.constant([SEED, 0])))
    assert a["mean"].shape == (N, *model.data_shape)


@pytest.mark.parametrize("name", ["conditional", "full-gaussian"])
def test_conditional_inputs(served, name):
    model, data, got = _case(served, name, "sample_one_y")
    errors = served[3]
    one = got["mean"]
    expected = model.sample(N, seed=SEED, y=np.repeat(data["y_n"][:1], N, axis=0))
    _close(one, expected)
    assert "one condition y per example" in errors[f"{name}/y_rows"]
    assert "n conditions, or one for all n" in errors[f"{name}/sample_rows"]
    assert "Expected n >= 0" in errors[f"{name}/negative_n"]
    if model.condition.is_classes:
        assert "Expected labels y in 0..2" in errors[f"{name}/label"]


def test_not_a_vae(tmp_path):
    inputs = keras.Input((3,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with pytest.raises(ConfigError, match="Expected a kvae.VAE"):
        export_saved_model(other, tmp_path / "m")


def test_keras_export_fails_as_the_module_says(tmp_path):
    """Keras' own export cannot read a VAE's input signature (kvae.export's docstring says
    why); if a Keras release changes that, the docstring needs a look."""
    model = kvae.VAE(data_shape=(6,), latent_dim=2, **MLP)
    model(np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="never called"):
        keras.Model.export(model, str(tmp_path / "m"), verbose=False)


@pytest.mark.parametrize("condition", [None, 3])
def test_call_input_signature_lets_keras_export_the_reconstruction(tmp_path, condition):
    """For Keras' other formats (ONNX, LiteRT, OpenVINO), which export ``call`` alone."""
    model = kvae.VAE(data_shape=(6,), latent_dim=2, condition=condition, **MLP)
    x = np.random.default_rng(0).random((3, 6)).astype(np.float32)
    args = x if condition is None else (x, np.array([0, 2, 1], np.int32))
    signature = call_input_signature(model)
    keras.Model.export(model, str(tmp_path / "m"), verbose=False, input_signature=signature)
    served = tf.saved_model.load(str(tmp_path / "m"))
    _close(served.serve(args), model(args))


def test_model_export_method(tmp_path):
    """A Keras user's ``model.export(path)`` writes kvae's signatures."""
    model = kvae.VAE(data_shape=(6,), latent_dim=2, **MLP)
    x = np.random.default_rng(0).random((3, 6)).astype(np.float32)
    model(x)
    model.export(tmp_path / "m", verbose=False)
    served = tf.saved_model.load(str(tmp_path / "m"))
    assert set(served.signatures) == {*ENDPOINTS, "serving_default"}
    _close(served.reconstruct(x)["mean"], model(x))
    with pytest.raises(ConfigError, match="input_signature"):
        model.export(tmp_path / "n", input_signature=call_input_signature(model))
