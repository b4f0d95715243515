"""The decoding and batching steps shared by image folders and TFRecord files (private; see
kvae.datasets.images for the pipeline they make)."""

import os

__all__ = [
    "FAILED",
    "NAME_END",
    "checked_files",
    "checked_records",
    "decode_reason",
    "decoder_of",
    "finish_pass",
    "parallel_calls",
    "seal",
    "undecodable",
]

# The start of the message a stream fails with when an image does not decode; the file (or
# "file#record") follows in <>, then _ADVICE (TensorFlow's assertion escapes quotes).
# kvae.datasets.images.decode_failure reads it back.
FAILED = "kvae: could not decode <"
NAME_END = "> (its header is sound"
_ADVICE = (
    NAME_END + ", its body is not an image TensorFlow can decode). Remove or "
    "replace it, or use on_bad_file='skip' (--on-bad-file skip) to leave it out."
)


def decoder_of(info):
    """encoded bytes (a scalar string tensor) -> float32 image of ``info.data_shape``."""
    import tensorflow as tf

    height, width = info.image_size
    channels, resize, pixels = info.channels, info.resize, info.pixels

    def decode(contents):
        image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
        image = tf.cast(image, tf.float32)
        if resize == "pad":
            image = tf.image.resize_with_pad(image, height, width, antialias=True)
        elif resize == "crop":
            image = _centre_crop(image, height, width)
            image = tf.image.resize(image, (height, width), antialias=True)
        image = tf.ensure_shape(image, (height, width, channels))
        if pixels == "uint8":
            return tf.clip_by_value(tf.round(image), 0.0, 255.0) / 256.0
        return tf.clip_by_value(image / 255.0, 0.0, 1.0)

    return decode


def _fail_unless(ok, name):
    """An assertion that stops the stream with a message naming ``name`` unless ``ok``."""
    import tensorflow as tf

    return tf.debugging.Assert(ok, [tf.strings.join([FAILED, name, _ADVICE])])


def _sentinel(spec, head):
    """A one-element dataset of ``spec``'s structure: ``head`` first, zeros after."""
    import tensorflow as tf

    zeros = [tf.zeros(s.shape, s.dtype) for s in spec[len(head) :]]
    return tf.data.Dataset.from_tensors((*head, *zeros))


def checked_files(decoded, order, paths):
    """Examples ``(x, y)`` of ``decoded``, a parallel, deterministic map of the file indices
    ``order`` (an int64 vector) to ``(i, x, y)``. An image that fails to decode stops the pass
    with an error naming ``paths[i]`` (``FAILED``), not TensorFlow's anonymous one: the failed
    element is dropped (``ignore_errors``), and the next element (or the end of the pass)
    arrives where ``order`` expected it. One comparison per image."""
    import tensorflow as tf

    order = tf.concat([tf.cast(order, tf.int64), [-1]], 0)
    end = _sentinel(decoded.element_spec, (tf.constant(-1, tf.int64),))

    def step(position, element):
        want = order[position]
        name = tf.gather(paths, tf.maximum(want, 0))
        with tf.control_dependencies([_fail_unless(tf.equal(element[0], want), name)]):
            return position + 1, element

    out = decoded.ignore_errors().concatenate(end).scan(tf.constant(0, tf.int64), step)
    return out.filter(_real).map(_example)


