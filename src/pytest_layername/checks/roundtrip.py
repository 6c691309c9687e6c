"""Layer-name round trips: encode→resolve, pickle, deepcopy, ``__fx_repr__``, a compiled graph, a compile cache.

Every stage must hand the op exactly the name it was given. :func:`assert_roundtrip` checks values and
a freshly compiled graph; :func:`assert_cache_roundtrip` reloads an inductor artifact in a fresh process
(FX-graph/AOT cache hit, or ``standalone_compile`` save/load) and checks the op still receives the right
name, never ``None``; :func:`fresh_process_failures` pickles names to and from a fresh process.
"""

from __future__ import annotations

import copy
import functools
import os
import pickle
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from ..compile.graph_hash import target_name
from ..compile.session import compile_session
from ..core.compat import standalone_options
from ..core.implementation import Implementation
from ..core.modes import Mode
from .field_checks import FieldCheckError, check_fx_repr
from .fresh_process import describe_loaded, encode_pickle, run_fresh
from .probe import Probe, recording

STAGES = ("encode", "pickle", "deepcopy", "fx_repr", "compiled")
CACHE_METHODS = ("cache_hit", "standalone")


@dataclass(frozen=True)
class StageFailure:
    """One name that did not survive one stage."""

    name: str
    stage: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.stage}] {self.name!r}: {self.detail}"


class RoundTripError(AssertionError):
    """Layer names changed on the way to the op; the message lists every name and stage that failed."""

    def __init__(self, impl: Implementation, mode: Mode, failures: Sequence[StageFailure]) -> None:
        self.failures = list(failures)
        lines = "\n  ".join(str(f) for f in self.failures)
        super().__init__(f"layer-name round trip failed for {impl.module_name} in {mode} mode:\n  {lines}")


def _check_value(impl: Implementation, mode: Mode, name: str, value: Any, stage: str) -> StageFailure | None:
    expected_type = impl.LayerName if mode == "opaque" else str
    if type(value) is not expected_type:
        return StageFailure(name, stage, f"got {type(value).__name__} {value!r}, expected {expected_type.__name__}")
    try:
        resolved = impl.resolve(value)
    except Exception as error:
        return StageFailure(name, stage, f"resolve raised {type(error).__name__}: {error}")
    if type(resolved) is not str or resolved != name:
        return StageFailure(name, stage, f"resolves to {resolved!r}")
    return None


def _value_failures(impl: Implementation, mode: Mode, name: str) -> list[StageFailure]:
    with impl.use_mode(mode):
        encoded = impl.encode(name)  # the implementation's own _encode_layer_name, under its own switch
    failures = [_check_value(impl, mode, name, encoded, "encode")]
    if failures[0] is not None:  # the later stages copy what the encoder returned: only its stage is to blame
        return failures
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        try:
            copied = pickle.loads(pickle.dumps(encoded, protocol=protocol))
        except Exception as error:
            failures.append(StageFailure(name, f"pickle(protocol={protocol})", f"{type(error).__name__}: {error}"))
            continue
        failures.append(_check_value(impl, mode, name, copied, f"pickle(protocol={protocol})"))
        if copied != encoded or hash(copied) != hash(encoded):
            failures.append(StageFailure(name, f"pickle(protocol={protocol})", "copy is not equal with an equal hash"))
    for copier in (copy.copy, copy.deepcopy):
        failures.append(_check_value(impl, mode, name, copier(encoded), copier.__name__))
    if mode == "opaque":
        try:
            failures.append(_check_value(impl, mode, name, check_fx_repr(encoded), "fx_repr"))
        except FieldCheckError as error:
            failures.append(StageFailure(name, "fx_repr", str(error)))
    return [f for f in failures if f is not None]


class _Capture:
    """A backend that keeps each Dynamo graph and its example inputs, then compiles with ``compiler``."""

    def __init__(self, compiler: str) -> None:
        self.compiler = compiler
        self.graphs: list[tuple[fx.GraphModule, list[Any]]] = []

    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> Any:
        from ..compile.backend import inner_compile

        self.graphs.append((gm, list(example_inputs)))
        return inner_compile(self.compiler, gm, example_inputs)


def _compare_received(names: Sequence[str], received: Sequence[Any], stage: str) -> list[StageFailure]:
    if len(received) != len(names):
        return [
            StageFailure(n, stage, f"op ran {len(received)} times for {len(names)} names: {received!r}") for n in names
        ]
    return [StageFailure(n, stage, f"op received {r!r}") for n, r in zip(names, received, strict=True) if r != n]


def _constants(gm: fx.GraphModule) -> Iterator[tuple[str, Any]]:
    """``(op, constant)`` for every non-node argument of every call in ``gm``."""
    for node in gm.graph.nodes:
        if node.op in ("call_function", "call_method", "call_module"):
            leaves = torch.utils._pytree.tree_leaves((node.args, node.kwargs))
            yield from ((target_name(node.target), v) for v in leaves if not isinstance(v, fx.Node))


