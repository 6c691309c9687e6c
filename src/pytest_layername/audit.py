"""Find layer names still passed as strings: op schemas taking ``str layer_name``, and strings baked into graphs.

``layername audit --namespace NS`` reads the registered schemas of a ``torch.library`` namespace;
``layername audit --model MODULE:FACTORY`` (or a reference model name) compiles the model and lists,
per op, the call sites where a string constant is baked into the graph. Graph inspection is
:func:`.graph_hash.baked_constants` (strings and opaque objects baked as constants), the code
``compile_counter`` uses to explain unique pieces.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from .graph_hash import BakedConstant, baked_constants

#: Argument names that hold a layer name in inference engines (``layer_name``, ``prefix``, ``layer_prefix``...).
LAYER_NAME_ARGUMENT = re.compile(r"layer|prefix", re.IGNORECASE)
STRING_TYPES = ("str", "str?", "str[]", "str[]?", "Optional[str]", "List[str]", "Optional[List[str]]")


class AuditError(ValueError):
    """Bad audit input: an empty namespace, a factory that cannot be loaded or run."""


@dataclass(frozen=True)
class StringArgument:
    """A custom-op schema argument of string type whose name looks like a layer name."""

    op: str
    argument: str
    type: str
    schema: str

    def __str__(self) -> str:
        return f"{self.op}: argument {self.argument!r} is {self.type}  [{self.schema}]"


@dataclass
class NamespaceAudit:
    """The ops of one namespace and those still taking a layer name as a string."""

    namespace: str
    ops: list[str]
    findings: list[StringArgument]

    def as_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "ops": self.ops, "findings": [vars(f) for f in self.findings]}


def _is_string_type(type_text: str) -> bool:
    return type_text in STRING_TYPES


def namespace_schemas(namespace: str) -> list[tuple[str, torch.FunctionSchema]]:
    """``(ns::op[.overload], schema)`` for every op overload registered in ``namespace``."""
    prefix = f"{namespace}::"
    names = sorted({n.split(".")[0] for n in torch._C._dispatch_get_all_op_names() if n.startswith(prefix)})
    schemas = []
    for qualified in names:
        packet = getattr(getattr(torch.ops, namespace), qualified[len(prefix) :])
        for overload in packet.overloads():
            name = qualified if overload == "default" else f"{qualified}.{overload}"
            schemas.append((name, getattr(packet, overload)._schema))
    return schemas


def audit_namespace(namespace: str, pattern: re.Pattern[str] = LAYER_NAME_ARGUMENT) -> NamespaceAudit:
    """Every op in ``namespace`` with a string argument whose name matches ``pattern``."""
    schemas = namespace_schemas(namespace)
    if not schemas:
        raise AuditError(
            f"namespace {namespace!r} has no registered ops; import the module that defines them "
            f"(layername audit --import MODULE --namespace {namespace})"
        )
    findings = [
        StringArgument(op, argument.name, str(argument.type), str(schema))
        for op, schema in schemas
        for argument in schema.arguments
        if _is_string_type(str(argument.type)) and pattern.search(argument.name)
    ]
    return NamespaceAudit(namespace, [op for op, _ in schemas], findings)


@dataclass
class BakedCallSites:
    """The string constants one op receives at its call sites inside a graph."""

    op: str
    argument: str
    kind: str = "str"  # "str", or "opaque" for an opaque object Dynamo baked in (its type is not hoisted)
    values: list[str] = field(default_factory=list)

    @property
    def layer_name_like(self) -> bool:
        """Named like a layer name, or an opaque object baked in (which only an unhoisted type can be)."""
        return self.kind == "opaque" or bool(LAYER_NAME_ARGUMENT.search(self.argument))

    def __str__(self) -> str:
        render = repr if self.kind == "str" else str
        shown = ", ".join(render(v) for v in self.values[:4]) + (", ..." if len(self.values) > 4 else "")
        what = "<str>" if self.kind == "str" else "<opaque constant>"
        return f"{self.op}({self.argument}={what}): {len(self.values)} call site(s) baked into the graph: {shown}"


def group_call_sites(constants: Iterable[BakedConstant]) -> list[BakedCallSites]:
    """Group baked constants per (op, argument, kind), keeping call-site order."""
    groups: dict[tuple[str, str, str], BakedCallSites] = {}
    for baked in constants:
        key = (baked.op, baked.argument, baked.kind)
        groups.setdefault(key, BakedCallSites(baked.op, baked.argument, baked.kind)).values.append(baked.value)
    return list(groups.values())


def audit_graph(gm: fx.GraphModule) -> list[BakedCallSites]:
    """Per op, the call sites of ``gm`` where a string or opaque constant is baked into the graph."""
    return group_call_sites(baked_constants(gm))


@dataclass
class ModelAudit:
    """What compiling a model baked into its Dynamo graph(s)."""

    model: str
    graphs: int
    call_sites: list[BakedCallSites]

    @property
    def findings(self) -> list[BakedCallSites]:
        """Call sites whose argument is named like a layer name."""
        return [c for c in self.call_sites if c.layer_name_like]

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "graphs": self.graphs,
            "call_sites": [{**vars(c), "layer_name_like": c.layer_name_like} for c in self.call_sites],
        }


def audit_callable(fn: Callable[..., Any], args: Sequence[Any], label: str = "model") -> ModelAudit:
    """Compile ``fn`` with Dynamo (no inner compiler), run it on ``args`` and audit every graph it produced."""
    graphs: list[fx.GraphModule] = []

    def capture(gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Callable[..., Any]:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    try:
        with torch.no_grad():
            torch.compile(fn, backend=capture)(*args)
    finally:
        torch._dynamo.reset()
    return ModelAudit(label, len(graphs), group_call_sites(b for gm in graphs for b in baked_constants(gm)))


def load_factory(spec: str) -> Any:
    """Import ``MODULE:FACTORY`` and call the factory; what it returns is described in :func:`audit_model`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise AuditError(f"--model {spec!r} is not MODULE:FACTORY (e.g. mypkg.models:build) or a reference model name")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise AuditError(f"--model {spec!r}: cannot import {module_name!r}: {error}") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise AuditError(f"--model {spec!r}: module {module_name!r} has no callable {attribute!r}")
    try:
        return factory()
    except Exception as error:
        raise AuditError(f"--model {spec!r}: calling {attribute}() raised {type(error).__name__}: {error}") from error


