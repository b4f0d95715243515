"""Sphinx configuration of kvae's documentation site.

Build it strictly, as CI does (``tox -e docs``):

    sphinx-build -W --keep-going -n -b html docs docs/_build/html

``-n`` (nitpicky) makes every unresolved cross-reference a warning and ``-W`` makes every
warning an error, so a broken link or a docstring naming something that does not exist
fails the build. ``-D plot_gallery=0`` skips running the tutorial (quick local builds only).
"""

import inspect
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
# Document this checkout's kvae, also when another copy is installed.
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import kvae  # noqa: E402

project = "kvae"
author = "the kvae authors"
copyright = "the kvae authors"
release = kvae.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    # sphinx-gallery writes these next to the pages; they are not pages themselves.
    "auto_tutorials/*.ipynb",
    "auto_tutorials/*.py",
    "auto_tutorials/*.zip",
    "auto_tutorials/*.md5",
    "auto_tutorials/*.json",
    # the gallery's source folder holds scripts, not pages
    "tutorials/*",
]

# ----- markdown (MyST) ------------------------------------------------------------------
myst_enable_extensions = ["colon_fence"]
# "[text](#a-heading)" links in the pages resolve to headings of levels 1-3.
myst_heading_anchors = 3

# ----- API reference (autodoc) ----------------------------------------------------------
autodoc_default_options = {
    "members": True,
    "member-order": "bysource",
}
autodoc_typehints = "description"
autodoc_inherit_docstrings = False  # Keras' own docstrings stay in Keras' documentation
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False


def _own_init_signature(app, what, name, obj, options, signature, return_annotation):
    """keras.Model defines ``__new__(cls, *args, **kwargs)``, which autodoc would show as the
    signature of every model class (``kvae.VAE(*args, **kwargs)``); show the class's own
    ``__init__`` arguments instead."""
    if what == "class" and signature == "(*args, **kwargs)" and "__init__" in vars(obj):
        sig = inspect.signature(obj.__init__)
        params = list(sig.parameters.values())[1:]  # without self
        return str(sig.replace(parameters=params)), return_annotation
    return None


# ----- tutorial (sphinx-gallery) --------------------------------------------------------
# Every build runs the tutorial: one that no longer runs fails CI.
sphinx_gallery_conf = {
    "examples_dirs": ["tutorials"],
    "gallery_dirs": ["auto_tutorials"],
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "only_warn_on_example_error": False,
    "show_memory": False,
    "min_reported_time": 1,
    "write_computation_times": False,
}

# ----- cross-references -----------------------------------------------------------------
nitpicky = True
# Intersphinx would resolve Keras, TensorFlow, TFP, numpy and Python names against their
# sites, but the build has no internet. Instead the references into those EXTERNAL
# namespaces (and the Python built-in types docstrings name) are ignored, by namespace.
# kvae's own names are never listed here: a kvae reference that does not resolve is an
# error and gets fixed in the docstring.
nitpick_ignore_regex = [
    (r"py:.*", r"(keras|tf|tensorflow|tfp|tensorflow_probability|np|numpy)(\..*)?"),
    (r"py:.*", r"(tf_keras|matplotlib|plt|click|yaml)(\..*)?"),
    (
        r"py:(class|obj|data)",
        r"(int|float|str|bool|bytes|dict|list|tuple|set|object|callable|type|None|"
        r"Callable|Iterable|Sequence|Mapping|Any|Optional|Union|optional|"
        r"pathlib\.Path|os\.PathLike|Exception|ValueError|TypeError|KeyError|"
        r"RuntimeError|DeprecationWarning|UserWarning|importlib\.metadata\..*)",
    ),
]


# ----- HTML -----------------------------------------------------------------------------
html_theme = "furo"
html_title = f"kvae {release}"
html_static_path = []


def setup(app):
    app.connect("autodoc-process-signature", _own_init_signature)
