"""Image folders and TFRecord files streamed by kvae.datasets.image_dataset (issue 23).

Every folder and TFRecord file here is written by the test itself, from crops of the
photographs scikit-learn ships (china.jpg, flower.jpg), encoded with tf.io (PNG, JPEG) or by
hand (BMP, GIF). Nothing is downloaded.
"""

import importlib.resources
import json
import os
import struct
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from kvae import datasets, testing
from kvae.config import TrainConfig
from kvae.datasets.images import decode_failure, shard
from kvae.datasets.sources import arrays_of, is_streamed, pixels_for, streamed_data
from kvae.errors import ConfigError, DataError

# ----- writing images ---------------------------------------------------------------------------
_PHOTOS = []


def _photo(i=0):
    if not _PHOTOS:
        folder = importlib.resources.files("sklearn.datasets.images")
        for name in ("china.jpg", "flower.jpg"):
            _PHOTOS.append(tf.io.decode_jpeg((folder / name).read_bytes()).numpy())
    return _PHOTOS[i % 2]


def _crop(k, h, w, channels=3):
    """The k-th crop (h, w) of the photographs; pixel (0, 0) holds k so images differ."""
    rng = np.random.default_rng(k)
    photo = _photo(k)
    y, x = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
    crop = photo[y : y + h, x : x + w].copy()
    crop[0, 0] = k % 256
    return crop if channels == 3 else crop.mean(-1, keepdims=True).astype(np.uint8)


def _bmp(image):
    """A 24-bit BMP (bottom-up rows, BGR, rows padded to 4 bytes)."""
    h, w, _ = image.shape
    row = w * 3 + (-w * 3) % 4
    pixels = b"".join(
        image[y, :, ::-1].tobytes() + b"\0" * (row - w * 3) for y in range(h - 1, -1, -1)
    )
    header = struct.pack("<2sIHHI", b"BM", 54 + len(pixels), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    return header + info + pixels


def _gif(image):
    """A GIF of the grey levels of ``image`` (a 256-grey palette; LZW with a clear code before
    the table grows, so every code is 9 bits)."""
    grey = image.mean(-1).astype(np.uint8).ravel() if image.ndim == 3 else image.ravel()
    h, w = image.shape[:2]
    palette = bytes(v for g in range(256) for v in (g, g, g))
    codes, bits = [], []
    for start in range(0, len(grey), 250):
        codes += [256, *grey[start : start + 250].tolist()]
    codes.append(257)
    for code in codes:
        bits += [(code >> b) & 1 for b in range(9)]
    bits += [0] * (-len(bits) % 8)
    data = bytes(
        sum(bit << b for b, bit in enumerate(bits[i : i + 8])) for i in range(0, len(bits), 8)
    )
    blocks = b"".join(
        bytes([len(data[i : i + 255])]) + data[i : i + 255] for i in range(0, len(data), 255)
    )
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", w, h, 0xF7, 0, 0)
        + palette
        + b","
        + struct.pack("<HHHHB", 0, 0, w, h, 0)
        + b"\x08"
        + blocks
        + b"\x00;"
    )


def _encode(image, fmt):
    if fmt == "png":
        return tf.io.encode_png(image).numpy()
    if fmt == "jpg":
        return tf.io.encode_jpeg(image, quality=95).numpy()
    if fmt == "bmp":
        return _bmp(image)
    return _gif(image)


