"""Commands on a finished run directory: evaluate, sample, reconstruct, interpolate, encode,
plot. Each checks its arguments (and that the output can be written) before it imports
TensorFlow, then calls kvae.train.load_run and kvae.evaluation / kvae.plots (and
kvae.records to add results to the run directory)."""

import json
import os

import click

from kvae._choices import AIS_DEFAULTS, LOGLIK_METHODS
from kvae._files import check_writable

_CONTEXT = {"help_option_names": ["-h", "--help"]}
_run_dir = click.argument("run_dir", type=click.Path())
_seed = click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed."
)


def _output(default, suffix, what="figure", shown=None):
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        default=default,
        show_default=shown or True,
        help=f"Where to write the {what} ({suffix}; written to a temporary file, then renamed).",
    )


def _count(*names, low, high=None, default=None, help):
    """An integer option in [low, high]; its default is shown when it has one."""
    return click.option(
        *names,
        type=click.IntRange(min=low, max=high),
        default=default,
        show_default=default is not None,
        help=help,
    )


def _max_examples(default=None):
    return _count(
        "--max-examples", low=1, default=default, help="Use only the first N test examples."
    )


def _load(run_dir):
    from kvae.train import load_run

    return load_run(run_dir)


def _test_data(config, max_examples=None):
    """The first ``max_examples`` test examples as arrays (an image run's: decoded from the
    first test batches only)."""
    from kvae.train import load_test_data

    return load_test_data(config, max_examples)


def _test_set(config, max_examples=None):
    """``(data, y)``: an image run's test stream (None: its labels come with the batches),
    else the test arrays, the first ``max_examples`` of them."""
    from kvae.train import load_test_stream

    stream = load_test_stream(config)
    if stream is not None:
        return stream, None
    return _test_data(config, max_examples)


def _conditions(model, y):
    """The test labels as a conditional model's conditions (None for other models)."""
    return y if getattr(model, "condition", None) is not None else None


def _class_option(what):
    return _count(
        "--class", "label", low=0, default=None, help=f"{what} (a run trained with --conditional)."
    )


def _check_class(model, label, option="--class N"):
    """Refuse a missing --class for a conditional run, a --class for another run, or a class
    out of range (ConfigError, one line)."""
    from kvae.errors import ConfigError

    condition = getattr(model, "condition", None)
    if (label is None) != (condition is None):
        raise ConfigError(
            f"Expected {option} exactly for a run trained with --conditional. Received: "
            + (
                f"--class {label} for an unconditional run."
                if label is not None
                else f"no --class for a conditional run ({condition.describe()})."
            )
        )
    if condition is not None and condition.is_classes and label >= condition.num_classes:
        raise ConfigError(
            f"Expected --class in 0..{condition.num_classes - 1}. Received: --class {label}."
        )


def _done(path, size=None):
    shape = f" ({size[1]} x {size[0]} pixels)" if size else ""
    click.echo(f"Wrote {path}{shape}")


# ----- evaluate -----------------------------------------------------------------------------
_METHODS = [*LOGLIK_METHODS, "auto"]


