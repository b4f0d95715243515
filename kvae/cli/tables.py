"""Commands on a run trained on a table: ``kvae impute`` (the table with its holes filled)
and ``kvae score`` (each row's log p(x_obs) and per-column contributions). Both read new
rows with the run's schema (its ``schema.json``, the same as in the saved model), check the
arguments and the output path before TensorFlow is imported, and write their CSV
atomically (a temporary file, then renamed: nothing is written half)."""

import click

from kvae._files import check_writable

_CONTEXT = {"help_option_names": ["-h", "--help"]}
_run_dir = click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
_table = click.argument("table", type=click.Path(exists=True, dir_okay=False))
_samples = click.option(
    "--num-samples",
    "-k",
    type=click.IntRange(min=2),
    default=1000,
    show_default=True,
    help="Importance samples from q(z|x_obs) per row.",
)
_seed = click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Random seed."
)
_unknown = click.option(
    "--unknown",
    type=click.Choice(["error", "missing"]),
    default="error",
    show_default=True,
    help="A category level that training never saw: an error naming it and its row, or read "
    "as missing.",
)


def _output(what):
    return click.option(
        "-o",
        "--output",
        type=click.Path(dir_okay=False),
        required=True,
        help=f"Where to write the {what} (.csv; a temporary file, then renamed).",
    )


def _model_and_rows(run_dir, table, unknown):
    """The run's model and the table's coded rows, read with the run's schema."""
    from kvae.tables import load_schema, read_with_schema
    from kvae.train import load_run

    _, model = load_run(run_dir)
    schema = getattr(model.likelihood_head, "schema", None)
    if schema is None:
        raise click.ClickException(
            f"Expected a run trained on a table (the 'mixed' likelihood). Received: {run_dir!r}, "
            f"whose likelihood is {type(model.likelihood_head).__name__}."
        )
    try:
        written = load_schema(run_dir)
    except FileNotFoundError:
        written = schema
    if written != schema:
        raise click.ClickException(
            f"Expected the run's schema.json to be the model's schema. Received: they differ in "
            f"{run_dir!r}; was schema.json edited?"
        )
    x, cells = read_with_schema(table, schema, unknown)
    return model, x, cells, schema


@click.command(context_settings=_CONTEXT, short_help="Fill a table's missing cells.")
@_run_dir
@_table
@_output("filled table")
@_samples
@click.option(
    "--multiple",
    "-m",
    type=click.IntRange(min=1),
    default=None,
    help="Write M imputations drawn from p(x_miss | x_obs) instead of the single one: the "
    "output gains a first column 'imputation' (1..M).",
)
@_unknown
@_seed
def impute(run_dir, table, output, num_samples, multiple, unknown, seed):
    """Fill the missing cells of TABLE (CSV or Parquet) with the model of RUN_DIR and write
    it to --output with the training table's column order, names, kinds and levels.

    The single imputation (default) is MIWAE's (Mattei and Frellsen 2019): importance
    resampling over q(z|x_obs), the weighted mean of each continuous cell and the weighted
    mode of each categorical one. Observed cells are written as read."""
    check_writable(output, suffixes=(".csv",), what="filled table")
    from kvae import imputation
    from kvae.tables import filled_frame, read, write_csv

    model, x, cells, schema = _model_and_rows(run_dir, table, unknown)
    filled = imputation.impute(model, x, num_samples, multiple=multiple, seed=seed)
    if multiple is None:
        frame = filled_frame(schema, cells, filled)
    else:
        pd = read.pandas()
        parts = [filled_frame(schema, cells, f) for f in filled]
        for m, part in enumerate(parts, start=1):
            part.insert(0, "imputation", m)
        frame = pd.concat(parts, ignore_index=True)
    write_csv(frame, output)
    click.echo(f"Wrote {output} ({len(x)} rows, {int((x != x).sum())} cells filled)")


@click.command(context_settings=_CONTEXT, short_help="Anomaly scores: log p(x_obs) per row.")
@_run_dir
@_table
@_output("scores")
@_samples
@_unknown
@_seed
def score(run_dir, table, output, num_samples, unknown, seed):
    """Score each row of TABLE (CSV or Parquet) with the model of RUN_DIR: --output gets
    one row per input row with log_px (the IWAE estimate of log p(x_obs), nats; low means
    unusual), its stderr, top_column (the column that makes the row most unusual) and one
    contribution:<column> per column (the posterior-expected log p(x_j|z); 0 when the cell
    is missing)."""
    check_writable(output, suffixes=(".csv",), what="scores")
    from kvae import imputation
    from kvae.tables import write_csv

    model, x, _, schema = _model_and_rows(run_dir, table, unknown)
    scores = imputation.score(model, x, num_samples, seed=seed)
    write_csv(imputation.scores_frame(scores, schema.names), output)
    click.echo(f"Wrote {output} ({len(x)} rows)")
