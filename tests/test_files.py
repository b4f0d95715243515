"""kvae._files: the one atomic writer and the JSON reader/writer of kvae's own files."""

import os

import pytest

from kvae import _files
from kvae.errors import ModelFileError


def test_atomic_path_keeps_the_suffix_and_replaces_only_on_success(tmp_path):
    target = tmp_path / "last.weights.h5"
    target.write_text("old")
    with _files.atomic_path(target) as tmp:
        # Keras refuses a weights file whose name does not end in .weights.h5.
        assert tmp.endswith(".weights.h5") and os.path.dirname(tmp) == str(tmp_path)
        with open(tmp, "w") as f:
            f.write("new")
    assert target.read_text() == "new"
    with pytest.raises(RuntimeError, match="half-way"):
        with _files.atomic_path(target) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise RuntimeError("half-way")
    assert target.read_text() == "new"  # untouched by the failed write
    assert sorted(os.listdir(tmp_path)) == ["last.weights.h5"]  # no temporary file left


def test_json_round_trip_and_format_check(tmp_path):
    path = tmp_path / "run.json"
    _files.write_json(path, {"format": "kvae-run", "loss": float("nan"), "b": [1, 2]})
    data = _files.read_json(path)
    assert data["b"] == [1, 2] and data["loss"] != data["loss"]  # NaN survives
    assert _files.read_format_json(path, "kvae-run", "run file")["format"] == "kvae-run"
    with pytest.raises(
        ModelFileError, match="format 'kvae-checkpoint'.*Received: format='kvae-run'"
    ):
        _files.read_format_json(path, "kvae-checkpoint", "checkpoint state")
    path.write_text("{not json")
    with pytest.raises(ModelFileError, match="is unreadable"):
        _files.read_format_json(path, "kvae-run", "run file")
    with pytest.raises(FileNotFoundError):
        _files.read_format_json(tmp_path / "none.json", "kvae-run", "run file")