def checked_records(decoded, counts, parts, want, paths):
    """The same for TFRecords: ``decoded`` maps records to ``(f, g, x, y)`` (file f, record g
    of all files in order) and keeps the records whose part is ``want``, each file's in
    order, files interleaved in any order, every file once per pass. A record that fails to
    decode is named "file#index": per file, the next record arriving (or the end of the
    pass) is compared with the next record of the part that should."""
    import numpy as np
    import tensorflow as tf

    counts = np.asarray(counts, np.int64)
    ends = np.cumsum(counts)
    total = int(ends[-1])
    # following[j]: the first record >= j of the part (total: none left).
    kept = np.where(np.asarray(parts) == want, np.arange(total), total)
    following = np.minimum.accumulate(np.append(kept, total)[::-1])[::-1]
    following, ends_t = tf.constant(following), tf.constant(ends)
    starts = tf.constant(ends - counts)
    end = _sentinel(decoded.element_spec, (tf.constant(-1, tf.int64), tf.constant(-1, tf.int64)))

    def name_of(g):
        f = tf.searchsorted(ends_t, [g], side="right")[0]
        f = tf.minimum(f, len(counts) - 1)
        index = tf.strings.as_string(g - tf.gather(starts, f))
        return tf.strings.join([tf.gather(paths, f), "#", index])

    def step(last, element):
        f, g = element[0], element[1]
        pending = tf.gather(following, last + 1)  # each file's next record of the part
        if_end = tf.logical_not(tf.reduce_any(pending < ends_t))
        first_missing = tf.reduce_min(tf.where(pending < ends_t, pending, total))
        f0 = tf.maximum(f, 0)
        missing = tf.where(f < 0, first_missing, tf.gather(pending, f0))
        ok = tf.where(f < 0, if_end, tf.equal(tf.gather(pending, f0), g))
        with tf.control_dependencies([_fail_unless(ok, name_of(tf.minimum(missing, total - 1)))]):
            last = tf.tensor_scatter_nd_update(last, [[f0]], [tf.where(f < 0, last[f0], g)])
        return last, element

    out = decoded.ignore_errors().concatenate(end).scan(starts - 1, step)
    return out.filter(_real).map(_example)


def _real(*element):
    """Not the end-of-pass sentinel (its first index is -1)."""
    return element[0] >= 0


def _example(*element):
    """(x, y): the last two of (indices..., x, y)."""
    return element[-2], element[-1]


def undecodable(contents, n):
    """The indices of the encoded images of ``contents`` (a dataset of ``n`` byte strings) that
    TensorFlow cannot decode: each decoded once, in parallel (``decode_reason`` says why)."""
    import tensorflow as tf

    def shape(i, data):
        return i, tf.shape(tf.io.decode_image(data, expand_animations=False))

    decoded = contents.enumerate().map(
        shape, num_parallel_calls=parallel_calls(), deterministic=False
    )
    done = {int(i) for i, _ in decoded.ignore_errors().as_numpy_iterator()}
    return sorted(set(range(n)) - done)


def decode_reason(data):
    """TensorFlow's reason for not decoding ``data``, one line (e.g. "Invalid PNG data")."""
    import tensorflow as tf

    try:
        tf.io.decode_image(data, expand_animations=False)
    except tf.errors.OpError as err:
        text = err.message.split("}}")[-1].split("[Op:")[0]
        return " ".join(text.split()) or type(err).__name__
    return "decodes when tried alone"


def _centre_crop(image, height, width):
    """Keras' crop_to_aspect_ratio: the largest centred box of aspect height:width."""
    import tensorflow as tf

    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    crop_h = tf.clip_by_value(w * height // width, 1, h)
    crop_w = tf.clip_by_value(h * width // height, 1, w)
    return tf.image.crop_to_bounding_box(
        image, (h - crop_h) // 2, (w - crop_w) // 2, crop_h, crop_w
    )


def finish_pass(examples, n, batch_size, pad, labelled, first):
    """examples (x, label) of one pass -> static batches, padded with ``first``'s weight-0
    copies or with the remainder dropped."""
    import tensorflow as tf

    if pad:
        batch_size = min(batch_size, n)
        padding = -n % batch_size
        ones = examples.map(lambda x, y: (x, y, tf.constant(1.0)))
        if padding:
            zeros = first.take(padding).map(lambda x, y: (x, y, tf.constant(0.0)))
            ones = ones.concatenate(zeros)
        out = ones if labelled else ones.map(lambda x, y, w: (x, x, w))
    else:
        out = examples if labelled else examples.map(lambda x, y: (x, x))
    return out.batch(batch_size, drop_remainder=True)


def stream_options():
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False  # as kvae.datasets.pipeline: no autotuning thread
    return options


def parallel_calls():
    return max(1, os.cpu_count() or 1)


def seal(batches, n, batch_size, pad):
    """The batches of one pass over ``n`` images with their count stated (Keras reads the
    steps per epoch from it), prefetched, without autotuning."""
    import tensorflow as tf

    count = -(-n // min(batch_size, n)) if pad else n // batch_size
    batches = batches.apply(tf.data.experimental.assert_cardinality(count))
    return batches.prefetch(2).with_options(stream_options())
