"""Where kvae finds its components by name: encoders, decoders, heads, priors, datasets.

Every component, kvae's own included, is an entry point in a group ``kvae.<group>``;
kvae's are declared in its ``setup.py`` exactly as a third-party package declares its own::

    entry_points={"kvae.encoders": ["resnet = kvae_resnet.nets:ResNetEncoder"]}

Listing names reads packaging metadata only and imports no plugin module; a module is
imported the first time one of its names is used, and the object is cached. Notebooks and
tests add objects in-process with :func:`register`, through the same lookup.

The registry refuses to guess:

* two installed packages that provide the same name in one group make that name
  ambiguous; it must then be written ``package:name`` (``kvae-resnet:resnet``). kvae's own
  distribution ("kvae") gets no precedence, it is one package among others. The same
  distribution seen twice (an editable install visible twice on ``sys.path``) counts once;
* an unknown name is answered with the names that exist and the nearest one;
* a plugin that fails to import is named (group, name, ``module:attr``, package and
  version) with its original error, and does not take the other plugins down.

Environment:

* ``KVAE_DISABLE_PLUGIN_AUTOLOAD=1``: only kvae's own entry points (and in-process
  registrations) are seen; third-party packages are ignored.
* ``KVAE_STRICT_PLUGINS=1`` (or :func:`set_strict`): :func:`names` and :func:`entries`
  load every plugin they list and raise :class:`~kvae.errors.PluginError` for a broken one.
  The default is lazy: a broken plugin is reported when it is used or checked.

This module imports nothing heavy (no TensorFlow, no Keras): the command line lists
components through it without paying for TensorFlow.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import os
import re
import threading

from kvae.errors import ConfigError, PluginError, UnknownComponentError

__all__ = [
    "AUTOLOAD_ENV",
    "GROUPS",
    "STRICT_ENV",
    "Entry",
    "autoload_enabled",
    "check",
    "entries",
    "get",
    "is_strict",
    "names",
    "provider",
    "refresh",
    "register",
    "set_strict",
    "unregister",
    "validate",
]

GROUPS = ("encoders", "decoders", "posteriors", "likelihoods", "priors", "datasets")
ENTRY_POINT_PREFIX = "kvae."
KVAE_DIST = "kvae"
AUTOLOAD_ENV = "KVAE_DISABLE_PLUGIN_AUTOLOAD"
STRICT_ENV = "KVAE_STRICT_PLUGINS"

MAX_NAME_LENGTH = 64
_NAME_RE = re.compile(r"[a-z][a-z0-9_.-]*\Z")
# A distribution name as PEP 508 spells it; compared after PEP 503 normalization.
_DIST_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?\Z")
# "module:attr", optionally followed by "[extras]" (which kvae ignores).
_VALUE_RE = re.compile(r"\s*(?P<module>[\w.]+)\s*:\s*(?P<attr>[\w.]+)\s*(\[.*\])?\s*\Z")
_NAME_RULE = (
    "a lowercase letter, then lowercase letters, digits, '_', '.' or '-', "
    f"at most {MAX_NAME_LENGTH} characters (regex [a-z][a-z0-9_.-]*), optionally "
    "qualified by the package that provides it as 'package:name' (for example "
    "'kvae-resnet:resnet')"
)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")

# What a loaded object of each group must be. Deliberately light: the component contracts
# (shapes, config round trip, ...) are checked by kvae.testing, not at lookup.
_REQUIREMENTS = {
    "encoders": "callable (a Keras layer class or a factory function)",
    "decoders": "callable (a Keras layer class or a factory function)",
    "posteriors": "callable (a head class or a factory function)",
    "likelihoods": "callable (a head class or a factory function)",
    "priors": "callable (a prior class or a factory function)",
    "datasets": "callable (a loader function)",
}

_NOTHING = object()


@dataclasses.dataclass(frozen=True)
class Entry:
    """One component as the registry knows it, before (or without) loading it.

    ``dist`` is the providing distribution's normalized name (PEP 503: lowercase, runs of
    ``-_.`` become ``-``), or None for an in-process :func:`register`; ``version`` is its
    version (None in-process). ``value`` is ``"module:attr"``.
    """

    group: str
    name: str
    value: str
    dist: str | None
    version: str | None
    _obj: object = dataclasses.field(default=_NOTHING, repr=False, compare=False)

    @property
    def qualified_name(self) -> str:
        """``package:name``, the spelling that always selects this entry (plain name in-process)."""
        return self.name if self.dist is None else f"{self.dist}:{self.name}"

    def load(self):
        """Import (once) and return the object; raise PluginError if it cannot be used."""
        return _load(self)


# -- state --------------------------------------------------------------------------------

_lock = threading.RLock()
_discovered: dict[str, tuple[Entry, ...]] | None = None  # group -> entry points, all packages
_loaded: dict[Entry, object] = {}
_failed: dict[Entry, tuple[str, BaseException | None]] = {}
_local: dict[str, dict[str, Entry]] = {group: {} for group in GROUPS}
_strict: bool | None = None  # None: follow STRICT_ENV


def refresh() -> None:
    """Forget discovered entry points and loaded or failed plugins (after ``pip install``).

    In-process registrations are kept; remove them with :func:`unregister`.
    """
    global _discovered
    with _lock:
        _discovered = None
        _loaded.clear()
        _failed.clear()
    importlib.invalidate_caches()


def _env_flag(var: str) -> bool:
    raw = os.environ.get(var, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"Expected the environment variable {var} to be 1 or 0 (or true/false, yes/no, "
        f"on/off). Received: {var}={raw!r}"
    )


def autoload_enabled() -> bool:
    """False when ``KVAE_DISABLE_PLUGIN_AUTOLOAD`` is set: only kvae's own entry points count."""
    return not _env_flag(AUTOLOAD_ENV)


