"""Layer-name fusion passes as inductor post-grad custom passes, and their installation.

A :class:`LayerNameFusionPass` owns one ``PatternMatcherPass``. In opaque mode it registers ONE
pattern whose ``layer_name`` is an explicit pattern input (a ``KeywordArg`` wildcard that matches the
hoisted ``LayerName`` placeholder of every layer); in string mode it registers one pattern per layer
name with the name as a closure constant: tracing a pattern bakes a ``str`` example input into the
pattern as a constant (it cannot be a wildcard), so a per-layer pattern is all string mode can do.
Patterns are traced on fake tensors; the opaque example input stays a real ``LayerName``.
Counts reported to :mod:`pytest_layername.fusion.log` are what the pattern matcher did: the number
``PatternMatcherPass.apply`` returns, attributed to patterns by the ``extra_check`` that accepted them.
"""

from __future__ import annotations

import contextlib
import inspect
import pathlib
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import fx
from torch._higher_order_ops.auto_functionalize import auto_functionalized
from torch._inductor.custom_graph_pass import CustomGraphPass, get_hash_for_files
from torch._inductor.pattern_matcher import Match, PatternMatcherPass, fwd_only, register_replacement
from torch._subclasses import FakeTensorMode

from ..compile.graph_hash import target_name
from ..core.implementation import Implementation
from ..core.modes import Mode
from .log import record_match, record_patterns
from .quant_ops import FusionOpSet, get_fusion_ops, op_names

#: torch >= 2.11's register_replacement takes a pattern_name (a debug label); torch 2.10's does not.
_NAMES_PATTERNS = "pattern_name" in inspect.signature(register_replacement).parameters
_SOURCES = tuple(str(p) for p in sorted(pathlib.Path(__file__).parent.glob("*.py")))
WILDCARD = "*"


class FusionError(ValueError):
    """Bad fusion pass configuration, or a pattern matcher result the pass cannot account for."""


def graph_op_counts(graph: fx.Graph) -> Counter[str]:
    """``ns::op`` -> number of calls in ``graph``; an ``auto_functionalized(op)`` counts as a call to ``op``."""
    counts: Counter[str] = Counter()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        target = node.args[0] if node.target is auto_functionalized else node.target
        counts[target_name(target)] += 1
    return counts


@dataclass(frozen=True)
class GraphRecord:
    """One run of a pass over a post-grad graph: matches made, and op counts before and after."""

    matched: int
    before: Counter[str]
    after: Counter[str]


@dataclass(frozen=True)
class PatternSpec:
    """What :func:`register_replacement` needs for one pattern."""

    search: Callable[..., Any]
    replace: Callable[..., Any]
    example_inputs: list[Any]