def _write(path, image, fmt="png"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(_encode(image, fmt))
    return path


def _folder(root, classes, n, size=(12, 16), start=0):
    """``n`` PNG crops per class folder (or directly in ``root`` for classes=[None])."""
    k = start
    for cls in classes:
        for i in range(n):
            where = root if cls is None else os.path.join(root, cls)
            _write(os.path.join(where, f"img{i:03d}.png"), _crop(k, *size))
            k += 1
    return str(root)


def _index(batch_x, pixels="unit"):
    """The k written into pixel (0, 0) of each image (no resizing)."""
    scale = 255.0 if pixels == "unit" else 256.0
    return np.rint(batch_x[:, 0, 0, 0] * scale).astype(int)


def _epoch(ds):
    """(k of each weight-1 image, their labels, the batches' shapes) of one pass."""
    ks, labels, shapes = [], [], set()
    for x, y, w in ds:
        keep = w.numpy() > 0
        ks += _index(x.numpy())[keep].tolist()
        labels += y.numpy()[keep].tolist() if y.shape.rank == 1 else [None] * int(keep.sum())
        shapes.add(tuple(x.shape))
    return ks, labels, shapes


# ----- folders ----------------------------------------------------------------------------------
def test_class_folders_labels_static_shapes_and_each_image_once(tmp_path):
    root = _folder(tmp_path / "photos", ["cats", "dogs"], 10)
    train, test, info = datasets.image_dataset(root, batch_size=4, seed=3)
    assert info.class_names == ("cats", "dogs")
    assert (info.num_train, info.num_test, info.split) == (18, 2, "fraction")
    assert info.data_shape == (12, 16, 3) and info.resize is None
    # Static shapes, for one XLA compilation: every batch is full, the last one padded.
    assert tuple(train.element_spec[0].shape) == (4, 12, 16, 3)
    assert tuple(train.element_spec[1].shape) == (4,)
    assert int(train.cardinality()) == 5
    first, labels, shapes = _epoch(train)
    assert shapes == {(4, 12, 16, 3)}
    assert sorted(first) == sorted(k for k in range(20) if k % 10 != 9)  # held out: 9, 19
    assert labels == [0 if k < 10 else 1 for k in first]  # cats were written first
    second, _, _ = _epoch(train)
    assert sorted(second) == sorted(first) and second != first  # reshuffled each epoch
    again, _, _ = _epoch(datasets.image_dataset(root, batch_size=4, seed=3)[0])
    assert again == first  # the same seed, the same stream
    test_ks, test_labels, _ = _epoch(test)
    assert (test_ks, test_labels) == ([9, 19], [0, 1])


def test_train_test_folders_are_the_split(tmp_path):
    root = tmp_path / "set"
    _folder(root / "train", ["a", "b"], 3)
    _folder(root / "test", ["b"], 2, start=50)
    train, test, info = datasets.image_dataset(str(root), batch_size=2, shuffle=False)
    assert (info.split, info.num_train, info.num_test) == ("folders", 6, 2)
    assert info.class_names == ("a", "b")
    assert _epoch(test)[1] == [1, 1]  # test/b is class 1 of the union
    assert _epoch(train)[0] == [0, 1, 2, 3, 4, 5]


def test_unlabelled_folder_and_drop_remainder(tmp_path):
    root = _folder(tmp_path / "flat", [None], 11)
    train, test, info = datasets.image_dataset(root, batch_size=4, drop_remainder=True)
    assert info.class_names is None and info.num_train == 10
    assert int(train.cardinality()) == 2
    x, y = next(iter(train))
    np.testing.assert_array_equal(x, y)  # without labels the target is x itself
    assert _epoch(test)[0] == [9]


@pytest.mark.parametrize("fmt", ["png", "jpg", "bmp", "gif"])
def test_formats_decode_to_the_written_pixels(tmp_path, fmt):
    image = _crop(7, 10, 14)
    if fmt == "gif":  # a grey palette: every channel holds the grey level
        image = np.repeat(image.mean(-1, keepdims=True).astype(np.uint8), 3, -1)
    _write(str(tmp_path / "one" / f"x.{fmt}"), image, fmt)
    _, _, info = datasets.image_dataset(str(tmp_path / "one"), test_fraction=0)
    assert info.data_shape == (10, 14, 3)
    train, _, _ = datasets.image_dataset(str(tmp_path / "one"), test_fraction=0, pixels="uint8")
    x = next(iter(train))[0].numpy()[0]
    error = np.abs(x * 256 - image)
    assert error.mean() < 4 if fmt == "jpg" else error.max() == 0  # JPEG is lossy


def test_grey_image_in_a_colour_set_is_converted_and_said_once(tmp_path):
    root = _folder(tmp_path / "mixed", [None], 4)
    for i in range(2):
        _write(os.path.join(root, f"grey{i}.png"), _crop(90 + i, 12, 16, channels=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, _, info = datasets.image_dataset(root, test_fraction=0)
    said = [str(w.message) for w in caught if "grey" in str(w.message)]
    assert len(said) == 1 and "2 of 6 images are grey" in said[0]
    assert (info.channels, info.converted) == (3, 2)
    _, _, grey = datasets.image_dataset(root, test_fraction=0, color_mode="grayscale")
    assert grey.data_shape == (12, 16, 1)


def test_resize_crops_the_centre_then_resizes(tmp_path):
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 200  # the centre square is bright, the sides dark
    _write(str(tmp_path / "wide" / "x.png"), image)
    crop, _, info = datasets.image_dataset(str(tmp_path / "wide"), image_size=10, test_fraction=0)
    assert info.resize == "crop" and info.data_shape == (10, 10, 3)
    x = next(iter(crop))[0].numpy()[0]
    np.testing.assert_allclose(x, 200 / 255, atol=1e-6)  # only the centre 20x20 is kept
    pad, _, _ = datasets.image_dataset(
        str(tmp_path / "wide"), image_size="10x10", resize="pad", test_fraction=0
    )
    x = next(iter(pad))[0].numpy()[0]
    assert x[:2].max() == 0 and x[-2:].max() == 0  # the whole image fits, padded above/below
    assert x[5, 5, 0] > 0.7 and x[5, 0, 0] < 0.1


def test_pixel_scalings(tmp_path):
    image = np.full((8, 8, 3), 255, np.uint8)
    image[4:] = 3
    _write(str(tmp_path / "p" / "x.png"), image)
    kw = dict(image_size=6, test_fraction=0)
    unit = next(iter(datasets.image_dataset(str(tmp_path / "p"), **kw)[0]))[0].numpy()
    levels = next(iter(datasets.image_dataset(str(tmp_path / "p"), pixels="uint8", **kw)[0]))
    levels = levels[0].numpy()
    assert unit.max() == 1.0 and unit.min() >= 0  # [0, 1] for the Bernoulli-type heads
    k = levels * 256  # the 256 levels kept (k / 256) for the discretised logistic
    np.testing.assert_array_equal(k, np.rint(k))
    assert k.max() == 255 and len(np.unique(unit)) > len(np.unique(levels)) - 1


@pytest.mark.parametrize("cache", ["memory", "file"])
def test_cache_keeps_each_image_once_per_epoch_and_reshuffles(tmp_path, cache):
    root = _folder(tmp_path / "c", [None], 10)
    where = "memory" if cache == "memory" else str(tmp_path / "cache" / "decoded")
    os.makedirs(tmp_path / "cache", exist_ok=True)
    train, test, _ = datasets.image_dataset(root, batch_size=4, cache=where, seed=2)
    first, second = _epoch(train)[0], _epoch(train)[0]
    assert sorted(first) == sorted(second) == list(range(9))
    assert first != second and _epoch(test)[0] == [9]
    if cache == "file":
        assert any(name.startswith("decoded") for name in os.listdir(tmp_path / "cache"))


# ----- bad input --------------------------------------------------------------------------------
def test_truncated_file_is_named_or_skipped(tmp_path):
    root = _folder(tmp_path / "bad", [None], 5)
    bad = os.path.join(root, "img002.png")
    with open(bad, "rb") as f:
        data = f.read()
    with open(bad, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match="img002.png.*truncated PNG.*on_bad_file='skip'"):
        datasets.image_dataset(root)
    train, _, info = datasets.image_dataset(root, on_bad_file="skip", test_fraction=0)
    assert info.num_train == 4 and [s[0] for s in info.skipped] == [bad]
    assert sorted(_epoch(train)[0]) == [0, 1, 3, 4]


def _corrupt_body(data):
    """A PNG whose header and length are sound and whose image data is not: 48 bytes in the
    middle of its IDAT chunk overwritten (header probe passes; TensorFlow's decoder fails)."""
    data = bytearray(data)
    start = data.index(b"IDAT") + 4
    length = struct.unpack(">I", data[start - 8 : start - 4])[0]
    middle = start + length // 2 - 24
    data[middle : middle + 48] = bytes(range(48))
    return bytes(data)


def _corrupt_folder(root, n=8, bad=3):
    root = _folder(root, [None], n, size=(8, 8))
    path = os.path.join(root, f"img{bad:03d}.png")
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(_corrupt_body(data))
    return root, path


def _stream_error(ds):
    with pytest.raises(tf.errors.InvalidArgumentError) as caught:
        for _ in ds:
            pass
    return caught.value


@pytest.mark.parametrize("bad", [3, 7])  # in the middle; the last file of the unshuffled pass
def test_corrupt_body_stops_the_stream_naming_the_file(tmp_path, bad):
    """The header probe passes; decoding fails mid-epoch. The error names the file, shuffled
    or not, and decode_failure turns it into a DataError that says what to do."""
    root, path = _corrupt_folder(tmp_path / "f", bad=bad)
    info = datasets.list_images(root, test_fraction=0)  # the header is sound
    assert info.num_train == 8 and not info.skipped
    for shuffle in (True, False):
        train, _, _ = datasets.image_dataset(root, batch_size=2, test_fraction=0, shuffle=shuffle)
        err = _stream_error(train)
        assert f"could not decode <{path}>" in err.message
        failure = decode_failure(err)
        assert isinstance(failure, DataError)
        assert path in str(failure) and "Invalid PNG data" in str(failure)
        assert "on_bad_file='skip' (--on-bad-file skip)" in str(failure)
    assert decode_failure(tf.errors.InvalidArgumentError(None, None, "other")) is None


def test_corrupt_body_stops_fit_naming_the_file(tmp_path):
    import kvae

    root, path = _corrupt_folder(tmp_path / "f", n=12, bad=5)
    train, _, info = datasets.image_dataset(root, batch_size=4, test_fraction=0)
    model = kvae.VAE(data_shape=info.data_shape, latent_dim=2, seed=0)
    model.compile(optimizer="adam")
    with pytest.raises(tf.errors.InvalidArgumentError, match=f"could not decode <{path}>"):
        model.fit(train, epochs=1, verbose=0, shuffle=False)


def test_corrupt_body_found_before_streaming_and_skipped(tmp_path):
    """decode_check (on by default with on_bad_file='skip'): every file decoded once up
    front; the bad one named at listing, or left out and counted, the steps from the rest."""
    root, path = _corrupt_folder(tmp_path / "f", n=9, bad=4)
    with pytest.raises(DataError, match=f"{path}.*could not be decoded.*Invalid PNG data"):
        datasets.list_images(root, test_fraction=0, decode_check=True)
    train, _, info = datasets.image_dataset(root, batch_size=4, test_fraction=0, on_bad_file="skip")
    assert info.num_train == 8 and [s[0] for s in info.skipped] == [path]
    assert "could not be decoded (Invalid PNG data" in info.skipped[0][1]
    assert int(train.cardinality()) == 2
    assert sorted(_epoch(train)[0]) == [0, 1, 2, 3, 5, 6, 7, 8]


def test_corrupt_record_is_named_or_skipped(tmp_path):
    _records(tmp_path / "a.tfrecord", range(0, 6), label=False, size=(8, 8))
    name = str(tmp_path / "b.tfrecord")
    with tf.io.TFRecordWriter(name) as writer:
        for k in range(6, 12):
            image = _encode(_crop(k, 8, 8), "png")
            image = _corrupt_body(image) if k == 8 else image
            feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image]))}
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    glob = str(tmp_path / "*.tfrecord")
    for shuffle in (True, False):
        train, _, _ = datasets.image_dataset(glob, batch_size=2, test_fraction=0, shuffle=shuffle)
        assert f"could not decode <{name}#2>" in _stream_error(train).message
    with pytest.raises(DataError, match=f"record '{name}#2'.*could not be decoded"):
        datasets.list_images(glob, test_fraction=0, decode_check=True)
    train, _, info = datasets.image_dataset(glob, batch_size=2, test_fraction=0, on_bad_file="skip")
    assert info.num_train == 11 and [s[0] for s in info.skipped] == [f"{name}#2"]
    assert sorted(_epoch(train)[0]) == [k for k in range(12) if k != 8]


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is empty"),
        (b"hello world, not an image", "not a PNG, JPEG, GIF or BMP"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG"),
    ],
)
def test_unreadable_files_are_named(tmp_path, content, match):
    root = _folder(tmp_path / "f", [None], 2)
    path = os.path.join(root, "broken.jpg")
    with open(path, "wb") as f:
        f.write(content)
    with pytest.raises(DataError, match=f"broken.jpg.*{match}"):
        datasets.list_images(root)


