"""TFRecord files of encoded images (private; the public face is kvae.datasets.image_dataset).

Listing reads every record once (``tf.train.Example`` parsed in Python, the image's header
probed, nothing decoded): the records' labels, which split each belongs to (every
``1 / test_fraction``-th record by its index across the files in sorted order is held out),
and which are skipped as unreadable. Streaming then reads the files again with
``tf.data.TFRecordDataset``: the files in a fresh order every epoch when shuffling, records
interleaved from two files at a time, then a shuffle buffer.
"""

import io

import numpy as np

from kvae.datasets._probe import BadImage, probe_bytes
from kvae.datasets._stream import (
    checked_records,
    decode_reason,
    decoder_of,
    finish_pass,
    parallel_calls,
    seal,
    undecodable,
)
from kvae.datasets.npz import _holdout_mask
from kvae.errors import DataError

_PARTS = {"train": 0, "test": 1}
_SKIPPED = 2


def _files(source):
    import tensorflow as tf

    files = sorted(tf.io.gfile.glob(source))
    if not files:
        raise DataError(
            f"Expected TFRecord files matching {source!r}. Received: no file matches it. "
            "Check the path or the glob pattern."
        )
    return files


def _feature(example, key, kinds):
    if key not in example.features.feature:
        return None, None
    feature = example.features.feature[key]
    kind = feature.WhichOneof("kind")
    values = getattr(feature, kind).value if kind else []
    return (kind, values[0]) if kind in kinds and len(values) else (kind, None)


def list_records(
    source, labels, test_fraction, on_bad_file, image_key, label_key, decode_check=False
):
    """Returns (names, shapes, skipped, files, counts, labels, parts): ``names`` and ``shapes``
    of the readable records ("file#index", (h, w, c)), ``skipped`` (name, reason) pairs, the
    sorted files and their record counts, and for every record its label (-1: none) and part
    (0 train, 1 test, 2 skipped). With ``decode_check`` every image is also decoded once
    (in parallel, a file at a time): one that does not decode is named or skipped."""
    import tensorflow as tf

    files = _files(source)
    names, shapes, skipped, record_labels, keep, counts = [], [], [], [], [], []
    has_labels = None
    for path in files:
        try:
            records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as err:
            raise DataError(
                f"Expected readable TFRecord files. Received: {path!r}, which is corrupt or "
                f"truncated ({err.message.splitlines()[0]}). Remove or rewrite it."
            ) from None
        counts.append(len(records))
        readable = []  # (record index, its position in keep, image bytes)
        for i, record in enumerate(records):
            name = f"{path}#{i}"
            try:
                example = tf.train.Example.FromString(record)
            except Exception:  # noqa: BLE001 - protobuf's DecodeError and kin
                raise DataError(
                    f"Expected tf.train.Example records. Received: record {name!r}, which is "
                    "not one. Write the records with tf.train.Example(...).SerializeToString()."
                ) from None
            kind, image = _feature(example, image_key, ("bytes_list",))
            if image is None:
                found = sorted(example.features.feature)
                raise DataError(
                    f"Expected the encoded image bytes under the feature {image_key!r} of the "
                    f"records of {path!r}. Received: features {found} (record {i}). Name the "
                    "image feature with image_key (--dataset-kwargs '{\"image_key\": ...}')."
                )
            label = -1
            if labels is not None:
                _, value = _feature(example, label_key, ("int64_list",))
                if has_labels is None:
                    has_labels = value is not None
                if has_labels != (value is not None):
                    raise DataError(
                        f"Expected an integer label {label_key!r} in every record or in none. "
                        f"Received: record {name!r} {'without' if has_labels else 'with'} one."
                    )
                label = -1 if value is None else int(value)
                if has_labels and label < 0:
                    raise DataError(
                        f"Expected labels >= 0 under {label_key!r}. Received: {label} in "
                        f"record {name!r}."
                    )
            record_labels.append(label)
            try:
                shapes.append(probe_bytes(image[:32], io.BytesIO(image)))
            except BadImage as err:
                if on_bad_file == "error":
                    raise DataError(
                        f"Expected a readable PNG, JPEG, GIF or BMP image. Received: record "
                        f"{name!r}, which {err}. Rewrite it, or pass on_bad_file='skip'."
                    ) from None
                skipped.append((name, str(err)))
                keep.append(False)
                continue
            names.append(name)
            readable.append((i, len(keep), image))
            keep.append(True)
        if decode_check and readable:
            _decode_file(path, readable, names, shapes, keep, skipped, on_bad_file)
    if not names:
        raise DataError(
            f"Expected at least one image record in {source!r}. Received: "
            f"{len(keep)} records in {len(files)} files, {len(skipped)} of them unreadable."
        )
    parts = _holdout_mask(len(keep), test_fraction).astype(np.int8)
    parts[~np.asarray(keep)] = _SKIPPED
    return names, shapes, skipped, files, counts, record_labels, parts.tolist()


