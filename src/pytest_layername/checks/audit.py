"""Find layer names still passed as strings: op schemas taking ``str layer_name``, and strings baked into graphs.

``layername audit --namespace NS`` reads the registered schemas of a ``torch.library`` namespace;
``layername audit --walk PACKAGE`` imports a whole package first (:mod:`.audit_walk`) and audits the
namespaces it registered ops in; ``layername audit --model MODULE:FACTORY`` (or a reference model name)
compiles the model and lists, per op, the call sites where a string or opaque constant is baked into
the graph: :func:`.graph_hash.baked_constants`, the code ``compile_counter`` uses to explain unique pieces.
Findings print as text, ``--json``, or SARIF 2.1.0 (``--sarif PATH``, :mod:`.audit_sarif`).

``--write-baseline FILE`` records the op findings; ``--baseline FILE`` then accepts those (an engine's
known debt) and fails on any other, naming the op, and reports baseline entries no longer found so the
baseline can shrink (:class:`Baseline`).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import fx

from ..compile.graph_hash import BakedConstant, baked_constants
from ..core.compat import HOIST_CHECKS, VALUE_TYPE_CHECKS, opaque_registry_api
from .audit_walk import (
    Site,
    custom_op_function,
    op_site,
)

#: Argument names that hold a layer name in inference engines (``layer_name``, ``prefix``, ``layer_prefix``...).
LAYER_NAME_ARGUMENT = re.compile(r"layer|prefix", re.IGNORECASE)
STRING_TYPES = ("str", "str?", "str[]", "str[]?", "Optional[str]", "List[str]", "Optional[List[str]]")

STR_RULE = "layername/str-layer-name"
OPAQUE_RULE = "layername/unhoisted-opaque-layer-name"


@dataclass(frozen=True)
class Rule:
    """One kind of finding: its id (as in SARIF), a name, a title, what is wrong and how to fix it."""

    id: str
    name: str
    title: str
    summary: str
    fix: str


RULES = {
    STR_RULE: Rule(
        STR_RULE,
        "StrLayerName",
        "Layer name passed to a custom op as str",
        "A custom op takes a layer name as str: Dynamo bakes each layer's name into the graph as a constant, "
        "so every layer compiles to its own piece.",
        "type the argument as the hoisted LayerName (LayerNameType) and pass _encode_layer_name(...)",
    ),
    OPAQUE_RULE: Rule(
        OPAQUE_RULE,
        "UnhoistedOpaqueLayerName",
        "Layer name typed with an opaque class registered without hoisting",
        "A custom op takes a layer name as an opaque value type registered without hoisting: Dynamo bakes "
        "each value into the graph as a constant, so every layer compiles to its own piece.",
        'register the class with register_opaque_type(cls, typ="value", hoist=True)',
    ),
}


class AuditError(ValueError):
    """Bad audit input: an empty namespace, a factory that cannot be loaded or run."""


@dataclass(frozen=True)
class Finding:
    """A custom-op argument named like a layer name whose type Dynamo bakes into the graph."""

    rule: str  # a key of RULES
    op: str
    argument: str
    type: str  # the schema type
    schema: str
    site: Site | None = None  # where the op was registered, when torch can tell
    opaque_class: str | None = None  # the unhoisted opaque class (OPAQUE_RULE)

    def __str__(self) -> str:
        what = self.type
        if self.opaque_class is not None:
            what += f" ({self.opaque_class}: opaque value type registered without hoist=True)"
        return f"{self.op}: argument {self.argument!r} is {what}  [{self.schema}]"

    def as_dict(self) -> dict[str, Any]:
        return {**vars(self), "site": self.site.as_dict() if self.site else None}


@dataclass(frozen=True)
class OpaqueCheck:
    """Tells opaque value types registered without hoisting; ``reason`` says why torch cannot (then never)."""

    is_value_type: Callable[[type], bool] | None
    should_hoist: Callable[[type], bool] | None
    reason: str | None

    @property
    def available(self) -> bool:
        return self.reason is None

    def is_unhoisted(self, cls: type) -> bool:
        if self.is_value_type is None or self.should_hoist is None:
            return False
        return self.is_value_type(cls) and not self.should_hoist(cls)


def opaque_check() -> OpaqueCheck:
    """Look up torch's opaque-type registry; torch without ``should_hoist`` has nothing to flag."""
    is_value_type = opaque_registry_api(VALUE_TYPE_CHECKS)
    should_hoist = opaque_registry_api(HOIST_CHECKS)
    if is_value_type is None or should_hoist is None:
        missing = "should_hoist" if should_hoist is None else "is_opaque_value_type"
        reason = f"torch {torch.__version__} cannot hoist opaque types (torch._library.opaque_object has no {missing})"
        return OpaqueCheck(None, None, reason)
    return OpaqueCheck(is_value_type, should_hoist, None)


def annotated_class(function: Callable[..., Any], argument: str) -> type | None:
    """The class ``function`` annotates ``argument`` with (string annotations evaluated), or None."""
    try:
        parameters = inspect.signature(function, eval_str=True).parameters
    except (NameError, TypeError, ValueError):  # annotations that do not evaluate: no class to see
        return None
    annotation = parameters[argument].annotation if argument in parameters else None
    return annotation if isinstance(annotation, type) else None


@dataclass
class NamespaceAudit:
    """The ops of one namespace and those still taking a layer name in a form Dynamo bakes."""

    namespace: str
    ops: list[str]
    findings: list[Finding]

    def as_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "ops": self.ops, "findings": [f.as_dict() for f in self.findings]}


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


