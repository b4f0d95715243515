"""Images from a folder or from TFRecord files, streamed by ``tf.data``: never loaded whole.

    from kvae import datasets
    train, test, info = datasets.image_dataset("photos/", image_size=64, batch_size=64)
    model.fit(train, epochs=10, validation_data=test)
    info.to_dict()        # the split, labels and preprocessing, JSON-able (config.json)
    datasets.image_dataset("other_photos/", **info.options())   # the same preprocessing again

Sources:

* **A folder** of PNG, JPEG, BMP and GIF files (found by their extension, in sub-folders too;
  names starting with "." are skipped). Sub-folders are classes, the layout
  ``keras.utils.image_dataset_from_directory`` reads: ``photos/cats/*.png``,
  ``photos/dogs/*.png`` give labels 0 (cats) and 1 (dogs), classes sorted by name; images
  directly in the folder have no label. A folder holding exactly ``train/`` and ``test/``
  (each laid out as above) is used as its own split; otherwise every ``1 / test_fraction``-th
  file in sorted order is held out as the test set (``test_fraction=0.1``: files 9, 19, 29,
  ...), the deterministic rule of :func:`kvae.datasets.load_npz`, the same on every machine.
* **TFRecord files** (a path or a glob such as ``"data/train-*.tfrecord"``) of
  ``tf.train.Example`` records holding encoded image bytes under ``image_key`` (default
  ``"image"``) and, optionally, an integer label under ``label_key`` (default ``"label"``).
  Records are held out by their index across the files in sorted order, with the same rule.
* **A TensorFlow Datasets data set prepared on disk**: ``"tfds:mnist"``,
  ``"tfds:mnist:3.0.1"``, ``"tfds:NAME/CONFIG:VERSION"``, found under ``data_dir`` (default
  ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``; the latest version unless one is named).
  Its TFRecord files are read as above, without importing ``tensorflow_datasets`` and never
  downloading: the "train" split, and "test" (else "validation") as the test set; the class
  names are the label feature's (``kvae.datasets._tfds``).

Before anything is decoded, every file (every record) is listed and its header probed
(``kvae.datasets._probe``: size, channels, truncation), so a bad file is named by its path
before training starts: ``on_bad_file="error"`` (default) raises, ``"skip"`` leaves such files
out and lists them in the record's ``skipped``. A file whose header is sound but whose body
does not decode is found by decoding: ``on_bad_file="skip"`` decodes every file once up front
(``decode_check``) and leaves such files out too; otherwise the stream stops when it reaches
one, with an error naming the file (``kvae.datasets.images.decode_failure``). Images of different sizes need
``image_size``; otherwise one error names two of the files and their sizes.

Preprocessing (:class:`ImageData` records it):

* ``color_mode``: ``"auto"`` (3 channels if any image is in colour, else 1), ``"rgb"`` or
  ``"grayscale"``. Grey images in a colour set are converted (one warning says how many);
  alpha channels are dropped.
* ``image_size``: None (keep the size: all images must share it), an int (square) or
  (height, width). ``resize="crop"`` (default) is Keras' ``crop_to_aspect_ratio``: the largest
  centred box of the target aspect ratio is cut out, then resized (bilinear, antialiased);
  nothing is stretched. ``resize="pad"`` fits the whole image in and pads with black
  (``tf.image.resize_with_pad``, Keras' ``pad_to_aspect_ratio``).
* ``pixels``: ``"unit"`` gives float32 values v / 255 in [0, 1] (the Bernoulli-type and
  Gaussian likelihoods); ``"uint8"`` keeps the 256 levels of 8-bit data, as float32 k / 256
  (kvae's uint8 convention, the one MNIST uses: the discretised logistic reads them as bin k
  exactly), rounding resized values to the nearest level.

The pipeline: the file list -> a fresh stateless shuffle of the files every epoch (``seed``)
-> read and decode in parallel (``tf.io.decode_image`` with ``expand_animations=False``; a
GIF gives its first frame) -> resize -> batches of ``batch_size`` -> prefetch. Every batch has
one static shape: by default the last batch of an epoch is topped up with repeated images of
weight 0 and the elements are kvae's ``(x, y, weight)`` triples (as
:func:`kvae.datasets.make_dataset` with ``pad=True``; ``y`` is the label, or x when the data has
none), so each epoch weighs every image exactly once; ``drop_remainder=True`` gives plain
``(x, y)`` pairs and drops the last partial batch instead. The test set is never shuffled and
always padded. ``cache="memory"`` or a file path keeps the decoded images after the first
epoch (decoding then happens once, in file order, and the shuffle becomes a buffer of
``shuffle_buffer`` images). As in :mod:`kvae.datasets.pipeline`, tf.data's autotuning is off.
"""

