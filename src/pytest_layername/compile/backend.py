"""A piecewise ``torch.compile`` backend: torch's caches decide which pieces share an artifact.

The Dynamo graph is split at the splitting ops (attention by default, as inference engines do); the
splitting ops run eagerly. With the ``inductor`` inner compiler every other piece goes through
``compile_fx`` with the FX-graph and AOT-autograd caches on (as an inference engine's piecewise backend
does), so torch decides reuse: a piece is compiled on an FX-graph-cache miss and reuses an artifact on a
hit. Every piece is also hashed (:mod:`.graph_hash`) to explain *why* it is unique; a piece where the hash
and torch disagree is recorded as a disagreement. ``eager`` and ``aot_eager`` have no cache of their own:
there the hash decides, and the first piece of each hash is compiled for all identical ones.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import fx
from torch._guards import detect_fake_mode
from torch.fx.passes.split_module import split_module

from .graph_hash import graph_signature, target_name
from .stats import CacheCounts, PieceLog, PieceRecord

CompiledFn = Callable[..., Any]
INNER_COMPILERS = ("inductor", "aot_eager", "eager")
#: Ops (``ns::name`` glob patterns) that end a piece, as attention and mamba do in inference engines.
DEFAULT_SPLITTING_OPS = ("*::attention_with_output*", "*::mamba_mixer*")


class BackendError(ValueError):
    """Bad backend configuration."""


def _caches_on() -> contextlib.ExitStack:
    """Turn inductor's FX-graph cache and the AOT-autograd cache on (whatever the environment says)."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config

    stack = contextlib.ExitStack()
    for config, settings in (
        (inductor_config, {"fx_graph_cache": True, "force_disable_caches": False}),
        (functorch_config, {"enable_autograd_cache": True}),
    ):
        known = {key: value for key, value in settings.items() if hasattr(config, key)}
        stack.enter_context(config.patch(known))
    return stack


def inner_compile(compiler: str, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> CompiledFn:
    """Compile one piece with ``inductor`` (caches on), ``aot_eager`` or ``eager`` (no compilation)."""
    if compiler == "inductor":
        from torch._inductor.compile_fx import compile_fx

        with _caches_on():
            return compile_fx(gm, list(example_inputs))
    if compiler == "aot_eager":
        from torch._dynamo.backends.debugging import aot_eager
        from torch._inductor.compile_fx import graph_returns_tuple, make_graph_return_tuple

        if graph_returns_tuple(gm):  # aot_autograd needs a tuple output; a piece may return one tensor
            return aot_eager(gm, list(example_inputs))
        return make_graph_return_tuple(gm, list(example_inputs), aot_eager)
    if compiler == "eager":
        return gm.forward
    raise BackendError(f"unknown inner compiler {compiler!r}; choose one of: {', '.join(INNER_COMPILERS)}")


def is_splitting_op(name: str, splitting_ops: Sequence[str]) -> bool:
    """Whether op ``name`` matches one of the ``splitting_ops`` glob patterns."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in splitting_ops)


def split_at(gm: fx.GraphModule, splitting_ops: Sequence[str]) -> tuple[fx.GraphModule, set[str]]:
    """Split ``gm`` so every call to a splitting op is a piece of its own; returns the names of those pieces."""
    partition: dict[fx.Node, int] = {}
    splitting_partitions: set[int] = set()
    current = 0
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        if node.op == "call_function" and is_splitting_op(target_name(node.target), splitting_ops):
            current += 1
            partition[node] = current
            splitting_partitions.add(current)
            current += 1
        else:
            partition[node] = current
    split = split_module(gm, None, lambda node: partition[node], keep_original_order=True)
    return split, {f"submod_{i}" for i in splitting_partitions}


class _PieceCompiler(fx.Interpreter):
    """Runs the split graph on fake inputs and compiles each non-splitting piece with its real arguments."""

    def __init__(self, split: fx.GraphModule, splitting: set[str], backend: PiecewiseBackend, fake_mode) -> None:
        super().__init__(split)
        self.splitting = splitting
        self.backend = backend
        self.fake_mode = fake_mode

    def run(self, *args: Any) -> Any:  # type: ignore[override]
        fake_args = [self.fake_mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with self.fake_mode:
            return super().run(*fake_args)

    def call_module(self, target: str, args: Any, kwargs: Any) -> Any:  # type: ignore[override]
        output = super().call_module(target, args, kwargs)
        if target not in self.splitting:
            submodule = self.fetch_attr(target)
            self.module.__dict__[target] = self.backend.compile_piece(target, submodule, args)
        return output


class PiecewiseBackend:
    """``torch.compile(model, backend=PiecewiseBackend(...))``; see the module docstring."""

    def __init__(
        self,
        splitting_ops: Sequence[str] | None = None,
        compiler: str = "inductor",
        pieces: PieceLog | None = None,
    ) -> None:
        """``pieces`` receives every compiled piece."""
        if compiler not in INNER_COMPILERS:
            raise BackendError(f"unknown inner compiler {compiler!r}; choose one of: {', '.join(INNER_COMPILERS)}")
        self.splitting_ops = tuple(splitting_ops) if splitting_ops is not None else DEFAULT_SPLITTING_OPS
        self.compiler = compiler
        self.pieces = pieces or PieceLog()
        self.artifacts: dict[str, CompiledFn] = {}
        #: Wall seconds of the harness's own work (not compiling): splitting, hashing, recording pieces.
        self.harness_seconds = {"split": 0.0, "hash": 0.0, "record": 0.0}

    def __call__(self, gm: fx.GraphModule, example_inputs: Sequence[Any]) -> CompiledFn:
        start = time.perf_counter()
        split, splitting = split_at(gm, self.splitting_ops)
        self.harness_seconds["split"] += time.perf_counter() - start
        fake_mode = detect_fake_mode(example_inputs) or torch._subclasses.FakeTensorMode()
        _PieceCompiler(split, splitting, self, fake_mode).run(*example_inputs)
        return split

    def compile_piece(self, name: str, piece: fx.GraphModule, example_inputs: Sequence[Any]) -> CompiledFn:
        """The artifact for ``piece``: from inductor and its caches, or (other compilers) reused by hash."""
        start = time.perf_counter()
        signature = graph_signature(piece, example_inputs)
        hash_new = not self.pieces.seen(signature.digest)
        self.harness_seconds["hash"] += time.perf_counter() - start
        fx_cache = aot_cache = None
        start = time.perf_counter()
        if self.compiler == "inductor":
            before = CacheCounts.now()
            artifact = inner_compile(self.compiler, piece, example_inputs)
            fx_cache, aot_cache = CacheCounts.now().outcomes_since(before)
            compiled = fx_cache != "hit"
        else:
            compiled = signature.digest not in self.artifacts
            if compiled:
                self.artifacts[signature.digest] = inner_compile(self.compiler, piece, example_inputs)
            artifact = self.artifacts[signature.digest]
        seconds = time.perf_counter() - start
        start = time.perf_counter()
        self.pieces.record(
            PieceRecord(
                name=name,
                digest=signature.digest,
                masked_digest=signature.masked_digest,
                baked=list(signature.baked),
                hash_new=hash_new,
                compiled=compiled,
                compile_seconds=seconds,
                fx_graph_cache=fx_cache,
                aot_autograd_cache=aot_cache,
                nodes=signature.nodes,
                cache_warm=self.pieces.cache_warm,
            ),
            inner_compiler_ran=self.compiler == "inductor" or compiled,
        )
        self.harness_seconds["record"] += time.perf_counter() - start
        return artifact
