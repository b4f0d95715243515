"""kvae.plots: grids, PNG files of the expected size, the manifold grid, atomic writes."""

import os

import numpy as np
import pytest
from PIL import Image
from scipy.special import ndtri

import kvae
from kvae import plots
from kvae.errors import ConfigError, DataError, KvaeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size[1], image.size[0]  # (height, width)


def _model(latent_dim):
    model = kvae.VAE(
        data_shape=(8, 8, 1),
        latent_dim=latent_dim,
        encoder_kwargs={"hidden": [16]},
        decoder_kwargs={"hidden": [16]},
        seed=0,
    )
    model.compile(jit_compile=False, steps_per_execution=1)
    return model


@pytest.fixture(scope="module")
def model2():
    return _model(2)


@pytest.fixture(scope="module")
def model3():
    return _model(3)


@pytest.fixture(scope="module")
def data():
    (_, _), (xt, yt) = kvae.datasets.load("digits")
    return xt[:100], yt[:100]


def _files(folder):
    return sorted(os.listdir(folder))


def test_image_shape_rules():
    assert plots.image_shape((28, 28, 1)) == (28, 28, 1)
    assert plots.image_shape((28, 28)) == (28, 28, 1)
    assert plots.image_shape((784,)) == (28, 28, 1)
    assert plots.image_shape((10,)) is None
    assert plots.image_shape((4, 4, 5)) is None
    with pytest.raises(DataError, match="image-like"):
        plots.as_images(np.zeros((2, 10)))


def test_tile_layout():
    images = np.zeros((5, 3, 4, 1), np.float32)
    images[4] = 0.5
    grid = plots.tile(images, ncols=2, pad=1)
    assert grid.shape == (3 * 3 + 4, 2 * 4 + 3, 1)
    # the 5th image is in row 2, column 0
    assert np.all(grid[1 + 2 * 4 : 1 + 2 * 4 + 3, 1:5] == 0.5)
    assert np.all(grid[0] == 1.0)  # white border


def test_save_grid_writes_png_of_scaled_size(tmp_path):
    grid = np.random.default_rng(0).random((13, 11, 1)).astype(np.float32)
    path = tmp_path / "g.png"
    assert plots.save_grid(grid, path, scale=3) == (39, 33)
    assert _png_size(path) == (39, 33)
    rgb = np.zeros((5, 6, 3), np.float32)
    assert plots.save_grid(rgb, tmp_path / "rgb.png") == (5, 6)
    assert _files(tmp_path) == ["g.png", "rgb.png"]  # no temporary files left


def test_model_grids(model2, data):
    x, _ = data
    # 8x8 tiles, 1-pixel separators
    assert plots.samples(model2, 16, seed=0).shape == (4 * 9 + 1, 4 * 9 + 1, 1)
    assert plots.reconstructions(model2, x, n=16, ncols=8).shape == (4 * 9 + 1, 8 * 9 + 1, 1)
    assert plots.interpolations(model2, x, rows=3, steps=5).shape == (3 * 9 + 1, 7 * 9 + 1, 1)
    assert plots.traversal(model2, x, steps=7).shape == (2 * 9 + 1, 7 * 9 + 1, 1)
    # 8x8 images get 1-pixel white gaps in the manifold too (without, they run into stripes)
    grid = plots.manifold(model2, n=5)
    assert grid.shape == (5 * 9 + 1, 5 * 9 + 1, 1)
    np.testing.assert_array_equal(grid[::9, :, 0], 1.0)  # every 9th row is a white line
    np.testing.assert_array_equal(grid[:, ::9, 0], 1.0)
    assert plots.grid_pad(8, 8) == 1 and plots.grid_pad(15, 28) == 1
    assert plots.grid_pad(16, 16) == 0 and plots.grid_pad(28, 28) == 0  # MNIST: as Keras
    s1, s2 = plots.samples(model2, 4, seed=3), plots.samples(model2, 4, seed=3)
    np.testing.assert_array_equal(s1, s2)  # seeded


def test_reconstructions_show_inputs_above_outputs(model2, data):
    x, _ = data
    grid = plots.reconstructions(model2, x, n=2, ncols=2)
    np.testing.assert_allclose(grid[1:9, 1:9, 0], x[0, ..., 0])
    np.testing.assert_allclose(grid[1:9, 10:18, 0], x[1, ..., 0])


def test_manifold_grid_is_the_inverse_normal_cdf(model2):
    codes, values, description = plots.manifold_codes(model2, n=4)
    expected = ndtri((np.arange(4) + 0.5) / 4)
    np.testing.assert_allclose(values, expected, rtol=1e-6)
    np.testing.assert_allclose(codes[0, :, 0], expected, rtol=1e-6)  # z[0] left to right
    np.testing.assert_allclose(codes[:, 0, 1], expected[::-1], rtol=1e-6)  # z[1] top down
    assert "inverse normal CDF" in description