from __future__ import annotations

import dataclasses
import os
import warnings

import numpy as np

from kvae.config import parse_image_size
from kvae.datasets._probe import BadImage, probe
from kvae.datasets._stream import (
    FAILED,
    NAME_END,
    checked_files,
    decode_reason,
    decoder_of,
    finish_pass,
    parallel_calls,
    seal,
    undecodable,
)
from kvae.datasets._tfds import is_tfds_source
from kvae.datasets.npz import _holdout_mask
from kvae.datasets.pipeline import _check_int
from kvae.errors import ConfigError, DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageData",
    "image_dataset",
    "list_images",
    "decode_failure",
    "parse_image_size",
    "shard",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
COLOR_MODES = ("auto", "rgb", "grayscale")
RESIZE = ("crop", "pad")
PIXELS = ("unit", "uint8")
ON_BAD_FILE = ("error", "skip")
_TFRECORD_SUFFIXES = (".tfrecord", ".tfrecords", ".tfrec")
_SHUFFLE_BUFFER = 4096


@dataclasses.dataclass(frozen=True)
class ImageData:
    """What :func:`list_images` found and how the images are preprocessed: inert data.

    ``to_dict()`` is JSON-able (without the file lists unless asked) and ``from_dict`` reads it
    back; ``options()`` are the keyword arguments of :func:`image_dataset` that apply the same
    preprocessing (size, channels, resize policy, pixel scaling, class names, keys) to another
    source.

    Attributes:
        source: the folder, the TFRecord path or glob, or "tfds:NAME[/CONFIG]:VERSION" (the
            version read).
        kind: "folder" or "tfrecord" (TensorFlow Datasets' files are TFRecords).
        split: "folders" (train/ and test/ sub-folders), "tfds" (TensorFlow Datasets' splits)
            or "fraction" (held out by index).
        test_fraction: the held-out share for split "fraction".
        class_names: class names, label i = class_names[i]; None without labels.
        image_size: (height, width) of the images produced.
        channels: 1 or 3.
        resize: "crop", "pad", or None (no resizing: every image had ``image_size``).
        pixels: "unit" or "uint8" (see the module docstring).
        num_train, num_test: images in each split.
        skipped: (path, reason) of the files left out with ``on_bad_file="skip"``.
        converted: images converted to the data set's channels (grey in a colour set).
        image_key, label_key: the feature keys of TFRecord sources (None for folders).
        train_files, test_files: the files of each split (for TFRecords, train_files are the
            record files, holding both splits).
    """

    source: str
    kind: str
    split: str
    test_fraction: float
    class_names: tuple | None
    image_size: tuple
    channels: int
    resize: str | None
    pixels: str
    num_train: int
    num_test: int
    skipped: tuple = ()
    converted: int = 0
    image_key: str | None = None
    label_key: str | None = None
    train_files: tuple = dataclasses.field(default=(), repr=False)
    test_files: tuple = dataclasses.field(default=(), repr=False)
    # Folders: the label of each file of train_files / test_files. TFRecords: the label
    # (-1: none) and the part (0 train, 1 test, 2 skipped) of every record, in file order.
    train_labels: tuple = dataclasses.field(default=(), repr=False)
    test_labels: tuple = dataclasses.field(default=(), repr=False)
    record_parts: tuple = dataclasses.field(default=(), repr=False)
    record_counts: tuple = dataclasses.field(default=(), repr=False)

    @property
    def data_shape(self):
        """``(height, width, channels)``: the model's ``data_shape``."""
        return (*self.image_size, self.channels)

    def options(self):
        """Keyword arguments of :func:`image_dataset` that preprocess another source the same
        way: image size, channels, resize policy, pixel scaling, class names and keys."""
        out = {
            "image_size": list(self.image_size),
            "color_mode": "rgb" if self.channels == 3 else "grayscale",
            "resize": self.resize or "crop",
            "pixels": self.pixels,
            "class_names": None if self.class_names is None else list(self.class_names),
        }
        if self.kind == "tfrecord":
            out.update(image_key=self.image_key, label_key=self.label_key)
        return out

    def to_dict(self, files=False):
        """A JSON-able dict; with ``files=True`` the file lists too."""
        out = dataclasses.asdict(self)
        for key in ("class_names", "image_size", "skipped"):
            if out[key] is not None:
                out[key] = [list(v) if isinstance(v, tuple) else v for v in out[key]]
        for key in ("train_labels", "test_labels", "record_parts", "record_counts"):
            del out[key]
        if not files:
            del out["train_files"], out["test_files"]
        else:
            out["train_files"], out["test_files"] = list(self.train_files), list(self.test_files)
        return out

    @classmethod
    def from_dict(cls, data):
        """The inverse of :meth:`to_dict`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"Expected ImageData keys ({', '.join(sorted(names))}). Received: {unknown}."
            )
        data = dict(data)
        for key in ("class_names", "image_size", "train_files", "test_files"):
            if data.get(key) is not None:
                data[key] = tuple(data[key])
        data["skipped"] = tuple(tuple(s) for s in data.get("skipped", ()))
        return cls(**data)


# ----- arguments --------------------------------------------------------------------------------
def _choice(name, value, allowed):
    if value not in allowed:
        shown = ", ".join(repr(a) for a in allowed)
        raise ConfigError(f"Expected `{name}` to be one of {shown}. Received: {name}={value!r}")
    return value


def _fraction(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(
            f"Expected `test_fraction` to be a number in [0, 1). Received: test_fraction={value!r}"
        )
    return float(value)


def is_tfrecord_source(source):
    """True for a TFRecord path or glob (by its suffix, or glob characters), not a folder,
    or a TensorFlow Datasets source ("tfds:NAME"), whose prepared files are TFRecords."""
    source = os.fspath(source)
    if is_tfds_source(source):
        return True
    if os.path.isdir(source):
        return False
    base = source.rstrip("*?]")
    return (
        any(ch in source for ch in "*?[")
        or source.lower().endswith(_TFRECORD_SUFFIXES)
        or base.lower().endswith(_TFRECORD_SUFFIXES)
    )


# ----- listing ----------------------------------------------------------------------------------
def _image_files(folder):
    """(image paths, other file count, an example of another file) under ``folder``, sorted,
    hidden names skipped."""
    images, others, example = [], 0, None
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = os.path.join(root, name)
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(path)
            else:
                others, example = others + 1, example or path
    return images, others, example


def _classes(folder, labels):
    """(files, labels or None, class names or None) of one folder (see the module doc)."""
    subdirs = sorted(
        d
        for d in os.listdir(folder)
        if not d.startswith(".") and os.path.isdir(os.path.join(folder, d))
    )
    top = [
        os.path.join(folder, f)
        for f in sorted(os.listdir(folder))
        if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(folder, f))
    ]
    per_class = [(d, _image_files(os.path.join(folder, d))[0]) for d in subdirs]
    per_class = [(d, files) for d, files in per_class if files]
    if labels is None or not per_class:
        files, _, _ = _image_files(folder)
        if not files:
            _no_images(folder)
        return files, None, None
    if top:
        raise DataError(
            f"Expected the images of {folder!r} either in class sub-folders or directly in it, "
            f"not both. Received: {len(top)} images directly in it (e.g. {top[0]!r}) and class "
            f"folders {[d for d, _ in per_class][:5]}. Move them into a class folder, or pass "
            "labels=None to use every image without labels."
        )
    files = [f for _, fs in per_class for f in fs]
    ids = [i for i, (_, fs) in enumerate(per_class) for _ in fs]
    return files, ids, [d for d, _ in per_class]


def _no_images(folder):
    _, others, example = _image_files(folder)
    if not others:
        raise DataError(
            f"Expected image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder!r}. Received: "
            "an empty folder. Check the path."
        )
    raise DataError(
        f"Expected image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder!r}. Received: "
        f"{others} files, none of them an image (e.g. {example!r}). Check the path, or "
        "convert the files to PNG or JPEG."
    )


def _relabel(ids, names, wanted, where):
    """Labels of classes ``names`` renumbered to the order of ``wanted`` (a run's classes)."""
    missing = [n for n in names if n not in wanted]
    if missing:
        raise DataError(
            f"Expected the classes of {where!r} among {list(wanted)}. Received: classes "
            f"{missing} not among them. Use a folder with the same class folders."
        )
    index = {n: i for i, n in enumerate(wanted)}
    return [index[names[i]] for i in ids]


def _list_folder(source, labels, class_names, test_fraction):
    entries = {
        d
        for d in os.listdir(source)
        if not d.startswith(".") and os.path.isdir(os.path.join(source, d))
    }
    loose = [f for f in os.listdir(source) if f.lower().endswith(IMAGE_EXTENSIONS)]
    if entries == {"train", "test"} and not loose:
        splits = []
        for part in ("train", "test"):
            splits.append(_classes(os.path.join(source, part), labels))
        (tr_files, tr_ids, tr_names), (te_files, te_ids, te_names) = splits
        if (tr_names is None) != (te_names is None):
            raise DataError(
                f"Expected train/ and test/ of {source!r} both with class folders or both "
                f"without. Received: classes {tr_names} in train/ and {te_names} in test/."
            )
        names = tr_names
        if names is not None:
            names = (
                list(class_names)
                if class_names is not None
                else sorted(set(tr_names) | set(te_names))
            )
            tr_ids = _relabel(tr_ids, tr_names, names, os.path.join(source, "train"))
            te_ids = _relabel(te_ids, te_names, names, os.path.join(source, "test"))
        return "folders", (tr_files, tr_ids), (te_files, te_ids), names
    files, ids, names = _classes(source, labels)
    if names is not None and class_names is not None:
        ids, names = _relabel(ids, names, list(class_names), source), list(class_names)
    test = _holdout_mask(len(files), test_fraction)

    def pick(seq, mask):
        return None if seq is None else [v for v, m in zip(seq, mask, strict=True) if m]

    return (
        "fraction",
        (pick(files, ~test), pick(ids, ~test)),
        (pick(files, test), pick(ids, test)),
        names,
    )


def _probe_all(files, ids, on_bad_file, read=probe):
    """Probe every file: (kept files, kept ids, their (h, w, c), skipped (path, reason))."""
    kept, kept_ids, shapes, skipped = [], [], [], []
    for i, path in enumerate(files):
        try:
            shapes.append(read(path))
        except BadImage as err:
            if on_bad_file == "error":
                raise DataError(_bad_message(path, err)) from None
            skipped.append((str(path), str(err)))
            continue
        kept.append(path)
        if ids is not None:
            kept_ids.append(ids[i])
    return kept, (kept_ids if ids is not None else None), shapes, skipped


def _decode_all(files, ids, shapes, on_bad_file):
    """Decode every file once (in parallel): files that do not decode are named (error) or
    left out (skip). Returns (files, ids, shapes, skipped (path, reason))."""
    import tensorflow as tf

    contents = tf.data.Dataset.from_tensor_slices(tf.constant(list(files), tf.string))
    failed = undecodable(contents.map(tf.io.read_file), len(files)) if files else []
    skipped = []
    for i in failed:
        reason = f"could not be decoded ({decode_reason(tf.io.read_file(files[i]))})"
        if on_bad_file == "error":
            raise DataError(_bad_message(files[i], reason))
        skipped.append((str(files[i]), reason))
    keep = [i for i in range(len(files)) if i not in set(failed)]
    ids = None if ids is None else [ids[i] for i in keep]
    return [files[i] for i in keep], ids, [shapes[i] for i in keep], skipped


def _bad_message(name, reason):
    return (
        f"Expected a readable PNG, JPEG, GIF or BMP image. Received: {name!r}, which "
        f"{reason}. Remove or replace it, or pass on_bad_file='skip' (--on-bad-file skip)."
    )


def decode_failure(error):
    """The :class:`~kvae.errors.DataError` naming the file of a stream that stopped on an
    image it could not decode (``error``: the ``tf.errors.InvalidArgumentError`` iteration or
    ``fit`` raised), or None for any other error. Use it where batches are pulled::

        try:
            model.fit(train, epochs=10)
        except tf.errors.InvalidArgumentError as err:
            raise (decode_failure(err) or err) from None
    """
    message = str(getattr(error, "message", error))
    if FAILED not in message:
        return None
    name = message.split(FAILED, 1)[1].split(NAME_END, 1)[0]
    reason = "could not be decoded"
    if "#" not in name and os.path.isfile(name):
        import tensorflow as tf

        reason += f" ({decode_reason(tf.io.read_file(name))})"
    return DataError(_bad_message(name, reason + " while streaming"))


def _resolve_size(image_size, paths, shapes):
    """The (height, width) produced, and the resize policy in use (None: no resizing)."""
    sizes = {}
    for path, (h, w, _) in zip(paths, shapes, strict=True):
        sizes.setdefault((h, w), path)
    if image_size is not None:
        return image_size, None if set(sizes) == {tuple(image_size)} else "resize"
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise DataError(
            f"Expected images of one size, or image_size (--image-size H[xW]) to resize them. "
            f"Received: {len(sizes)} sizes, e.g. {p1!r} is {s1[0]}x{s1[1]} and {p2!r} is "
            f"{s2[0]}x{s2[1]}."
        )
    return next(iter(sizes)), None


def _resolve_channels(color_mode, paths, shapes):
    """(channels, number of images converted); warns once when grey images join colour ones."""
    grey = [p for p, s in zip(paths, shapes, strict=True) if s[2] == 1]
    if color_mode == "auto":
        channels = 3 if len(grey) < len(paths) else 1
    else:
        channels = 3 if color_mode == "rgb" else 1
    converted = len(grey) if channels == 3 else len(paths) - len(grey)
    if color_mode == "auto" and channels == 3 and grey:
        warnings.warn(
            f"kvae: {len(grey)} of {len(paths)} images are grey (e.g. {grey[0]!r}); they are "
            "converted to RGB like the colour ones (color_mode='rgb' says so and silences this).",
            stacklevel=3,
        )
    return channels, converted


def list_images(
    source,
    *,
    image_size=None,
    labels="inferred",
    class_names=None,
    color_mode="auto",
    resize="crop",
    pixels="unit",
    test_fraction=0.1,
    on_bad_file="error",
    image_key="image",
    label_key="label",
    decode_check=None,
    data_dir=None,
):
    """List and probe the images of ``source`` (a folder, or TFRecord files): an
    :class:`ImageData` record, before anything is decoded. Raises DataError for bad input.

    The arguments are :func:`image_dataset`'s (see there)."""
    image_size = parse_image_size(image_size)
    if decode_check is None:
        decode_check = on_bad_file == "skip"
    _choice("labels", labels, ("inferred", None))
    _choice("color_mode", color_mode, COLOR_MODES)
    _choice("resize", resize, RESIZE)
    _choice("pixels", pixels, PIXELS)
    _choice("on_bad_file", on_bad_file, ON_BAD_FILE)
    test_fraction = _fraction(test_fraction)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
    try:
        source = os.fspath(source)
    except TypeError:
        raise DataError(
            "Expected a folder of images or a TFRecord path or glob. "
            f"Received: source={source!r} of type {type(source).__name__}."
        ) from None
    if data_dir is not None and not is_tfds_source(source):
        raise ConfigError(
            "Expected data_dir only with a TensorFlow Datasets source ('tfds:NAME'). "
            f"Received: data_dir={data_dir!r} with source={source!r}."
        )
    if is_tfrecord_source(source):
        if is_tfds_source(source):
            from kvae.datasets._tfds import list_tfds

            *found, names, split, source = list_tfds(
                source,
                data_dir,
                labels,
                class_names,
                test_fraction,
                on_bad_file,
                image_key,
                label_key,
                decode_check,
            )
        else:
            from kvae.datasets._tfrecord import list_records

            found = list_records(
                source, labels, test_fraction, on_bad_file, image_key, label_key, decode_check
            )
            names, split = class_names, "fraction"
        paths, shapes, skipped, files, counts, record_labels, record_parts = found
        kind, train_files, test_files = "tfrecord", files, ()
        train_labels, test_labels = record_labels, ()
        num_train, num_test = record_parts.count(0), record_parts.count(1)
        if labels is not None and names is None and max(record_labels, default=-1) >= 0:
            names = [str(i) for i in range(max(record_labels) + 1)]
    else:
        if not os.path.isdir(source):
            raise DataError(
                f"Expected a folder of images or a TFRecord path or glob (*.tfrecord). "
                f"Received: source={source!r}, "
                f"{'a file' if os.path.exists(source) else 'which does not exist'}."
            )
        split, train, test, names = _list_folder(source, labels, class_names, test_fraction)
        tr_files, tr_ids, tr_shapes, skipped = _probe_all(*train, on_bad_file)
        te_files, te_ids, te_shapes, skipped_test = _probe_all(*test, on_bad_file)
        skipped = skipped + skipped_test
        if decode_check:
            tr_files, tr_ids, tr_shapes, bad = _decode_all(tr_files, tr_ids, tr_shapes, on_bad_file)
            te_files, te_ids, te_shapes, bad_test = _decode_all(
                te_files, te_ids, te_shapes, on_bad_file
            )
            skipped = skipped + bad + bad_test
        if not tr_files:
            raise DataError(
                f"Expected at least one readable training image in {source!r}. Received: none "
                f"({len(skipped)} skipped as unreadable)."
            )
        paths, shapes = tr_files + te_files, tr_shapes + te_shapes
        kind, record_parts, counts = "folder", (), ()
        train_files, test_files = tuple(tr_files), tuple(te_files)
        train_labels, test_labels = tuple(tr_ids or ()), tuple(te_ids or ())
        num_train, num_test = len(tr_files), len(te_files)
    size, policy = _resolve_size(image_size, paths, shapes)
    channels, converted = _resolve_channels(color_mode, paths, shapes)
    return ImageData(
        source=source,
        kind=kind,
        split=split,
        test_fraction=test_fraction,
        class_names=None if names is None else tuple(names),
        image_size=tuple(size),
        channels=channels,
        resize=resize if policy else None,
        pixels=pixels,
        num_train=num_train,
        num_test=num_test,
        skipped=tuple(skipped),
        converted=converted,
        image_key=image_key if kind == "tfrecord" else None,
        label_key=label_key if kind == "tfrecord" else None,
        train_files=tuple(train_files),
        test_files=tuple(test_files),
        train_labels=tuple(train_labels),
        test_labels=tuple(test_labels),
        record_parts=tuple(record_parts),
        record_counts=tuple(counts),
    )


def shard(info, index, count):
    """``info`` with only the training files of shard ``index`` of ``count``: every
    ``count``-th file from the ``index``-th (for TFRecords: every ``count``-th record file, with
    all its records). The shards of ``range(count)`` hold every training image exactly once.
    A shard is for the training stream: a folder's test set is kept whole, TFRecords keep only
    the test records of the shard's files. :func:`kvae.distribute.distribute_images` gives
    each worker its own."""
    if not (0 <= index < count):
        raise ConfigError(f"Expected 0 <= index < count. Received: index={index}, count={count}")
    files = info.train_files[index::count]
    if info.kind == "folder":
        labels = info.train_labels[index::count] if info.train_labels else ()
        return dataclasses.replace(
            info, train_files=files, train_labels=labels, num_train=len(files)
        )
    # TFRecords: record_parts / train_labels run over the records of all files in order.
    ends = np.cumsum(info.record_counts)
    keep = np.zeros(int(ends[-1]) if len(ends) else 0, bool)
    for f in range(index, len(info.train_files), count):
        keep[ends[f] - info.record_counts[f] : ends[f]] = True
    parts = np.asarray(info.record_parts)[keep]
    return dataclasses.replace(
        info,
        train_files=files,
        record_counts=info.record_counts[index::count],
        record_parts=tuple(parts.tolist()),
        train_labels=tuple(np.asarray(info.train_labels)[keep].tolist()),
        num_train=int(np.sum(parts == 0)),
        num_test=int(np.sum(parts == 1)),
    )


# ----- the pipeline -----------------------------------------------------------------------------
def image_dataset(
    source,
    *,
    batch_size=64,
    image_size=None,
    labels="inferred",
    class_names=None,
    color_mode="auto",
    resize="crop",
    pixels="unit",
    test_fraction=0.1,
    seed=0,
    shuffle=True,
    drop_remainder=False,
    cache=None,
    shuffle_buffer=_SHUFFLE_BUFFER,
    on_bad_file="error",
    image_key="image",
    label_key="label",
    decode_check=None,
    data_dir=None,
    info=None,
):
    """Training and test ``tf.data.Dataset``s of the images of ``source``, and their record.

    Args:
        source: a folder of images, a TFRecord path or glob, or a prepared TensorFlow
            Datasets data set "tfds:NAME[/CONFIG][:VERSION]" (see the module docstring).
        batch_size: images per batch, >= 1.
        image_size: None (keep the images' one size), an int (square), "HxW" or
            (height, width).
        labels: "inferred" (class sub-folders, or the TFRecords' ``label_key``) or None.
        class_names: the classes in label order, to number another folder's classes as a
            run's were (``ImageData.options()`` gives them); None: sorted folder names.
        color_mode: "auto", "rgb" or "grayscale".
        resize: "crop" (Keras' crop_to_aspect_ratio, default) or "pad".
        pixels: "unit" (v / 255 in [0, 1]) or "uint8" (k / 256, the 256 levels kept).
        test_fraction: share held out as the test set when the source has no train/ + test/
            split, in [0, 1).
        seed: the shuffle's seed (int >= 0); each epoch is shuffled anew from it.
        shuffle: shuffle the training files every epoch.
        drop_remainder: drop each epoch's last partial batch and yield ``(x, y)``, instead of
            padding it with weight-0 images and yielding ``(x, y, weight)``.
        cache: None, "memory", or a file path prefix for ``tf.data``'s cache of decoded images.
        shuffle_buffer: images in the shuffle buffer when ``cache`` is set (or for TFRecords).
        on_bad_file: "error" or "skip": what to do with a file that is unreadable, cut
            short, or (with ``decode_check``) does not decode: raise a DataError naming it,
            or leave it out (``info.skipped``; the steps per epoch count the rest).
        decode_check: decode every file once before streaming (in parallel; 0.3-0.7 s per
            1,000 64x64 colour PNGs on a shared 2-core machine, about one epoch's decoding),
            so that files whose header is sound but whose body is corrupt are found now. None (default): only with
            ``on_bad_file="skip"``, which needs it (a skipped file must not count in the
            steps). Without it, such a file stops the stream when it comes: iteration or
            ``fit`` raises ``tf.errors.InvalidArgumentError`` naming the file
            (``kvae.datasets.images.decode_failure`` turns it into a DataError).
        image_key, label_key: the features of TFRecord sources.
        data_dir: where TensorFlow Datasets' prepared data sets are, for a "tfds:" source
            (None: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``).
        info: an :class:`ImageData` from :func:`list_images` to build from (skips the listing;
            the other listing arguments are then ignored).

    Returns:
        ``(train, test, info)``: two ``tf.data.Dataset`` s with static shapes (test is None
        when nothing is held out) and the :class:`ImageData` record.
    """
    batch_size = _check_int("batch_size", batch_size, minimum=1)
    seed = _check_int("seed", seed, minimum=0)
    shuffle_buffer = _check_int("shuffle_buffer", shuffle_buffer, minimum=1)
    if not (cache is None or isinstance(cache, (str, os.PathLike))):
        raise ConfigError(
            f"Expected `cache` to be None, 'memory' or a file path. Received: cache={cache!r}"
        )
    if info is None:
        info = list_images(
            source,
            image_size=image_size,
            labels=labels,
            class_names=class_names,
            color_mode=color_mode,
            resize=resize,
            pixels=pixels,
            test_fraction=test_fraction,
            on_bad_file=on_bad_file,
            image_key=image_key,
            label_key=label_key,
            decode_check=decode_check,
            data_dir=data_dir,
        )
    if drop_remainder and batch_size > info.num_train:
        raise ConfigError(
            f"Expected `batch_size` <= the number of training images ({info.num_train}) with "
            f"drop_remainder=True (otherwise no batch is produced). Received: {batch_size}"
        )
    cache = None if cache is None else os.fspath(cache)
    build = _folder_split if info.kind == "folder" else _tfrecord_split
    train = build(
        info, "train", batch_size, seed, shuffle, not drop_remainder, cache, shuffle_buffer
    )
    test = None
    if info.num_test:
        test_cache = None if cache in (None, "memory") else cache + ".test"
        test = build(info, "test", batch_size, seed, False, True, test_cache, shuffle_buffer)
    return train, test, info


def _folder_split(info, part, batch_size, seed, shuffle, pad, cache, buffer):
    import tensorflow as tf

    files = info.train_files if part == "train" else info.test_files
    ids = info.train_labels if part == "train" else info.test_labels
    labelled = info.class_names is not None
    n = len(files)
    paths = tf.constant(list(files))
    label_of = tf.constant(np.asarray(ids if labelled else np.zeros(n), np.int64))
    decode = decoder_of(info)

    def load(i):
        return i, decode(tf.io.read_file(tf.gather(paths, i))), tf.gather(label_of, i)

    def decoded(order):
        """The examples of the files ``order`` (an int64 vector), a failed decode named."""
        ds = tf.data.Dataset.from_tensor_slices(order)
        ds = ds.map(load, num_parallel_calls=parallel_calls(), deterministic=True)
        return checked_files(ds, order, paths)

    in_order = decoded(tf.range(n, dtype=tf.int64))
    if cache is not None:
        cached = in_order.cache("" if cache == "memory" else cache)
        ds = cached
        if shuffle:
            ds = cached.shuffle(min(buffer, n), seed=seed, reshuffle_each_iteration=True)
        out = finish_pass(ds, n, batch_size, pad, labelled, cached)
    elif shuffle:
        key = tf.constant(seed, tf.int64)

        def one_pass(r):
            s = tf.random.experimental.stateless_split(tf.stack([r, key]), num=1)[0]
            order = tf.random.experimental.stateless_shuffle(tf.range(n, dtype=tf.int64), seed=s)
            examples = decoded(order)
            return finish_pass(examples, n, batch_size, pad, labelled, examples)

        passes = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
        out = passes.flat_map(one_pass)
    else:
        out = finish_pass(in_order, n, batch_size, pad, labelled, in_order)
    return seal(out, n, batch_size, pad)


def _tfrecord_split(info, part, batch_size, seed, shuffle, pad, cache, buffer):
    from kvae.datasets._tfrecord import split_dataset

    return split_dataset(info, part, batch_size, seed, shuffle, pad, cache, buffer)
