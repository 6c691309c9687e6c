"""The reference pages, each rendered from the definition it documents (nothing here is written by hand twice).

Options from :mod:`..plugin.options`; fixtures and markers from the plugin's fixtures, their docstrings and its
marker table; ``layername`` commands from the argument parser; report fields from ``report.schema.json``;
``matrix.toml`` fields from the validator's field tables; known torch bugs from ``known_bugs.toml``.
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .markdown import code, docstring, from_rst, page, slug, table

if TYPE_CHECKING:
    from ..plugin.options import Option


def _flag(option: Option) -> str:
    if option.switch:
        return option.flag
    return f"{option.flag}={'|'.join(option.choices) if option.choices else option.metavar}"


def options_page() -> str:
    """``options.md``: every ``--layername-*`` option with its ini key, environment variable and default."""
    from ..plugin import options

    rows = [
        (code(_flag(o)), code(o.ini) if o.ini else "", code(o.env) if o.env else "", o.fallback, o.help)
        for o in options.OPTIONS
    ]
    intro = (
        "The plugin's command-line options, as `pytest --help` shows them. Where an option has an ini key or an "
        f"environment variable, the value comes from the {options.PRECEDENCE}; *default* is what applies when none "
        "is set. Giving any of them turns the plugin on ([writing tests](../writing-tests.md))."
    )
    header = ("option", "ini", "environment", "default", "meaning")
    return page("Command-line options", "src/pytest_layername/plugin/options.py", intro, table(header, rows))


def _signature(function: Callable[..., Any]) -> str:
    """``name(a, *, b=1, **c)``: names and defaults, without annotations (the same on every Python)."""
    parts: list[str] = []
    star = False
    for param in inspect.signature(function).parameters.values():
        if param.name == "self":
            continue
        if param.kind is param.VAR_POSITIONAL:
            star = True
            parts.append(f"*{param.name}")
        elif param.kind is param.VAR_KEYWORD:
            parts.append(f"**{param.name}")
        else:
            if param.kind is param.KEYWORD_ONLY and not star:
                star = True
                parts.append("*")
            default = "" if param.default is param.empty else f"={param.default!r}"
            parts.append(f"{param.name}{default}")
    return f"{function.__name__}({', '.join(parts)})"


def _members(cls: type) -> list[str]:
    """One bullet per public method or property of ``cls``, with its docstring."""
    bullets = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, property):
            title = f"`{name}` (property)"
        elif inspect.isfunction(member):
            title = f"`{_signature(member)}`"
        else:
            continue
        first, *rest = docstring(member, f"{cls.__name__}.{name}").splitlines()
        bullets.append("\n".join([f"- {title}: {first}", *(f"  {line}" if line else "" for line in rest)]))
    return bullets


def _fixtures() -> list[tuple[str, Any, str]]:
    """The plugin's fixtures in definition order: (name, fixture function, scope)."""
    # pytest has no public way to tell a fixture from a function; getfixturemarker has been there since pytest 3
    from _pytest.fixtures import getfixturemarker

    from .. import plugin

    found = []
    for name, value in vars(plugin).items():
        marker = getfixturemarker(value)
        if marker is not None:
            found.append((marker.name or name, value, marker.scope))
    return found


def fixtures_page() -> str:
    """``fixtures-and-markers.md``: each fixture's docstring and the methods of what it yields; the markers."""
    from .. import plugin

    blocks = ["Each says whether using it turns the plugin on. How to use them: [writing tests](../writing-tests.md)."]
    for name, fixture, scope in _fixtures():
        turns_on = "; using it turns the plugin on" if name in plugin.FIXTURES else ""
        blocks += [f"## `{name}`", f"*{scope} scope{turns_on}*", docstring(fixture, f"fixture {name}")]
        returns = str(inspect.signature(fixture).return_annotation)
        for type_name in plugin.__all__:
            if re.search(rf"\b{type_name}\b", returns):
                cls = getattr(plugin, type_name)
                blocks += [f"What it yields, `{type_name}`: {docstring(cls, type_name)}", "\n".join(_members(cls))]
    markers = [(code(name), from_rst(text.removeprefix(f"{name}: ")), "yes") for name, text in plugin.MARKERS.items()]
    slow, slow_help = plugin.SLOW_MARKER.split(": ", 1)
    markers.append((code(slow), slow_help, "no (registered only)"))
    blocks += ["## Markers", table(("marker", "meaning", "turns the plugin on"), markers)]
    return page("Fixtures and markers", "the fixtures and markers of src/pytest_layername/plugin/__init__.py", *blocks)


