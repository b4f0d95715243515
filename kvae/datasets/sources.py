"""A run's streamed data: given a :class:`~kvae.config.TrainConfig` whose ``dataset`` is an
image folder or TFRecord files, the training, validation and test ``tf.data.Dataset`` s, their
:class:`~kvae.datasets.ImageData` record, and the config with that preprocessing pinned.

    from kvae.datasets.sources import is_streamed, streamed_data
    if is_streamed(config.dataset):
        data = streamed_data(config)
        config = data.config             # written to config.json: applied again on reload
        model.fit(data.train, validation_data=data.validation, epochs=config.epochs)

The pinned config holds ``image_size`` and, in ``dataset_kwargs``, the channels, resize policy,
pixel scaling and class names that were found (``ImageData.options()``), so a run loaded
from its directory (or pointed at another folder) preprocesses images exactly as it trained.
``pixels`` follows the likelihood: "uint8" (the 256 levels, k / 256) for a head scoring bins
of 8-bit data (one that takes ``num_bins``, like "discretized-logistic"), else "unit"
(v / 255 in [0, 1]); ``dataset_kwargs={"pixels": ...}`` overrides it.
"""

from __future__ import annotations

import dataclasses
import inspect
import os

import numpy as np

from kvae.datasets._tfds import is_tfds_source
from kvae.datasets.images import ImageData, image_dataset, is_tfrecord_source, list_images
from kvae.errors import ConfigError, DataError

__all__ = [
    "Streamed",
    "arrays_of",
    "example_labels",
    "example_paths",
    "is_streamed",
    "pixels_for",
    "recorded_images",
    "streamed_data",
]

# image_dataset's listing options that may come in dataset_kwargs.
_LISTING = (
    "labels",
    "class_names",
    "color_mode",
    "resize",
    "pixels",
    "test_fraction",
    "image_key",
    "label_key",
    "data_dir",
)
_STREAMING = ("cache", "shuffle_buffer", "drop_remainder")


@dataclasses.dataclass
class Streamed:
    """A run's streamed data (see the module docstring).

    ``train``, ``validation`` (the test set, or None with validation "none") and ``test`` are
    the streamed datasets; the test metrics stream ``test`` batch by batch. Nothing here
    holds a whole split as an array: :meth:`train_examples` and :meth:`test_examples` give
    the first images of a split, at most ``limit`` of them (a prior initialised from data,
    the TensorBoard pictures, the gaps); ``y_train``, ``y_test`` and ``y_val`` hold the
    labels, which the listing knows (one integer per image)."""

    train: object
    validation: object
    test: object
    info: ImageData
    config: object

    @property
    def data_shape(self):
        return self.info.data_shape

    @property
    def num_train(self):
        return self.info.num_train

    @property
    def num_test(self):
        return self.info.num_test

    @property
    def steps_per_epoch(self):
        return int(self.train.cardinality())

    @property
    def y_train(self):
        return example_labels(self.info, "train")

    @property
    def y_test(self):
        return example_labels(self.info, "test")

    @property
    def y_val(self):
        return None if self.validation is None else self.y_test

    def train_examples(self, limit=1000):
        """Up to ``limit`` training images as an array, from the first batches of an epoch
        (for a prior initialised from data, say)."""
        return arrays_of(self.train, limit)[0]

    def test_examples(self, limit):
        """``(x, y)``: the first ``limit`` test images as arrays (y the labels, or None),
        decoded from the first test batches only."""
        return arrays_of(self.test, limit)


def is_streamed(dataset):
    """True when ``dataset`` (a config's ``dataset``) names a folder or TFRecord files rather
    than a registered data set or an .npz file. A bare name that is both a registered data set
    and a folder in the working directory is the registered data set (write ``./name/``)."""
    if not isinstance(dataset, (str, os.PathLike)):
        return False
    dataset = os.fspath(dataset)
    if dataset.endswith(".npz"):
        return False
    if os.path.isdir(dataset):
        if os.sep in dataset or (os.altsep and os.altsep in dataset):
            return True
        from kvae.datasets._catalog import names

        return dataset not in names()
    return is_tfrecord_source(dataset)


