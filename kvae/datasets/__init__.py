"""Data sets for kvae: loaders that return numpy arrays, a fast ``tf.data`` pipeline, and
image folders or TFRecord files streamed from disk.

    from kvae import datasets
    (x_train, y_train), (x_test, y_test) = datasets.load("mnist")   # or "digits", or "my.npz"
    train = datasets.make_dataset(x_train, 128, binarize="dynamic", seed=0)
    train, test, info = datasets.image_dataset("photos/", image_size=64)   # streamed

Every loader returns ``((x_train, y_train), (x_test, y_test))``: x float32 of shape
(n, H, W, C) (or (n, D) for flat data), values in [0, 1] for MNIST and digits (an npz of floats
is kept as it is), y int64 (or None). Data sets are
registered by name in the ``kvae.datasets`` entry-point group, so a plugin package adds its own.
Image folders and TFRecord files are not in-memory arrays: :func:`image_dataset` streams them
(see :func:`image_dataset`) and returns ``tf.data.Dataset`` s with an :class:`ImageData`
record of their split and preprocessing. Importing this module does not import TensorFlow;
:func:`make_dataset` and :func:`image_dataset` do, when called.
"""

from kvae.datasets._catalog import load, names
from kvae.datasets.digits import load_digits
from kvae.datasets.images import ImageData, image_dataset, list_images, parse_image_size
from kvae.datasets.mnist import load_mnist
from kvae.datasets.npz import load_npz
from kvae.datasets.pipeline import binarize_static, make_dataset

__all__ = [
    "ImageData",
    "binarize_static",
    "image_dataset",
    "list_images",
    "load",
    "load_digits",
    "load_mnist",
    "load_npz",
    "make_dataset",
    "names",
    "parse_image_size",
]