def test_manifold_needs_two_dims_or_a_method(model3, data, tmp_path):
    with pytest.raises(ConfigError, match="latent_dim=2.*method='pca'"):
        plots.manifold_codes(model3)
    with pytest.raises(ConfigError, match="Expected data"):
        plots.manifold_codes(model3, method="pca")
    with pytest.raises(ConfigError, match="method"):
        plots.manifold_codes(model3, method="tsne")
    codes, _, description = plots.manifold_codes(model3, n=3, method="pca", x=data[0])
    assert codes.shape == (3, 3, 3) and "PCA" in description
    path = tmp_path / "m.png"
    assert plots.plot_manifold(model3, path, n=6, method="pca", x=data[0]) == (800, 800)
    assert _png_size(path) == (800, 800)


def test_plot_manifold_and_latent_are_800px(model2, model3, data, tmp_path):
    x, y = data
    assert plots.plot_manifold(model2, tmp_path / "manifold.png", n=6) == (800, 800)
    assert _png_size(tmp_path / "manifold.png") == (800, 800)
    assert plots.plot_latent(model2, x, y, tmp_path / "latent.png") == (800, 800)
    assert _png_size(tmp_path / "latent.png") == (800, 800)
    plots.plot_latent(model3, x, None, tmp_path / "latent3.png")
    assert _png_size(tmp_path / "latent3.png") == (800, 800)
    points, description = plots.latent_scatter_data(model3, x)
    assert points.shape == (100, 2) and description.startswith("PCA of the 3-D posterior means")
    assert _files(tmp_path) == ["latent.png", "latent3.png", "manifold.png"]


def test_bad_output_paths(model2, tmp_path):
    with pytest.raises(KvaeError, match="does not exist"):
        plots.plot_manifold(model2, tmp_path / "missing" / "m.png")
    with pytest.raises(KvaeError, match=r"end in \.png"):
        plots.plot_manifold(model2, tmp_path / "m.jpg")
    with pytest.raises(KvaeError, match="is a folder"):
        plots.save_grid(np.zeros((2, 2, 1)), tmp_path)
    assert _files(tmp_path) == []


def test_failed_write_leaves_no_file(model2, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    final = tmp_path / "m.png"
    final.write_bytes(b"old")

    def broken(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_manifold(model2, final, n=3)
    assert final.read_bytes() == b"old"  # the previous file is untouched
    assert _files(tmp_path) == ["m.png"]  # and the temporary one removed


def test_row_labels_add_a_margin_with_text(model2, data, tmp_path):
    x, _ = data
    grid = plots.reconstructions(model2, x, n=4, ncols=4)  # rows: original, reconstruction
    plain = plots.save_grid(grid, tmp_path / "plain.png", scale=6)
    size = plots.save_grid(
        grid, tmp_path / "labelled.png", scale=6, row_labels=["original", "reconstruction"], rows=2
    )
    assert size[0] == plain[0] and size[1] > plain[1] + 40  # same height, a margin on the left
    margin = size[1] - plain[1]
    with Image.open(tmp_path / "labelled.png") as image:
        pixels = np.asarray(image)
    assert pixels.shape == size
    np.testing.assert_array_equal(
        pixels[:, margin:], np.asarray(Image.open(tmp_path / "plain.png"))
    )
    # dark text in the margin, in both tile rows: rows are 6 * 9 = 54 pixels apart
    tile_rows = [pixels[6 + 54 * r : 6 + 54 * r + 48, :margin] for r in range(2)]
    assert all((block < 128).sum() > 20 for block in tile_rows)
    with pytest.raises(ConfigError, match="rows"):
        plots.save_grid(grid, tmp_path / "x.png", row_labels=["a"])


def test_latent_colour_bar_ticks_sit_in_the_middle_of_their_blocks(model2, data):
    x, y = data
    from kvae.plots.figures import _latent_figure

    fig = _latent_figure(model2, x, y)
    bar_ax = fig.axes[1]
    classes = np.unique(y)
    np.testing.assert_array_equal(bar_ax.get_yticks(), np.arange(len(classes)))
    # blocks span [i - 0.5, i + 0.5]: the bar's range is [-0.5, n - 0.5]
    np.testing.assert_allclose(bar_ax.get_ylim(), (-0.5, len(classes) - 0.5))
    assert [t.get_text() for t in bar_ax.get_yticklabels()] == [str(c) for c in classes]
