"""Compile a reference model with the piecewise backend and measure what it took."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..core.environment import check_device
from ..core.implementation import Implementation, load_implementation
from ..core.modes import Mode
from ..harness.models import build_model, run
from .session import compile_session
from .stats import CompileStats


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
