"""kvae.registry against real packaging metadata.

Fake distributions are written the way pytest's own tests make them: a
``<name>-<version>.dist-info`` folder (METADATA, entry_points.txt) and a module in a
temporary folder put on ``sys.path``; ``importlib.metadata`` is never mocked.
"""

import dataclasses
import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import kvae
from kvae import registry
from kvae.errors import ConfigError, KvaeError, PluginError, UnknownComponentError

ROOT = Path(__file__).resolve().parents[1]

GOOD_MODULE = """
class Enc:
    pass

def load():
    return "data"

NOT_CALLABLE = 3
"""


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch):
    monkeypatch.delenv(registry.AUTOLOAD_ENV, raising=False)
    monkeypatch.delenv(registry.STRICT_ENV, raising=False)
    previous = registry.set_strict(None)
    registry.refresh()
    yield
    registry.set_strict(False)  # listing below must not load anything
    for entry in registry.entries():
        if entry.dist is None:
            registry.unregister(entry.group, entry.name)
    registry.set_strict(previous)
    registry.refresh()


@pytest.fixture
def make_dist(tmp_path, monkeypatch):
    """make_dist(dist, version, {group: {name: value}}, {module: source}, where=None)."""
    made_modules = []
    counter = iter(range(1000))

    def make(dist, version, eps, modules=(), where=None):
        site = tmp_path / (where or f"site{next(counter)}")
        info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        lines = []
        for group, items in eps.items():
            lines.append(f"[kvae.{group}]")
            lines += [f"{name} = {value}" for name, value in items]
        (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
        for module, source in dict(modules).items():
            (site / f"{module}.py").write_text(textwrap.dedent(source))
            made_modules.append(module)
        monkeypatch.syspath_prepend(str(site))
        registry.refresh()
        return site

    yield make
    for module in made_modules:
        sys.modules.pop(module, None)


@pytest.fixture(autouse=True)
def no_builtin_component_imported():
    before = set(sys.modules)
    yield
    # Keeps this file fast: loading kvae's own components would import TensorFlow.
    new = {m for m in set(sys.modules) - before if m.startswith(("kvae.", "tensorflow"))}
    assert new <= {"kvae.registry"}


def message(excinfo):
    return str(excinfo.value)


# -- kvae's own components ----------------------------------------------------------------


def test_builtin_names_are_listed_without_importing_them():
    code = textwrap.dedent(
        """
        import json, sys
        import kvae.registry as r
        listed = {g: r.names(g) for g in r.GROUPS}
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")
                       or m.startswith(("kvae.networks", "kvae.heads", "kvae.priors",
                                        "kvae.datasets")))
        print(json.dumps({"names": listed, "heavy": heavy}))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVAE_")}
    env["KVAE_LAZY_IMPORT"] = "1"  # `import kvae` alone must not pull in the components
    env["KVAE_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # only kvae's own: plugins/ may be installed
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert "kvae.networks.mlp" not in result["heavy"]
    declared = importlib.metadata.distribution("kvae").entry_points
    for group in registry.GROUPS:
        expected = sorted(ep.name for ep in declared if ep.group == f"kvae.{group}")
        assert expected, f"kvae declares no {group}"
        assert result["names"][group] == expected
    assert "mlp" in result["names"]["encoders"]
    assert "mnist" in result["names"]["datasets"]


def test_builtins_come_from_the_kvae_distribution():
    assert registry.provider("encoders", "mlp") == ("kvae", kvae.__version__)
    assert registry.provider("encoders", "kvae:mlp") == ("kvae", kvae.__version__)
    own = [e for e in registry.entries("likelihoods") if e.dist == "kvae"]
    assert {e.name for e in own} >= {"bernoulli", "gaussian"}
    assert all(e.version == kvae.__version__ and ":" in e.value for e in own)


# -- lazy loading and broken plugins ------------------------------------------------------


def test_get_imports_the_module_on_first_use_only(make_dist):
    make_dist(
        "fake-lazy",
        "1.0",
        {
            "encoders": [("lazy", "fake_lazy_mod:Enc")],
            "datasets": [("toy", "fake_lazy_mod:load")],
        },
        {"fake_lazy_mod": GOOD_MODULE},
    )
    assert "lazy" in registry.names("encoders")
    assert "toy" in registry.names("datasets")
    registry.entries()
    assert "fake_lazy_mod" not in sys.modules

    enc = registry.get("encoders", "lazy")
    assert enc.__name__ == "Enc" and enc.__module__ == "fake_lazy_mod"
    assert registry.get("datasets", "toy")() == "data"
    # Cached by the registry, not just by sys.modules.
    del sys.modules["fake_lazy_mod"]
    assert registry.get("encoders", "lazy") is enc
    assert "fake_lazy_mod" not in sys.modules
    assert registry.provider("encoders", "lazy") == ("fake-lazy", "1.0")


def test_broken_plugin_is_named_and_does_not_take_others_down(make_dist, tmp_path):
    runs = tmp_path / "runs.txt"
    make_dist(
        "fake-broken",
        "2.3",
        {
            "encoders": [
                ("broken", "fake_broken_mod:Enc"),
                ("fine", "fake_fine_mod:Enc"),
            ]
        },
        {
            "fake_broken_mod": f"""
                open({str(runs)!r}, "a").write("x")
                raise ImportError("needs tensorflow_addons")
            """,
            "fake_fine_mod": GOOD_MODULE,
        },
    )
    assert {"broken", "fine", "mlp"} <= set(registry.names("encoders"))
    with pytest.raises(PluginError) as excinfo:
        registry.get("encoders", "broken")
    text = message(excinfo)
    for part in ("encoders", "'broken'", "fake_broken_mod:Enc", "fake-broken", "2.3"):
        assert part in text
    assert "ImportError: needs tensorflow_addons" in text
    assert isinstance(excinfo.value.__cause__, ImportError)
    assert str(excinfo.value.__cause__) == "needs tensorflow_addons"
    assert isinstance(excinfo.value, KvaeError) and isinstance(excinfo.value, ImportError)

    # The failure is remembered: the module is not executed a second time.
    with pytest.raises(PluginError, match="needs tensorflow_addons"):
        registry.get("encoders", "broken")
    assert runs.read_text() == "x"

    assert registry.get("encoders", "fine").__name__ == "Enc"
    mine = [e for e in registry.entries("encoders") if e.dist == "fake-broken"]
    status = {e.name: registry.check(e) for e in mine}
    assert status["fine"] == (True, None)
    ok, reason = status["broken"]
    assert not ok and "needs tensorflow_addons" in reason


def test_strict_mode_makes_a_broken_plugin_an_error_at_discovery(make_dist, monkeypatch):
    make_dist(
        "fake-strict",
        "1.0",
        {"priors": [("bad", "fake_strict_mod:Nothing")]},
        {"fake_strict_mod": "raise RuntimeError('boom at import')"},
    )
    assert "bad" in registry.names("priors")  # lazy by default

    monkeypatch.setenv(registry.STRICT_ENV, "1")
    assert registry.is_strict()
    with pytest.raises(PluginError, match="boom at import") as excinfo:
        registry.names("priors")
    assert "fake-strict" in message(excinfo)
    with pytest.raises(PluginError, match="'bad'"):
        registry.entries("priors")  # loads by name: "bad" before kvae's own priors

    registry.set_strict(False)  # the in-process setting wins over the environment
    assert "bad" in registry.names("priors")
    monkeypatch.delenv(registry.STRICT_ENV)
    registry.set_strict(True)
    with pytest.raises(PluginError):
        registry.names("priors")


def test_bad_environment_value_is_refused(monkeypatch):
    monkeypatch.setenv(registry.STRICT_ENV, "maybe")
    with pytest.raises(ConfigError, match="KVAE_STRICT_PLUGINS"):
        registry.is_strict()


def test_malformed_entry_points_are_reported_not_fatal(make_dist):
    make_dist(
        "fake-malformed",
        "0.1",
        {
            "decoders": [
                ("nocolon", "fake_malformed_mod"),
                ("nomodule", "fake_no_such_module_xyz:Thing"),
                ("noattr", "fake_malformed_mod:Missing"),
                ("notcallable", "fake_malformed_mod:NOT_CALLABLE"),
                ("BadName", "fake_malformed_mod:Enc"),
                ("good", "fake_malformed_mod:Enc"),
            ]
        },
        {"fake_malformed_mod": GOOD_MODULE},
    )
    listed = registry.names("decoders")
    assert "good" in listed and "BadName" not in listed
    mine = [e for e in registry.entries("decoders") if e.dist == "fake-malformed"]
    status = {e.name: registry.check(e) for e in mine}
    assert status["good"] == (True, None)
    assert "module:attr" in status["nocolon"][1]
    assert "ModuleNotFoundError" in status["nomodule"][1]
    assert "Missing" in status["noattr"][1]
    assert "callable" in status["notcallable"][1]
    assert "invalid name" in status["BadName"][1]

    with pytest.raises(PluginError, match="callable") as excinfo:
        registry.get("decoders", "notcallable")
    assert "fake-malformed" in message(excinfo)
    assert "fake_malformed_mod:NOT_CALLABLE" in message(excinfo)
    with pytest.raises(PluginError) as excinfo:
        registry.get("decoders", "nomodule")
    assert isinstance(excinfo.value.__cause__, ModuleNotFoundError)
    assert registry.get("decoders", "good").__name__ == "Enc"

    registry.set_strict(True)
    with pytest.raises(PluginError):
        registry.names("decoders")


def test_validate_requires_a_callable():
    registry.validate("datasets", "toy", lambda: None)
    with pytest.raises(PluginError, match="datasets plugin 'toy'.*callable"):
        registry.validate("datasets", "toy", [1, 2])


# -- which plugins are seen ---------------------------------------------------------------


def test_autoload_switch_hides_third_party_entry_points(make_dist, monkeypatch):
    make_dist(
        "fake-auto",
        "1.0",
        {"encoders": [("auto", "fake_auto_mod:Enc")]},
        {"fake_auto_mod": GOOD_MODULE},
    )
    assert "auto" in registry.names("encoders")
    assert registry.autoload_enabled()

    monkeypatch.setenv(registry.AUTOLOAD_ENV, "1")
    assert not registry.autoload_enabled()
    assert "auto" not in registry.names("encoders")
    assert "mlp" in registry.names("encoders")  # kvae's own stay
    assert {e.dist for e in registry.entries()} == {"kvae"}
    with pytest.raises(UnknownComponentError, match=registry.AUTOLOAD_ENV):
        registry.get("encoders", "auto")
    with pytest.raises(UnknownComponentError):
        registry.get("encoders", "fake-auto:auto")

    registry.register("encoders", "mine")(lambda: None)  # in-process ones stay too
    assert "mine" in registry.names("encoders")
    assert "fake_auto_mod" not in sys.modules


def test_two_packages_with_one_name_are_refused_unqualified(make_dist):
    make_dist(
        "fake-a",
        "1.0",
        {"encoders": [("twin", "fake_twin_a:Enc")]},
        {"fake_twin_a": GOOD_MODULE},
    )
    make_dist(
        "fake_b",
        "2.0",
        {"encoders": [("twin", "fake_twin_b:Enc")]},
        {"fake_twin_b": GOOD_MODULE},
    )
    listed = registry.names("encoders")
    assert "fake-a:twin" in listed and "fake-b:twin" in listed and "twin" not in listed

    with pytest.raises(ConfigError) as first:
        registry.get("encoders", "twin")
    with pytest.raises(ConfigError) as second:
        registry.provider("encoders", "twin")
    text = message(first)
    assert text == message(second)  # deterministic
    for part in (
        "ambiguous",
        "fake-a 1.0",
        "fake-b 2.0",
        "'fake-a:twin'",
        "'fake-b:twin'",
    ):
        assert part in text
    assert "fake_twin_a" not in sys.modules and "fake_twin_b" not in sys.modules

    assert registry.get("encoders", "fake-a:twin").__module__ == "fake_twin_a"
    assert registry.get("encoders", "fake-b:twin").__module__ == "fake_twin_b"
    # The package part is compared in its normalized form (PEP 503).
    assert registry.get("encoders", "Fake_B:twin").__module__ == "fake_twin_b"
    assert registry.provider("encoders", "fake-b:twin") == ("fake-b", "2.0")
    with pytest.raises(UnknownComponentError, match="fake-a, fake-b"):
        registry.get("encoders", "fake-c:twin")


def test_kvae_gets_no_precedence_over_other_packages(make_dist):
    make_dist(
        "fake-rival",
        "1.0",
        {"encoders": [("mlp", "fake_rival_mod:Enc")]},
        {"fake_rival_mod": GOOD_MODULE},
    )
    with pytest.raises(ConfigError, match="'fake-rival:mlp', 'kvae:mlp'"):
        registry.get("encoders", "mlp")
    assert {"kvae:mlp", "fake-rival:mlp", "conv"} <= set(registry.names("encoders"))
    assert registry.provider("encoders", "kvae:mlp") == ("kvae", kvae.__version__)
    assert registry.get("encoders", "fake-rival:mlp").__module__ == "fake_rival_mod"


def test_same_distribution_seen_twice_is_deduplicated(make_dist, tmp_path):
    for where in ("copy1", "copy2"):
        make_dist(
            "fake-dup",
            "1.0",
            {"encoders": [("dup", "fake_dup_mod:Enc"), ("dup", "fake_dup_mod:Enc")]},
            {"fake_dup_mod": GOOD_MODULE},
            where=where,
        )
    assert (
        sum(1 for d in importlib.metadata.distributions() if d.metadata["Name"] == "fake-dup") == 2
    )
    assert registry.names("encoders").count("dup") == 1
    assert [e.dist for e in registry.entries("encoders") if e.name == "dup"] == ["fake-dup"]
    assert registry.get("encoders", "dup").__name__ == "Enc"


# -- names --------------------------------------------------------------------------------


def test_unknown_name_lists_names_and_nearest_match(monkeypatch):
    monkeypatch.setenv(registry.AUTOLOAD_ENV, "1")  # plugins/ may be installed
    with pytest.raises(UnknownComponentError) as excinfo:
        registry.get("encoders", "mpl")
    text = message(excinfo)
    assert "Did you mean 'mlp'?" in text
    assert "conv, mlp" in text
    assert isinstance(excinfo.value, LookupError)
    with pytest.raises(UnknownComponentError, match="Did you mean 'standard-normal'"):
        registry.get("priors", "standard_normal")


def test_unknown_group_lists_groups():
    with pytest.raises(ConfigError, match="Did you mean 'encoders'.*decoders, posteriors"):
        registry.get("encoder", "mlp")
    with pytest.raises(ConfigError):
        registry.names("layers")
    with pytest.raises(ConfigError):
        registry.register("layers", "x")


@pytest.mark.parametrize(
    "name",
    [
        "MLP",
        "1mlp",
        "my enc",
        "",
        "x" * 65,
        "-x",
        "a:b:c",
        ":mlp",
        "pkg:",
        "pkg!:mlp",
        3,
        None,
    ],
)
def test_invalid_names_are_rejected_with_the_rule(name):
    with pytest.raises(ConfigError, match=r"\[a-z\]\[a-z0-9_.-\]\*"):
        registry.get("encoders", name)


def test_longest_valid_name_is_accepted():
    name = "x" * registry.MAX_NAME_LENGTH
    registry.register("encoders", name)(lambda: None)
    assert name in registry.names("encoders")


def test_entry_is_frozen_and_lists_what_the_cli_needs():
    entry = next(e for e in registry.entries("encoders") if e.name == "mlp")
    assert (entry.group, entry.dist, entry.version) == (
        "encoders",
        "kvae",
        kvae.__version__,
    )
    assert entry.value == "kvae.networks.mlp:MLPEncoder"
    assert entry.qualified_name == "kvae:mlp"
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.name = "other"
    groups = [e.group for e in registry.entries()]
    assert groups == sorted(groups, key=registry.GROUPS.index)


# -- in-process registration --------------------------------------------------------------


def test_register_decorator_with_derived_name():
    @registry.register("encoders")
    class MyFancyEncoder:
        pass

    @kvae.registry.register("datasets")
    def load_toy_data():
        return "toy"

    assert registry.get("encoders", "my-fancy-encoder") is MyFancyEncoder
    assert registry.get("datasets", "load-toy-data")() == "toy"
    assert "my-fancy-encoder" in registry.names("encoders")
    assert registry.provider("encoders", "my-fancy-encoder") == (None, None)
    entry = next(e for e in registry.entries("encoders") if e.name == "my-fancy-encoder")
    assert entry.dist is None and entry.version is None
    assert entry.value.endswith(
        ":test_register_decorator_with_derived_name.<locals>.MyFancyEncoder"
    )
    assert registry.check(entry) == (True, None)
    assert entry.load() is MyFancyEncoder


def test_register_refuses_existing_names_unless_override():
    def first():
        return 1

    def second():
        return 2

    registry.register("decoders", "mine")(first)
    registry.register("decoders", "mine")(first)  # the same object again is harmless
    with pytest.raises(ConfigError, match="already taken.*override=True"):
        registry.register("decoders", "mine")(second)
    registry.register("decoders", "mine", override=True)(second)
    assert registry.get("decoders", "mine") is second

    with pytest.raises(ConfigError, match="package kvae"):
        registry.register("encoders", "mlp")(first)
    registry.register("encoders", "mlp", override=True)(first)
    assert registry.get("encoders", "mlp") is first
    assert registry.provider("encoders", "mlp") == (None, None)
    assert registry.provider("encoders", "kvae:mlp")[0] == "kvae"
    assert registry.names("encoders").count("mlp") == 1
    assert "kvae:mlp" in registry.names("encoders")

    registry.unregister("encoders", "mlp")
    assert registry.provider("encoders", "mlp")[0] == "kvae"
    with pytest.raises(UnknownComponentError, match="only names added with register"):
        registry.unregister("encoders", "mlp")


def test_redefinition_of_the_same_object_replaces_it():
    def define():  # a notebook cell run twice: a new object, same module and qualname
        class Cell:
            pass

        return Cell

    one, two = define(), define()
    registry.register("priors", "cell")(one)
    registry.register("priors", "cell")(two)
    assert registry.get("priors", "cell") is two


def test_register_rejects_bad_arguments():
    with pytest.raises(ConfigError, match="Invalid encoders name"):
        registry.register("encoders", "Bad Name")
    with pytest.raises(ConfigError, match="unqualified"):
        registry.register("encoders", "pkg:name")

    class Forgot:
        pass

    with pytest.raises(ConfigError, match=r"register\('encoders'\)\(obj\)"):
        registry.register("encoders", Forgot)
    with pytest.raises(ConfigError, match="callable"):
        registry.register("encoders", "three")(3)
    with pytest.raises(ConfigError, match="Could not derive"):
        registry.register("encoders")(lambda: None)