def pixels_for(likelihood):
    """ "uint8" for a likelihood head that scores bins of 8-bit data (it takes ``num_bins``),
    else "unit"."""
    from kvae import registry

    head = registry.get("likelihoods", likelihood)
    try:
        takes_bins = "num_bins" in inspect.signature(head).parameters
    except (TypeError, ValueError):
        takes_bins = False
    return "uint8" if takes_bins else "unit"


def streamed_data(config, *, decode_check=None):
    """The :class:`Streamed` data of ``config`` (a TrainConfig whose dataset is streamed).

    ``decode_check=True`` decodes every file once now (what ``kvae train`` does before it
    makes the run directory, so a file with a corrupt body is named or skipped before
    training); the default (``list_images``' rule: only with ``on_bad_file="skip"``) lets a
    run read back for evaluation list and probe the files without decoding them twice.

    Raises DataError for bad input (before anything is decoded) and ConfigError for settings
    the streamed path does not support (binarize, a validation fraction, max_*_examples of
    TFRecords)."""
    kwargs = dict(config.dataset_kwargs)
    unknown = sorted(set(kwargs) - set(_LISTING) - set(_STREAMING))
    if unknown:
        raise ConfigError(
            f"Expected dataset_kwargs of an image folder or TFRecord data set among "
            f"{sorted(_LISTING + _STREAMING)}. Received: {unknown}."
        )
    if config.binarize is not None:
        raise ConfigError(
            "Expected binarize=None for an image folder or TFRecord data set (streamed images "
            f"are not binarised). Received: binarize={config.binarize!r}."
        )
    if isinstance(config.validation, float):
        raise ConfigError(
            "Expected validation 'test' or 'none' for an image folder or TFRecord data set. "
            f"Received: validation={config.validation!r}. Hold images out with "
            "dataset_kwargs test_fraction, or a train/ + test/ folder pair."
        )
    kwargs.setdefault("pixels", pixels_for(config.likelihood))
    streaming = {k: kwargs.pop(k) for k in _STREAMING if k in kwargs}
    info = list_images(
        config.dataset,
        image_size=config.image_size,
        on_bad_file=config.on_bad_file,
        decode_check=decode_check,
        **kwargs,
    )
    info = _limit(info, config.max_train_examples, config.max_test_examples)
    if config.conditional and info.class_names is None:
        raise DataError(
            f"Expected labels for conditional=True: the data set {config.dataset!r} has none. "
            "Put the images in class sub-folders (or give the TFRecords a label feature)."
        )
    if not info.num_test:
        raise DataError(
            f"Expected test images in {config.dataset!r} (a run reports test metrics). "
            "Received: none held out. Give a test/ folder beside train/, or a test_fraction "
            "> 0 in dataset_kwargs large enough to hold out one image."
        )
    train, test, info = image_dataset(
        config.dataset,
        batch_size=config.batch_size,
        seed=config.seed,
        info=info,
        **streaming,
    )
    options = info.options()
    pinned = config.replace(
        dataset=info.source if is_tfds_source(config.dataset) else config.dataset,
        image_size=options.pop("image_size"),
        dataset_kwargs={**config.dataset_kwargs, **options},
    )
    validation = test if config.validation == "test" else None
    return Streamed(train=train, validation=validation, test=test, info=info, config=pinned)


# The options of a run's dataset_kwargs that say how images are prepared (ImageData.options()
# wrote them): applied again to another source.
_PREPARATION = ("labels", "class_names", "color_mode", "resize", "pixels", "image_key", "label_key")


