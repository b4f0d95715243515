"""The component factory: a VAE's encoder, decoder, heads and prior from a registered name
(plus its ``<slot>_kwargs``) or a ready Keras layer, with the errors that say what went wrong
(an unknown keyword with its nearest spelling, an argument the VAE sets itself, a plugin that
does not build a layer) and the record a saved model keeps of where each came from.

:mod:`kvae.registry` finds a name; this module builds from it.
"""

import difflib
import inspect
import warnings

import keras

from kvae import registry
from kvae._choices import SLOTS
from kvae.errors import (
    ConfigError,
    KvaeError,
    ModelFileError,
    PluginError,
    UnknownComponentError,
)

__all__ = [
    "component_configs",
    "make_component",
    "providers",
    "require_component",
    "revive_components",
]


def make_component(slot, group, spec, kwargs, build_args):
    """A layer from a registered name (plus kwargs) or a ready layer instance."""
    kwargs = dict(kwargs or {})
    if isinstance(spec, keras.layers.Layer):
        if kwargs:
            raise ConfigError(
                f"Expected no `{slot}_kwargs` with a ready {slot} layer. Received: {sorted(kwargs)}."
            )
        return spec, {
            "name": type(spec).__name__,
            "config": keras.saving.serialize_keras_object(spec),
            "kwargs": {},
            "provider": None,
        }
    if not isinstance(spec, str):
        raise ConfigError(
            f"Expected `{slot}` to be a registered name (one of {registry.names(group)}) or a "
            f"keras.layers.Layer. Received: {slot}={spec!r}"
        )
    factory = registry.get(group, spec)
    overlap = sorted(set(kwargs) & set(build_args))
    if overlap:
        raise ConfigError(
            f"Expected `{slot}_kwargs` without {overlap}: the VAE sets them. Received: {kwargs}."
        )
    build_args = _old_shape_keyword(slot, factory, build_args)
    try:
        layer = factory(**build_args, **kwargs)
    except KvaeError:
        raise
    except (TypeError, ValueError) as err:
        hint = _unknown_kwargs_hint(factory, kwargs, build_args, slot)
        raise ConfigError(
            f"Could not build {slot} {spec!r} with arguments {sorted({**build_args, **kwargs})}: "
            f"{err}.{hint} See `kvae plugins show {spec}` for its arguments."
        ) from err
    if not isinstance(layer, keras.layers.Layer):
        raise PluginError(
            f"The {slot} {spec!r} (group kvae.{group}) must build a keras.layers.Layer. "
            f"Received: {type(layer).__name__}."
        )
    dist, version = registry.provider(group, spec)
    return layer, {
        "name": spec,
        "config": spec,
        "kwargs": kwargs,
        "provider": [dist, version] if dist else None,
    }


def _old_shape_keyword(slot, factory, build_args):
    """``build_args`` for a plugin written before the rename, whose likelihood takes the shape
    of one example as ``event_shape`` (now ``data_shape``, as everywhere): renamed for it,
    with a DeprecationWarning."""
    if "data_shape" not in build_args:
        return build_args
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return build_args
    if "data_shape" in params or "event_shape" not in params:
        return build_args
    warnings.warn(
        f"The {slot} {getattr(factory, '__name__', factory)!r} takes `event_shape`; kvae now "
        "passes the shape of one example as `data_shape`. Rename the argument.",
        DeprecationWarning,
        stacklevel=3,
    )
    return {"event_shape": build_args["data_shape"]}


def _unknown_kwargs_hint(factory, kwargs, build_args, slot):
    """ " Unknown <slot>_kwargs key 'hiden' (did you mean 'hidden'?)." for the keys that are
    not named arguments of ``factory``, or "" when its signature cannot be read."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return ""
    named = [
        p.name
        for p in params
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        and p.name not in ("self", "cls")
        and p.name not in build_args
    ]
    unknown = [k for k in kwargs if k not in named]
    if not unknown:
        return ""
    described = []
    for key in unknown:
        close = difflib.get_close_matches(key, named, n=1)
        described.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    takes = ", ".join(named) or "none"
    return (
        f" Unknown `{slot}_kwargs` key{'s' if len(unknown) > 1 else ''}: "
        f"{', '.join(described)}; its arguments are: {takes}."
    )


def require_component(slot, group, name, provider):
    """Before rebuilding a saved model, make sure its component can be imported."""
    try:
        registry.get(group, name)
    except UnknownComponentError as err:
        if provider:
            dist, version = provider
            raise ModelFileError(
                f"This model needs the {slot} {name!r} (group kvae.{group}), provided by the "
                f"package {dist!r} (version {version}) when it was saved, which is not "
                f"installed. Install it (pip install {dist}=={version}) and load again."
            ) from err
        raise ModelFileError(f"This model needs the {slot} {name!r}: {err}") from err


def component_configs(specs):
    """A saved model's record of its components, slot by slot (``specs``: slot name -> the
    spec :func:`make_component` returned): the name or serialized layer, and the
    ``<slot>_kwargs`` when there are any."""
    config = {}
    for slot in (s.name for s in SLOTS):
        spec = specs[slot]
        config[slot] = spec["config"]
        if spec["kwargs"]:
            config[f"{slot}_kwargs"] = dict(spec["kwargs"])
    return config


def providers(specs):
    """Slot name -> [distribution, version] of the package that provided its component (None
    for kvae's own and for ready layers)."""
    return {s.name: specs[s.name]["provider"] for s in SLOTS}


def revive_components(config):
    """``config`` (a saved model's; its ``providers`` taken out) with each serialized layer
    deserialized; each named component checked importable first (:func:`require_component`)."""
    saved_providers = config.pop("providers", None) or {}
    for slot, group, *_ in SLOTS:
        value = config.get(slot)
        if isinstance(value, dict):  # a serialized layer instance
            config[slot] = keras.saving.deserialize_keras_object(value)
        elif isinstance(value, str):
            require_component(slot, group, value, saved_providers.get(slot))
    return config