def test_empty_and_non_image_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="an empty folder"):
        datasets.image_dataset(str(tmp_path / "empty"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="1 files, none of them an image.*notes.txt"):
        datasets.image_dataset(str(tmp_path / "docs"))
    with pytest.raises(DataError, match="which does not exist"):
        datasets.image_dataset(str(tmp_path / "nowhere"))


def test_mixed_sizes_name_two_files(tmp_path):
    root = _folder(tmp_path / "m", [None], 3, size=(12, 16))
    _write(os.path.join(root, "big.png"), _crop(5, 20, 24))
    with pytest.raises(DataError) as err:
        datasets.image_dataset(root)
    message = str(err.value)
    assert "\n" not in message and "--image-size" in message
    assert "big.png' is 20x24" in message and "img000.png' is 12x16" in message
    _, _, info = datasets.image_dataset(root, image_size=(12, 16))
    assert info.data_shape == (12, 16, 3) and info.resize == "crop"


def test_images_beside_class_folders_are_refused(tmp_path):
    root = _folder(tmp_path / "both", ["a"], 2)
    _write(os.path.join(root, "loose.png"), _crop(1, 12, 16))
    with pytest.raises(DataError, match="loose.png.*labels=None"):
        datasets.image_dataset(root)
    assert datasets.list_images(root, labels=None).num_train == 3


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"image_size": "64x"}, "image_size"),
        ({"color_mode": "rgba"}, "color_mode"),
        ({"resize": "stretch"}, "resize"),
        ({"pixels": "float"}, "pixels"),
        ({"on_bad_file": "ignore"}, "on_bad_file"),
        ({"test_fraction": 1.0}, "test_fraction"),
        ({"batch_size": 0}, "batch_size"),
        ({"cache": 3}, "cache"),
    ],
)
def test_bad_options(tmp_path, kwargs, match):
    root = _folder(tmp_path / "o", [None], 2)
    with pytest.raises(ConfigError, match=match):
        datasets.image_dataset(root, **kwargs)