def is_strict() -> bool:
    """Whether discovery loads every plugin and raises for a broken one."""
    return _env_flag(STRICT_ENV) if _strict is None else _strict


def set_strict(flag: bool | None) -> bool | None:
    """Turn strict mode on or off for this process (None: follow ``KVAE_STRICT_PLUGINS``).

    Returns the previous setting, so tests can restore it.
    """
    global _strict
    if flag is not None and not isinstance(flag, bool):
        raise ConfigError(f"Expected `flag` to be True, False or None. Received: flag={flag!r}")
    previous, _strict = _strict, flag
    return previous


# -- names --------------------------------------------------------------------------------


def _canonical_dist(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _check_group(group) -> str:
    if group in GROUPS:
        return group
    close = difflib.get_close_matches(str(group), GROUPS, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigError(
        f"Unknown component group {group!r}.{hint} Expected one of: {', '.join(GROUPS)}. "
        f"Received: group={group!r}"
    )


def _valid_name(name) -> bool:
    return isinstance(name, str) and len(name) <= MAX_NAME_LENGTH and bool(_NAME_RE.match(name))


def _parse_name(group: str, name) -> tuple[str | None, str]:
    """Split ``[package:]name`` into (normalized package or None, name); ConfigError if invalid."""
    if isinstance(name, str):
        dist, sep, bare = name.rpartition(":")
        if not sep:
            if _valid_name(name):
                return None, name
        elif _DIST_RE.match(dist) and _valid_name(bare):
            return _canonical_dist(dist), bare
    hint = ""
    if not isinstance(name, str) and callable(name):
        hint = (
            f" To register an object, write @register({group!r}, 'its-name') or "
            f"register({group!r})(obj)."
        )
    raise ConfigError(f"Invalid {group} name. Expected {_NAME_RULE}.{hint} Received: name={name!r}")


def _kebab(text: str) -> str:
    text = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "-", text)
    return re.sub(r"[-_]+", "-", text).strip("-").lower()


def _value_of(obj) -> str:
    module = getattr(obj, "__module__", None) or "?"
    qualname = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}:{qualname}"


# -- discovery ----------------------------------------------------------------------------


def _dist_of(ep, cache: dict) -> tuple[str, str | None]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "unknown", None
    key = id(dist)
    if key not in cache:
        try:
            meta = dist.metadata
            name, version = meta["Name"], meta["Version"]
        except Exception:  # noqa: BLE001 - unreadable METADATA must not hide other plugins
            name, version = None, None
        # Keep the Distribution itself in the cache: its id() must not be reused by another.
        cache[key] = (_canonical_dist(name) if name else "unknown", version, dist)
    return cache[key][:2]