@click.command(
    context_settings=_CONTEXT,
    short_help="Test ELBO, log p(x) (IWAE, exact, quadrature, AIS), the gaps, active units.",
)
@_run_dir
@click.option(
    "--method",
    type=click.Choice(_METHODS),
    default="iwae",
    show_default=True,
    help="How to compute log p(x): iwae (importance sampling from q, a lower bound, any model); "
    "exact (closed form: linear decoder, Gaussian likelihood, N(0, I) prior); quadrature (a "
    "grid, latent_dim <= 3); ais (annealed importance sampling with HMC, any model); auto "
    "(exact, else quadrature, else iwae). A method that does not apply is refused with the "
    "list of those that do.",
)
@_count(
    "--num-samples",
    "-k",
    low=1,
    default=1000,
    help="K importance samples per example for --method iwae (Burda et al. report K=5000).",
)
@_count(
    "--ais-temperatures",
    low=2,
    default=AIS_DEFAULTS["num_temperatures"],
    help="Intermediate distributions of AIS (--method ais, and the gaps when AIS is used).",
)
@_count("--ais-chains", low=1, default=AIS_DEFAULTS["num_chains"], help="AIS chains per example.")
@click.option(
    "--gaps",
    "with_gaps",
    is_flag=True,
    help="Also the inference gap (log p(x) - ELBO(q)), approximation gap (log p(x) - ELBO(q*), "
    "q* optimised per example) and amortisation gap (ELBO(q*) - ELBO(q)), with standard errors, "
    "on the first --gap-examples test examples; log p(x) for them by exact, else quadrature, "
    "else AIS (or --method if not iwae). Added to the run's metrics.json and TensorBoard.",
)
@_count("--gap-examples", low=2, default=500, help="Test examples used for --gaps.")
@click.option(
    "--gaps-family",
    type=click.Choice(["outputs", "full"]),
    default="outputs",
    show_default=True,
    help="What the gaps' q* ranges over: the posterior head's per-example outputs (an iaf or "
    "hierarchical posterior's shared weights stay fixed: the approximation gap is then an upper "
    "bound of the family's) or the full family (a per-example copy of those weights too; slow, "
    "use a small --gap-examples).",
)
@_count(
    "--batch-size",
    low=1,
    default=None,
    help="Examples per batch.  [default: the run's batch size, which reproduces metrics.json]",
)
@_max_examples()
@_seed
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
def evaluate(
    run_dir,
    method,
    num_samples,
    ais_temperatures,
    ais_chains,
    with_gaps,
    gap_examples,
    gaps_family,
    batch_size,
    max_examples,
    seed,
    as_json,
):
    """Test metrics of a run (nats per example): ELBO, reconstruction, KL, log p(x) by the
    chosen method with its standard error, active units and the KL per latent dimension;
    with --gaps, the variational gaps of log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)); and the
    seconds each estimate took (the gaps' too). On a terminal, progress bars show the time
    left; otherwise a step longer than a minute writes a line to stderr every 10% or minute.

    With a continuous likelihood (gaussian, continuous-bernoulli) log p(x|z) is a log
    density: a positive ELBO and a negative reconstruction term are normal there."""
    from kvae import evaluation

    config, model = _load(run_dir)
    # An image run's test set is streamed batch by batch, never decoded whole.
    x, y = _test_set(config, max_examples)
    batch_size = batch_size or config.batch_size
    ais_options = {"num_temperatures": ais_temperatures, "num_chains": ais_chains}
    # Both methods are settled before any work: one that does not apply (any but IWAE for a
    # conditional run, and so --gaps there) is refused with the list of those that do.
    chosen = evaluation.choose_method(model, method)
    if with_gaps:
        gap_method = "auto" if chosen == "iwae" else chosen
        gap_method = evaluation.choose_method(model, gap_method, order=evaluation.GAP_METHODS)
    metrics, ll = evaluation.evaluate(
        model,
        x,
        num_samples=num_samples,
        batch_size=batch_size,
        seed=seed,
        method=chosen,
        verbose=0 if as_json else "auto",  # a progress bar on a terminal only
        y=y if getattr(model, "condition", None) is not None else None,
        max_examples=max_examples if evaluation.is_stream(x) else None,
        return_log_likelihood=True,
        **(ais_options if chosen == "ais" else {}),
    )
    if with_gaps:
        from kvae.records import record_metrics

        if evaluation.is_stream(x):  # the gaps' examples, the first of the stream, as an array
            gap_x = evaluation.first_examples(x, min(gap_examples, max_examples or gap_examples))[0]
        else:
            gap_x = x[:gap_examples]
        g = evaluation.gaps(
            model,
            gap_x,
            method=gap_method,
            family=gaps_family,
            # log p(x) of the same first examples, already estimated by the same method:
            # reused, not estimated again (quadrature: a third of the gaps' time).
            log_likelihood_result=(
                ll.head(len(gap_x)) if ll is not None and ll.method == gap_method else None
            ),
            batch_size=min(batch_size, 100),
            seed=seed,
            log_likelihood_options=_gap_log_likelihood_options(gap_method, ais_options, as_json),
            verbose=0 if as_json else "auto",
        )
        _add_gaps(metrics, g["summary"])
        record_metrics(run_dir, g["summary"])
    if as_json:
        click.echo(json.dumps(metrics, sort_keys=True))
        return
    click.echo(_table(run_dir, metrics))


def _gap_log_likelihood_options(method, ais_options, as_json):
    """The gaps' log p(x) options: AIS's from the command line; quadrature's progress."""
    if method == "ais":
        return ais_options
    return {"verbose": 0 if as_json else "auto"} if method == "quadrature" else None