def recorded_images(config, source):
    """``(stream, info, None)``: every image of ``source`` (a folder or TFRecord files) prepared as
    the run of ``config`` prepared its own (its recorded image size, colour mode, resize
    policy and pixel scaling), in file order: padded ``(x, y, weight)`` batches of the run's
    batch size, not shuffled (a ``train/`` + ``test/`` pair: train, then test), and the
    :class:`ImageData` of ``source`` (and None: the part of it streamed, all of it, as
    :func:`example_paths` and :func:`example_labels` take it).

    Labels: a conditional run numbers the classes of ``source`` as it numbered its own (its
    conditions; a class it does not know is refused); another run takes ``source``'s own
    class folders as they are (``info.class_names``).

    Raises DataError when ``config`` is not an image run, or for bad input in ``source``."""
    if not is_streamed(config.dataset):
        raise DataError(
            "Expected a run trained on an image folder or TFRecord files, whose preparation of "
            f"images is recorded. Received: a run on {config.dataset!r}. Encode its own test "
            "set without --dataset."
        )
    kwargs = {k: v for k, v in config.dataset_kwargs.items() if k in _PREPARATION}
    kwargs.setdefault("pixels", pixels_for(config.likelihood))
    if not config.conditional:
        kwargs.pop("class_names", None)
    if not is_tfrecord_source(source):
        kwargs.pop("image_key", None)
        kwargs.pop("label_key", None)
    info = list_images(
        source,
        image_size=config.image_size,
        test_fraction=0.0,
        on_bad_file=config.on_bad_file,
        **kwargs,
    )
    if config.conditional and info.class_names is None:
        raise DataError(
            f"Expected labels in {os.fspath(source)!r} for a conditional run (its codes are "
            "q(z|x, y)). Received: none. Put the images in class sub-folders named as the "
            "run's classes."
        )
    train, test, info = image_dataset(
        source, batch_size=config.batch_size, shuffle=False, seed=config.seed, info=info
    )
    return (train if test is None else train.concatenate(test)), info, None


def example_paths(info, part=None):
    """The file of every image of ``info`` in stream order: a split's (``part`` "train" or
    "test"), or both (None: train, then test); a TFRecord record is ``file#index``."""
    names = ("train", "test") if part is None else (part,)
    if info.kind == "folder":
        files = {"train": info.train_files, "test": info.test_files}
        return [p for name in names for p in files[name]]
    records = [
        f"{path}#{i}"
        for path, count in zip(info.train_files, info.record_counts, strict=True)
        for i in range(count)
    ]
    parts = np.asarray(info.record_parts)
    return [
        records[i] for name in names for i in np.flatnonzero(parts == ("train", "test").index(name))
    ]


def example_labels(info, part=None):
    """The label of every image of ``info`` in stream order (as :func:`example_paths`), an
    int64 array, or None without labels."""
    if info.class_names is None:
        return None
    names = ("train", "test") if part is None else (part,)
    if info.kind == "folder":
        labels = {"train": info.train_labels, "test": info.test_labels}
        return np.asarray([v for name in names for v in labels[name]], np.int64)
    labels, parts = np.asarray(info.train_labels, np.int64), np.asarray(info.record_parts)
    return np.concatenate([labels[parts == ("train", "test").index(name)] for name in names])


def _limit(info, max_train, max_test):
    """``info`` with only the first ``max_train`` / ``max_test`` images of a folder."""
    if max_train is None and max_test is None:
        return info
    if info.kind != "folder":
        raise ConfigError(
            "Expected max_train_examples and max_test_examples only with image folders. "
            f"Received: one of them with the TFRecord source {info.source!r}."
        )
    tr, te = slice(max_train), slice(max_test)
    return dataclasses.replace(
        info,
        train_files=info.train_files[tr],
        train_labels=info.train_labels[tr],
        num_train=len(info.train_files[tr]),
        test_files=info.test_files[te],
        test_labels=info.test_labels[te],
        num_test=len(info.test_files[te]),
    )


def arrays_of(dataset, limit=None):
    """``(x, y)`` numpy arrays of a dataset's examples, weight-0 padding left out, at most
    ``limit`` of them (for the steps that take arrays: TensorBoard pictures, the gaps, a
    figure's few images): x float32, y the labels (None when the elements carry x as y).
    Only the batches needed for ``limit`` examples are decoded; ``limit=None`` decodes
    the whole dataset (small data sets and tests only)."""
    xs, ys, count = [], [], 0
    for element in dataset:
        x, y = element[0].numpy(), element[1].numpy()
        keep = np.ones(len(x), bool) if len(element) < 3 else element[2].numpy() > 0
        xs.append(x[keep])
        ys.append(y[keep])
        count += int(keep.sum())
        if limit is not None and count >= limit:
            break
    if not xs:
        return np.zeros((0,), np.float32), None
    x, y = np.concatenate(xs)[:limit], np.concatenate(ys)[:limit]
    return x, (None if y.shape == x.shape and y.dtype == x.dtype else y)
