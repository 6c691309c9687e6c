"""The ``layername`` command line: probe, compile-stats (and more subcommands from other modules)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import torch

from .backend import INNER_COMPILERS, BackendError
from .environment import DeviceError, default_device, environment_facts
from .impl import REFERENCE_IMPL, ImplementationError, load_implementation
from .measure import measure_compile, warm_up_compiler
from .models import MODEL_NAMES, ModelError
from .modes import REQUESTABLE, ModeError, auto_mode, resolve_modes

USAGE_ERRORS = (ModeError, ImplementationError, ModelError, DeviceError, BackendError)


def probe() -> dict[str, object]:
    """What this environment offers: torch, opaque support and why not, the auto mode, the device."""
    return {**environment_facts(default_device()), "auto_mode": auto_mode()}


def _cmd_probe(args: argparse.Namespace) -> int:
    info = probe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            print(f"{key}: {value}")
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layername", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("probe", help="torch version, opaque support, auto mode, device")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_probe)

    p = sub.add_parser("compile-stats", help="compile a reference model and print its compile statistics")
    p.add_argument("--model", default="decoder", choices=MODEL_NAMES)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--mode", default="both", choices=REQUESTABLE)
    p.add_argument("--compiler", default="inductor", choices=INNER_COMPILERS, help="inner compiler for each piece")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--impl", default=REFERENCE_IMPL, help="dotted module providing LayerName and encode/resolve")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_compile_stats)

    from . import audit, bench, cell, gate, matrix

    matrix.add_parser(sub)
    cell.add_parser(sub)
    gate.add_parser(sub)
    bench.add_parser(sub)
    audit.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except USAGE_ERRORS as error:
        print(f"layername: error: {error}", file=sys.stderr)
        return 2
