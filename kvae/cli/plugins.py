"""``kvae plugins``: list and inspect the components kvae can use, its own and those of
installed plugin packages.

    kvae plugins list [--group G] [--json] [--no-check]
    kvae plugins show NAME [--group G] [--json]

Listing reads packaging metadata through :mod:`kvae.registry` and imports no plugin with
``--no-check``; by default each plugin is imported once to fill the ``loads`` column (which
imports TensorFlow for the ones that need it). A broken plugin is reported in its row; the
others are listed as usual. The command exits 1 only in strict mode (``KVAE_STRICT_PLUGINS=1``)
when a plugin is broken, so CI can fail on it.

The main ``kvae`` group adds this one with ``main.add_command(plugins)``.
"""

from __future__ import annotations

import difflib
import inspect
import json

import click

from kvae import registry
from kvae.errors import ConfigError, PluginError, UnknownComponentError

__all__ = ["plugins", "plugin_rows", "describe"]

# The constructor arguments kvae.VAE sets itself, per group (users cannot pass them).
SET_BY_KVAE = {
    "encoders": ("data_shape",),
    "decoders": ("data_shape",),
    "posteriors": ("latent_dim",),
    "likelihoods": ("event_shape",),
    "priors": ("latent_dim",),
    "datasets": (),
}
_COLUMNS = ("group", "name", "package", "version", "loads")


# -- library functions (the commands only format their results) ----------------------------


def plugin_rows(group: str | None = None, check: bool = True) -> list[dict]:
    """One dict per registry entry: group, name, qualified_name, package, version, value,
    loads (True, False, or None when not checked) and error (the reason, or None).

    ``name`` is the spelling that selects the entry: plain, or ``package:name`` when several
    packages provide the name. Entries are sorted by group, name, package.
    """
    previous = registry.set_strict(False)  # list everything; strictness is the caller's
    try:
        items = registry.entries(group)
        usable = {g: set(registry.names(g)) for g in {e.group for e in items}}
    finally:
        registry.set_strict(previous)
    rows = []
    for entry in items:
        name = _spelling(entry, usable[entry.group])
        loads, error = (None, None)
        if check:
            loads, error = registry.check(entry)
        rows.append(
            {
                "group": entry.group,
                "name": name,
                "qualified_name": entry.qualified_name,
                "package": entry.dist,
                "version": entry.version,
                "value": entry.value,
                "loads": loads,
                "error": error,
            }
        )
    return rows


def _spelling(entry, usable):
    """The name that selects ``entry``: plain, or ``package:name`` when the plain name is
    ambiguous (several packages) or taken by an in-process registration."""
    if entry.dist is None or entry.name in usable:
        return entry.name
    return entry.qualified_name


def _usable_names(group):
    previous = registry.set_strict(False)
    try:
        return set(registry.names(group))
    finally:
        registry.set_strict(previous)


def _find(name: str, group: str | None) -> list[registry.Entry]:
    """Entries that ``name`` selects, in ``group`` or in every group; raises if none."""
    groups = registry.GROUPS if group is None else (group,)
    bare = name.rpartition(":")[2] if isinstance(name, str) else name
    found, problems = [], []
    for g in groups:
        try:
            dist, _ = registry.provider(g, name)
        except UnknownComponentError:
            if group is not None:
                raise
            continue
        except ConfigError as err:  # ambiguous or invalid: the registry says which
            problems.append(err)
            continue
        for entry in registry.entries(g):
            if entry.name == bare and entry.dist == dist:
                found.append(entry)
                break
    if found:
        return found
    if problems:
        raise problems[0]
    known = sorted({n for g in groups for n in registry.names(g)})
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise UnknownComponentError(
        f"Unknown component name {name!r} in any group.{hint} Expected one of: "
        f"{', '.join(known) or '(none)'}. Received: name={name!r}. "
        "`kvae plugins list` shows every component with its group and package."
    )


def _signature(obj):
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if inspect.isclass(obj) and params and params[0].name in ("self", "cls"):
        params = params[1:]
    return params


def _jsonable(value):
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def describe(entry: registry.Entry) -> dict:
    """What ``plugins show`` prints about one entry: its docstring and configurable arguments.

    Imports the plugin; raises PluginError if it does not load. ``arguments`` lists the
    constructor (or factory) arguments a user may pass, each ``{"name", "default",
    "required", "kind"}``; ``set_by_kvae`` those that kvae.VAE fills in itself;
    ``forwards_kwargs`` whether ``**kwargs`` reach the base class (Keras layer options such
    as ``name`` and ``dtype``).
    """
    obj = entry.load()
    params = _signature(obj)
    reserved = SET_BY_KVAE[entry.group]
    arguments, set_by_kvae, forwards = [], [], False
    for p in params or ():
        if p.kind is p.VAR_KEYWORD:
            forwards = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue
        if p.name in reserved:
            set_by_kvae.append(p.name)
            continue
        required = p.default is p.empty
        arguments.append(
            {
                "name": p.name,
                "default": None if required else _jsonable(p.default),
                "required": required,
                "kind": "keyword-only" if p.kind is p.KEYWORD_ONLY else "positional-or-keyword",
            }
        )
    return {
        "group": entry.group,
        "name": _spelling(entry, _usable_names(entry.group)),
        "qualified_name": entry.qualified_name,
        "package": entry.dist,
        "version": entry.version,
        "value": entry.value,
        "doc": inspect.getdoc(obj) or "",
        "signature_known": params is not None,
        "arguments": arguments,
        "set_by_kvae": set_by_kvae,
        "forwards_kwargs": forwards,
    }