def _add_gaps(metrics, summary):
    """The gaps' summary into the metrics, their wall clock into ``seconds`` (the time row)."""
    metrics.update(summary)
    metrics["seconds"]["gaps"] = summary["gap_seconds"]


def _table(run_dir, m):
    rows = [
        f"Run {run_dir}: {m['num_examples']} test examples, nats per example",
        f"  ELBO                 {m['elbo']:12.4f}",
        f"  reconstruction       {m['reconstruction']:12.4f}",
        f"  KL                   {m['kl']:12.4f}",
    ]
    if "log_likelihood" in m:
        method = m.get("log_likelihood_method", "iwae")
        label = f"IWAE K={m['log_likelihood_num_samples']}" if method == "iwae" else method
        rows.append(
            f"  log p(x) ({label}) ".ljust(22)
            + f"{m['log_likelihood']:12.4f} +- {m['log_likelihood_stderr']:.4f} (s.e.)"
        )
        rows.extend(_error_notes(m, "log_likelihood", "    "))
        bad = m.get("log_likelihood_nan_examples") or []
        if bad:
            rows.append(f"    not finite for examples {bad[:20]}{' ...' if len(bad) > 20 else ''}")
    if "gap_inference" in m:
        rows.append(f"  gaps on {m['gap_num_examples']} examples (log p(x) by {m['gap_method']}):")
        if "gap_q_star_over" in m:
            rows.append(f"    q* over {m['gap_q_star_over']}")
        for name, what in (
            ("inference", "log p(x) - ELBO(q) = KL(q || p(z|x))"),
            ("approximation", "log p(x) - ELBO(q*)"),
            ("amortisation", "ELBO(q*) - ELBO(q)"),
        ):
            rows.append(
                f"    {name:<18}{m[f'gap_{name}']:10.4f} +- {m[f'gap_{name}_stderr']:.4f}"
                f"   ({what})"
            )
        rows.extend(_error_notes(m, "gap_log_likelihood", "    "))
    rows.append(
        f"  active units         {m['active_units']:>7d} / {m['latent_dim']}"
        f"   (Var_x E_q[z_u] > {m['active_units_threshold']})"
    )
    if m["kl_per_dim"] is not None:
        shown = ", ".join(f"z{u}={v:.3f}" for u, v in enumerate(m["kl_per_dim"][:16]))
        more = " ..." if len(m["kl_per_dim"]) > 16 else ""
        rows.append(f"  KL per dimension     {shown}{more}")
    rows.append(f"    ({m['kl_per_dim_method']})")
    names = {"elbo": "ELBO", "log_likelihood": "log p(x)", "latent": "latent units"}
    names["gaps"] = f"gaps ({m.get('gap_num_examples')} examples)"
    took = ", ".join(f"{names.get(k, k)} {v:.1f} s" for k, v in m.get("seconds", {}).items())
    if took:
        rows.append(f"  time                 {took}")
    return "\n".join(rows)


def _error_notes(m, prefix, indent):
    """Rows for the errors of log p(x) that its standard error does not show."""
    rows = []
    res = m.get(f"{prefix}_resolution_error")
    if res is not None:
        rows.append(
            f"{indent}grid resolution check {res:.2g} nats (the s.e. of a grid is 0; "
            f"refused above {m.get(f'{prefix}_resolution_tol')})"
        )
    bias = m.get(f"{prefix}_bias_indicator")
    if bias is not None:
        rows.append(
            f"{indent}AIS bias indicator {bias:.4f} nats (estimate minus the estimate at half "
            "the temperatures; the s.e. is chain noise only, the bias is low)"
        )
    return rows


# ----- pictures -----------------------------------------------------------------------------
def _scale_option():
    return click.option(
        "--scale",
        type=click.IntRange(min=1),
        default=None,
        help="Pixels per image pixel.  [default: so that an image is at least 48 pixels]",
    )


def _save_grid(grid, model, output, scale, **labels):
    from kvae import plots

    if scale is None:
        scale = plots.default_scale(plots.image_shape(model.data_shape)[0])
    size = plots.save_grid(grid, output, scale=scale, **labels)
    _done(output, size)


def _require_images(model):
    from kvae import plots
    from kvae.errors import DataError

    if plots.image_shape(model.data_shape) is None:
        raise DataError(
            f"Expected image data to draw. Received: a model of data shape {model.data_shape}."
        )


