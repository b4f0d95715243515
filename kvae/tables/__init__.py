"""Tables: mixed-type columns with missing values (docs/tables.md).

    x, schema = kvae.tables.read_table("patients.csv")          # NaN where missing
    model = kvae.VAE(data_shape=x.shape[1:], **kvae.tables.components(schema))

A table's columns are continuous, count, binary or categorical (inferred, or set by a
schema file); :class:`TableSchema` is the inert record of kinds, levels and standardisation
constants that every later command reads new rows with. :class:`MixedLikelihood` scores
the observed entries only; :class:`TableEncoder` sees the observed values and the mask.
pandas (and pyarrow for Parquet) is the ``tables`` extra: ``pip install "kvae[tables]"``.
"""

from kvae.tables.data import (
    filled_frame,
    load_overrides,
    load_schema,
    read_table,
    read_with_schema,
    save_schema,
    split_rows,
    to_frame,
    write_csv,
)
from kvae.tables.encoder import TableEncoder
from kvae.tables.head import MixedColumns, MixedLikelihood
from kvae.tables.read import is_table_path
from kvae.tables.schema import KINDS, Column, TableSchema
from kvae.tables.train_data import components, load_split, table_config, table_data

__all__ = [
    "KINDS",
    "Column",
    "MixedColumns",
    "MixedLikelihood",
    "TableEncoder",
    "TableSchema",
    "components",
    "filled_frame",
    "is_table_path",
    "load_overrides",
    "load_schema",
    "load_split",
    "read_table",
    "read_with_schema",
    "save_schema",
    "split_rows",
    "table_config",
    "table_data",
    "to_frame",
    "write_csv",
]
