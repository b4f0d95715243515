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
import functools
import inspect
import os

import numpy as np

from kvae.datasets.images import ImageData, image_dataset, is_tfrecord_source, list_images
from kvae.errors import ConfigError, DataError

__all__ = ["Streamed", "arrays_of", "is_streamed", "pixels_for", "streamed_data"]

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
)
_STREAMING = ("cache", "shuffle_buffer", "drop_remainder")


@dataclasses.dataclass
class Streamed:
    """A run's streamed data (see the module docstring).

    ``train``, ``validation`` (the test set, or None with validation "none") and ``test`` are
    the streamed datasets. For the steps of a run that take arrays (the test metrics, the
    TensorBoard pictures) ``x_test`` / ``y_test`` and ``x_val`` / ``y_val`` are the test
    images as arrays, decoded on first use (the test set only: the training set is never
    held in memory); ``y_train`` holds the training labels, which the listing knows."""

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
    def steps_per_epoch(self):
        return int(self.train.cardinality())

    @property
    def y_train(self):
        labels = self.info.train_labels
        if self.info.class_names is None:
            return None
        if self.info.kind == "tfrecord":
            parts = np.asarray(self.info.record_parts)
            return np.asarray(labels, np.int64)[parts == 0]
        return np.asarray(labels, np.int64)

    def train_examples(self, limit=1000):
        """Up to ``limit`` training images as an array, from the first batches of an epoch
        (for a prior initialised from data, say)."""
        return arrays_of(self.train, limit)[0]

    @functools.cached_property
    def _test_arrays(self):
        return arrays_of(self.test)

    @property
    def x_test(self):
        return self._test_arrays[0]

    @property
    def y_test(self):
        return self._test_arrays[1]

    @property
    def x_val(self):
        return None if self.validation is None else self.x_test

    @property
    def y_val(self):
        return None if self.validation is None else self.y_test


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


def streamed_data(config):
    """The :class:`Streamed` data of ``config`` (a TrainConfig whose dataset is streamed).

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
        config.dataset, image_size=config.image_size, on_bad_file=config.on_bad_file, **kwargs
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
        image_size=options.pop("image_size"),
        dataset_kwargs={**config.dataset_kwargs, **options},
    )
    validation = test if config.validation == "test" else None
    return Streamed(train=train, validation=validation, test=test, info=info, config=pinned)


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
    ``limit`` of them (for TensorBoard images and the latent summary, which take arrays):
    x float32, y the labels (None when the elements carry x as y)."""
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