@click.command(context_settings=_CONTEXT, short_help="New images from prior samples (PNG).")
@_run_dir
@_count("-n", "--num", "n", low=1, default=64, help="Number of samples.")
@_output("samples.png", ".png")
@_seed
@_scale_option()
@_class_option("Samples of this class")
def sample(run_dir, n, output, seed, scale, label):
    """A grid of new images: z from the prior, shown as the mean of p(x|z)."""
    check_writable(output, suffixes=(".png",), what="figure")
    _, model = _load(run_dir)
    from kvae import plots  # after the checks: it imports TensorFlow

    _require_images(model)
    _check_class(model, label)
    _save_grid(plots.samples(model, n, seed=seed, y=label), model, output, scale)


@click.command(
    context_settings=_CONTEXT, short_help="Test images above their reconstructions (PNG)."
)
@_run_dir
@_count("-n", "--num", "n", low=1, default=16, help="Number of test images.")
@_output("recon.png", ".png")
@_scale_option()
def reconstruct(run_dir, n, output, scale):
    """Test images (rows labelled "original") above their reconstructions (rows labelled
    "reconstruction": the mean of p(x|z) at the posterior mean of z; a conditional run's
    with each image's own label)."""
    check_writable(output, suffixes=(".png",), what="figure")
    config, model = _load(run_dir)
    from kvae import plots  # after the checks: it imports TensorFlow

    _require_images(model)
    x, y = _test_data(config, n)
    ncols = min(8, n)
    grid = plots.reconstructions(model, x, n=n, ncols=ncols, y=_conditions(model, y))
    labels = {"row_labels": ["original", "reconstruction"], "rows": 2 * -(-len(x) // ncols)}
    _save_grid(grid, model, output, scale, **labels)


@click.command(
    context_settings=_CONTEXT, short_help="Decoded lines between pairs of test images (PNG)."
)
@_run_dir
@click.option(
    "--rows", type=click.IntRange(min=1), default=4, show_default=True, help="Pairs of test images."
)
@_count("--steps", low=2, default=10, help="Decoded points per row.")
@_output("interp.png", ".png")
@_scale_option()
def interpolate(run_dir, rows, steps, output, scale):
    """Decode the straight line between the posterior means of pairs of test images (the
    first and last column show the two images). A conditional run joins two test images of
    the same class, decoded with that class."""
    check_writable(output, suffixes=(".png",), what="figure")
    config, model = _load(run_dir)
    from kvae import plots  # after the checks: it imports TensorFlow

    _require_images(model)
    y_model = getattr(model, "condition", None)
    # A conditional run looks for pairs of one class among more test images.
    x, y = _test_data(config, 2 * rows if y_model is None else max(2 * rows, 1000))
    grid = plots.interpolations(model, x, rows=rows, steps=steps, y=_conditions(model, y))
    _save_grid(grid, model, output, scale)


@click.command(
    context_settings=_CONTEXT,
    short_help="Posterior means and scales of the test set or of other images (.npz).",
)
@_run_dir
@_output("codes.npz", ".npz", what="codes")
@_max_examples()
@click.option(
    "--dataset",
    "source",
    default=None,
    help="Encode the images of this folder or TFRecord path/glob instead of the test set, "
    "prepared as the run prepared its own (its recorded image size, resize policy, colour "
    "mode and pixel scaling, from config.json). Only for a run trained on images from a "
    "folder or TFRecords.",
)
def encode(run_dir, output, max_examples, source):
    """Posterior means and scales of the test set (with its labels when it has them) as an
    .npz with arrays `mean`, `scale` (marginal standard deviations) and `label`. A run
    trained on an image folder or TFRecords adds `path` (each image's file; `file#index`
    for a TFRecord record) and `class_names`, and streams the images batch by batch;
    with --dataset it encodes another folder or TFRecords, prepared as the run's images
    were."""
    check_writable(output, suffixes=(".npz",), what="codes")
    import numpy as np

    from kvae._files import atomic_path
    from kvae.datasets.sources import example_labels, example_paths
    from kvae.evaluation import posterior_moments
    from kvae.train import load_config

    config = load_config(run_dir)
    if source is not None:  # a non-image run or a bad folder: refused before the model loads
        from kvae.datasets.sources import recorded_images

        streamed = recorded_images(config, source)
    else:
        streamed = _test_stream_of(config)
    _, model = _load(run_dir)
    if streamed is None:
        x, y = _test_data(config, max_examples)
        # A bar on a terminal; a conditional run's codes are q(z|x, y) with the test labels.
        means, scales = posterior_moments(model, x, verbose="auto", y=_conditions(model, y))
        arrays = {}
    else:
        # Streamed batch by batch: only the codes (and the listing's labels, paths) are kept.
        stream, info, part = streamed
        means, scales = posterior_moments(model, stream, verbose="auto", max_examples=max_examples)
        arrays = {"path": np.asarray(example_paths(info, part)[: len(means)], dtype=str)}
        y = example_labels(info, part)
        if y is not None:
            y = y[: len(means)]
            arrays["class_names"] = np.asarray(info.class_names, dtype=str)
    arrays.update(mean=means, scale=scales)
    if y is not None:
        arrays["label"] = np.asarray(y)
    with atomic_path(output) as tmp:
        np.savez(tmp, **arrays)
    labels = "with labels" if y is not None else "no labels"
    click.echo(f"Wrote {output}: {means.shape[0]} codes of size {means.shape[1]}, {labels}")


def _test_stream_of(config):
    """``(test stream, info, "test")`` of an image run; None for a run on arrays."""
    from kvae.datasets.sources import is_streamed, streamed_data

    if not is_streamed(config.dataset):
        return None
    data = streamed_data(config)
    return data.test, data.info, "test"


@click.command(
    context_settings=_CONTEXT, short_help="The 2-D latent manifold or the latent scatter (PNG)."
)
@_run_dir
@click.option(
    "--kind",
    type=click.Choice(["manifold", "latent", "posterior", "classes"]),
    required=True,
    help="manifold: images decoded over a grid of the latent space; latent: posterior means "
    "of the test set coloured by label; posterior: for --num test images, the true posterior "
    "p(z|x) with q(z|x) and the per-example optimum q* over it (a slice above 2-D); classes: "
    "a conditional run's samples, a row per class.",
)
@_output(None, ".png", shown="KIND.png in the current directory")
@click.option(
    "--grid", type=click.IntRange(min=2), default=20, show_default=True, help="Manifold grid size."
)
@click.option(
    "--method",
    type=click.Choice(["pca"]),
    default=None,
    help="Manifold above 2 latent dimensions: grid over the first two principal axes of the "
    "posterior means.",
)
@_count("-n", "--num", "n", low=1, high=16, default=4, help="Test images for --kind posterior.")
@_max_examples(5000)
@_class_option("The class every code of --kind manifold is decoded with")
def plot(run_dir, kind, output, grid, method, n, max_examples, label):
    """The Keras VAE example's figures: the decoded manifold of a 2-D latent space (grid by
    the inverse normal CDF, Kingma & Welling) or the scatter of posterior means by label
    (a PCA projection above 2 dimensions, stated in the title); or, with --kind posterior,
    the true posterior p(z|x) of each of --num test images as filled contours, with q(z|x)
    (solid) and the per-example optimum q* (dashed) at 1 and 2 standard deviations over it,
    titled with log p(x), the ELBO and KL(q || p(z|x)) (a slice along q's two widest
    directions above 2-D; not for a 1-D latent or a conditional run). A conditional run's
    latent scatter encodes each test image with its label, and its manifold is decoded
    with the class given by --class."""
    output = output or os.path.abspath(f"{kind}.png")  # say where the default went
    check_writable(output, suffixes=(".png",), what="figure")
    if label is not None and kind != "manifold":
        raise click.UsageError(f"--class is for --kind manifold. Received: --kind {kind}.")
    config, model = _load(run_dir)
    from kvae import plots  # after the checks: it imports TensorFlow

    if kind == "classes":
        _require_images(model)
        _save_grid(plots.class_samples(model, per_class=10), model, output, None)
        return
    if kind == "manifold":
        _require_images(model)
        if method is None and model.latent_dim != 2:
            from kvae.errors import ConfigError

            raise ConfigError(
                f"Expected a run with latent_dim=2 for --kind manifold. Received: latent_dim="
                f"{model.latent_dim}. Add --method pca for a grid over the first two principal "
                "axes of the posterior means."
            )
        _check_class(model, label)
        x, y = _test_data(config, max_examples) if method else (None, None)
        size = plots.plot_manifold(
            model, output, n=grid, method=method, x=x, y=_conditions(model, y), condition=label
        )
    elif kind == "posterior":
        x, _ = _test_data(config, n)
        size = plots.posterior(model, x, output, n=n)
    else:
        x, y = _test_data(config, max_examples)
        size = plots.plot_latent(model, x, y, output, condition=_conditions(model, y))
    _done(output, size)
