"""The decoding and batching steps shared by image folders and TFRecord files (private; see
kvae.datasets.images for the pipeline they make)."""

import os

__all__ = ["decoder_of", "finish_pass", "parallel_calls", "seal"]


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