def _decode_file(path, readable, names, shapes, keep, skipped, on_bad_file):
    """Decode the ``readable`` records of one file; name or skip those that do not decode
    (``names``, ``shapes``, ``keep``, ``skipped`` are updated in place)."""
    import tensorflow as tf

    images = tf.data.Dataset.from_tensor_slices(tf.constant([r[2] for r in readable]))
    failed = undecodable(images, len(readable))
    first = len(names) - len(readable)  # readable's first record in names and shapes
    bad = [
        (f"{path}#{i}", f"could not be decoded ({decode_reason(image)})")
        for j in failed
        for i, _, image in [readable[j]]
    ]
    if bad and on_bad_file == "error":
        raise DataError(
            f"Expected a readable PNG, JPEG, GIF or BMP image. Received: record "
            f"{bad[0][0]!r}, which {bad[0][1]}. Rewrite it, or pass on_bad_file='skip'."
        )
    for j in reversed(failed):
        del names[first + j], shapes[first + j]
        keep[readable[j][1]] = False
    skipped.extend(bad)


def split_dataset(info, part, batch_size, seed, shuffle, pad, cache, buffer):
    """The batches of ``part`` ("train" or "test") of a TFRecord source (see the module doc)."""
    import tensorflow as tf

    files = list(info.train_files)
    counts = list(info.record_counts)
    offsets = tf.constant(np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64))
    parts = tf.constant(np.asarray(info.record_parts, np.int8))
    label_of = tf.constant(np.maximum(np.asarray(info.train_labels, np.int64), 0))
    want = _PARTS[part]
    n = int(np.sum(np.asarray(info.record_parts) == want))
    labelled = info.class_names is not None
    decode = decoder_of(info)
    paths = tf.constant(files)
    image_key = info.image_key

    def records_of(f):
        return (
            tf.data.TFRecordDataset(tf.gather(paths, f))
            .enumerate()
            .map(lambda i, rec: (f, tf.gather(offsets, f) + i, rec))
        )

    def load(f, g, rec):
        features = tf.io.parse_single_example(
            rec, {image_key: tf.io.FixedLenFeature([], tf.string)}
        )
        return f, g, decode(features[image_key]), tf.gather(label_of, g)

    def stream(file_order):
        ds = (
            file_order.interleave(records_of, cycle_length=min(2, len(files)))
            .filter(lambda f, g, rec: tf.equal(tf.gather(parts, g), want))
            .map(load, num_parallel_calls=parallel_calls(), deterministic=True)
        )
        return checked_records(ds, counts, info.record_parts, want, paths)

    in_order = stream(tf.data.Dataset.range(len(files)))
    if cache is not None:
        in_order = in_order.cache("" if cache == "memory" else cache)
    examples = in_order
    if shuffle:
        if cache is None:
            examples = tf.data.Dataset.range(len(files)).shuffle(
                len(files), seed=seed, reshuffle_each_iteration=True
            )
            examples = stream(examples)
        examples = examples.shuffle(min(buffer, n), seed=seed, reshuffle_each_iteration=True)
    out = finish_pass(examples, n, batch_size, pad, labelled, in_order)
    return seal(out, n, batch_size, pad)