# ----- TFRecords --------------------------------------------------------------------------------
def _records(path, ks, key="image", label=True, size=(12, 16)):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for k in ks:
            feature = {
                key: tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[_encode(_crop(k, *size), "png")])
                )
            }
            if label:
                feature["label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=[k % 3]))
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def test_tfrecords_by_glob(tmp_path):
    _records(tmp_path / "part-0.tfrecord", range(0, 10))
    _records(tmp_path / "part-1.tfrecord", range(10, 20))
    glob = str(tmp_path / "part-*.tfrecord")
    assert is_streamed(glob)
    train, test, info = datasets.image_dataset(glob, batch_size=4, seed=1)
    assert (info.kind, info.num_train, info.num_test) == ("tfrecord", 18, 2)
    assert info.class_names == ("0", "1", "2") and info.data_shape == (12, 16, 3)
    assert tuple(train.element_spec[0].shape) == (4, 12, 16, 3)
    ks, labels, shapes = _epoch(train)
    assert sorted(ks) == [k for k in range(20) if k % 10 != 9]
    assert labels == [k % 3 for k in ks] and shapes == {(4, 12, 16, 3)}
    assert _epoch(test)[:2] == ([9, 19], [0, 1])
    assert _epoch(datasets.image_dataset(glob, batch_size=4, seed=1)[0])[0] == ks


def test_shards_hold_every_training_image_once(tmp_path):
    """kvae.datasets.images.shard (what each worker of distribute_images streams): every
    count-th file; for TFRecords every count-th record file with its records and labels."""
    for i, (lo, hi) in enumerate([(0, 10), (10, 17), (17, 20)]):
        _records(tmp_path / f"part-{i}.tfrecord", range(lo, hi))
    records = datasets.list_images(str(tmp_path / "part-*.tfrecord"))
    root = _folder(tmp_path / "f", ["a", "b"], 5)
    folder = datasets.list_images(root, test_fraction=0)
    for info, count in ((records, 2), (records, 3), (folder, 2), (folder, 3)):
        seen = []
        for index in range(count):
            part = shard(info, index, count)
            assert part.train_files == info.train_files[index::count]
            train, _, _ = datasets.image_dataset(info.source, batch_size=1, info=part)
            ks, labels, _ = _epoch(train)
            assert len(ks) == part.num_train
            assert labels == ([k % 3 for k in ks] if info is records else [k // 5 for k in ks])
            seen += ks
        want = [k for k in range(20) if k % 10 != 9] if info is records else list(range(10))
        assert sorted(seen) == want


def test_tfrecords_bad_input(tmp_path):
    _records(tmp_path / "x.tfrecord", range(3), key="img")
    with pytest.raises(DataError, match=r"feature 'image'.*Received: features \['img', 'label'\]"):
        datasets.image_dataset(str(tmp_path / "x.tfrecord"))
    _, _, info = datasets.image_dataset(str(tmp_path / "x.tfrecord"), image_key="img")
    assert info.num_train + info.num_test == 3
    good = tf.train.Feature(bytes_list=tf.train.BytesList(value=[_encode(_crop(1, 12, 16), "png")]))
    junk = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"junk"]))
    with tf.io.TFRecordWriter(str(tmp_path / "j.tfrecord")) as writer:
        for feature in (good, junk, good, good):
            example = tf.train.Example(features=tf.train.Features(feature={"image": feature}))
            writer.write(example.SerializeToString())
    with pytest.raises(DataError, match="j.tfrecord#1.*not a PNG"):
        datasets.image_dataset(str(tmp_path / "j.tfrecord"))
    train, _, info = datasets.image_dataset(
        str(tmp_path / "j.tfrecord"), on_bad_file="skip", test_fraction=0, batch_size=2
    )
    assert info.num_train == 3 and [s[0] for s in info.skipped] == [str(tmp_path / "j.tfrecord#1")]
    assert sum(int(w.numpy().sum()) for _, _, w in train) == 3
    with pytest.raises(DataError, match="no file matches"):
        datasets.image_dataset(str(tmp_path / "none-*.tfrecord"))
    (tmp_path / "cut.tfrecord").write_bytes((tmp_path / "x.tfrecord").read_bytes()[:-7])
    with pytest.raises(DataError, match="cut.tfrecord.*corrupt or truncated"):
        datasets.image_dataset(str(tmp_path / "cut.tfrecord"), image_key="img")