def _discover() -> dict[str, tuple[Entry, ...]]:
    global _discovered
    with _lock:
        if _discovered is None:
            found = {}
            dist_cache: dict = {}  # keeps the Distribution objects (and their ids) alive
            for group in GROUPS:
                entries_by_key: dict[tuple[str, str], Entry] = {}
                eps = importlib.metadata.entry_points(group=ENTRY_POINT_PREFIX + group)
                for ep in eps:
                    dist, version = _dist_of(ep, dist_cache)
                    # importlib already keeps one copy of a distribution found twice on
                    # sys.path (the first, which is also the one Python imports); this also
                    # folds a name a distribution declares twice.
                    entries_by_key.setdefault(
                        (ep.name, dist), Entry(group, ep.name, ep.value, dist, version)
                    )
                found[group] = tuple(
                    sorted(entries_by_key.values(), key=lambda e: (e.name, e.dist))
                )
            _discovered = found
        return _discovered


def _plugin_entries(group: str) -> list[Entry]:
    """Entry points of a group that are seen now (the autoload switch applied)."""
    found = _discover()[group]
    if autoload_enabled():
        return list(found)
    return [e for e in found if e.dist == KVAE_DIST]


def _usable(group: str) -> tuple[list[Entry], dict[str, Entry]]:
    """(entry points with a valid name, in-process registrations) of a group."""
    return [e for e in _plugin_entries(group) if _valid_name(e.name)], dict(_local[group])


def _listing(group: str) -> list[str]:
    """Every spelling that resolves: plain where unambiguous, ``package:name`` otherwise."""
    plugins, local = _usable(group)
    by_name: dict[str, list[Entry]] = {}
    for entry in plugins:
        by_name.setdefault(entry.name, []).append(entry)
    listed = set(local)
    for name, providers in by_name.items():
        if len(providers) == 1 and name not in local:
            listed.add(name)
        else:
            listed.update(e.qualified_name for e in providers)
    return sorted(listed)


def _strict_load(items) -> None:
    for entry in items:
        if entry.dist is not None:
            _load(entry)


def names(group: str) -> list[str]:
    """Sorted names usable with :func:`get` in ``group``, without importing any plugin.

    A name that several packages provide is listed once per package, as ``package:name``.
    In strict mode every listed plugin is loaded first, and a broken one raises PluginError.
    """
    _check_group(group)
    if is_strict():
        _strict_load(_plugin_entries(group))
    return _listing(group)


def entries(group: str | None = None) -> list[Entry]:
    """Every entry (all groups, or one), broken or shadowed ones included, without loading.

    Sorted by group (in GROUPS order), name, then package; in-process registrations have
    ``dist=None``. Use :func:`check` (or ``Entry.load``) to learn whether each one loads.
    In strict mode every entry is loaded first, and a broken one raises PluginError.
    """
    groups = GROUPS if group is None else (_check_group(group),)
    result = []
    for g in groups:
        with _lock:
            local = list(_local[g].values())
        result.extend(sorted(_plugin_entries(g) + local, key=lambda e: (e.name, e.dist or "")))
    if is_strict():
        _strict_load(result)
    return result


def check(entry: Entry) -> tuple[bool, str | None]:
    """``(True, None)`` if ``entry`` loads and is usable, else ``(False, short reason)``."""
    try:
        _load(entry)
    except PluginError as err:
        return False, getattr(err, "reason", None) or str(err)
    return True, None


# -- lookup -------------------------------------------------------------------------------


def _unknown(group: str, name: str, dist: str | None, bare: str) -> UnknownComponentError:
    plugins, local = _usable(group)
    if dist is None:
        candidates = _listing(group)
        wanted = bare
    else:
        candidates = sorted({e.qualified_name for e in plugins})
        wanted = name
    close = difflib.get_close_matches(wanted, candidates, n=1)
    if not close and dist is not None:  # "kvae-resnt:resnet": suggest by the name alone
        close = difflib.get_close_matches(bare, [e.name for e in plugins] + list(local), n=1)
    parts = [f"Unknown {_singular(group)} {name!r}."]
    if dist is not None:
        providers = sorted({e.dist for e in plugins if e.name == bare})
        if providers:
            parts.append(f"{bare!r} is provided by: {', '.join(providers)}.")
        else:
            parts.append(f"No installed package provides {bare!r}.")
    if close:
        parts.append(f"Did you mean {close[0]!r}?")
    listed = ", ".join(candidates) if candidates else "(none: is kvae installed?)"
    parts.append(f"Expected one of: {listed}. Received: name={name!r}.")
    if not autoload_enabled():
        parts.append(f"Third-party plugins are hidden because {AUTOLOAD_ENV} is set.")
    elif not close:
        # Advice for a name that is really new, never for registering a misspelt one.
        parts.append(
            "If a plugin package provides it, install that package (`kvae plugins list` "
            "shows what is installed); to add your own, register it under a name of your "
            f"choice with @kvae.registry.register({group!r}, 'my-name')."
        )
    return UnknownComponentError(" ".join(parts))


