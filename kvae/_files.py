"""Files kvae writes and reads: so a reader never sees half of one, write a temporary file
in the same folder, fsync it, then ``os.replace`` it onto the final name (atomic on POSIX and
Windows); and one JSON reader and writer for kvae's own files."""

import contextlib
import json
import os
import tempfile

from kvae.errors import KvaeError, ModelFileError


def check_writable(path, *, suffixes=None, what="output"):
    """Raise KvaeError unless ``path`` can be written (its folder exists and is writable).

    Checked before any expensive work, so a bad ``-o`` fails at once."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise KvaeError(
            f"Expected a file path for the {what}. Received: {path!r}, which is a folder."
        )
    if suffixes and not path.lower().endswith(tuple(suffixes)):
        raise KvaeError(
            f"Expected the {what} path to end in {' or '.join(suffixes)}. Received: {path!r}."
        )
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise KvaeError(
            f"Expected the folder of the {what} to exist. Received: {path!r}, whose folder "
            f"{folder!r} does not exist (or is not a folder). Create it first."
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise KvaeError(f"Cannot write the {what} {path!r}: the folder {folder!r} is read-only.")
    return path


@contextlib.contextmanager
def atomic_path(path, *, suffix=None):
    """Yield a temporary path beside ``path`` ending like it (everything after the name's
    first dot: ``.weights.h5`` and ``.keras`` included, as Keras insists; or ``suffix``);
    when the block succeeds the file is flushed to disk (fsync) and renamed onto ``path``,
    and the rename is made durable (fsync of the folder). On failure the temporary file is
    removed and ``path`` is left as it was.

    The one atomic writer of kvae: runs, checkpoints, the MNIST cache and exported files
    all write through it."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    stem, dot, ext = name.lstrip(".").partition(".")
    ext = dot + ext
    if suffix is not None:
        stem, ext = name[: -len(suffix)] if name.endswith(suffix) else name, suffix
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".tmp{ext}", dir=folder)
    except OSError as err:
        raise KvaeError(f"Cannot write {path!r}: {err.strerror or err}.") from None
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give it the usual mode
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    _fsync(folder)


def _fsync(path):
    """Flush a file (or a folder's entries) to disk; a file system without it is no error."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path, text):
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def write_json(path, data):
    """``data`` as indented JSON with sorted keys (NaN written as NaN), atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=True) + "\n")


def read_json(path):
    """The value in a JSON file (OSError and ValueError pass through to the caller)."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_format_json(path, fmt, what):
    """The dict in a JSON file that kvae wrote with ``{"format": fmt, ...}``.

    A missing file raises FileNotFoundError (callers decide what absence means); an
    unreadable file or another format raises ModelFileError naming ``what``.
    """
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:
        raise ModelFileError(f"The {what} {path!r} is unreadable: {err}.") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        found = data.get("format") if isinstance(data, dict) else None
        raise ModelFileError(
            f"Expected {path!r} to be a kvae {what} (format {fmt!r}). Received: format={found!r}."
        )
    return data