def _argument(action: argparse.Action) -> str:
    if action.choices is not None and action.metavar is None:
        value = "{" + ",".join(map(str, action.choices)) + "}"
    else:
        value = str(action.metavar or action.dest.upper())
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    repeated = {"+": f"{value} [{value} ...]", "*": f"[{value} ...]", "?": f"[{value}]"}
    value = repeated.get(str(action.nargs), value)
    return ", ".join(f"{flag} {value}" for flag in action.option_strings) if action.option_strings else value


def _help(action: argparse.Action, prog: str) -> str:
    """The action's help with argparse's ``%(default)s``-style fields filled in, as ``--help`` shows it."""
    if not action.help:
        raise ValueError(f"{prog} {_argument(action)} has no help: the generated reference needs one")
    params = {**vars(action), "prog": prog}
    if action.choices is not None:
        params["choices"] = ", ".join(map(str, action.choices))
    return action.help % {key: getattr(value, "__name__", value) for key, value in params.items()}


def _arguments(parser: argparse.ArgumentParser) -> str:
    # argparse has no public way to list a parser's arguments; _actions is what every help formatter reads
    rows = [
        (code(_argument(action)), _help(action, parser.prog))
        for action in parser._actions
        if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        and not isinstance(action, argparse._SubParsersAction)
    ]  # fmt: skip
    return table(("argument", "meaning"), rows)


def cli_page(parser: argparse.ArgumentParser, commands: Mapping[str, argparse.ArgumentParser]) -> str:
    """``cli.md``: the ``layername`` command and each subcommand's arguments, from the argument parser."""
    blocks = [
        f"{parser.description} Each command's `--help` shows the same.",
        "\n".join(
            f"- [`layername {name}`](#{slug(f'layername {name}')}): {sub.description}" for name, sub in commands.items()
        ),
        _arguments(parser),
    ]
    for name, sub in commands.items():
        blocks += [f"## `layername {name}`", sub.description or "", _arguments(sub)]
    return page("The `layername` command", "the argument parser of src/pytest_layername/cli/", *blocks)


class _Schema:
    """The report schema as sections of Markdown: one table per object, ``$defs`` linked by name."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.sections: list[str] = []

    def type_of(self, node: dict[str, Any], path: str) -> str:
        """``node``'s type in words; an inline object gets its own section (named ``path``), linked."""
        if "$ref" in node:
            name = node["$ref"].removeprefix("#/$defs/")
            return f"[{name}](#{slug(name)})"
        if "const" in node:
            return code(str(node["const"]))
        if "enum" in node:
            return "one of " + ", ".join("null" if v is None else code(v) for v in node["enum"])
        if "oneOf" in node:
            return " or ".join(self.type_of(option, path) for option in node["oneOf"])
        kinds = node.get("type")
        if kinds == "array":
            return f"array of {self.type_of(node.get('items', {}), f'{path}[]')}"
        if kinds == "object" and "properties" in node:
            self.section(path, node)
            return f"[object](#{slug(path)})"
        if kinds == "object":
            keys = "mode" if "propertyNames" in node else "name"
            return f"object: {keys} → {self.type_of(node.get('additionalProperties', {}), path)}"
        if kinds is None:
            return "any JSON value"
        return " or ".join(kinds) if isinstance(kinds, list) else kinds

    def section(self, path: str, node: dict[str, Any]) -> None:
        """A section for the object ``node``: one row per field (a field without a description is an error)."""
        index = len(self.sections)
        self.sections.append("")  # keeps sections in the order they are reached, parents first
        required = set(node.get("required", ()))
        rows = []
        for name, field in node["properties"].items():
            if "description" not in field:
                raise ValueError(f"report.schema.json: {path}.{name} has no description")
            child = f"{path}.{name}" if path != "report" else name
            rows.append(
                (code(name), self.type_of(field, child), "yes" if name in required else "", field["description"])
            )
        about = f"{node['description']}\n\n" if "description" in node else ""
        self.sections[index] = f"## `{path}`\n\n{about}" + table(("field", "type", "required", "meaning"), rows)


