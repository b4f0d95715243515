"""A table as a training run's data: ``kvae train --dataset patients.csv``.

Two functions for kvae.train (duck-typed on its config: ``dataset``, ``dataset_kwargs``,
``seed``, the components' names and kwargs, ``replace``):

- :func:`table_config`: before the model is built, the config with the table encoder and
  the mixed likelihood, whose kwargs hold the resolved schema (inferred from the file, with
  the overrides of ``dataset_kwargs``). config.json then carries the schema, and so does the
  saved model: every later command (evaluate, resume, impute, score) reads rows with it.
- :func:`table_data`: the run's arrays, read with the schema the config holds.

``dataset_kwargs`` of a table: ``schema`` (a schema file's path), ``kinds`` ({column:
kind}), ``test_fraction`` (the share of rows held out, default 0.1).
"""

from kvae.errors import ConfigError
from kvae.tables.data import read_table, split_rows
from kvae.tables.read import is_table_path
from kvae.tables.schema import TableSchema

TEST_FRACTION = 0.1
HIDDEN = (128, 128)
_OPTIONS = ("schema", "kinds", "test_fraction")


def _options(config):
    kwargs = dict(config.dataset_kwargs or {})
    unknown = sorted(set(kwargs) - set(_OPTIONS))
    if unknown:
        raise ConfigError(
            f"Expected dataset_kwargs of a table among {list(_OPTIONS)}. Received: {unknown}."
        )
    fraction = kwargs.get("test_fraction", TEST_FRACTION)
    if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
        raise ConfigError(f"Expected 0 < test_fraction < 1. Received: test_fraction={fraction!r}.")
    return kwargs.get("schema"), kwargs.get("kinds"), float(fraction)


def table_config(config):
    """``config`` with the table components and the resolved schema when its data set is a
    table file (a config that already holds them, a resumed run's, is kept); unchanged
    otherwise."""
    if not is_table_path(config.dataset):
        return config
    if config.likelihood == "mixed" and "schema" in (config.likelihood_kwargs or {}):
        return config
    schema_file, kinds, _ = _options(config)
    _, schema = read_table(config.dataset, schema_file, kinds=kinds)
    hidden = (config.encoder_kwargs or {}).get("hidden", HIDDEN)
    # A table is no picture: no TensorBoard images of its rows, nor projector sprites.
    return config.replace(**components(schema, hidden), image_every=0, projector=False)


def table_data(config):
    """``((x_train, None), (x_test, None))`` of a table data set: the rows coded with the
    config's schema (NaN where missing), a seeded random share of them held out."""
    _, _, fraction = _options(config)
    schema = TableSchema.from_dict(config.likelihood_kwargs["schema"])
    return load_split(config.dataset, schema, test_fraction=fraction, seed=config.seed)[0]


def load_split(path, schema=None, *, kinds=None, test_fraction=TEST_FRACTION, seed=0):
    """``(((x_train, None), (x_test, None)), schema)``: a table file's coded rows (NaN where
    missing), a seeded random ``test_fraction`` of them held out, and the schema they were
    read with (``schema`` and ``kinds`` as in :func:`~kvae.tables.read_table`). The form
    of ``kvae.datasets.load``'s answer, plus the schema."""
    x, resolved = read_table(path, schema, kinds=kinds)
    x_train, x_test = split_rows(x, test_fraction, seed)
    return ((x_train, None), (x_test, None)), resolved


def components(schema, hidden=HIDDEN):
    """The VAE arguments that make a model of a table: the table encoder and the mixed
    likelihood with ``schema``, MLP networks of widths ``hidden`` (mirrored in the
    decoder)."""
    schema_dict = schema.to_dict()
    return {
        "encoder": "table",
        "encoder_kwargs": {"schema": schema_dict, "hidden": list(hidden)},
        "decoder": "mlp",
        "decoder_kwargs": {"hidden": list(hidden)[::-1]},
        "likelihood": "mixed",
        "likelihood_kwargs": {"schema": schema_dict},
    }