# ----- the record: written down, applied again ---------------------------------------------------
def test_record_round_trip_and_applied_again(tmp_path):
    root = _folder(tmp_path / "a", ["x", "y"], 4, size=(20, 30))
    _, _, info = datasets.image_dataset(root, image_size="16x24", pixels="uint8")
    data = json.loads(json.dumps(info.to_dict()))
    assert "train_files" not in data and data["image_size"] == [16, 24]
    assert datasets.ImageData.from_dict(data).to_dict() == info.to_dict()
    with_files = datasets.ImageData.from_dict(json.loads(json.dumps(info.to_dict(files=True))))
    assert with_files.train_files == info.train_files
    # Another folder, other sizes and only class "y": preprocessed and numbered the same way.
    other = _folder(tmp_path / "b", ["y"], 2, size=(40, 50))
    train, _, again = datasets.image_dataset(other, test_fraction=0, **info.options())
    assert again.data_shape == info.data_shape and again.pixels == "uint8"
    assert again.class_names == ("x", "y") and _epoch(train)[1] == [1, 1]


def test_streamed_data_pins_the_preprocessing(tmp_path):
    root = _folder(tmp_path / "faces", ["a", "b"], 4, size=(20, 20))
    config = TrainConfig(
        dataset=root,
        dataset_kwargs={"test_fraction": 0.25},
        image_size=16,
        likelihood="discretized-logistic",
        batch_size=4,
    )
    assert is_streamed(root) and not is_streamed("mnist") and not is_streamed("x.npz")
    assert pixels_for("discretized-logistic") == "uint8" and pixels_for("bernoulli") == "unit"
    data = streamed_data(config)
    pinned = data.config
    assert pinned.image_size == [16, 16] and pinned.dataset_kwargs["pixels"] == "uint8"
    assert pinned.dataset_kwargs["color_mode"] == "rgb"
    assert data.data_shape == (16, 16, 3) and data.steps_per_epoch == 2  # 6 images
    # config.json -> the same data again
    reread = TrainConfig.from_dict(json.loads(pinned.to_json()))
    assert streamed_data(reread).info.to_dict() == data.info.to_dict()
    x, y = arrays_of(data.test)
    assert x.shape == (len(data.info.test_files), 16, 16, 3) and y.tolist() == [0, 1]
    with pytest.raises(ConfigError, match="binarize"):
        streamed_data(config.replace(binarize="dynamic"))
    with pytest.raises(ConfigError, match="dataset_kwargs"):
        streamed_data(config.replace(dataset_kwargs={"hidden": 3}))