# -- commands ----------------------------------------------------------------------------------


def _group_option(help_text):
    return click.option(
        "--group",
        "group",
        type=click.Choice(registry.GROUPS),
        default=None,
        help=help_text,
    )


@click.group("plugins")
def plugins():
    """List and inspect components: kvae's own and those of installed plugin packages."""


@plugins.command("list")
@_group_option("Only this group.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option(
    "--check/--no-check",
    default=True,
    show_default=True,
    help="Import each plugin to report whether it loads (may import TensorFlow); "
    "--no-check only reads packaging metadata.",
)
def list_command(group, as_json, check):
    """List every component: group, name, package, version and whether it loads.

    A name that several packages provide is listed as PACKAGE:NAME, the spelling that selects
    it. With KVAE_STRICT_PLUGINS=1 the command exits 1 if a plugin does not load.
    """
    rows = plugin_rows(group, check=check)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        click.echo(_table(rows))
    broken = [r for r in rows if r["loads"] is False]
    if broken and registry.is_strict():
        raise click.ClickException(
            f"{len(broken)} plugin(s) do not load and {registry.STRICT_ENV} is set: "
            + ", ".join(f"{r['group']}/{r['qualified_name']}" for r in broken)
        )


def _loads_text(row):
    if row["loads"] is None:
        return "not checked"
    if row["loads"]:
        return "ok"
    return "error: " + " ".join(str(row["error"]).split())


def _table(rows):
    if not rows:
        return "No components found. Is kvae installed (pip install -e .)?"
    cells = [
        (
            r["group"],
            r["name"],
            r["package"] or "(in-process)",
            r["version"] or "-",
            _loads_text(r),
        )
        for r in rows
    ]
    header = tuple(c.upper() for c in _COLUMNS)
    widths = [max(len(row[i]) for row in [header, *cells]) for i in range(len(_COLUMNS) - 1)]
    lines = []
    for row in [header, *cells]:
        left = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False))
        lines.append(f"{left}  {row[-1]}")
    return "\n".join(lines)


@plugins.command("show")
@click.argument("name")
@_group_option("The group to look in (default: every group that has NAME).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show_command(name, group, as_json):
    """Show a component's docstring and configurable arguments.

    NAME is a component name (or PACKAGE:NAME); a name used in several groups (an encoder
    and a decoder, say) is shown for each of them.
    """
    try:
        entries = _find(name, group)
    except (UnknownComponentError, ConfigError) as err:
        raise click.ClickException(str(err)) from None
    described, failures = [], []
    for entry in entries:
        try:
            described.append(describe(entry))
        except PluginError as err:
            failures.append(err)
    if as_json:
        click.echo(json.dumps(described, indent=2))
    else:
        click.echo("\n\n".join(_show_text(d) for d in described))
    if failures:
        raise click.ClickException("\n".join(str(err) for err in failures))


def _show_text(d):
    package = f"{d['package']} {d['version']}" if d["package"] else "(registered in-process)"
    lines = [
        f"{d['name']}  ({d['group']}, kvae.{d['group']})",
        f"  package: {package}",
        f"  object:  {d['value']}",
        "",
    ]
    doc = d["doc"] or "(no docstring)"
    lines += [f"  {line}".rstrip() for line in doc.splitlines()]
    lines += ["", "Arguments:"]
    if not d["signature_known"]:
        lines.append("  (its signature cannot be inspected)")
    elif not d["arguments"]:
        lines.append("  (none)")
    for arg in d["arguments"]:
        value = "(required)" if arg["required"] else f"= {arg['default']!r}"
        lines.append(f"  {arg['name']} {value}")
    if d["set_by_kvae"]:
        lines.append(f"Set by kvae.VAE: {', '.join(d['set_by_kvae'])}")
    if d["forwards_kwargs"]:
        lines.append("Other keyword arguments are passed to the base class (name, dtype, ...).")
    slot = d["group"].rstrip("s")
    example = _kwargs_example(d["arguments"])
    if d["group"] != "datasets":
        lines.append(
            f"Pass arguments in Python as kvae.VAE({slot}={d['name']!r}, {slot}_kwargs={{...}}),"
        )
    else:
        lines.append(f"Pass arguments in Python as kvae.datasets.load({d['name']!r}, ...),")
    lines.append(
        f"or on the command line as kvae train --{slot} {d['name']} --{slot}-kwargs '{example}'"
    )
    return "\n".join(lines)


def _kwargs_example(arguments):
    """A JSON object for ``--<slot>-kwargs``: the first argument with a JSON default, at its
    default; ``{...}`` when there is none."""
    for arg in arguments:
        if not arg["required"]:
            try:
                return json.dumps({arg["name"]: arg["default"]})
            except (TypeError, ValueError):
                continue
    return "{...}"
