"""Progress bars for kvae's long loops (log p(x) estimates, encoding large data sets), with
Keras' own progress bar, so they look like ``fit`` and ``evaluate``.

``verbose`` follows Keras: 0 silent, 1 a progress bar with the time left, 2 one line when
done; ``"auto"`` is 1 when standard output is a terminal and 0 otherwise (a bar redrawn into a
log file or a pipe is noise).

With ``"auto"`` and no terminal (nohup, CI, a scheduler's log), a step that has run for more
than a minute is not silent either: :class:`Progress` writes one short line to standard error
at each further 10% of its units, or after a minute without one, whichever comes first, and a
last line when it ends. Steps under a minute print nothing.
"""

import sys
import time

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


# Progress lines without a terminal: none before the step has run this long (seconds), then
# one at each further tenth of the units or after this long without one.
QUIET_SECONDS = 60.0
LINE_EVERY_SECONDS = 60.0
LINE_EVERY_FRACTION = 0.1


class Progress:
    """``p = Progress(total, verbose)`` (or ``with Progress(...) as p``), then
    ``p.advance(n)``: a Keras progress bar over ``total`` units; with ``verbose="auto"`` and
    no terminal, progress lines on ``stream`` (standard error) for a step longer than a
    minute (see the module docstring); nothing otherwise when verbose resolves to 0.

    ``title`` names the step in those lines; ``clock`` (seconds, monotonic) is replaceable
    so that tests need not wait."""

    def __init__(self, total, verbose=0, unit_name="step", *, title=None, stream=None, clock=None):
        self.total = int(total)
        self.unit_name = unit_name
        self.done = 0
        self._bar = None
        self._lines = verbose == "auto" and resolve_verbose(verbose) == 0
        self.verbose = resolve_verbose(verbose)
        self._title = title
        self._stream = stream
        self._clock = clock or time.monotonic
        self._start = self._clock()
        self._last_line = None  # (time, units done) of the last line written
        if self.verbose:
            from keras.utils import Progbar

            self._bar = Progbar(self.total, verbose=self.verbose, unit_name=self.unit_name)

    def __enter__(self):
        return self

    def advance(self, n=1):
        self.done = min(self.total, self.done + n)
        if self._bar is not None:
            self._bar.update(self.done)
        if self._lines:
            self._maybe_line()

    def _maybe_line(self):
        now = self._clock()
        elapsed = now - self._start
        if self._last_line is None:
            due = elapsed >= QUIET_SECONDS
        else:
            then, before = self._last_line
            step = max(1, int(self.total * LINE_EVERY_FRACTION))
            due = (
                now - then >= LINE_EVERY_SECONDS
                or self.done // step > before // step
                or self.done == self.total
            )
        if due:
            self._last_line = (now, self.done)
            self._write(_line(self._title, self.done, self.total, self.unit_name, elapsed))

    def _write(self, text):
        stream = self._stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def __exit__(self, *exc):
        return False


def _line(title, done, total, unit_name, elapsed):
    """``kvae: <title>: 40/100 steps (40%), 2m05s so far, about 3m08s left``."""
    head = f"kvae: {title}: " if title else "kvae: "
    text = f"{head}{done}/{total} {unit_name}s ({100 * done // max(total, 1)}%)"
    text += f", {_duration(elapsed)} so far"
    if 0 < done < total:
        text += f", about {_duration(elapsed * (total - done) / done)} left"
    elif done == total:
        text += ", done"
    return text


def _duration(seconds):
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