# ----- training on the stream -------------------------------------------------------------------
def test_a_vae_fits_on_a_streamed_folder(tmp_path):
    import kvae

    root = _folder(tmp_path / "train", [None], 24, size=(16, 16))
    train, test, info = datasets.image_dataset(root, batch_size=8, test_fraction=0.25)
    model = kvae.VAE(
        data_shape=info.data_shape,
        latent_dim=4,
        encoder="conv",
        decoder="conv",
        encoder_kwargs={"filters": [8, 16]},
        decoder_kwargs={"filters": [16, 8]},
        likelihood="continuous-bernoulli",
        seed=0,
    )
    model.compile(optimizer="adam", jit_compile=False)
    history = model.fit(train, epochs=2, validation_data=test, verbose=0, shuffle=False)
    assert np.all(np.isfinite(history.history["loss"]))
    scores = model.evaluate(test, return_dict=True, verbose=0)
    assert np.isfinite(scores["loss"])


# ----- networks for any image size --------------------------------------------------------------
PYTORCH_VAE_CELEBA = dict(
    encoder_kwargs={
        "filters": [32, 64, 128, 256, 512],
        "dense": 0,
        "normalization": "batch",
        "activation": "leaky_relu",
    },
    decoder_kwargs={
        "filters": [256, 128, 64, 32, 32],
        "base_filters": 512,
        "normalization": "batch",
        "activation": "leaky_relu",
    },
)


