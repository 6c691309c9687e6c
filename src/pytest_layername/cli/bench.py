"""``layername bench``: the cold-start compile benchmark's cells, suite timing and start-ups, then its report."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

from ..bench.runner import (
    DEFAULT_LAYERS,
    DEFAULT_MODELS,
    BenchError,
    load_average,
    machine,
    run_cells,
    run_suite_timing,
)
from ..bench.starts import engine_starts, measure_reference_starts
from ..bench.startup import measure_startup
from ..compile import kernel_store
from ..compile.backend import INNER_COMPILERS
from ..compile.process_start import ProcessStartError
from ..core.environment import check_device
from ..core.implementation import REFERENCE_IMPL
from ..core.modes import REQUESTABLE, resolve_modes
from ..harness.models import MODEL_NAMES
from . import CommandError
from .compile_stats import USAGE_ERRORS


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername bench``."""
    p.add_argument(
        "--models",
        nargs="+",
        default=list(DEFAULT_MODELS),
        choices=MODEL_NAMES,
        help=f"reference models (default: {' '.join(DEFAULT_MODELS)})",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        type=int,
        default=list(DEFAULT_LAYERS),
        help=f"layer counts (default: {' '.join(map(str, DEFAULT_LAYERS))})",
    )
    p.add_argument("--mode", default="both", choices=REQUESTABLE, help="layer-name mode(s) (default: %(default)s)")
    p.add_argument(
        "--compiler", default="inductor", choices=INNER_COMPILERS, help="inner compiler (default: %(default)s)"
    )
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where it runs (default: %(default)s)")
    p.add_argument("--impl", default=REFERENCE_IMPL, help="the implementation module (default: %(default)s)")
    p.add_argument("--out-dir", default="docs", type=Path, help="where benchmarks.md/.png/.json go")
    p.add_argument(
        "--suite", action=argparse.BooleanOptionalAction, default=True, help="time the suite, -n 2 vs serial"
    )
    p.add_argument(
        "--startup",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time a plain pytest run with the plugin against -p no:layername",
    )
    p.add_argument(
        "--starts",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="cold and warm start-ups in fresh processes, both modes (reference decoder; the engine's from its report)",
    )
    p.add_argument("--start-layers", type=int, default=32, help="layers of the decoder started cold and warm")
    p.add_argument("--start-rounds", type=int, default=2, help="cold-then-warm rounds per mode")
    p.add_argument(
        "--engine-report",
        type=Path,
        default=Path("reports") / "vllm-engine.json",
        help="the engine stage's report (nox -s vllm), read for the real engine's start times when present",
    )
    p.add_argument("--cell-timeout", type=float, default=900, help="seconds per cell and per warm-up")
    p.add_argument("--suite-timeout", type=float, default=1800, help="seconds per suite run")
    p.add_argument("--from-json", type=Path, help="re-render the report from a saved benchmarks.json, run nothing")
    p.add_argument("--note", default="", help="free text for the report (e.g. what else ran on the machine)")
    p.set_defaults(func=cmd_bench, usage_errors=USAGE_ERRORS)


def command_line(args: argparse.Namespace) -> str:
    """The ``layername bench`` command line that reproduces ``args``."""
    words = ["layername", "bench", "--models", *args.models, "--layers", *map(str, args.layers)]
    words += ["--mode", args.mode, "--compiler", args.compiler, "--device", args.device]
    if args.impl != REFERENCE_IMPL:
        words += ["--impl", args.impl]
    words += ["--out-dir", str(args.out_dir), "--suite" if args.suite else "--no-suite"]
    words += ["--startup" if args.startup else "--no-startup"]
    words += ["--starts" if args.starts else "--no-starts", "--start-layers", str(args.start_layers)]
    words += ["--start-rounds", str(args.start_rounds), "--engine-report", str(args.engine_report)]
    return shlex.join(words)


def cmd_bench(args: argparse.Namespace) -> int:
    """``layername bench``: run the cells (and the suite timing), then write the report and plot."""
    from ..bench.report import PlotUnavailable, require_matplotlib, write_outputs

    try:
        require_matplotlib()
    except PlotUnavailable as error:
        raise CommandError(str(error)) from None
    if args.from_json:
        data = json.loads(args.from_json.read_text(encoding="utf-8"))
    else:
        check_device(args.device)
        os.environ.pop(kernel_store.ENV, None)  # what it times is a cold compile: every kernel through the compiler
        modes = resolve_modes(args.mode)
        started = dt.datetime.now(dt.timezone.utc)
        load_start = load_average()
        wall = time.perf_counter()
        try:
            cells = run_cells(
                args.models, args.layers, modes, compiler=args.compiler, device=args.device, impl=args.impl,
                timeout=args.cell_timeout,
            )  # fmt: skip
        except BenchError as error:
            raise CommandError(str(error), status=1) from None
        cells_seconds = time.perf_counter() - wall
        suite = run_suite_timing(args.suite_timeout) if args.suite else {"available": False, "reason": "--no-suite"}
        startup = measure_startup() if args.startup else {"available": False, "reason": "--no-startup"}
        if args.starts:
            try:
                reference = measure_reference_starts(
                    layers=args.start_layers, rounds=args.start_rounds, compiler=args.compiler,
                    timeout=args.cell_timeout,
                )  # fmt: skip
            except ProcessStartError as error:
                raise CommandError(str(error), status=1) from None
            starts = {"reference": reference, "engine": engine_starts(args.engine_report)}
        else:
            starts = {"reference": {"available": False, "reason": "--no-starts"}, "engine": {"available": False,
                      "reason": "--no-starts"}}  # fmt: skip
        data = {
            "command": command_line(args),
            "date": started.isoformat(timespec="seconds"),
            "machine": machine(),
            "load_average_start": load_start,
            "load_average_end": load_average(),
            "cells_seconds": cells_seconds,
            "note": args.note,
            "compiler": args.compiler,
            "device": args.device,
            "cells": cells,
            "suite": suite,
            "startup": startup,
            "starts": starts,
            "total_seconds": time.perf_counter() - wall,
        }
    paths = write_outputs(data, args.out_dir)
    for path in paths:
        print(f"bench: wrote {path}", file=sys.stderr)
    return 0
