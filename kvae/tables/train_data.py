"""A table as a training run's data: ``kvae train --dataset patients.csv``.

:func:`train_arrays` gives the run its arrays and the schema to write into it;
:func:`components` the encoder and likelihood that read a table (the schema in their
configs, so the saved model carries it too)."""

from kvae.tables.data import read_table, split_rows

TEST_FRACTION = 0.1


def train_arrays(path, *, schema=None, kinds=None, test_fraction=TEST_FRACTION, seed=0):
    """``(((x_train, None), (x_test, None)), schema)`` of the table at ``path``: coded float32
    rows (NaN where missing), a random ``test_fraction`` of them held out, and the resolved
    :class:`~kvae.tables.TableSchema`. ``schema``/``kinds``: overrides, as in
    :func:`~kvae.tables.read_table`."""
    x, resolved = read_table(path, schema, kinds=kinds)
    x_train, x_test = split_rows(x, test_fraction, seed)
    return ((x_train, None), (x_test, None)), resolved


def components(schema, hidden=(128, 128)):
    """The VAE arguments that make a model of a table: the table encoder and the mixed
    likelihood with ``schema``, MLP networks of widths ``hidden``."""
    schema_dict = schema.to_dict()
    return {
        "encoder": "table",
        "encoder_kwargs": {"schema": schema_dict, "hidden": list(hidden)},
        "decoder": "mlp",
        "decoder_kwargs": {"hidden": list(hidden)[::-1]},
        "likelihood": "mixed",
        "likelihood_kwargs": {"schema": schema_dict},
    }
