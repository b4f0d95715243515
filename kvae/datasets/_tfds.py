"""TensorFlow Datasets prepared on disk, read as TFRecords (private; the public face is
kvae.datasets.image_dataset with a ``"tfds:NAME[/CONFIG][:VERSION]"`` source).

TFDS prepares a data set into ``DATA_DIR/NAME[/CONFIG]/VERSION/``: ``dataset_info.json`` (the
file format, and each split's name, file name template and records per shard),
``features.json`` (the feature types) and ``LABEL.labels.txt`` (a ClassLabel's names), beside
the split files ``NAME-SPLIT.tfrecord-00000-of-00002`` of ``tf.train.Example`` records whose
``image`` feature is the encoded PNG or JPEG and whose ``label`` is an int64. This module
reads that layout with kvae's TFRecord reader and never imports ``tensorflow_datasets``:
nothing is downloaded, a data set that is not prepared is an error saying where kvae looked.

Checked against the files tensorflow-datasets 4.9.10 (TensorFlow 2.21) writes.
"""

import json
import os
import re

import numpy as np

from kvae.errors import ConfigError, DataError

PREFIX = "tfds:"
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"  # TFDS' default
_IMAGE_CLASS = "tensorflow_datasets.core.features.image_feature.Image"
_CLASS_LABEL = "tensorflow_datasets.core.features.class_label_feature.ClassLabel"
_PREPARE = (
    "Prepare it on a machine with TensorFlow Datasets (`tfds build {name}`, or "
    "tfds.load({name!r}, download=True)) and copy its data directory here; kvae never downloads."
)


def is_tfds_source(source):
    """True for a ``"tfds:NAME[/CONFIG][:VERSION]"`` source."""
    return isinstance(source, str) and source.startswith(PREFIX)