def test_pytorch_vae_celeba_network_passes_the_contract_checks():
    shape = (64, 64, 3)
    encoder = testing.check_encoder("conv", shape, kwargs=PYTORCH_VAE_CELEBA["encoder_kwargs"])
    assert encoder(np.zeros((2, *shape), "float32")).shape == (2, 512 * 2 * 2)
    # Five stride-2 3x3 convolutions, each with batch normalisation and leaky ReLU.
    convs = [layer for layer in encoder.convs if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 256, 512]
    assert len([layer for layer in encoder.convs if "bn" in layer.name]) == 5
    decoder = testing.check_decoder(
        "conv", shape, kwargs=PYTORCH_VAE_CELEBA["decoder_kwargs"], likelihoods=("gaussian",)
    )
    assert decoder(np.zeros((2, 3), "float32")).shape == (2, 64, 64, 32)


@pytest.mark.parametrize(
    "shape, kwargs",
    [((32, 48, 1), {"filters": "auto"}), ((27, 21, 1), {"filters": [8, 16, 16]})],
)
def test_conv_networks_for_other_sizes(shape, kwargs):
    testing.check_encoder("conv", shape, kwargs=kwargs)
    decoder = testing.check_decoder("conv", shape, kwargs=kwargs, likelihoods=("bernoulli",))
    assert decoder(np.zeros((2, 3), "float32")).shape[1:3] == shape[:2]


