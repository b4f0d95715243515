"""kvae-resnet: residual convolutional encoder/decoder plugins for kvae."""

import pathlib
import re

from setuptools import setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "kvae_resnet" / "__init__.py").read_text()
).group(1)

setup(
    name="kvae-resnet",
    version=VERSION,
    description="Residual convolutional encoder and decoder for colour images, as kvae plugins",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=["kvae_resnet"],
    install_requires=["kvae"],
    extras_require={"test": ["pytest>=8"]},
    # What makes this a kvae plugin: after `pip install`, kvae finds these names through
    # importlib.metadata, with no change to kvae and no import until a name is used.
    entry_points={
        "kvae.encoders": ["resnet = kvae_resnet:ResNetEncoder"],
        "kvae.decoders": ["resnet = kvae_resnet:ResNetDecoder"],
    },
)
