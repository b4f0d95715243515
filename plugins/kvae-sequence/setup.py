"""kvae-sequence: GRU sequence networks, a categorical likelihood and a toy data set for kvae."""

import pathlib
import re

from setuptools import setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "kvae_sequence" / "__init__.py").read_text()
).group(1)

setup(
    name="kvae-sequence",
    version=VERSION,
    description="GRU sequence encoder/decoder, categorical likelihood and toy data, as kvae plugins",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["kvae_sequence"],
    install_requires=["kvae"],
    extras_require={"test": ["pytest>=8"]},
    # kvae finds these after `pip install`, through importlib.metadata; nothing is imported
    # until one of the names is used.
    entry_points={
        "kvae.encoders": ["gru = kvae_sequence:GRUEncoder"],
        "kvae.decoders": ["gru = kvae_sequence:GRUDecoder"],
        "kvae.likelihoods": ["categorical = kvae_sequence:Categorical"],
        "kvae.datasets": ["toy-sequences = kvae_sequence:load_toy_sequences"],
    },
)