def default_data_dir():
    """TFDS' own default: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.environ.get(
        "TFDS_DATA_DIR", os.path.join(os.path.expanduser("~"), "tensorflow_datasets")
    )


def parse(source):
    """``"tfds:name/config:1.2.3"`` -> ("name/config", "1.2.3"); the version may be None."""
    spec = source[len(PREFIX) :]
    name, _, version = spec.partition(":")
    parts = name.split("/")
    if not name or len(parts) > 2 or not all(parts) or (version and not _VERSION.match(version)):
        raise ConfigError(
            "Expected a TensorFlow Datasets source 'tfds:NAME', 'tfds:NAME/CONFIG', "
            f"'tfds:NAME:1.2.3' or 'tfds:NAME/CONFIG:1.2.3'. Received: {source!r}."
        )
    return name, version or None


def _versions(folder):
    names = os.listdir(folder) if os.path.isdir(folder) else []
    found = [v for v in names if _VERSION.match(v) and os.path.isdir(os.path.join(folder, v))]
    return sorted(found, key=lambda v: tuple(int(p) for p in v.split(".")))


def resolve(source, data_dir=None):
    """(the version folder, "tfds:name[/config]:version") of a prepared data set; a DataError
    naming the folder looked in when it is not there."""
    name, version = parse(source)
    data_dir = os.path.expanduser(os.fspath(data_dir or default_data_dir()))
    folder = os.path.join(data_dir, *name.split("/"))
    versions = _versions(folder)
    if not versions:
        configs = []
        if os.path.isdir(folder) and "/" not in name:
            configs = sorted(
                c
                for c in os.listdir(folder)
                if not c.startswith(".") and _versions(os.path.join(folder, c))
            )
        if configs:
            raise DataError(
                f"Expected a prepared version (x.y.z/) of {source!r} in {folder!r}. Received: "
                f"the configs {configs}. Name one: 'tfds:{name}/{configs[0]}'."
            )
        raise DataError(
            f"Expected TensorFlow Datasets' prepared {name!r} in {folder!r} (data_dir "
            f"{data_dir!r}; set data_dir or TFDS_DATA_DIR). Received: no prepared version there. "
            + _PREPARE.format(name=name)
        )
    if version is None:
        version = versions[-1]
    elif version not in versions:
        raise DataError(
            f"Expected version {version} of {name!r} in {folder!r}. Received: versions "
            f"{versions}. Use one of them ('tfds:{name}:{versions[-1]}'). "
            + _PREPARE.format(name=f"{name}:{version}")
        )
    path = os.path.join(folder, version)
    if not os.path.isfile(os.path.join(path, "dataset_info.json")):
        raise DataError(
            f"Expected dataset_info.json in {path!r}. Received: a folder without it (an "
            "unfinished preparation?). " + _PREPARE.format(name=name)
        )
    return path, f"{PREFIX}{name}:{version}"


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(
            f"Expected TensorFlow Datasets' metadata in {path!r}. Received: {err}."
        ) from None


def _features(path):
    """The top-level features of ``features.json``: {key: its description}."""
    spec = _read_json(os.path.join(path, "features.json"))
    return spec.get("featuresDict", {}).get("features", {})


def _check_image(features, image_key, where):
    feature = features.get(image_key)
    images = sorted(k for k, f in features.items() if f.get("pythonClassName") == _IMAGE_CLASS)
    hint = f"Name the image feature with image_key (images here: {images})." if images else ""
    if feature is None:
        raise DataError(
            f"Expected an image feature {image_key!r} in {where!r}. Received: features "
            f"{sorted(features)}. {hint or 'kvae reads encoded images (tfds.features.Image).'}"
        )
    kind = feature.get("pythonClassName", "?")
    if kind != _IMAGE_CLASS:
        raise DataError(
            f"Expected the feature {image_key!r} of {where!r} to be an encoded image "
            f"(tfds.features.Image, PNG or JPEG bytes). Received: {kind.rsplit('.', 1)[-1]} "
            f"({kind}). {hint or 'kvae reads encoded images only.'}"
        )


def _class_names(path, features, label_key):
    """The label feature's class names: LABEL.labels.txt, else "0".."n-1" of its
    numClasses; None when the feature is not a ClassLabel (the records then tell)."""
    feature = features.get(label_key) or {}
    if feature.get("pythonClassName") != _CLASS_LABEL:
        return None
    names_file = os.path.join(path, f"{label_key}.labels.txt")
    if os.path.isfile(names_file):
        with open(names_file, encoding="utf-8") as f:
            return [line.rstrip("\n") for line in f if line.rstrip("\n")]
    count = int(feature.get("classLabel", {}).get("numClasses", 0))
    return [str(i) for i in range(count)] or None


def _split_files(path, info, split, name):
    """A glob of the files of ``split`` (from its file name template) and its shard lengths."""
    template = split.get("filepathTemplate") or _TEMPLATE
    pattern = template.format(
        DATASET=name.split("/")[0],
        SPLIT=split["name"],
        FILEFORMAT=info.get("fileFormat", "tfrecord"),
        SHARD_X_OF_Y="*",
        SHARD_INDEX="*",
        NUM_SHARDS="*",
    )
    return os.path.join(path, pattern), [int(n) for n in split.get("shardLengths", [])]


def list_tfds(
    source,
    data_dir,
    labels,
    class_names,
    test_fraction,
    on_bad_file,
    image_key,
    label_key,
    decode_check,
):
    """:func:`kvae.datasets._tfrecord.list_records`'s tuple for the train and test splits of a
    prepared TFDS data set, then (class names or None, split, the pinned source).

    The test split is "test", else "validation"; a data set with neither holds out every
    ``1 / test_fraction``-th training record (split "fraction")."""
    from kvae.datasets._tfrecord import list_records

    path, pinned = resolve(source, data_dir)
    name = pinned[len(PREFIX) :].rsplit(":", 1)[0]
    if any(ch in path for ch in "*?["):
        raise ConfigError(f"Expected a data_dir without glob characters (*?[). Received: {path!r}.")
    info = _read_json(os.path.join(path, "dataset_info.json"))
    file_format = info.get("fileFormat", "tfrecord")
    if file_format != "tfrecord":
        raise DataError(
            f"Expected {pinned!r} prepared as TFRecord files. Received: fileFormat "
            f"{file_format!r} in {path!r}. Prepare it again with `tfds build {name} "
            "--file_format=tfrecord`."
        )
    features = _features(path)
    _check_image(features, image_key, pinned)
    names = _class_names(path, features, label_key) if labels is not None else None
    splits = {s["name"]: s for s in info.get("splits", [])}
    if "train" not in splits:
        raise DataError(
            f"Expected a 'train' split in {os.path.join(path, 'dataset_info.json')!r}. "
            f"Received: splits {sorted(splits)}."
        )
    test = next((s for s in ("test", "validation") if s in splits), None)
    found = []
    for part, split in enumerate(["train"] + ([test] if test else [])):
        pattern, lengths = _split_files(path, info, splits[split], name)
        fraction = 0.0 if test else test_fraction
        one = list(
            list_records(pattern, labels, fraction, on_bad_file, image_key, label_key, decode_check)
        )
        if one[4] != lengths:
            raise DataError(
                f"Expected the {split!r} split of {pinned!r} in {len(lengths)} files of "
                f"{lengths} records (dataset_info.json). Received: {len(one[4])} files "
                f"matching {pattern!r} of {one[4]} records. Prepare the data set again."
            )
        if part == 1:  # the test split's records: part 1 unless skipped (2)
            one[6] = [2 if p == 2 else 1 for p in one[6]]
        found.append(one)
    out = [sum((f[i] for f in found), []) for i in range(7)]
    record_labels = out[5]
    if names is not None and class_names is not None and list(class_names) != names:
        raise DataError(
            f"Expected the classes {list(class_names)} (class_names). Received: {names} in "
            f"{pinned!r}."
        )
    if names is not None and max(record_labels, default=-1) >= len(names):
        raise DataError(
            f"Expected labels below {len(names)} (the classes of {pinned!r}). Received: "
            f"{int(np.max(record_labels))}."
        )
    return (*out, names, "tfds" if test else "fraction", pinned)
