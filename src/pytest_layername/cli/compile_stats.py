"""``layername compile-stats``: compile a reference model in each mode and print its compile statistics."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ..compile.backend import INNER_COMPILERS, BackendError
from ..compile.measure import measure_compile, warm_up_compiler
from ..core.environment import DeviceError
from ..core.implementation import REFERENCE_IMPL, ImplementationError, load_implementation
from ..core.modes import REQUESTABLE, ModeError, resolve_modes
from ..harness.models import MODEL_NAMES, ModelError

#: errors that mean bad input to a command (exit status 2), not a failed measurement
USAGE_ERRORS = (ModeError, ImplementationError, ModelError, DeviceError, BackendError)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername compile-stats``."""
    p.add_argument("--model", default="decoder", choices=MODEL_NAMES, help="reference model (default: %(default)s)")
    p.add_argument("--layers", type=int, default=32, help="its layer count (default: %(default)s)")
    p.add_argument("--mode", default="both", choices=REQUESTABLE, help="layer-name mode(s) (default: %(default)s)")
    p.add_argument(
        "--compiler",
        default="inductor",
        choices=INNER_COMPILERS,
        help="inner compiler for each piece (default: %(default)s)",
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where it runs (default: %(default)s)")
    p.add_argument("--impl", default=REFERENCE_IMPL, help="dotted module providing LayerName and encode/resolve")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
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