# ----- the command line -------------------------------------------------------------------------
def _kvae(*args):
    from click.testing import CliRunner

    from kvae.cli import main

    return CliRunner().invoke(main, [str(a) for a in args], prog_name="kvae")


def test_train_help_and_bad_image_size(tmp_path):
    text = _kvae("train", "--help").output
    assert "--image-size" in text and "--on-bad-file [error|skip]" in text
    root = _folder(tmp_path / "cli", [None], 2)
    result = _kvae("train", "--dataset", root, "--image-size", "0x3", "--run-dir", tmp_path / "r")
    assert result.exit_code != 0 and "Received: image_size='0x3'" in result.output
    assert not (tmp_path / "r").exists()


def test_train_from_a_folder_and_evaluate_from_the_run_directory(tmp_path):
    root = _folder(tmp_path / "photos", ["a", "b"], 12, size=(24, 20))
    run = tmp_path / "run"
    nets = ["--encoder", "conv", "--decoder", "conv"]
    nets += ["--encoder-kwargs", '{"filters": [8, 16]}', "--decoder-kwargs", '{"filters": [16, 8]}']
    result = _kvae(
        "train", "--dataset", root, "--image-size", "16", *nets, "--likelihood",
        "discretized-logistic", "-z", "2", "--epochs", "1", "-b", "8", "--progress", "none",
        "--no-projector", "--image-every", "0", "--run-dir", run,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["image_size"] == [16, 16] and config["dataset_kwargs"]["pixels"] == "uint8"
    run_file = json.loads((run / "run.json").read_text())
    assert run_file["data_shape"] == [16, 16, 3] and run_file["skipped_files"] == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_examples"] == 2
    evaluated = _kvae("evaluate", run)
    assert evaluated.exit_code == 0, evaluated.output
    assert f"{metrics['elbo']:.4f}" in evaluated.output
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = _kvae("train", "--dataset", empty, "--run-dir", tmp_path / "r2")
    assert failed.exit_code != 0 and "an empty folder" in failed.output
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_train_names_a_corrupt_body_before_the_run_directory(tmp_path, mode):
    """kvae train decodes every file once before it makes the run directory: with
    --on-bad-file error a file whose body is corrupt stops it with one line naming the file;
    with skip the run leaves the file out and counts it in run.json."""
    root, path = _corrupt_folder(tmp_path / "photos", n=10, bad=4)
    run = tmp_path / "run"
    result = _kvae(
        "train", "--dataset", root, "--on-bad-file", mode, "-z", "2", "--epochs", "1",
        "-b", "4", "--progress", "none", "--no-projector", "--image-every", "0",
        "--eval-num-samples", "0", "--run-dir", run,
    )  # fmt: skip
    if mode == "error":
        assert result.exit_code != 0 and "Traceback" not in result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and path in lines[0] and "could not be decoded" in lines[0]
        assert not run.exists()
    else:
        assert result.exit_code == 0, result.output
        assert json.loads((run / "run.json").read_text())["skipped_files"] == 1


def test_train_refuses_a_folder_under_multi_worker_before_the_cluster_starts(tmp_path):
    """kvae train's run feeds fit the padded stream Keras 3.15 cannot take under
    MultiWorkerMirroredStrategy: refused in one line, before the strategy or run directory."""
    root = _folder(tmp_path / "photos", [None], 4)
    result = _kvae(
        "train", "--dataset", root, "--strategy", "multi-worker", "--run-dir", tmp_path / "r"
    )  # fmt: skip
    assert result.exit_code != 0
    assert "distribute_images" in result.output and "TF_CONFIG" not in result.output
    assert not (tmp_path / "r").exists()
