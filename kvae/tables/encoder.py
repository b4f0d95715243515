"""The encoder of a table: it sees the observed values and which ones are observed.

x [B, D] in the schema's coding (NaN where missing) becomes [values, mask]: missing values
set to 0, each categorical column one-hot (all zeros when missing), then one 0/1 mask per
column; an MLP reads that. Any posterior (and prior) family reads its features.
"""

import keras
import tensorflow as tf

from kvae.networks.mlp import MLPEncoder
from kvae.tables.schema import TableSchema


def observed_inputs(x, schema):
    """[values with NaN -> 0 and categories one-hot, mask] for table examples ``x``."""
    x = tf.convert_to_tensor(x, tf.float32)
    observed = ~tf.math.is_nan(x)
    value = tf.where(observed, x, 0.0)
    parts = []
    for j, col in enumerate(schema.columns):
        if col.kind == "categorical":
            code = tf.cast(tf.round(value[:, j]), tf.int32)
            hot = tf.one_hot(code, len(col.levels)) * tf.cast(observed[:, j : j + 1], tf.float32)
            parts.append(hot)
        else:
            parts.append(value[:, j : j + 1])
    parts.append(tf.cast(observed, tf.float32))
    return tf.concat(parts, axis=-1)


def observed_width(schema):
    return sum(c.num_params for c in schema.columns) + len(schema)


@keras.saving.register_keras_serializable(package="kvae")
class TableEncoder(MLPEncoder):
    """An MLP on a table example's observed values and mask (see the module docstring).

    Args:
        data_shape: ``(D,)``; schema: the table's schema; hidden, activation: the MLP's."""

    handles_missing = True

    def __init__(self, data_shape=None, schema=None, hidden=(128, 128), **kwargs):
        self.schema = TableSchema.from_dict(schema)
        super().__init__(data_shape or (len(self.schema),), hidden=hidden, **kwargs)

    def build(self, input_shape):
        super().build((input_shape[0], observed_width(self.schema)))

    def call(self, inputs):
        return super().call(observed_inputs(inputs, self.schema))

    def compute_output_shape(self, input_shape):
        width = self.hidden[-1] if self.hidden else observed_width(self.schema)
        return (input_shape[0], width)

    def get_config(self):
        return {**super().get_config(), "schema": self.schema.to_dict()}