def _unhoisted_class(op: str, argument: str, check: OpaqueCheck) -> str | None:
    function = custom_op_function(op)
    cls = annotated_class(function, argument) if function is not None else None
    return f"{cls.__module__}.{cls.__qualname__}" if cls is not None and check.is_unhoisted(cls) else None


def audit_namespace(
    namespace: str, pattern: re.Pattern[str] = LAYER_NAME_ARGUMENT, check: OpaqueCheck | None = None
) -> NamespaceAudit:
    """Every op in ``namespace`` with an argument named like ``pattern`` typed as str or an unhoisted opaque."""
    schemas = namespace_schemas(namespace)
    if not schemas:
        raise AuditError(
            f"namespace {namespace!r} has no registered ops; import the module that defines them "
            f"(layername audit --import MODULE --namespace {namespace})"
        )
    check = check or opaque_check()
    findings = []
    for op, schema in schemas:
        for argument in schema.arguments:
            if not pattern.search(argument.name):
                continue
            type_text = str(argument.type)
            if _is_string_type(type_text):
                findings.append(Finding(STR_RULE, op, argument.name, type_text, str(schema), op_site(op)))
            elif (opaque_class := _unhoisted_class(op, argument.name, check)) is not None:
                finding = Finding(OPAQUE_RULE, op, argument.name, type_text, str(schema), op_site(op), opaque_class)
                findings.append(finding)
    return NamespaceAudit(namespace, [op for op, _ in schemas], findings)


BASELINE_VERSION = 1


def baseline_key(finding: Finding) -> tuple[str, str, str]:
    """What identifies a finding across runs: rule, op and argument (not the schema text or the site)."""
    return (finding.rule, finding.op, finding.argument)


@dataclass(frozen=True)
class BaselineEntry:
    """One accepted finding of a baseline file."""

    rule: str
    op: str
    argument: str
    type: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.rule, self.op, self.argument)

    @property
    def namespace(self) -> str:
        return self.op.split("::", 1)[0]

    def __str__(self) -> str:
        return f"{self.op}: argument {self.argument!r} ({self.rule})"


@dataclass
class Baseline:
    """Accepted op findings, read from and written to a JSON file (``--baseline``, ``--write-baseline``)."""

    entries: list[BaselineEntry]
    path: str = ""

    @classmethod
    def of(cls, findings: Iterable[Finding], path: str = "") -> Baseline:
        entries = {baseline_key(f): BaselineEntry(f.rule, f.op, f.argument, f.type) for f in findings}
        return cls([entries[k] for k in sorted(entries)], path)

    @classmethod
    def load(cls, path: str | Path) -> Baseline:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise AuditError(f"--baseline {str(path)!r}: cannot read: {error.strerror or error}") from error
        except json.JSONDecodeError as error:
            raise AuditError(f"--baseline {str(path)!r}: not JSON: {error}") from error
        if not isinstance(data, dict) or data.get("version") != BASELINE_VERSION:
            raise AuditError(f"--baseline {str(path)!r}: not a layername audit baseline (version {BASELINE_VERSION})")
        entries = []
        for i, entry in enumerate(data.get("findings", [])):
            try:
                entries.append(BaselineEntry(entry["rule"], entry["op"], entry["argument"], entry.get("type", "")))
            except (KeyError, TypeError) as error:
                raise AuditError(f"--baseline {str(path)!r}: finding #{i} needs rule, op and argument") from error
        return cls(entries, str(path))

    def as_dict(self) -> dict[str, Any]:
        return {"version": BASELINE_VERSION, "findings": [vars(e) for e in self.entries]}

    def write(self, path: str | Path) -> None:
        try:
            Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            raise AuditError(f"--write-baseline {str(path)!r}: cannot write: {error.strerror or error}") from error

    def compare(self, findings: Iterable[Finding], namespaces: Iterable[str]) -> BaselineComparison:
        """Split ``findings`` into known and new; baseline entries not found are gone (their namespace was
        audited) or not audited (it was not: an op library that did not load says nothing about its ops)."""
        findings = list(findings)
        known_keys = {e.key for e in self.entries}
        found_keys = {baseline_key(f) for f in findings}
        audited = set(namespaces)
        missing = [e for e in self.entries if e.key not in found_keys]
        return BaselineComparison(
            self.path,
            known=[f for f in findings if baseline_key(f) in known_keys],
            new=[f for f in findings if baseline_key(f) not in known_keys],
            gone=[e for e in missing if e.namespace in audited],
            not_audited=[e for e in missing if e.namespace not in audited],
        )


@dataclass
class BaselineComparison:
    """Op findings against a baseline: known ones pass, new ones fail, gone ones can leave the baseline."""

    path: str
    known: list[Finding]
    new: list[Finding]
    gone: list[BaselineEntry]
    not_audited: list[BaselineEntry]

    def as_dict(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "known": len(self.known),
            "new": [f.as_dict() for f in self.new],
            "gone": [vars(e) for e in self.gone],
            "not_audited": [vars(e) for e in self.not_audited],
        }


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
    from ..core.implementation import load_implementation
    from ..core.modes import resolve_mode
    from ..harness.models import build_model

    return build_model(kind, layers, load_implementation(impl_name), resolve_mode(mode))


# -- command line ---------------------------------------------------------------------------------
