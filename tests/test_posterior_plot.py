"""kvae.plots.posterior and `kvae plot --kind posterior`: the true posterior on a grid with q
and q* over it."""

import sys

import numpy as np
import pytest
from PIL import Image

import kvae
from kvae import plots
from kvae.evaluation import linear_gaussian_posterior
from kvae.plots.posterior_figure import _density, _plane

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from test_loglik import _data, _linear  # noqa: E402


@pytest.fixture(scope="module")
def linear():
    return _linear()


def test_the_drawn_density_is_the_true_posterior(linear):
    """On the linear-Gaussian model the panel's density must be N(m, L^-1) (closed form),
    normalised on the plane: compare values at every grid point."""
    x = _data()[:3]
    q = linear.encode(x)
    origin, axes, half, sliced = _plane(linear, x, q, 61)
    assert not sliced
    unit, z, dens = _density(linear, x, origin, axes, half, 61)
    means, prec = linear_gaussian_posterior(linear, x)
    np.testing.assert_allclose(origin, means, atol=1e-3)  # centred on the posterior mean
    cov = np.linalg.inv(prec)
    diff = z - means[None]
    quad = np.einsum("pbi,ij,pbj->pb", diff, prec, diff)
    ref = np.exp(-0.5 * quad) / (2 * np.pi * np.sqrt(np.linalg.det(cov)))
    np.testing.assert_allclose(dens, ref, atol=1e-4 * ref.max())


def test_posterior_figure_array_and_png(linear, tmp_path):
    x = _data()[:2]
    arr = plots.posterior(linear, x, n=2)
    assert arr.ndim == 3 and arr.shape[2] == 3 and arr.shape[0] > arr.shape[1] / 2
    assert 0 <= arr.min() and arr.max() <= 1 and arr.std() > 0.05  # not blank
    size = plots.posterior(linear, x, tmp_path / "p.png", n=2)
    with Image.open(tmp_path / "p.png") as image:
        assert (image.size[1], image.size[0]) == size


def test_posterior_slice_above_two_dimensions(tmp_path):
    model = kvae.VAE(data_shape=(5,), latent_dim=4, likelihood="gaussian", seed=0)
    x = _data()[:2]
    q = model.encode(x)
    origin, axes, _, sliced = _plane(model, x, q, 31)
    assert sliced
    np.testing.assert_allclose(
        np.einsum("bkl,bml->bkm", axes, axes), np.eye(2)[None].repeat(2, 0), atol=1e-6
    )
    # the first axis is where q is widest
    sd = q.stddev().numpy()
    assert np.all(np.abs(axes[np.arange(2), 0, sd.argmax(axis=1)]) > 0.99)
    size = plots.posterior(model, x, tmp_path / "s.png", n=2, optimise=False)
    assert size[0] > 0


def test_a_flow_posterior_is_drawn_as_contours_with_a_legend(tmp_path):
    """q without a covariance (IAF) is drawn as density contours; the legend still names q
    and q* (an unlabelled contour used to leave matplotlib warning, at every TensorBoard
    epoch, that the legend had nothing to show)."""
    import warnings

    from kvae.plots.posterior_figure import draw_posterior

    model = kvae.VAE(
        data_shape=(5,),
        latent_dim=2,
        likelihood="gaussian",
        posterior="iaf",
        posterior_kwargs={"num_steps": 1, "hidden_units": [4]},
        seed=0,
    )
    x = _data()[:1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fig = draw_posterior(model, x, None, optimise=True, grid=21)
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == ["q(z|x)", "q*(z|x)"]
