"""Quiet TensorFlow start-up for the ``kvae`` command (never for ``import kvae``).

Importing TensorFlow prints its C++ start-up notes to file descriptor 2 before absl's logging
is initialised (the "All log messages before absl::InitializeLog()" line, oneDNN and CUDA
driver notes, twice: once per shared library), so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them;
afterwards, device set-up logs ``E0000 ... failed call to cuInit ... (303)`` on a machine
without a GPU, which ``TF_CPP_MIN_LOG_LEVEL=3`` does hide. So the command line, unless asked
to be verbose:

* sets ``TF_CPP_MIN_LOG_LEVEL=3`` (unless the user set it), and
* points file descriptor 2 at a temporary file while ``import tensorflow`` runs (a one-shot
  import hook, installed only when TensorFlow is not imported yet). Should the import fail,
  what it printed is replayed on stderr before the error, so nothing is lost then.

Python's own output (click's messages, tracebacks, warnings) is untouched: sys.stderr writes
to file descriptor 2 only outside that import.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import sys
import tempfile

__all__ = ["VERBOSE_ENV", "quiet_tensorflow"]

VERBOSE_ENV = "KVAE_VERBOSE"
_MODULE = "tensorflow"


def quiet_tensorflow():
    """Hide TensorFlow's start-up logs in this process (see the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if _MODULE in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def _fd2_captured():
    """File descriptor 2 goes to a temporary file inside the block; on an exception its
    content is written back to stderr."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. an embedded interpreter)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            os.write(2, sink.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` with the normal path finder and wraps its loader's
    ``exec_module`` (the import proper) in :func:`_fd2_captured`; then removes itself."""

    def find_spec(self, name, path=None, target=None):
        if name != _MODULE:
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def quiet_exec_module(module):
            try:
                with _fd2_captured():
                    exec_module(module)
            finally:
                loader.__dict__.pop("exec_module", None)  # the loader's own method again

        loader.exec_module = quiet_exec_module
        return spec
