"""Third-party plugins as a user meets them: packages installed by pip, found by kvae through
their entry points, listed by ``kvae plugins``, trained, saved, and reloaded in a fresh
process by ``kvae.load_model`` alone.

The example packages in ``plugins/`` are installed into the running environment with pip
(``--no-deps``: kvae itself is this checkout) unless they are installed already, as tox
does before the tests. A throwaway package is built, installed and uninstalled here to
check the error for a model whose plugin is gone.
"""

import importlib
import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import kvae
from kvae import registry
from kvae.cli.plugins import plugins
from kvae.errors import ConfigError, PluginError, UnknownComponentError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = {
    "kvae-resnet": ROOT / "plugins" / "kvae-resnet",
    "kvae-sequence": ROOT / "plugins" / "kvae-sequence",
}
PIP_INSTALL = ("install", "--no-deps", "--no-build-isolation", "--no-input", "--quiet")


# -- helpers ----------------------------------------------------------------------------------


def _installed(dist):
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _pip(*args):
    out = subprocess.run(
        [sys.executable, "-m", "pip", *args],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert out.returncode == 0, f"pip {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}"


def _pip_install(source, workdir):
    """Install a package folder as a user would (a regular, not editable, install).

    From a copy, so that the build's by-products (build/, *.egg-info) stay out of the repo.
    """
    copy = Path(workdir) / source.name
    shutil.copytree(
        source, copy, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__")
    )
    _pip(*PIP_INSTALL, str(copy))
    importlib.invalidate_caches()
    registry.refresh()


def _clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVAE_")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def _run_fresh(tmp_path, code, *args):
    """Run ``code`` in a fresh Python process (cwd: tmp_path); return its last JSON line."""
    script = tmp_path / f"fresh_{uuid.uuid4().hex[:8]}.py"
    script.write_text(textwrap.dedent(code))
    out = subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        check=False,
        cwd=tmp_path,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, f"fresh process failed:\n{out.stdout}\n{out.stderr[-4000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def _invoke(*args):
    result = CliRunner().invoke(plugins, list(args), catch_exceptions=False)
    return result


@pytest.fixture(scope="module", autouse=True)
def example_plugins(tmp_path_factory):
    """The packages in plugins/, installed by pip if they are not already (tox installs them)."""
    for dist, source in EXAMPLES.items():
        if not _installed(dist):
            _pip_install(source, tmp_path_factory.mktemp(dist))
    registry.refresh()
    yield
    registry.refresh()


@pytest.fixture(autouse=True)
def default_registry(monkeypatch):
    monkeypatch.delenv(registry.AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(registry.STRICT_ENV, raising=False)
    previous = registry.set_strict(None)
    yield
    registry.set_strict(previous)
    registry.refresh()


def _source_version(dist):
    module = dist.replace("-", "_")
    text = (EXAMPLES[dist] / module / "__init__.py").read_text()
    return re.search(r'__version__ = "([^"]+)"', text).group(1)


# -- discovery --------------------------------------------------------------------------------


def test_installed_packages_add_their_names_to_every_group():
    assert {"resnet", "gru"} <= set(registry.names("encoders"))
    assert {"resnet", "gru"} <= set(registry.names("decoders"))
    assert "categorical" in registry.names("likelihoods")
    assert "toy-sequences" in registry.names("datasets")
    assert "toy-sequences" in kvae.datasets.names()
    for group, name, dist in [
        ("encoders", "resnet", "kvae-resnet"),
        ("decoders", "resnet", "kvae-resnet"),
        ("likelihoods", "categorical", "kvae-sequence"),
        ("datasets", "toy-sequences", "kvae-sequence"),
    ]:
        assert registry.provider(group, name) == (dist, _source_version(dist))
        assert registry.get(group, f"{dist}:{name}") is registry.get(group, name)


def test_installed_package_files_match_the_checkout():
    # A stale install (plugins/ edited since) would test old code: reinstall it then.
    for dist, source in EXAMPLES.items():
        module = importlib.import_module(dist.replace("-", "_"))
        installed = Path(module.__file__).read_text()
        current = (source / dist.replace("-", "_") / "__init__.py").read_text()
        assert installed == current, (
            f"The installed {dist} differs from {source}. Reinstall it: "
            f"pip install --no-deps --no-build-isolation {source}"
        )


def test_unknown_name_lists_the_plugins_and_the_nearest_match():
    with pytest.raises(UnknownComponentError) as info:
        kvae.VAE(encoder="resnett", data_shape=(32, 32, 3))
    text = str(info.value)
    assert "Did you mean 'resnet'?" in text
    assert "gru" in text and "mlp" in text


# -- the command line -------------------------------------------------------------------------


def _text_rows(output):
    lines = output.strip().splitlines()
    assert lines[0].split()[:5] == ["GROUP", "NAME", "PACKAGE", "VERSION", "LOADS"]
    return {tuple(line.split()[:2]): line.split()[2:] for line in lines[1:]}


def test_list_shows_group_name_package_version_and_load_status():
    result = _invoke("list")
    assert result.exit_code == 0, result.output
    rows = _text_rows(result.output)
    version = _source_version("kvae-resnet")
    assert rows[("encoders", "resnet")] == ["kvae-resnet", version, "ok"]
    assert rows[("decoders", "resnet")] == ["kvae-resnet", version, "ok"]
    assert rows[("likelihoods", "categorical")][0] == "kvae-sequence"
    assert rows[("datasets", "toy-sequences")][-1] == "ok"
    assert rows[("encoders", "mlp")] == ["kvae", kvae.__version__, "ok"]


def test_list_json_gives_the_same_as_data():
    result = _invoke("list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    by_key = {(r["group"], r["name"]): r for r in rows}
    resnet = by_key[("encoders", "resnet")]
    assert resnet == {
        "group": "encoders",
        "name": "resnet",
        "qualified_name": "kvae-resnet:resnet",
        "package": "kvae-resnet",
        "version": _source_version("kvae-resnet"),
        "value": "kvae_resnet:ResNetEncoder",
        "loads": True,
        "error": None,
    }
    text_keys = set(_text_rows(_invoke("list").output))
    assert set(by_key) == text_keys


def test_list_group_filter_and_no_check():
    result = _invoke("list", "--group", "likelihoods", "--no-check", "--json")
    rows = json.loads(result.output)
    assert {r["group"] for r in rows} == {"likelihoods"}
    assert {r["loads"] for r in rows} == {None}
    assert "categorical" in {r["name"] for r in rows}
    assert "not checked" in _invoke("list", "--no-check").output


def test_list_without_check_imports_neither_plugins_nor_tensorflow(tmp_path):
    result = _run_fresh(
        tmp_path,
        """
        import json, os, sys
        os.environ["KVAE_LAZY_IMPORT"] = "1"   # what the `kvae` console script gets
        from click.testing import CliRunner
        from kvae.cli.plugins import plugins
        out = CliRunner().invoke(plugins, ["list", "--no-check", "--json"])
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("tensorflow", "keras", "kvae_resnet", "kvae_sequence"))
        print(json.dumps({"code": out.exit_code, "rows": len(json.loads(out.output)), "heavy": heavy}))
        """,
    )
    assert result["code"] == 0
    assert result["rows"] >= 20
    assert result["heavy"] == []


def test_show_prints_the_docstring_and_the_configurable_arguments():
    result = _invoke("show", "resnet", "--group", "encoders")
    assert result.exit_code == 0, result.output
    text = result.output
    assert "kvae-resnet " + _source_version("kvae-resnet") in text
    assert "Residual convolutional encoder" in text  # the docstring
    arguments = text.split("Arguments:")[1]
    for line in ("filters = (32, 64)", "blocks = 1", "dense = 256", "activation = 'relu'"):
        assert line in arguments
    assert "data_shape =" not in arguments
    assert "Set by kvae.VAE: data_shape" in arguments


def test_show_a_name_of_two_groups_shows_both():
    result = _invoke("show", "resnet", "--json")
    shown = json.loads(result.output)
    assert [d["group"] for d in shown] == ["encoders", "decoders"]
    decoder = shown[1]
    assert decoder["value"] == "kvae_resnet:ResNetDecoder"
    assert decoder["set_by_kvae"] == ["data_shape"]
    assert [a["name"] for a in decoder["arguments"]] == [
        "filters",
        "blocks",
        "kernel_size",
        "activation",
    ]
    likelihood = json.loads(_invoke("show", "categorical", "--json").output)[0]
    assert likelihood["set_by_kvae"] == ["data_shape"]
    assert [a["name"] for a in likelihood["arguments"]] == ["vocab_size"]


def test_show_unknown_name_suggests_the_nearest():
    result = CliRunner().invoke(plugins, ["show", "catgorical"])
    assert result.exit_code == 1
    assert "Did you mean 'categorical'?" in result.output


# -- train, save, reload in a fresh process ---------------------------------------------------

RELOAD = """
    import json, sys
    import numpy as np
    import kvae

    infos = []
    args = sys.argv[1:]
    for model_path, data_path, out_path in zip(args[0::3], args[1::3], args[2::3]):
        before = sorted(m for m in sys.modules if m.startswith("kvae_"))
        model = kvae.load_model(model_path)
        data = np.load(data_path)
        np.savez(
            out_path,
            pred=model.predict(data["x"], verbose=0),
            qmean=np.asarray(model.encode(data["x"]).mean()),
        )
        infos.append({
            "before": before,
            "after": sorted(m for m in sys.modules if m.startswith("kvae_")),
            "providers": model.get_config()["providers"],
        })
    print(json.dumps(infos))
"""


def _resnet_case():
    x = np.random.default_rng(0).integers(0, 256, size=(8, 32, 32, 3)) / 256.0
    kwargs = dict(
        encoder="resnet",
        decoder="resnet",
        likelihood="discretized-logistic",
        data_shape=(32, 32, 3),
        encoder_kwargs={"filters": [8, 16], "dense": 16},
        decoder_kwargs={"filters": [16, 8]},
    )
    return x.astype("float32"), kwargs, "kvae-resnet", "kvae_resnet"


def _sequence_case():
    (x, _), _ = kvae.datasets.load("toy-sequences", n_train=8, n_test=1, length=12)
    kwargs = dict(
        encoder="gru",
        decoder="gru",
        likelihood="categorical",
        data_shape=(12,),
        encoder_kwargs={"units": 8, "embed_dim": 4},
        decoder_kwargs={"units": 8},
    )
    return x, kwargs, "kvae-sequence", "kvae_sequence"


@pytest.mark.slow
def test_trained_models_reload_in_a_fresh_process_through_the_entry_point(tmp_path):
    """Both example plugins' models, saved here and loaded in one fresh process, one after the
    other: each plugin module is imported by load_model (through its entry point), not by
    `import kvae` nor before its own model is loaded."""
    cases, args = [], []
    for case in (_resnet_case, _sequence_case):
        x, kwargs, dist, module = case()
        model = kvae.VAE(latent_dim=3, seed=0, **kwargs)
        model.compile(steps_per_execution=1)
        history = model.fit(x, epochs=1, batch_size=len(x), verbose=0)  # one step
        assert np.isfinite(history.history["loss"][-1])
        model.save(tmp_path / f"{module}.keras")
        np.savez(tmp_path / f"{module}.npz", x=x)
        args += [tmp_path / f"{module}.keras", tmp_path / f"{module}.npz"]
        args.append(tmp_path / f"{module}-got.npz")
        cases.append((x, model, dist, module))

    infos = _run_fresh(tmp_path, RELOAD, *args)

    for (x, model, dist, module), info in zip(cases, infos, strict=True):
        assert module not in info["before"], f"{module} imported before its model was loaded"
        assert module in info["after"], "load_model must import the plugin through its entry point"
        version = _source_version(dist)
        assert info["providers"]["encoder"] == [dist, version]
        assert info["providers"]["decoder"] == [dist, version]
        got = np.load(tmp_path / f"{module}-got.npz")
        np.testing.assert_allclose(got["pred"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            got["qmean"], np.asarray(model.encode(x).mean()), rtol=1e-5, atol=1e-5
        )


THROWAWAY_SETUP = """
from setuptools import setup

setup(
    name="{dist}",
    version="0.3.0",
    py_modules=["{module}"],
    entry_points={{"kvae.encoders": ["{name} = {module}:DenseEncoder"]}},
)
"""

THROWAWAY_MODULE = """
import keras


@keras.saving.register_keras_serializable(package="{module}")
class DenseEncoder(keras.layers.Layer):
    def __init__(self, data_shape, units=4, **kwargs):
        super().__init__(**kwargs)
        self.data_shape = tuple(data_shape)
        self.units = units
        self.dense = keras.layers.Dense(units, activation="tanh")

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, self.data_shape[0])))

    def get_config(self):
        return {{**super().get_config(), "data_shape": list(self.data_shape), "units": self.units}}
"""

LOAD_MISSING = """
    import json, sys
    import kvae

    try:
        kvae.load_model(sys.argv[1])
    except Exception as err:
        print(json.dumps({"type": type(err).__name__, "message": str(err)}))
    else:
        print(json.dumps({"type": None, "message": "loaded"}))
"""


@pytest.mark.slow
def test_model_whose_plugin_was_uninstalled_names_component_and_package(tmp_path):
    tag = uuid.uuid4().hex[:8]  # unique, so concurrent test runs do not collide
    dist, module, name = f"kvae-throwaway-{tag}", f"kvae_throwaway_{tag}", f"throwaway-{tag}"
    source = tmp_path / "src" / dist
    source.mkdir(parents=True)
    (source / "setup.py").write_text(THROWAWAY_SETUP.format(dist=dist, module=module, name=name))
    (source / f"{module}.py").write_text(THROWAWAY_MODULE.format(module=module))
    _pip_install(source, tmp_path)
    try:
        assert registry.provider("encoders", name) == (dist, "0.3.0")
        model = kvae.VAE(
            encoder=name, decoder="mlp", decoder_kwargs={"hidden": [4]}, data_shape=(6,)
        )
        model.compile(steps_per_execution=1)
        model.fit(np.full((4, 6), 0.5, "float32"), epochs=1, batch_size=4, verbose=0)
        path = tmp_path / "model.keras"
        model.save(path)
    finally:
        _pip("uninstall", "--yes", "--quiet", dist)
        sys.modules.pop(module, None)
        importlib.invalidate_caches()
        registry.refresh()
    assert name not in registry.names("encoders")

    info = _run_fresh(tmp_path, LOAD_MISSING, path)

    assert info["type"] == "ModelFileError", info
    assert repr(name) in info["message"]  # the component
    assert repr(dist) in info["message"]  # the package that provided it
    assert "0.3.0" in info["message"]
    assert f"pip install {dist}==0.3.0" in info["message"]


# -- broken plugins ---------------------------------------------------------------------------


BROKEN_MODULE = """
import keras

NOT_CALLABLE = 3


def builds_an_int(data_shape):
    return 3


class DropsBatch(keras.layers.Layer):
    def __init__(self, data_shape, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(4)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (keras.ops.shape(x)[0], -1)))[0]
"""


@pytest.fixture
def broken_dist(tmp_path, monkeypatch):
    """A package whose entry points are broken in every way, visible on sys.path."""
    site = tmp_path / "site"
    info = site / "kvae_broken_example-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: kvae-broken-example\nVersion: 1.0\n"
    )
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [kvae.encoders]
            missing-module = kvae_no_such_module_here:Encoder
            not-callable = kvae_broken_example:NOT_CALLABLE
            builds-no-layer = kvae_broken_example:builds_an_int
            drops-batch = kvae_broken_example:DropsBatch

            [kvae.decoders]
            bad-path = this is not a module path
            """
        )
    )
    (site / "kvae_broken_example.py").write_text(BROKEN_MODULE)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    registry.refresh()
    yield
    sys.modules.pop("kvae_broken_example", None)
    registry.refresh()


def test_broken_entry_points_are_listed_as_errors_and_the_rest_still_work(broken_dist):
    result = _invoke("list", "--json")
    assert result.exit_code == 0, result.output
    rows = {(r["group"], r["name"]): r for r in json.loads(result.output)}
    missing = rows[("encoders", "missing-module")]
    assert missing["loads"] is False and missing["package"] == "kvae-broken-example"
    assert "kvae_no_such_module_here" in missing["error"]
    assert "callable" in rows[("encoders", "not-callable")]["error"]
    assert "module:attr" in rows[("decoders", "bad-path")]["error"]
    assert rows[("encoders", "resnet")]["loads"] is True
    assert rows[("likelihoods", "categorical")]["loads"] is True

    text = _text_rows(_invoke("list").output)
    assert text[("encoders", "missing-module")][2] == "error:"
    assert text[("encoders", "resnet")][-1] == "ok"

    # The other plugins are still usable, the broken ones are named when used.
    assert registry.get("encoders", "resnet").__name__ == "ResNetEncoder"
    with pytest.raises(PluginError, match="not-callable"):
        kvae.VAE(encoder="not-callable")
    with pytest.raises(PluginError, match="builds-no-layer.*keras.layers.Layer"):
        kvae.VAE(encoder="builds-no-layer")
    with pytest.raises(ConfigError, match="encoder 'drops-batch'"):  # wrong output shape
        kvae.VAE(encoder="drops-batch")


def test_strict_mode_makes_plugins_list_fail_on_a_broken_plugin(broken_dist, monkeypatch):
    monkeypatch.setenv(registry.STRICT_ENV, "1")
    result = CliRunner().invoke(plugins, ["list", "--group", "decoders"])
    assert result.exit_code == 1
    assert "bad-path" in result.output
    assert "ok" in _text_rows(result.output.split("Error:")[0])[("decoders", "resnet")]