def _singular(group: str) -> str:
    """'likelihoods' -> 'likelihood', for messages."""
    return group[:-1] if group.endswith("s") else group


def _resolve(group: str, name) -> Entry:
    _check_group(group)
    dist, bare = _parse_name(group, name)
    with _lock:
        plugins, local = _usable(group)
    if dist is None and bare in local:
        return local[bare]
    matches = [e for e in plugins if e.name == bare and (dist is None or e.dist == dist)]
    if not matches:
        raise _unknown(group, name, dist, bare)
    if len(matches) > 1:  # only possible unqualified: (name, dist) is unique
        described = "; ".join(f"{e.dist} {e.version} ({e.value})" for e in matches)
        qualified = ", ".join(repr(e.qualified_name) for e in matches)
        raise ConfigError(
            f"The {group} name {bare!r} is ambiguous: {len(matches)} installed packages "
            f"provide it: {described}. kvae does not guess which one you mean. Expected a "
            f"qualified name, one of: {qualified}. Received: name={name!r}. Write the "
            "qualified name, or uninstall the package you do not want."
        )
    return matches[0]


def get(group: str, name: str):
    """The object registered as ``name`` (or ``package:name``) in ``group``.

    The providing module is imported on first use only; the object is cached. Raises
    ConfigError (unknown group, invalid or ambiguous name), UnknownComponentError (no such
    name; the message lists the names and the nearest one) or PluginError (the plugin
    cannot be imported or is not what the group needs).
    """
    return _load(_resolve(group, name))


def provider(group: str, name: str) -> tuple[str | None, str | None]:
    """``(package, version)`` that provides ``name`` in ``group``, without importing it.

    ``(None, None)`` for an in-process registration. Unknown or ambiguous names raise like
    :func:`get`.
    """
    entry = _resolve(group, name)
    return entry.dist, entry.version


# -- loading ------------------------------------------------------------------------------


def _describe(entry: Entry) -> str:
    return (
        f"the {entry.group} plugin {entry.name!r} (entry point {entry.value!r} in group "
        f"'{ENTRY_POINT_PREFIX}{entry.group}', from package {entry.dist} {entry.version})"
    )


def _advice(entry: Entry) -> str:
    if entry.dist == KVAE_DIST:
        return (
            "This component is part of kvae itself: reinstall kvae, and report the error if "
            "it persists."
        )
    return (
        f"Fix or upgrade the package (pip install -U {entry.dist}) or uninstall it; the "
        f"other components keep working. {AUTOLOAD_ENV}=1 starts kvae without any "
        "third-party plugin."
    )


def _plugin_error(entry: Entry, reason: str) -> PluginError:
    err = PluginError(f"Could not load {_describe(entry)}: {reason}. {_advice(entry)}")
    err.entry = entry
    err.reason = reason
    return err


def _import(entry: Entry) -> object:
    """Import and check the object of an entry point; raise _Failure if it cannot be used."""
    if not _valid_name(entry.name):
        raise _Failure(f"invalid name: expected {_NAME_RULE}; received name={entry.name!r}")
    match = _VALUE_RE.match(entry.value)
    if match is None:
        raise _Failure(
            "malformed entry point value: expected 'module:attr' (for example "
            f"'kvae_resnet.nets:ResNetEncoder'); received value={entry.value!r}"
        )
    try:
        obj = importlib.import_module(match["module"])
    except Exception as exc:  # noqa: BLE001 - any import error is the plugin's, reported
        raise _Failure(f"importing module {match['module']!r} failed: {_brief(exc)}", exc) from exc
    for attr in match["attr"].split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError as exc:
            raise _Failure(f"{match['module']!r} has no attribute {match['attr']!r}", exc) from exc
    try:
        validate(entry.group, entry.name, obj)
    except PluginError as exc:
        raise _Failure(str(exc), None) from exc
    return obj


