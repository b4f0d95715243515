"""Progress bars for kvae's long loops (log p(x) estimates, encoding large data sets), with
Keras' own progress bar, so they look like ``fit`` and ``evaluate``.

``verbose`` follows Keras: 0 silent, 1 a progress bar with the time left, 2 one line when
done; ``"auto"`` is 1 when standard output is a terminal and 0 otherwise (a bar redrawn into a
log file or a pipe is noise).
"""

import sys

__all__ = ["Progress", "resolve_verbose"]

_VERBOSE = (0, 1, 2, "auto")


def resolve_verbose(verbose):
    """0, 1 or 2 from ``verbose`` (0, 1, 2, "auto", or a bool)."""
    from kvae.errors import ConfigError

    if isinstance(verbose, bool):
        return int(verbose)
    if verbose not in _VERBOSE:
        raise ConfigError(f"Expected `verbose` to be 0, 1, 2 or 'auto'. Received: {verbose!r}")
    if verbose == "auto":
        isatty = getattr(sys.stdout, "isatty", None)
        return 1 if isatty is not None and isatty() else 0
    return verbose


class Progress:
    """``p = Progress(total, verbose)`` (or ``with Progress(...) as p``), then
    ``p.advance(n)``: a Keras progress bar over ``total`` units (nothing at all when verbose
    resolves to 0)."""

    def __init__(self, total, verbose=0, unit_name="step"):
        self.verbose = resolve_verbose(verbose)
        self.total = int(total)
        self.unit_name = unit_name
        self.done = 0
        self._bar = None
        if self.verbose:
            from keras.utils import Progbar

            self._bar = Progbar(self.total, verbose=self.verbose, unit_name=self.unit_name)

    def __enter__(self):
        return self

    def advance(self, n=1):
        self.done = min(self.total, self.done + n)
        if self._bar is not None:
            self._bar.update(self.done)

    def __exit__(self, *exc):
        return False
