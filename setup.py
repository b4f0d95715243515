"""kvae: variational autoencoders for Keras 3, with TensorFlow Probability distributions."""

import pathlib
import re

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "kvae" / "_version.py").read_text()).group(
    1
)

# kvae registers its own components exactly as a third-party package would: through these
# entry points. kvae.registry lists them without importing anything.
ENTRY_POINTS = {
    "console_scripts": ["kvae = kvae_console:main"],
    "kvae.encoders": [
        "mlp = kvae.networks.mlp:MLPEncoder",
        "conv = kvae.networks.conv:ConvEncoder",
        "table = kvae.tables.encoder:TableEncoder",
    ],
    "kvae.decoders": [
        "mlp = kvae.networks.mlp:MLPDecoder",
        "conv = kvae.networks.conv:ConvDecoder",
    ],
    "kvae.posteriors": [
        "gaussian = kvae.heads.posteriors:DiagonalGaussian",
        "full-gaussian = kvae.heads.posteriors:FullCovarianceGaussian",
        "iaf = kvae.heads.iaf:IAFPosterior",
        "hierarchical = kvae.hierarchical:HierarchicalPosterior",
    ],
    "kvae.likelihoods": [
        "bernoulli = kvae.heads.likelihoods:Bernoulli",
        "continuous-bernoulli = kvae.heads.likelihoods:ContinuousBernoulli",
        "gaussian = kvae.heads.likelihoods:Gaussian",
        "discretized-logistic = kvae.heads.likelihoods:DiscretizedLogistic",
        "mixed = kvae.tables.head:MixedLikelihood",
    ],
    "kvae.priors": [
        "standard-normal = kvae.priors:StandardNormal",
        "mixture = kvae.priors:MixtureOfGaussians",
        "vamp = kvae.vamp:VampPrior",
        "hierarchical = kvae.hierarchical:HierarchicalPrior",
    ],
    "kvae.datasets": [
        "mnist = kvae.datasets.mnist:load_mnist",
        "digits = kvae.datasets.digits:load_digits",
    ],
}

setup(
    name="kvae",
    version=VERSION,
    description="Variational autoencoders for Keras 3 with TensorFlow Probability distributions",
    long_description=(HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["kvae", "kvae.*"]),
    py_modules=["kvae_console"],  # the console script, outside kvae so it runs first
    install_requires=[
        # TF 2.21 is the release kvae is built and tested on; TFP 0.25 is the release made for it
        # (TFP pins nothing itself, and older/newer TFP releases break against other TF versions).
        "tensorflow>=2.21,<2.22",
        # Keras 3 API (keras.Layer, SeedGenerator, .keras saving); 3.15 is what is tested.
        "keras>=3.15,<4",
        # The [tf] extra brings tf-keras: TFP 0.25 refuses to import without it, although kvae
        # never uses tfp.layers or tf_keras.
        "tensorflow-probability[tf]>=0.25,<0.26",
        "numpy>=1.26",
        "click>=8.1",
        "tensorboard>=2.21",
        "matplotlib>=3.7",
        "pyyaml>=6",
        # Distribution-name validation and normalization (PEP 503) in kvae.registry.
        "packaging>=22",
        # load("digits") uses scikit-learn's bundled copy (offline).
        "scikit-learn>=1.3",
        # kvae.evaluation and kvae.plots: logsumexp, log_softmax, ndtri (imported directly,
        # not left to come through scikit-learn).
        "scipy>=1.10",
    ],
    extras_require={
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            "hypothesis>=6.100",
            "ruff>=0.6",
            # tests/test_architecture.py checks .importlinter's contracts (acyclic_siblings,
            # optional layers in a layers contract with containers): written against 2.17.
            "import-linter>=2.17",
        ],
        # Tables (kvae.tables, `kvae train --dataset my.csv`, `kvae impute`, `kvae score`):
        # pandas reads CSV, pyarrow Parquet. Optional: image users never need them.
        "tables": ["pandas>=2.0", "pyarrow>=14"],
        # scripts/benchmark_imputation.py: its mixed-type table is one that statsmodels bundles.
        "bench": ["statsmodels>=0.14", "pandas>=2.0"],
        # The documentation site (tox -e docs): Sphinx with autodoc, MyST for the markdown
        # pages, the furo theme, sphinx-gallery for the tutorial it runs at every build.
        "docs": ["sphinx>=8.1", "furo>=2024.8.6", "myst-parser>=4", "sphinx-gallery>=0.17"],
    },
    entry_points=ENTRY_POINTS,
)
