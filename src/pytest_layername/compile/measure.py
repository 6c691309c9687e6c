"""Compile a reference model with the piecewise backend and measure what it took."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.environment import DeviceError, check_device
from ..core.implementation import REFERENCE_IMPL, Implementation, ImplementationError, load_implementation
from ..core.modes import REQUESTABLE, Mode, ModeError, resolve_modes
from ..harness.models import MODEL_NAMES, ModelError, build_model, run
from .backend import INNER_COMPILERS, BackendError
from .session import compile_session
from .stats import CompileStats

#: errors that mean bad input to a command (exit status 2), not a failed measurement
USAGE_ERRORS = (ModeError, ImplementationError, ModelError, DeviceError, BackendError)


def _warm_up_fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(torch.nn.functional.layer_norm(x, x.shape[-1:]) @ w) + x.sin()


def warm_up_compiler(compiler: str) -> float:
    """Compile an unrelated tiny graph so one-time start-up (imports, C++ toolchain, workers) is not timed."""
    start = time.perf_counter()
    with compile_session():
        torch.compile(_warm_up_fn, backend=compiler)(torch.randn(8, 16), torch.randn(16, 16))
    return time.perf_counter() - start


@dataclass
class Measurement:
    """Compile statistics of one model in one mode, and whether its outputs matched eager."""

    model: str
    layers: int
    mode: Mode
    compiler: str
    device: str
    stats: CompileStats
    first_run_seconds: float  # compile + first call, wall clock
    max_abs_error: float
    harness_seconds: dict[str, float]  # the backend's own work (split, hash, record) and reading the stats

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "layers": self.layers,
            "mode": self.mode,
            "compiler": self.compiler,
            "device": self.device,
            "first_run_seconds": round(self.first_run_seconds, 4),
            "max_abs_error": self.max_abs_error,
            "harness_seconds": self.harness_seconds,
            **self.stats.as_dict(),
        }


def measure_compile(
    model: str,
    layers: int,
    mode: Mode,
    *,
    impl: Implementation | None = None,
    compiler: str = "inductor",
    device: str = "cpu",
    splitting_ops: Sequence[str] | None = None,
) -> Measurement:
    """Build ``model``, compile it cold with the piecewise backend, and compare its output with eager."""
    impl = impl or load_implementation()
    net = build_model(model, layers, impl, mode, device=check_device(device))
    x = net.example_input()
    expected = run(net, net, x)
    with compile_session() as session:
        backend = session.backend(compiler, splitting_ops)
        compiled = torch.compile(net, backend=backend)
        start = time.perf_counter()
        actual = run(net, compiled, x)
        first_run = time.perf_counter() - start
        start = time.perf_counter()
        stats = session.stats
        harness = {**backend.harness_seconds, "stats": time.perf_counter() - start}
    torch.testing.assert_close(actual, expected)
    error = (actual - expected).abs().max().item()
    return Measurement(model, layers, mode, compiler, device, stats, first_run, error, harness)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername compile-stats``."""
    p.add_argument("--model", default="decoder", choices=MODEL_NAMES)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--mode", default="both", choices=REQUESTABLE)
    p.add_argument("--compiler", default="inductor", choices=INNER_COMPILERS, help="inner compiler for each piece")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--impl", default=REFERENCE_IMPL, help="dotted module providing LayerName and encode/resolve")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_compile_stats, usage_errors=USAGE_ERRORS)


def _cmd_compile_stats(args: argparse.Namespace) -> int:
    impl = load_implementation(args.impl)
    modes = resolve_modes(args.mode)
    if args.compiler != "eager":
        seconds = warm_up_compiler(args.compiler)
        print(f"warmed up {args.compiler} in {seconds:.1f} s (not counted below)", file=sys.stderr)
    results = []
    for mode in modes:
        print(f"compiling {args.model} x{args.layers} in {mode} mode with {args.compiler}...", file=sys.stderr)
        results.append(
            measure_compile(args.model, args.layers, mode, impl=impl, compiler=args.compiler, device=args.device)
        )
    if args.json:
        data = {"torch": torch.__version__, "impl": impl.module_name, "results": [r.as_dict() for r in results]}
        print(json.dumps(data, indent=2))
    else:
        print(
            f"{'mode':8} {'pieces':>6} {'unique':>6} {'fx-miss':>7} {'fx-hit':>6} {'aot-miss':>8} {'aot-hit':>7} "
            f"{'disagree':>8} {'seconds':>8}"
        )
        for r in results:
            s = r.stats
            print(
                f"{r.mode:8} {s.pieces:6} {s.unique_pieces:6} {s.fx_graph_cache_misses:7} {s.fx_graph_cache_hits:6} "
                f"{s.aot_autograd_cache_misses:8} {s.aot_autograd_cache_hits:7} {s.hash_disagreements:8} "
                f"{s.compile_seconds:8.2f}"
            )
        print(
            "unique: pieces by structural hash; fx-/aot-: torch's FX-graph and AOT-autograd cache counters "
            "(inductor only); disagree: pieces where the hash and torch's FX-graph cache differ"
        )
    return 0