def _graph_failures(
    impl: Implementation, mode: Mode, names: Sequence[str], capture: _Capture, stage: str
) -> list[StageFailure]:
    if not capture.graphs:
        return [StageFailure(n, stage, "the backend never ran: the call fell back to eager") for n in names]
    if mode != "opaque":
        return []
    baked: dict[str, str] = {}
    for gm, _ in capture.graphs:
        for op, value in _constants(gm):
            if isinstance(value, impl.LayerName):
                baked.setdefault(impl.resolve(value), f"{op}(..., {value!r})")
            elif isinstance(value, str):
                baked.setdefault(value, f"{op}(..., {value!r})")
    return [
        StageFailure(n, stage, f"baked into the graph as a constant: {baked[n]}; LayerName is not hoisted")
        for n in names
        if n in baked
    ]


def _compiled_failures(
    impl: Implementation, mode: Mode, names: Sequence[str], compiler: str, device: str
) -> list[StageFailure]:
    stage = f"compiled({compiler})"
    probe = Probe(impl, mode, names)
    x = torch.zeros(2, device=device)
    capture = _Capture(compiler)
    torch._dynamo.reset()  # a fresh probe per call: without a reset, calls would pile up as recompiles
    with recording() as received, impl.use_mode(mode):
        try:
            out = torch.compile(probe, backend=capture, fullgraph=True)(x)
        except Exception as error:
            return [
                StageFailure(n, stage, f"compiling or running raised {type(error).__name__}: {error}") for n in names
            ]
        failures = _graph_failures(impl, mode, names, capture, stage) + _compare_received(names, received, stage)
    if not torch.equal(out, x + len(names)):
        failures.append(StageFailure(names[0], stage, f"output {out.tolist()} != eager {(x + len(names)).tolist()}"))
    return failures


def check_roundtrip(
    impl: Implementation, mode: Mode, names: Sequence[str], compiler: str = "aot_eager", device: str = "cpu"
) -> list[StageFailure]:
    """Every (name, stage) that failed: value stages per name, then one compiled graph over all names."""
    names = list(names)
    if not names:
        raise ValueError("check_roundtrip needs at least one layer name")
    failures = [f for name in names for f in _value_failures(impl, mode, name)]
    return failures + _compiled_failures(impl, mode, names, compiler, device)


def assert_roundtrip(
    impl: Implementation, mode: Mode, names: Sequence[str], compiler: str = "aot_eager", device: str = "cpu"
) -> None:
    """Raise :class:`RoundTripError` unless every name survives every stage (see :data:`STAGES`)."""
    if failures := check_roundtrip(impl, mode, names, compiler, device):
        raise RoundTripError(impl, mode, failures)


# -- compile-cache round trip ----------------------------------------------------------------------


@dataclass
class CacheRoundTrip:
    """What a cache round trip did, read from torch's counters."""

    method: str
    mode: Mode
    names: list[str]
    reload_names: list[str]
    received_first: list[Any] = field(default_factory=list)
    received_reloaded: list[Any] = field(default_factory=list)
    cache_hits: int = 0  # AOT-autograd + FX-graph cache hits during the reload
    cache_misses: int = 0  # during the reload
    device: str = "cpu"
    output_reloaded: list[float] = field(default_factory=list)  # what the reloaded probe returned for zeros(2)


def _reload_request(impl: Implementation, mode: Mode, result: CacheRoundTrip) -> dict[str, Any]:
    return {
        "job": "reload",
        "method": result.method,
        "impl": impl.module_name,
        "mode": mode,
        "names": result.reload_names,
        "device": result.device,
    }


def _record_reload(result: CacheRoundTrip, answer: dict[str, Any]) -> None:
    result.received_reloaded = answer["received"]
    result.cache_hits, result.cache_misses = answer["cache_hits"], answer["cache_misses"]
    result.output_reloaded = answer["output"]


def _reload_via_cache(impl: Implementation, mode: Mode, result: CacheRoundTrip) -> None:
    with compile_session(fresh_inductor_cache=True):  # empty FX-graph cache in TORCHINDUCTOR_CACHE_DIR
        with recording() as received:
            torch.compile(Probe(impl, mode, result.names), backend="inductor", fullgraph=True)(
                torch.zeros(2, device=result.device)
            )
            result.received_first = list(received)
        _record_reload(result, run_fresh(_reload_request(impl, mode, result)))  # the child inherits the cache dir


def _reload_via_standalone(impl: Implementation, mode: Mode, result: CacheRoundTrip) -> None:
    from torch._inductor import standalone_compile

    capture = _Capture("eager")
    torch._dynamo.reset()
    with recording() as received:
        torch.compile(Probe(impl, mode, result.names), backend=capture, fullgraph=True)(
            torch.zeros(2, device=result.device)
        )
        result.received_first = list(received)
    gm, example_inputs = capture.graphs[0]
    slots = {name: index for index, name in enumerate(result.names)}
    inputs = [slots[impl.resolve(v)] if isinstance(v, impl.LayerName) else None for v in example_inputs]
    with compile_session(fresh_inductor_cache=True), tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "artifact.bin")
        standalone_compile(gm, example_inputs, **standalone_options()).save(path=path, format="binary")
        request = {**_reload_request(impl, mode, result), "artifact": path, "inputs": inputs}
        _record_reload(result, run_fresh(request, env={"TORCHINDUCTOR_CACHE_DIR": os.path.join(tmp, "reload")}))


