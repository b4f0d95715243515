"""Image headers read without decoding (private): size, channels, and a truncation check.

``probe(path)`` opens the file, reads its header (and its last bytes) and returns
``(height, width, channels)``, or raises :class:`BadImage` saying what is wrong. Used by
:mod:`kvae.datasets.images` to check every file of a data set before any training starts:
a wrong or cut-off file is named by its path then, not as an anonymous decode error mid-epoch.
Channels: 1 for grey (and grey + alpha), 3 for colour (RGB, RGBA and palette images: their
alpha is dropped when decoded to 3 channels). A probe reads a few hundred bytes per file.
"""

import os
import struct

_PNG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
# SOF markers (baseline, progressive, lossless, ...) carry the frame size; C4, C8, CC do not.
_JPEG_SOF = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_TAIL = 1024


class BadImage(ValueError):
    """A file is not a readable PNG, JPEG, GIF or BMP; the message says why."""


def probe(path):
    """``(height, width, channels)`` of the image file at ``path`` (see the module docstring)."""
    try:
        with open(path, "rb") as f:
            return probe_bytes(f.read(32), f)
    except OSError as err:
        raise BadImage(f"cannot be read ({err.strerror or err})") from None


def probe_bytes(head, f):
    """The same for a file-like ``f`` (seekable) whose first bytes are ``head``."""
    size = f.seek(0, os.SEEK_END)
    if head.startswith(_PNG):
        return _png(head, f, size)
    if head.startswith(b"\xff\xd8"):
        return _jpeg(f, size)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _gif(head, f, size)
    if head.startswith(b"BM"):
        return _bmp(head, size)
    if not head:
        raise BadImage("is empty (0 bytes)")
    raise BadImage(f"is not a PNG, JPEG, GIF or BMP image (its first bytes are {head[:8]!r})")


def _tail(f, size, n=_TAIL):
    f.seek(max(0, size - n))
    return f.read(n)


def _check_size(height, width, kind):
    if height < 1 or width < 1:
        raise BadImage(f"has a corrupt {kind} header (size {height}x{width})")


def _png(head, f, size):
    if len(head) < 26 or head[12:16] != b"IHDR":
        raise BadImage("has a corrupt PNG header (no IHDR chunk)")
    width, height = struct.unpack(">II", head[16:24])
    color_type = head[25]
    _check_size(height, width, "PNG")
    if not _tail(f, size, 12).endswith(_PNG_END):
        raise BadImage("is a truncated PNG (no IEND chunk at its end)")
    return height, width, 1 if color_type in (0, 4) else 3


def _jpeg(f, size):
    pos = 2
    while pos + 4 <= size:
        f.seek(pos)
        marker = f.read(4)
        if len(marker) < 4 or marker[0] != 0xFF:
            break
        kind = marker[1]
        if kind == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", marker[2:4])[0]
        if kind in _JPEG_SOF:
            frame = f.read(6)
            if len(frame) < 6:
                break
            height, width = struct.unpack(">HH", frame[1:5])
            _check_size(height, width, "JPEG")
            if b"\xff\xd9" not in _tail(f, size):
                raise BadImage("is a truncated JPEG (no end-of-image marker)")
            return height, width, 1 if frame[5] == 1 else 3
        if kind == 0xDA:  # start of scan before any frame header
            break
        pos += 2 + length
    raise BadImage("has a corrupt or truncated JPEG header (no frame size found)")


def _gif(head, f, size):
    width, height = struct.unpack("<HH", head[6:10])
    _check_size(height, width, "GIF")
    if not _tail(f, size, 1).endswith(b";"):
        raise BadImage("is a truncated GIF (no trailer byte at its end)")
    return height, width, 3


def _bmp(head, size):
    if len(head) < 30:
        raise BadImage("has a corrupt BMP header (shorter than 30 bytes)")
    declared = struct.unpack("<I", head[2:6])[0]
    width, height = struct.unpack("<ii", head[18:26])
    bits = struct.unpack("<H", head[28:30])[0]
    _check_size(abs(height), width, "BMP")
    if declared and declared > size:
        raise BadImage(f"is a truncated BMP ({size} of its {declared} bytes)")
    return abs(height), width, 1 if bits == 8 else 3
