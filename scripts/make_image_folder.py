#!/usr/bin/env python
"""Write a folder of small colour PNGs cut from the photographs scikit-learn ships
(``sklearn.datasets.load_sample_images``: china.jpg and flower.jpg, 427x640), for the image
benchmark (scripts/benchmark_images.py) and its tests.

Image i is a random square crop of one photograph (side between the image size and 4x it,
so the patches range from close-ups to wide views), resized to ``--size`` (bilinear),
flipped left-right and/or up-down and shifted (rolled) by a few pixels, each at random from
the generator seeded with ``(seed, i)``: the same seed writes the same bytes, and image i
does not depend on how many images are written (a 40,000-image folder starts with the
20,000-image one).

Layout: ``OUT/train/img/NNNNNN.png`` and ``OUT/test/img/NNNNNN.png``, every 10th image
(i = 9, 19, ...) in test/, the rule kvae uses for a held-out fraction of 0.1. Both kvae
(``image_dataset``: a folder holding exactly train/ and test/ is its own split) and
torchvision's ``ImageFolder`` (one class, "img") read that split as it is.

    python scripts/make_image_folder.py /tmp/photos64 --count 20000
"""

import argparse
import pathlib
import sys

import numpy as np

TEST_EVERY = 10  # every 10th image is held out: kvae's test_fraction=0.1 rule


def photographs():
    """The two sample photographs as uint8 arrays (height, width, 3)."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(im, np.uint8) for im in load_sample_images().images]


def patch(photos, size, seed, index):
    """Image ``index`` of the folder of ``seed``: a (size, size, 3) uint8 array."""
    from PIL import Image

    rng = np.random.default_rng([seed, index])
    photo = photos[int(rng.integers(len(photos)))]
    height, width = photo.shape[:2]
    side = int(rng.integers(size, min(4 * size, height, width) + 1))
    top = int(rng.integers(height - side + 1))
    left = int(rng.integers(width - side + 1))
    crop = Image.fromarray(photo[top : top + side, left : left + side])
    out = np.asarray(crop.resize((size, size), Image.BILINEAR))
    if rng.random() < 0.5:
        out = out[:, ::-1]
    if rng.random() < 0.5:
        out = out[::-1]
    shift = rng.integers(-size // 8, size // 8 + 1, size=2)
    return np.ascontiguousarray(np.roll(out, tuple(int(s) for s in shift), axis=(0, 1)))


def relative_path(index):
    part = "test" if index % TEST_EVERY == TEST_EVERY - 1 else "train"
    return pathlib.Path(part, "img", f"{index:06d}.png")


def write_folder(out, count, size=64, seed=0):
    """Write ``count`` PNGs into ``out`` (which must not hold files yet); return the paths."""
    from PIL import Image

    out = pathlib.Path(out)
    if count < TEST_EVERY:
        raise ValueError(
            f"Expected count >= {TEST_EVERY} (so that test/ gets an image). Received: {count}"
        )
    if size < 8:
        raise ValueError(f"Expected size >= 8. Received: {size}")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"Expected an empty or new folder. Received: {str(out)!r}, which holds files; "
            "remove it or choose another path."
        )
    photos = photographs()
    for part in ("train", "test"):
        (out / part / "img").mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = out / relative_path(i)
        Image.fromarray(patch(photos, size, seed, i)).save(path, format="PNG", compress_level=6)
        paths.append(path)
    return paths


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to create (must be new or empty)")
    p.add_argument("--count", type=int, default=20000, help="images in train/ + test/")
    p.add_argument("--size", type=int, default=64, help="height and width in pixels")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        paths = write_folder(args.out, args.count, args.size, args.seed)
    except (ValueError, FileExistsError) as err:
        p.error(str(err))
    n_test = sum(1 for q in paths if q.parts[-3] == "test")
    print(f"wrote {len(paths)} PNGs ({len(paths) - n_test} train, {n_test} test) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