def audit_model(built: Any, label: str) -> ModelAudit:
    """Audit a factory's result: ``(callable, args)``, or a model with ``example_input()`` (and ``context()``)."""
    if isinstance(built, tuple) and len(built) == 2 and callable(built[0]):
        fn, args = built
        return audit_callable(fn, tuple(args), label)
    if callable(built) and hasattr(built, "example_input"):
        context = built.context() if hasattr(built, "context") else torch.no_grad()
        with context:
            return audit_callable(built, (built.example_input(),), label)
    raise AuditError(
        f"--model {label}: the factory returned {type(built).__name__}; return (callable, args) or a module "
        "with example_input() (and optionally context() for the forward context)"
    )


def reference_model(kind: str, layers: int, mode: str, impl_name: str) -> Any:
    """A bundled reference model (``decoder``, ``moe``, ``hybrid``) in ``mode`` (``auto|opaque|string``)."""
    from .impl import load_implementation
    from .models import build_model
    from .modes import resolve_mode

    return build_model(kind, layers, load_implementation(impl_name), resolve_mode(mode))


# -- command line ---------------------------------------------------------------------------------


def add_parser(subparsers: Any) -> None:
    """Register ``layername audit`` on the CLI's subparsers."""
    from .impl import REFERENCE_IMPL

    p = subparsers.add_parser("audit", help="list ops and call sites that still pass layer names as strings")
    p.add_argument("--namespace", action="append", default=[], help="torch.library namespace to scan (repeatable)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE", help="import first")
    p.add_argument("--model", help="MODULE:FACTORY, or a reference model: decoder, moe, hybrid")
    p.add_argument("--layers", type=int, default=4, help="layers of a reference model (default: %(default)s)")
    p.add_argument("--mode", default="auto", choices=("auto", "opaque", "string"), help="reference model mode")
    p.add_argument("--impl", default=REFERENCE_IMPL, help="implementation of a reference model")
    p.add_argument("--strict", action="store_true", help="exit 1 when anything still takes or bakes a layer name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)


def _build(args: argparse.Namespace) -> Any:
    from .models import MODEL_NAMES

    if ":" in args.model:
        return load_factory(args.model)
    if args.model not in MODEL_NAMES:
        raise AuditError(
            f"--model {args.model!r} is neither MODULE:FACTORY nor a reference model ({', '.join(MODEL_NAMES)})"
        )
    return reference_model(args.model, args.layers, args.mode, args.impl)


def run_audit(args: argparse.Namespace) -> tuple[list[NamespaceAudit], ModelAudit | None]:
    """The audits ``args`` ask for; raises :class:`AuditError` on bad input."""
    if not args.namespace and not args.model:
        raise AuditError("nothing to audit: pass --namespace NS and/or --model MODULE:FACTORY")
    for module_name in args.imports:
        try:
            importlib.import_module(module_name)
        except ImportError as error:
            raise AuditError(f"--import {module_name!r}: {error}") from error
    model = audit_model(_build(args), args.model) if args.model else None  # imports the model's ops first
    return [audit_namespace(ns) for ns in args.namespace], model


def cmd_audit(args: argparse.Namespace) -> int:
    """``layername audit``: 0 clean (or not strict), 1 findings with ``--strict``, 2 bad input."""
    from .modes import ModeError

    try:
        namespaces, model = run_audit(args)
    except (AuditError, ModeError) as error:
        print(f"layername: error: {error}", file=sys.stderr)
        return 2
    total = sum(len(n.findings) for n in namespaces) + (len(model.findings) if model else 0)
    if args.json:
        data = {"namespaces": [n.as_dict() for n in namespaces], "model": model.as_dict() if model else None}
        print(json.dumps({**data, "findings": total}, indent=2))
    else:
        _print_text(namespaces, model)
    return 1 if args.strict and total else 0


def _print_text(namespaces: list[NamespaceAudit], model: ModelAudit | None) -> None:
    for audit in namespaces:
        print(f"namespace {audit.namespace}: {len(audit.ops)} op(s), {len(audit.findings)} take a layer name as str")
        for finding in audit.findings:
            print(f"  {finding}")
        if audit.findings:
            print("  fix: type the argument as the hoisted LayerName (LayerNameType) and pass _encode_layer_name(...)")
    if model is not None:
        print(
            f"model {model.model}: {model.graphs} graph(s), {len(model.findings)} op(s) with baked layer-name strings"
        )
        for site in model.call_sites:
            print(f"  {'!' if site.layer_name_like else ' '} {site}")