def report_page() -> str:
    """``report.md``: every field of the report, from ``report.schema.json``."""
    from ..release.report import SCHEMA_VERSION, report_schema

    schema = report_schema()
    doc = _Schema(schema)
    doc.section("report", schema)
    values = []
    for name, node in schema["$defs"].items():
        if "properties" in node:
            doc.section(name, node)
        else:
            values.append((name, doc.type_of({k: v for k, v in node.items() if k != "description"}, name),
                           node.get("description", "")))  # fmt: skip
    intro = (
        f"The JSON report of `--layername-report` (schema version {SCHEMA_VERSION}), validated against "
        "[`report.schema.json`](../../src/pytest_layername/release/report.schema.json), which this page is made from."
    )
    value_types = "## Value types\n\n" + "\n\n".join(f"### `{name}`\n\n{kind}: {about}" for name, kind, about in values)
    return page("Report fields", "src/pytest_layername/release/report.schema.json", intro, *doc.sections, value_types)


def matrix_page() -> str:
    """``matrix-toml.md``: the fields of a ``matrix.toml`` cell, from the validator's field tables."""
    from ..release import matrix

    cells = [(code(n), "yes" if n in matrix.REQUIRED_FIELDS else "", text) for n, text in matrix.CELL_FIELDS.items()]
    blocks = [
        "Each `[cells.<name>]` table of `matrix.toml` is one cell; the validator "
        "(`pytest_layername.release.matrix`) rejects an unknown key, a bad value or a missing field, naming the "
        f"file, the cell and the field. A cell name matches `{matrix.CELL_NAME.pattern}` (it names report files "
        "and nox sessions). How cells are run and gated: [the matrix and the gate](../matrix-and-gate.md).",
        "## Cell fields",
        table(("field", "required", "meaning"), cells),
        "## `install`",
        f'A table of these, or `"{matrix.PREINSTALLED}"`.',
        table(("field", "meaning"), [(code(n), text) for n, text in matrix.INSTALL_FIELDS.items()]),
        "## `budgets`",
        "Limits on the report's summary.",
        table(("budget", "meaning"), [(code(n), text) for n, text in matrix.SUMMARY_BUDGETS.items()]),
        "## `budgets.<mode>`",
        f"One table per mode the cell runs ({', '.join(map(code, matrix.EXPECTED_MODES))}): maxima over the stats "
        "of the `budget_tests` run in that mode ([report fields](report.md#stats)).",
        table(("budget", "meaning"), [(code(n), text) for n, text in matrix.STAT_BUDGETS.items()]),
    ]
    return page("`matrix.toml` fields", "the validator in src/pytest_layername/release/matrix.py", *blocks)


def known_bugs_page() -> str:
    """``known-bugs.md``: the registry's fields and every known torch bug in it."""
    from ..release import known_bugs

    fields = [(code(n), "" if n == "device" else "yes", text) for n, text in known_bugs.FIELDS.items()]
    bugs = [
        (code(bug.id), code(str(bug.torch)), bug.device or "any", f"[{bug.summary}]({bug.url})",
         ", ".join(map(code, bug.tests)), code(bug.match))
        for bug in known_bugs.registry().values()
    ]  # fmt: skip
    blocks = [
        docstring(known_bugs, "release.known_bugs").split("\n\n")[1],
        "## The bugs",
        table(("id", "torch", "device", "summary", "tests", "failure must match"), bugs),
        "## Fields of an entry (`[bugs.<id>]`)",
        table(("field", "required", "meaning"), fields),
    ]
    return page("Known torch bugs", "src/pytest_layername/release/known_bugs.toml", *blocks)
