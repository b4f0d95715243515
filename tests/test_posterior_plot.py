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
    # linear-Gaussian (probabilistic PCA): the true posterior is known in closed form
    model = kvae.VAE(
        data_shape=(5,),
        latent_dim=4,
        encoder_kwargs={"hidden": []},
        decoder_kwargs={"hidden": []},
        likelihood="gaussian",
        likelihood_kwargs={"scale": "scalar"},
        seed=0,
    )
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
    _check_sliced_panels(model, x, q, sd, axes)


def _check_sliced_panels(model, x, q, sd, axes):
    """What each drawn slice must get right: its limits are +-4 of q's standard deviations
    along q's two widest directions, and the filled contours of p(z|x) peak where the
    closed-form posterior restricted to the slice does (to within a grid cell)."""
    from kvae.plots.posterior_figure import draw_posterior

    g = 41
    fig = draw_posterior(model, x, None, optimise=False, grid=g)
    panels = fig.axes
    assert len(panels) == 2
    means, prec = linear_gaussian_posterior(model, x)
    m = q.mean().numpy().astype(np.float64)
    for i, ax in enumerate(panels):
        order = np.argsort(sd[i])[::-1]
        widest = 4 * sd[i][order[:2]]
        np.testing.assert_allclose(ax.get_xlim(), [-widest[0], widest[0]], rtol=1e-5)
        np.testing.assert_allclose(ax.get_ylim(), [-widest[1], widest[1]], rtol=1e-5)
        # The slice z = m + u0 e_a + u1 e_b (e: q's widest unit axes; sign free) of
        # N(mean, prec^-1) peaks at u* = -(A P A^T)^-1 A P (m - mean).
        a = np.eye(4)[order[:2]]
        u_star = -np.linalg.solve(a @ prec @ a.T, a @ prec @ (m[i] - means[i]))
        signs = np.sign(axes[i][np.arange(2), order[:2]])
        u_star = u_star * signs
        assert np.all(np.abs(u_star) < 0.8 * widest)  # the peak is inside the panel
        filled = [c for c in ax.collections if hasattr(c, "allsegs")][0]
        top = np.concatenate(filled.allsegs[-1])  # the highest filled level's outline
        cell = 2 * widest / (g - 1)
        np.testing.assert_allclose(top.mean(axis=0), u_star, atol=cell.max())


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