class _Failure(Exception):
    def __init__(self, reason: str, cause: BaseException | None = None):
        super().__init__(reason)
        self.reason, self.cause = reason, cause


def _brief(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _load(entry: Entry):
    if entry.dist is None:  # in-process registration, checked when registered
        return entry._obj
    with _lock:
        if entry in _loaded:
            return _loaded[entry]
        if entry not in _failed:
            try:
                _loaded[entry] = _import(entry)
                return _loaded[entry]
            except _Failure as failure:
                # Remembered: importing a half-failed module again tends to raise a different,
                # misleading error (for example Keras' "already registered").
                _failed[entry] = (failure.reason, failure.cause)
        reason, cause = _failed[entry]
    raise _plugin_error(entry, reason) from cause


def validate(group: str, name: str, obj) -> None:
    """Check that ``obj`` may serve as ``name`` in ``group``: PluginError if not.

    Light by design (every group needs a callable); the component contracts are checked by
    kvae's test harness, not at lookup.
    """
    _check_group(group)
    if not callable(obj):
        raise PluginError(
            f"Expected the {group} plugin {name!r} to be {_REQUIREMENTS[group]}. "
            f"Received: {name}={obj!r} of type {type(obj).__name__}"
        )


# -- in-process registration --------------------------------------------------------------


def register(group: str, name: str | None = None, *, override: bool = False):
    """Register an object in-process, as a decorator or called directly::

        @kvae.registry.register("encoders", "my-enc")
        class MyEnc(keras.layers.Layer): ...

        kvae.registry.register("datasets", "toy")(load_toy)

    ``name`` defaults to the kebab-case of the object's ``__name__`` (``MyEnc`` ->
    ``my-enc``). A name that already exists in the group (registered, or provided by an
    installed package) raises ConfigError unless ``override=True``; an override wins over
    the packages for the plain name, while ``package:name`` still selects a package's.
    Registering the same object again, or a redefinition of it (same ``module:qualname``,
    as when a notebook cell is run twice), replaces the old one without complaint.
    """
    _check_group(group)
    if name is not None:
        dist, _ = _parse_name(group, name)
        if dist is not None:
            raise ConfigError(
                f"Expected an unqualified name for an in-process {group} registration "
                f"('package:name' is for installed packages). Received: name={name!r}"
            )

    def decorator(obj):
        reg_name = name
        if reg_name is None:
            reg_name = _kebab(getattr(obj, "__name__", "") or "")
            if not _valid_name(reg_name):
                raise ConfigError(
                    f"Could not derive a {group} name from {obj!r} (its __name__ gives "
                    f"{reg_name!r}). Expected {_NAME_RULE}. Pass one: "
                    f"register({group!r}, 'my-name')."
                )
        if not callable(obj):
            raise ConfigError(
                f"Expected the object registered as {group} {reg_name!r} to be "
                f"{_REQUIREMENTS[group]}. Received: {obj!r} of type {type(obj).__name__}"
            )
        entry = Entry(group, reg_name, _value_of(obj), None, None, _obj=obj)
        with _lock:
            old = _local[group].get(reg_name)
            same = old is not None and (old._obj is obj or old.value == entry.value)
            if not override and not same:
                taken = [e for e in _plugin_entries(group) if e.name == reg_name]
                holders = [f"package {e.dist} {e.version} ({e.value})" for e in taken]
                if old is not None:
                    holders.insert(0, f"an in-process registration ({old.value})")
                if holders:
                    raise ConfigError(
                        f"The {group} name {reg_name!r} is already taken by "
                        f"{'; '.join(holders)}. Pass override=True to replace it in this "
                        f"process, or choose another name. Received: {entry.value}"
                    )
            _local[group][reg_name] = entry
        return obj

    return decorator


def unregister(group: str, name: str) -> None:
    """Remove an in-process registration (installed packages' entry points stay)."""
    _check_group(group)
    _parse_name(group, name)
    with _lock:
        if _local[group].pop(name, None) is not None:
            return
    raise UnknownComponentError(
        f"No in-process {group} registration named {name!r}; only names added with "
        f"register() can be unregistered. Registered in-process: "
        f"{', '.join(sorted(_local[group])) or '(none)'}. Received: name={name!r}"
    )