class LayerNameFusionPass(CustomGraphPass):
    """Base of the fusion passes; subclasses build the pattern for one layer name (or the wildcard)."""

    name: ClassVar[str]
    #: Roles (keys of :func:`~.quant_ops.op_names`) of the op the pass emits and of the op it removes.
    fused_role: ClassVar[str]
    removed_role: ClassVar[str]

    def __init__(self, impl: Implementation, mode: Mode, layer_names: Sequence[str] | None = None) -> None:
        if mode not in ("opaque", "string"):
            raise FusionError(f"unknown layer-name mode {mode!r}; choose 'opaque' or 'string'")
        names = list(layer_names or ())
        if mode == "string" and not names:
            raise FusionError(f"{self.name}: string mode bakes layer names into patterns; pass layer_names")
        if any(not isinstance(n, str) or not n for n in names) or len(set(names)) != len(names):
            raise FusionError(f"{self.name}: layer_names must be distinct non-empty strings, got {names!r}")
        self.impl, self.mode = impl, mode
        self.ops: FusionOpSet = get_fusion_ops(impl, mode)
        self.op_names = op_names(self.ops)
        self.matcher = PatternMatcherPass(pass_name=self.name)
        self.pattern_names: list[str] = []
        self.graphs: list[GraphRecord] = []
        self._accepted: list[str] = []
        with FakeTensorMode():
            for layer in [None] if mode == "opaque" else names:
                self._register(layer)
        record_patterns(self.name, self.pattern_names)

    @property
    def fused_op(self) -> str:
        return self.op_names[self.fused_role]

    @property
    def removed_op(self) -> str:
        return self.op_names[self.removed_role]

    @abstractmethod
    def pattern(self, layer_name: str | None) -> PatternSpec:
        """The pattern for ``layer_name`` baked as a constant, or (None) with ``layer_name`` as an input."""

    def accepts(self, match: Match) -> bool:
        """Extra conditions a structural match must meet to be replaced (subclasses narrow this)."""
        return True

    def _register(self, layer: str | None) -> None:
        pattern_name = f"{self.name}[{WILDCARD if layer is None else layer}]"
        spec = self.pattern(layer)

        def extra_check(match: Match) -> bool:
            if not self.accepts(match):
                return False
            self._accepted.append(pattern_name)
            return True

        registered = register_replacement(
            spec.search,
            spec.replace,
            spec.example_inputs,
            fwd_only,
            self.matcher,
            extra_check=extra_check,
            **({"pattern_name": pattern_name} if _NAMES_PATTERNS else {}),
        )
        if not registered:
            raise FusionError(f"{pattern_name}: the pattern matcher rejected the pattern as a duplicate")
        self.pattern_names.append(pattern_name)

    def __call__(self, graph: fx.Graph) -> None:
        record_patterns(self.name, self.pattern_names)  # re-announced so logs opened after construction see it
        before = graph_op_counts(graph)
        self._accepted = []
        matched = self.matcher.apply(graph)
        if matched != len(self._accepted):
            raise FusionError(
                f"{self.name}: pattern matcher replaced {matched} matches, checks accepted {self._accepted}"
            )
        for pattern_name in self._accepted:
            record_match(self.name, pattern_name)
        self.graphs.append(GraphRecord(matched, before, graph_op_counts(graph)))

    def config_key(self) -> tuple[Any, ...]:
        """Everything besides the pattern names that changes what the pass does (subclasses extend)."""
        return ()

    def uuid(self) -> tuple[Any, ...]:
        """Stable across processes: pass, mode, patterns, configuration and the fusion package's source."""
        return (
            self.name,
            self.mode,
            self.impl.namespace,
            tuple(self.pattern_names),
            tuple(str(v) for v in self.config_key()),
            get_hash_for_files(_SOURCES).hex(),
        )


class FusionPasses(CustomGraphPass):
    """Several custom passes run in order as one ``post_grad_custom_post_pass``."""

    def __init__(self, passes: Sequence[Any]) -> None:
        self.passes = tuple(passes)

    def __call__(self, graph: fx.Graph) -> None:
        for graph_pass in self.passes:
            graph_pass(graph)

    def uuid(self) -> tuple[Any, ...] | None:
        uuids = []
        for graph_pass in self.passes:
            uuid = graph_pass.uuid() if hasattr(graph_pass, "uuid") else None
            if uuid is None:
                return None  # a pass without an identity: inductor must not cache
            uuids.append(uuid)
        return tuple(uuids)


@contextlib.contextmanager
def fusion_passes(*passes: LayerNameFusionPass) -> Iterator[FusionPasses]:
    """Install ``passes`` as inductor's post-grad custom pass for compiles inside the block.

    Any post-grad custom pass already configured runs first. ``auto_functionalized`` v1 is selected so
    mutating ops such as ``attention_with_output`` appear as ``auto_functionalized(op, ...)`` nodes,
    which is what the patterns match.
    """
    if not passes:
        raise FusionError("fusion_passes() needs at least one pass")
    from torch._inductor import config

    configured = config.post_grad_custom_post_pass  # None, one pass, or (newer torch) a sequence of passes
    existing = [] if configured is None else list(configured) if isinstance(configured, list | tuple) else [configured]
    combined = FusionPasses([*existing, *passes])
    with config.patch(post_grad_custom_post_pass=combined, enable_auto_functionalized_v2=False):
        yield combined


def example_tensors(*shapes: tuple[int, ...], dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    """Distinct empty tensors for pattern tracing (callers run this under ``FakeTensorMode``)."""
    return [torch.empty(shape, dtype=dtype) for shape in shapes]


def wildcard_layer_name(impl: Implementation) -> Any:
    """A ``LayerName`` from the implementation's own encoder, to trace an opaque pattern's ``layer_name`` input."""
    with impl.use_mode("opaque"):
        return impl.encode("pattern.layer")