def cache_roundtrip(
    impl: Implementation,
    mode: Mode,
    names: Sequence[str],
    method: str = "cache_hit",
    rename: bool | None = None,
    device: str = "cpu",
) -> CacheRoundTrip:
    """Compile a probe with inductor here, reload the artifact in a fresh process (``method``), record what the op got.

    The reload runs where an engine's worker or a restarted server would: another Python process.
    ``cache_hit``: compile into a fresh, private inductor cache; the fresh process compiles the probe again
    from that cache. ``standalone``: ``standalone_compile`` (``aot=True`` where this torch has it) saved to
    disk; the fresh process loads and calls it.
    With ``rename`` (default: in opaque mode) the reload uses other names, so the names must come from
    the caller, not from the artifact.
    """
    if method not in CACHE_METHODS:
        raise ValueError(f"unknown cache round-trip method {method!r}; choose one of: {', '.join(CACHE_METHODS)}")
    rename = mode == "opaque" if rename is None else rename
    if rename and mode != "opaque":
        raise ValueError("rename needs opaque mode: string-mode artifacts contain their names")
    names = list(names)
    fresh = {n: f"reloaded.{i}.{n}" for i, n in enumerate(dict.fromkeys(names))}
    reload_names = [fresh[n] for n in names] if rename else names
    result = CacheRoundTrip(method, mode, names, reload_names, device=device)
    with impl.use_mode(mode):
        (_reload_via_cache if method == "cache_hit" else _reload_via_standalone)(impl, mode, result)
    return result


def assert_cache_roundtrip(
    impl: Implementation,
    mode: Mode,
    names: Sequence[str],
    method: str = "cache_hit",
    rename: bool | None = None,
    device: str = "cpu",
) -> CacheRoundTrip:
    """:func:`cache_roundtrip`, raising :class:`RoundTripError` unless the op got every name both times."""
    result = cache_roundtrip(impl, mode, names, method, rename, device)
    stage = f"cache({method})"
    failures = _compare_received(result.names, result.received_first, f"{stage}, first run")
    failures += _compare_received(result.reload_names, result.received_reloaded, f"{stage}, after reload")
    if result.output_reloaded != [float(len(names))] * 2:
        failures.append(StageFailure(result.names[0], stage, f"the reloaded probe returned {result.output_reloaded}"))
    if method == "cache_hit" and (result.cache_hits == 0 or result.cache_misses):
        failures.append(
            StageFailure(
                result.names[0],
                stage,
                f"the reload was not a cache hit ({result.cache_misses} misses); is the FX-graph or AOT-autograd "
                "cache disabled (TORCHINDUCTOR_FX_GRAPH_CACHE=0 / TORCHINDUCTOR_AUTOGRAD_CACHE=0)?",
            )
        )
    if failures:
        raise RoundTripError(impl, mode, failures)
    return result


# -- a fresh process: registration at import, pickles both ways, deprecations, a compiled probe -------------


@dataclass(frozen=True)
class FreshProcess:
    """What a fresh Python process made of the implementation, of names pickled here, and what it pickled for here."""

    mode: Mode
    names: tuple[str, ...]
    hoisted_at_import: bool | None  # LayerName registered hoisted right after the fresh import (before any encode)
    declare_error: str | None  # declaring an op with the implementation's type at import time failed
    compile_error: str | None
    received: tuple[Any, ...] | None  # what the probe op compiled there received, in order
    deprecations: tuple[str, ...]  # torch deprecation messages while importing and using the implementation
    pickle_failures: tuple[StageFailure, ...]


@functools.cache
def fresh_process(impl: Implementation, mode: Mode, names: tuple[str, ...]) -> FreshProcess:
    """Import the implementation in a fresh process and exchange pickled names with it (once per arguments)."""
    protocols = range(pickle.HIGHEST_PROTOCOL + 1)
    with impl.use_mode(mode):
        pickles = [[encode_pickle(impl.encode(name), p) for p in protocols] for name in names]
    answer = run_fresh({"job": "names", "impl": impl.module_name, "mode": mode, "names": names, "pickles": pickles})
    failures = [
        StageFailure(name, f"pickle(protocol={p}) here, loaded in a fresh process", f"resolves to {got!r}")
        for name, loaded in zip(names, answer["loaded"], strict=True)
        for p, got in zip(protocols, loaded, strict=True)
        if got != name
    ]
    with impl.use_mode(mode):
        failures += [
            StageFailure(name, f"pickle(protocol={p}) in a fresh process, loaded here", f"resolves to {got!r}")
            for name, payloads in zip(names, answer["pickles"], strict=True)
            for p, payload in zip(protocols, payloads, strict=True)
            if (got := describe_loaded(impl, mode, payload)) != name
        ]
    received = answer["received"]
    return FreshProcess(
        mode,
        names,
        answer["hoisted_at_import"],
        answer["declare_error"],
        answer["compile_error"],
        None if received is None else tuple(received),
        tuple(answer["deprecations"]),
        tuple(failures),
    )
