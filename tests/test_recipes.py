"""Named recipes (kvae train --recipe NAME) and Burda et al.'s learning-rate schedule."""

import json

import pytest
from click.testing import CliRunner

from kvae import recipes
from kvae.cli import main
from kvae.config import TrainConfig
from kvae.errors import ConfigError


def test_burda_schedule():
    """3^i epochs at 1e-3 * 10^(-i/7): epoch 0 at 1e-3, epochs 1-3 at stage 1, 4-12 at
    stage 2, ..., the last 2,187 epochs (1,093..3,279) at stage 7; a shortened run (any
    number of epochs) is the start of this one, and past 3,280 the last rate holds."""
    lr = recipes.burda_learning_rate
    assert lr(0) == pytest.approx(1e-3)
    for epoch in (1, 3):
        assert lr(epoch) == pytest.approx(1e-3 * 10 ** (-1 / 7))
    assert lr(4) == pytest.approx(1e-3 * 10 ** (-2 / 7))
    assert lr(12) == pytest.approx(1e-3 * 10 ** (-2 / 7))
    assert lr(13) == pytest.approx(1e-3 * 10 ** (-3 / 7))
    assert lr(39) == pytest.approx(1e-3 * 10 ** (-3 / 7))
    assert lr(40) == pytest.approx(1e-3 * 10 ** (-4 / 7))
    assert lr(1092) == pytest.approx(1e-3 * 10 ** (-6 / 7))
    assert lr(1093) == pytest.approx(1e-4)
    assert lr(3279) == pytest.approx(1e-4)
    assert lr(5000) == pytest.approx(1e-4)
    assert lr(0, base=2e-3) == pytest.approx(2e-3)
    rates = [lr(e) for e in range(3280)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False))  # never increases
    assert sum(r == pytest.approx(1e-4) for r in rates) == 2187


def test_recipes_are_valid_configs_and_listed_by_the_cli():
    for name in recipes.names():
        config = TrainConfig.from_dict(recipes.recipe(name))
        if name == "hvae":
            assert config.latent_dim == 150 and config.encoder_kwargs["hidden"] == [100, 100]
        else:
            assert config.latent_dim == 50 and config.encoder_kwargs["hidden"] == [200, 200]
        assert config.binarize == "dynamic" and config.lr_schedule == "burda"
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert "[burda-vae|burda-iwae|vamp|iaf|hvae]" in help_text.replace("\n", "").replace(" ", "")
    assert set(recipes.names()) == {"burda-vae", "burda-iwae", "vamp", "iaf", "hvae"}
    with pytest.raises(ConfigError, match="recipe"):
        recipes.recipe("vae")


def test_recipe_trains_from_the_cli_with_overrides(tmp_path):
    run = tmp_path / "run"
    args = ["train", "--recipe", "burda-iwae", "--epochs", "2", "-d", "digits"]
    args += ["--max-train-examples", "100", "--max-test-examples", "20", "-b", "50"]
    args += ["--eval-num-samples", "0", "--progress", "none", "--run-dir", str(run)]
    result = CliRunner().invoke(main, args, prog_name="kvae")
    assert result.exit_code == 0, result.output
    with open(run / "config.json") as f:
        config = json.load(f)
    assert config["epochs"] == 2 and config["objective"] == "iwae" and config["num_samples"] == 5
    assert config["lr_schedule"] == "burda" and config["decoder_kwargs"]["activation"] == "tanh"
    result = CliRunner().invoke(main, [*args[:3], "--config", "x.yaml"], prog_name="kvae")
    assert result.exit_code != 0 and "--recipe without --config" in result.output


def test_families_table_summarises_runs_per_recipe(tmp_path, capsys):
    """scripts/families_table.py --table-from: mean and spread (sample sd) over seeds per
    recipe, in the published order, from saved JSON lines (no training)."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "scripts" / "families_table.py"
    spec = importlib.util.spec_from_file_location("families_table", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = [
        {"recipe": "iaf", "nll": 99.0, "nll_stderr": 1.0, "total_seconds": 60.0},
        {"recipe": "burda-vae", "nll": 100.0, "nll_stderr": 1.2, "total_seconds": 120.0},
        {"recipe": "burda-vae", "nll": 102.0, "nll_stderr": 1.4, "total_seconds": 180.0},
    ]
    saved = tmp_path / "runs.jsonl"
    saved.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert module.main(["--table-from", str(saved)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2].startswith("| burda-vae | 101.00 | 1.41 | 1.30 | 2 | 2.5 min |")
    assert lines[3].startswith("| iaf | 99.00 | nan | 1.00 | 1 | 1.0 min |")
    assert len(lines) == 4
