"""Loading saved kvae models with clear errors."""

import os
import zipfile

import keras

from kvae.errors import KvaeError, ModelFileError


def load_model(path, *, compile=True, safe_mode=True):
    """Load a model saved with ``model.save("....keras")``; no ``custom_objects`` needed.

    Components registered by plugins are imported through their entry points. Keras'
    ``safe_mode`` stays on: a ``.keras`` file cannot run arbitrary code (lambdas) on load.

    Raises:
        ModelFileError: the file is missing, not a ``.keras`` archive, truncated, or needs a
            plugin that is not installed (the message names the package).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFileError(f"Expected a saved model at {path!r}. Received: no such file.")
    if os.path.isdir(path):
        raise ModelFileError(
            f"Expected a .keras file. Received: the folder {path!r}. For a run directory, "
            f"load {os.path.join(path, 'model.keras')!r}."
        )
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"Expected a Keras 3 .keras file (a zip archive written by model.save). Received: "
            f"{path!r}, which is not a zip archive (truncated, or another format such as HDF5)."
        )
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ModelFileError(f"The model file {path!r} is damaged: {err}.") from err
    if bad is not None:
        raise ModelFileError(f"The model file {path!r} is damaged: member {bad!r} fails its CRC.")
    if "config.json" not in names:
        raise ModelFileError(
            f"Expected a Keras 3 .keras archive with a config.json. Received: {path!r} holding "
            f"{sorted(names)[:5]}. Save models with model.save('name.keras')."
        )
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=safe_mode)
    except KvaeError:
        raise
    except Exception as err:
        cause = err
        while cause.__cause__ is not None or cause.__context__ is not None:
            nxt = cause.__cause__ or cause.__context__
            if isinstance(nxt, KvaeError):
                raise nxt from err
            cause = nxt
        raise ModelFileError(
            f"Could not load the model in {path!r}: {type(err).__name__}: {err}"
        ) from err
