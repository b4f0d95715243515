"""Argument checks shared by kvae's components (Keras-style messages)."""

from kvae.errors import ConfigError


def positive_int(name, value, *, what=""):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        hint = f" {what}" if what else ""
        raise ConfigError(
            f"Expected `{name}` to be an integer >= 1.{hint} Received: {name}={value!r}"
        )
    return value


def shape_tuple(name, value):
    try:
        shape = None if isinstance(value, (str, bytes)) else tuple(int(d) for d in value)
    except (TypeError, ValueError, OverflowError):
        shape = None
    if not shape or any(d < 1 for d in shape):
        raise ConfigError(
            f"Expected `{name}` to be a non-empty tuple of positive integers, such as "
            f"(28, 28, 1). Received: {name}={value!r}"
        )
    return shape


def choice(name, value, allowed):
    if value not in allowed:
        raise ConfigError(
            f"Expected `{name}` to be one of {sorted(allowed)}. Received: {name}={value!r}"
        )
    return value


def positive_float(name, value):
    try:
        ok = float(value) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"Expected `{name}` to be a number > 0. Received: {name}={value!r}")
    return float(value)


def activation(value, name="activation"):
    """A Keras activation name or function, checked the way Keras will read it."""
    import keras

    try:
        keras.activations.get(value)
    except (ValueError, TypeError):
        raise ConfigError(
            f"Expected `{name}` to be a Keras activation name such as 'relu' or 'leaky_relu'. "
            f"Received: {name}={value!r}"
        ) from None
    return value
