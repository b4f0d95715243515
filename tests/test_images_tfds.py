"""image_dataset("tfds:NAME"): TensorFlow Datasets prepared on disk, read without TFDS.

``write_tfds`` writes the layout tensorflow-datasets 4.9.10 writes (checked file by file
against a data set it prepared: the same dataset_info.json and features.json keys, the same
``NAME-SPLIT.tfrecord-0000x-of-0000y`` files of tf.train.Example records, image PNG bytes under
"image", int64 "label", ``label.labels.txt``), so these tests need no tensorflow-datasets.
"""

import json
import os
import socket
import sys

import numpy as np
import pytest
import tensorflow as tf

from kvae import datasets
from kvae.datasets.sources import is_streamed
from kvae.errors import ConfigError, DataError

_IMAGE = "tensorflow_datasets.core.features.image_feature.Image"
_LABEL = "tensorflow_datasets.core.features.class_label_feature.ClassLabel"
_TENSOR = "tensorflow_datasets.core.features.tensor_feature.Tensor"


def _image_feature(shape):
    return {
        "image": {"dtype": "uint8", "shape": {"dimensions": [str(d) for d in shape]}},
        "pythonClassName": _IMAGE,
    }


def write_tfds(
    data_dir,
    name,
    version,
    splits,
    *,
    config=None,
    shape=(6, 5, 3),
    label_names=("circle", "square", "triangle"),
    image_feature=None,
):
    """A prepared TFDS data set: ``splits`` maps a split name to its shards, each a list of
    (pixel value, label) records (image ``shape`` filled with the value). Returns the folder."""
    folder = os.path.join(data_dir, name, *([config] if config else []), version)
    os.makedirs(folder)
    split_infos = []
    for split, shards in splits.items():
        for i, records in enumerate(shards):
            path = os.path.join(folder, f"{name}-{split}.tfrecord-{i:05d}-of-{len(shards):05d}")
            with tf.io.TFRecordWriter(path) as writer:
                for value, label in records:
                    png = tf.io.encode_png(np.full(shape, value, np.uint8)).numpy()
                    feature = {
                        "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[png])),
                        "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                    }
                    example = tf.train.Example(features=tf.train.Features(feature=feature))
                    writer.write(example.SerializeToString())
        split_infos.append(
            {
                "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                "name": split,
                "numBytes": "100",
                "shardLengths": [str(len(records)) for records in shards],
            }
        )
    info = {"fileFormat": "tfrecord", "moduleName": "__main__", "name": name}
    info.update({"configName": config} if config else {})
    info.update(splits=split_infos, version=version)
    with open(os.path.join(folder, "dataset_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    label = {"classLabel": {"numClasses": str(len(label_names))}, "pythonClassName": _LABEL}
    features = {"image": image_feature or _image_feature(shape), "label": label}
    spec = {
        "featuresDict": {"features": features},
        "pythonClassName": "tensorflow_datasets.core.features.features_dict.FeaturesDict",
    }
    with open(os.path.join(folder, "features.json"), "w") as f:
        json.dump(spec, f, indent=4)
    with open(os.path.join(folder, "label.labels.txt"), "w") as f:
        f.write("".join(n + "\n" for n in label_names))
    return folder


TRAIN = [[(10, 0), (11, 1), (12, 2), (13, 0)], [(14, 1), (15, 2), (16, 0)]]
TEST = [[(100, 1), (101, 2)], [(102, 0)]]


def _records(ds):
    """Sorted (pixel value, label) of a split's real (weight > 0) images."""
    out = []
    for x, y, w in ds:
        keep = w.numpy() > 0
        values = np.round(x.numpy()[keep][:, 0, 0, 0] * 256).astype(int)
        out += zip(values.tolist(), y.numpy()[keep].tolist(), strict=True)
    return sorted(out)


def test_reads_the_splits_labels_and_class_names(tmp_path):
    write_tfds(tmp_path, "tiny_shapes", "1.0.0", {"train": TRAIN, "test": TEST})
    train, test, info = datasets.image_dataset(
        "tfds:tiny_shapes", data_dir=tmp_path, batch_size=4, pixels="uint8"
    )
    assert info.source == "tfds:tiny_shapes:1.0.0"
    assert (info.kind, info.split) == ("tfrecord", "tfds")
    assert (info.num_train, info.num_test) == (7, 3)
    assert info.class_names == ("circle", "square", "triangle")
    assert info.data_shape == (6, 5, 3)
    assert _records(train) == sorted(r for shard in TRAIN for r in shard)
    assert _records(test) == sorted(r for shard in TEST for r in shard)
    assert is_streamed("tfds:tiny_shapes")


def test_version_config_and_the_latest_version(tmp_path):
    write_tfds(tmp_path, "tiny", "1.9.0", {"train": [[(1, 0)]], "test": [[(2, 0)]]})
    write_tfds(tmp_path, "tiny", "1.10.0", {"train": [[(3, 0)]], "test": [[(4, 0)]]})
    write_tfds(tmp_path, "tiny", "2.0.0", {"train": [[(5, 1)]], "test": [[(6, 1)]]}, config="big")
    for source, pinned, value in [
        ("tfds:tiny", "tfds:tiny:1.10.0", 3),  # the latest by number, not by name
        ("tfds:tiny:1.9.0", "tfds:tiny:1.9.0", 1),
        ("tfds:tiny/big", "tfds:tiny/big:2.0.0", 5),
        ("tfds:tiny/big:2.0.0", "tfds:tiny/big:2.0.0", 5),
    ]:
        train, _, info = datasets.image_dataset(
            source, data_dir=tmp_path, batch_size=1, pixels="uint8"
        )
        assert info.source == pinned
        assert _records(train)[0][0] == value, source


def test_default_data_dir_is_tfds_data_dir(tmp_path, monkeypatch):
    write_tfds(tmp_path, "tiny", "1.0.0", {"train": TRAIN, "test": TEST})
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    _, _, info = datasets.image_dataset("tfds:tiny")
    assert info.num_train == 7


def test_missing_name_or_version_errors_in_one_line(tmp_path):
    write_tfds(tmp_path, "tiny", "1.0.0", {"train": TRAIN, "test": TEST})
    write_tfds(tmp_path, "multi", "1.0.0", {"train": TRAIN}, config="small")
    cases = [
        ("tfds:nope", os.path.join(tmp_path, "nope"), "tfds build nope"),
        ("tfds:tiny:2.0.0", os.path.join(tmp_path, "tiny"), "versions ['1.0.0']"),
        ("tfds:multi", os.path.join(tmp_path, "multi"), "'tfds:multi/small'"),
    ]
    for source, folder, hint in cases:
        with pytest.raises(DataError) as err:
            datasets.image_dataset(source, data_dir=tmp_path)
        message = str(err.value)
        assert "\n" not in message and repr(folder) in message and hint in message, message
    with pytest.raises(ConfigError, match="tfds:NAME:1.2.3"):
        datasets.image_dataset("tfds:tiny:latest", data_dir=tmp_path)
    with pytest.raises(ConfigError, match="data_dir only with"):
        datasets.image_dataset(str(tmp_path), data_dir=tmp_path)


def test_image_feature_not_an_encoded_image(tmp_path):
    tensor = {"pythonClassName": _TENSOR, "tensor": {"dtype": "uint8", "encoding": "none"}}
    write_tfds(tmp_path, "raw", "1.0.0", {"train": TRAIN}, image_feature=tensor)
    with pytest.raises(DataError, match=r"to be an encoded image .* Received: Tensor"):
        datasets.image_dataset("tfds:raw", data_dir=tmp_path)
    write_tfds(tmp_path, "tiny", "1.0.0", {"train": TRAIN, "test": TEST})
    with pytest.raises(
        DataError, match=r"Expected an image feature 'photo'.*images here: \['image'"
    ):
        datasets.image_dataset("tfds:tiny", data_dir=tmp_path, image_key="photo")


def test_validation_split_or_a_fraction_is_the_test_set(tmp_path):
    write_tfds(tmp_path, "val", "1.0.0", {"train": TRAIN, "validation": TEST})
    _, test, info = datasets.image_dataset("tfds:val", data_dir=tmp_path, pixels="uint8")
    assert (info.split, info.num_test) == ("tfds", 3)
    assert _records(test) == sorted(r for shard in TEST for r in shard)
    write_tfds(tmp_path, "solo", "1.0.0", {"train": TRAIN})
    _, _, info = datasets.image_dataset("tfds:solo", data_dir=tmp_path, test_fraction=0.5)
    assert (info.split, info.num_train, info.num_test) == ("fraction", 4, 3)


def test_shards_missing_from_the_metadata_error(tmp_path):
    folder = write_tfds(tmp_path, "cut", "1.0.0", {"train": TRAIN, "test": TEST})
    os.remove(os.path.join(folder, "cut-train.tfrecord-00001-of-00002"))
    with pytest.raises(DataError, match=r"in 2 files of \[4, 3\] records"):
        datasets.image_dataset("tfds:cut", data_dir=tmp_path)


def test_never_imports_tensorflow_datasets_nor_uses_the_network(tmp_path, monkeypatch):
    write_tfds(tmp_path, "tiny", "1.0.0", {"train": TRAIN, "test": TEST})
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # importing it fails

    def no_network(*args, **kwargs):
        raise AssertionError("kvae tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    train, _, info = datasets.image_dataset("tfds:tiny", data_dir=tmp_path, pixels="uint8")
    assert len(_records(train)) == 7
    with pytest.raises(DataError, match="kvae never downloads"):
        datasets.image_dataset("tfds:mnist", data_dir=tmp_path)


def test_labels_outside_the_class_names_and_other_class_names_error(tmp_path):
    write_tfds(tmp_path, "two", "1.0.0", {"train": TRAIN}, label_names=("a", "b"))
    with pytest.raises(DataError, match=r"Expected labels below 2 .* Received: 2"):
        datasets.image_dataset("tfds:two", data_dir=tmp_path)
    write_tfds(tmp_path, "tiny", "1.0.0", {"train": TRAIN, "test": TEST})
    with pytest.raises(DataError, match=r"Expected the classes \['x'\]"):
        datasets.image_dataset("tfds:tiny", data_dir=tmp_path, class_names=["x"])
    _, _, info = datasets.image_dataset("tfds:tiny", data_dir=tmp_path, labels=None)
    assert info.class_names is None


def test_other_file_formats_error(tmp_path):
    folder = write_tfds(tmp_path, "arr", "1.0.0", {"train": TRAIN})
    path = os.path.join(folder, "dataset_info.json")
    with open(path) as f:
        info = json.load(f)
    with open(path, "w") as f:
        json.dump({**info, "fileFormat": "array_record"}, f)
    with pytest.raises(DataError, match="Received: fileFormat 'array_record'.*--file_format="):
        datasets.image_dataset("tfds:arr", data_dir=tmp_path)


def test_kvae_train_and_evaluate_a_tfds_data_set(tmp_path):
    from click.testing import CliRunner

    from kvae.cli import main

    def kvae(*args):
        return CliRunner().invoke(main, [str(a) for a in args], prog_name="kvae")

    write_tfds(tmp_path / "tfds", "tiny", "1.0.0", {"train": TRAIN, "test": TEST})
    run = tmp_path / "run"
    result = kvae(
        "train", "--dataset", "tfds:tiny", "--dataset-kwargs",
        json.dumps({"data_dir": str(tmp_path / "tfds")}), "--encoder", "conv", "--decoder",
        "conv", "-z", "2", "--epochs", "1", "-b", "4", "--progress", "none", "--no-projector",
        "--image-every", "0", "--run-dir", run,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == "tfds:tiny:1.0.0"  # the version read, pinned
    assert config["dataset_kwargs"]["class_names"] == ["circle", "square", "triangle"]
    assert json.loads((run / "metrics.json").read_text())["num_examples"] == 3
    evaluated = kvae("evaluate", run)
    assert evaluated.exit_code == 0, evaluated.output
