"""Quiet TensorFlow start-up for the ``kvae`` command (never for ``import kvae``).

Importing TensorFlow prints its C++ start-up notes to file descriptor 2 before absl's logging
is initialised (the "All log messages before absl::InitializeLog()" line, oneDNN and CUDA
driver notes, twice: once per shared library), so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them;
device set-up then logs ``E0000 ... failed call to cuInit ... (303)`` at error level on every
machine without a GPU. Hiding that one by level (``TF_CPP_MIN_LOG_LEVEL=3``, as before) hid
every later error too: XLA's, and the allocator's out-of-memory report. So the command line,
unless asked to be verbose:

* sets ``TF_CPP_MIN_LOG_LEVEL=1`` (unless the user set it): TensorFlow's INFO notes (XLA's
  "service initialized", "Compiled cluster") are hidden, its warnings and errors shown;
* points file descriptor 2 at a temporary file while ``import tensorflow`` and the device
  set-up (``tf.config.list_physical_devices()``) run (a one-shot import hook, installed only
  when TensorFlow is not imported yet), then writes back to stderr every captured line
  except the known start-up noise (:func:`is_start_up_noise`: the absl banner, TensorFlow's
  info and warning lines during start-up, and the cuInit and duplicate-factory errors of a
  machine without a GPU): a filter, not a level. Should the import fail, all that it
  printed is replayed, so nothing is lost then.

Python's own output (click's messages, tracebacks, warnings) is untouched: sys.stderr writes
to file descriptor 2 only outside that import.
"""

import contextlib
import importlib.abc
import importlib.machinery
import os
import re
import sys
import tempfile

__all__ = ["VERBOSE_ENV", "is_start_up_noise", "quiet_tensorflow"]

VERBOSE_ENV = "KVAE_VERBOSE"
_MODULE = "tensorflow"
_LOG_LEVEL = "1"  # INFO hidden; warnings and errors shown
# TensorFlow's start-up lines on a machine without a GPU (C++ log lines begin with their
# severity, I/W/E/F, and the date): hidden only while TensorFlow starts.
_NOISE = re.compile(
    r"^(?:WARNING: All log messages before absl::InitializeLog\(\)"
    r"|To enable the following instructions:"
    r"|[IW]\d{4} \d\d:\d\d:"
    r"|E\d{4} .*(?:failed call to cuInit|Unable to register cu\w+ factory))"
)


def is_start_up_noise(line):
    """Whether ``line`` (text, no newline) is one of TensorFlow's start-up lines that the
    command line hides."""
    return bool(_NOISE.match(line))


def quiet_tensorflow():
    """Hide TensorFlow's start-up logs in this process (see the module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _LOG_LEVEL)
    if _MODULE in sys.modules or any(isinstance(f, _QuietImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietImport())


@contextlib.contextmanager
def _fd2_captured(keep=None):
    """File descriptor 2 goes to a temporary file inside the block. Afterwards the lines
    for which ``keep(line)`` is true are written to stderr (none when ``keep`` is None); on
    an exception, all of them."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (e.g. an embedded interpreter)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()  # Python's buffered writes of the block into the sink
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read()
            if not failed and keep is not None:
                lines = text.decode(errors="replace").splitlines(keepends=True)
                text = "".join(line for line in lines if keep(line.rstrip("\n"))).encode()
            if failed or keep is not None:
                os.write(2, text)


def _shown(line):
    return not is_start_up_noise(line)


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
                with _fd2_captured(keep=_shown):
                    exec_module(module)
                    # Device set-up, where a machine without a GPU logs the cuInit error.
                    module.config.list_physical_devices()
            finally:
                loader.__dict__.pop("exec_module", None)  # the loader's own method again

        loader.exec_module = quiet_exec_module
        return spec
