"""The ``kvae`` command line (click). Thin: each command parses options and calls kvae's
library functions (kvae.train, kvae.evaluation, kvae.plots).

Nothing heavy is imported here or by ``--help``: commands are loaded lazily from their
modules, which import only click and kvae's light modules; TensorFlow is imported inside a
command's body, when it runs.

User mistakes (a :class:`~kvae.errors.KvaeError`, a missing or unwritable file) end with a
one-line message on stderr and exit code 1; bad usage (click's checks) with exit code 2.
"""

import importlib
import importlib.util

import click

from kvae._version import __version__
from kvae.cli._quiet import VERBOSE_ENV, quiet_tensorflow
from kvae.errors import KvaeError, TrainingInterrupted

__all__ = ["main"]

# name -> "module:attribute"; imported only when the command is used or listed.
_COMMANDS = {
    "train": "kvae.cli.train:train",
    "evaluate": "kvae.cli.run:evaluate",
    "sample": "kvae.cli.run:sample",
    "reconstruct": "kvae.cli.run:reconstruct",
    "interpolate": "kvae.cli.run:interpolate",
    "encode": "kvae.cli.run:encode",
    "plot": "kvae.cli.run:plot",
    **{name: f"kvae.cli.tables:{name}" for name in ("impute", "score")},
}
_PLUGINS_MODULE = "kvae.cli.plugins"


def _plugins_command():
    """The ``plugins`` group of kvae/cli/plugins.py, or None if that module is absent."""
    try:
        if importlib.util.find_spec(_PLUGINS_MODULE) is None:
            return None
    except ModuleNotFoundError:
        return None
    module = importlib.import_module(_PLUGINS_MODULE)
    for attr in ("plugins", "group", "cli"):
        command = getattr(module, attr, None)
        if isinstance(command, click.Command):
            return command
    return None


class _LazyGroup(click.Group):
    """A group whose commands are imported on first use, and which turns kvae's errors
    into clean messages instead of tracebacks."""

    def list_commands(self, ctx):
        names = list(_COMMANDS)
        if importlib.util.find_spec(_PLUGINS_MODULE) is not None:
            names.append("plugins")
        return sorted(names)

    def get_command(self, ctx, cmd_name):
        if cmd_name == "plugins":
            return _plugins_command()
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TrainingInterrupted as err:  # Ctrl-C or SIGTERM, after saving: the shell's code
            click.echo(str(err), err=True)
            ctx.exit(128 + int(getattr(err, "signum", 2)))  # 130 (SIGINT), 143 (SIGTERM)
        except KvaeError as err:
            raise click.ClickException(str(err)) from None
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
            where = f": {err.filename}" if err.filename else ""
            raise click.ClickException(f"{err.strerror or err}{where}") from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="kvae")
@click.option(
    "-v",
    "--verbose",
    is_flag=True,
    envvar=VERBOSE_ENV,
    help=f"Show TensorFlow's start-up and C++ logs (hidden by default; or set {VERBOSE_ENV}=1).",
)
def main(verbose):
    """kvae: variational autoencoders for Keras 3 with TensorFlow Probability.

    \b
    Train, then inspect a run:
      kvae train --dataset digits --latent-dim 2 --epochs 300 --batch-size 32
      tensorboard --logdir runs/
      kvae evaluate runs/<run> --num-samples 5000
      kvae sample runs/<run> -n 64 -o samples.png
      kvae plot runs/<run> --kind manifold -o manifold.png
    """
    # TensorFlow's C++ start-up chatter (absl, oneDNN and CUDA-driver notes, a cuInit "error"
    # on machines without a GPU) is noise on a terminal; see kvae/cli/_quiet.py.
    if not verbose:
        quiet_tensorflow()
