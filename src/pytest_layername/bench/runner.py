"""Cold-start compile benchmark: string against opaque layer names versus layer count, in one run.

Each mode has its own worker process (``python -m pytest_layername.bench.runner --worker MODE``) that warms
up once (:func:`warm_up`), then compiles each cell it is sent cold: fresh Dynamo, an empty inductor/AOT
cache dir and cleared in-memory inductor caches, with the piecewise backend. The workers take turns,
one cell at a time, so that load from other work on the machine falls on both modes alike.
:mod:`.bench_report` renders the results.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import queue
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

import torch

from ..compile.backend import INNER_COMPILERS
from ..compile.measure import measure_compile, warm_up_compiler
from ..core.environment import environment_facts
from ..core.implementation import REFERENCE_IMPL, load_implementation
from ..core.modes import MODES
from ..harness.models import MODEL_NAMES

DEFAULT_MODELS = ("decoder", "moe")
DEFAULT_LAYERS = (4, 8, 16, 32, 64)
SUITE = "pytest_layername.suite"
REPLY = "@@layername-bench "  # prefixes a worker's replies on its stdout
SUITE_ARGS = ("--pyargs", SUITE, "--layername-mode=both", "-p", "no:cacheprovider", "-q")


class BenchError(RuntimeError):
    """A benchmark cell or suite run that failed."""


def warm_up(compiler: str, models: Sequence[str] = (), mode: str = "string", impl: str = REFERENCE_IMPL) -> float:
    """Pay one-time start-up before anything is timed; its seconds.

    ``compiler`` compiles an unrelated tiny graph (inductor's imports, C++ toolchain, compile workers);
    then each of ``models`` at one layer goes through Dynamo and the piecewise backend with the ``eager``
    inner compiler, so the layer-name ops are traced once but nothing of the models is compiled.
    """
    start = time.perf_counter()
    warm_up_compiler(compiler)
    for model in models:
        measure_cell(model, 1, mode, compiler="eager", impl=impl)
    return time.perf_counter() - start


def measure_cell(
    model: str, layers: int, mode: str, *, compiler: str = "inductor", device: str = "cpu", impl: str = REFERENCE_IMPL
) -> dict[str, Any]:
    """Compile one model cold in this process and return what it took (counts, seconds, harness seconds)."""
    measured = measure_compile(
        model,
        layers,
        mode,
        impl=load_implementation(impl),
        compiler=compiler,
        device=device,  # type: ignore[arg-type]
    )
    return {
        "model": model,
        "layers": layers,
        "mode": mode,
        "compiler": compiler,
        "device": device,
        **measured.stats.counts(),
        "compile_seconds": measured.stats.compile_seconds,
        "first_run_seconds": measured.first_run_seconds,
        "harness_seconds": measured.harness_seconds,
        "max_abs_error": measured.max_abs_error,
    }


def _reply(message: dict[str, Any]) -> None:
    print(REPLY + json.dumps(message), flush=True)


def _worker_main(argv: Sequence[str]) -> int:
    """A worker for one mode: warm up, reply, then measure each ``{"model", "layers"}`` line read from stdin."""
    parser = argparse.ArgumentParser(prog="python -m pytest_layername.bench.runner --worker")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=MODEL_NAMES)
    parser.add_argument("--compiler", default="inductor", choices=INNER_COMPILERS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--impl", default=REFERENCE_IMPL)
    args = parser.parse_args(argv)
    try:
        _reply({"warmup_seconds": warm_up(args.compiler, args.models, args.mode, args.impl)})
    except Exception:
        _reply({"error": traceback.format_exc()[-4000:]})
        return 1
    for line in sys.stdin:
        request = json.loads(line)
        try:
            _reply(measure_cell(request["model"], request["layers"], args.mode, compiler=args.compiler,
                                device=args.device, impl=args.impl))  # fmt: skip
        except Exception:
            _reply({"error": traceback.format_exc()[-4000:]})
    return 0


class Worker:
    """A worker process for one mode (``python -m pytest_layername.bench.runner --worker MODE``), fed cell by cell."""

    def __init__(self, mode: str, models: Sequence[str], *, compiler: str, device: str, impl: str) -> None:
        self.mode = mode
        command = [sys.executable, "-m", "pytest_layername.bench.runner", "--worker", mode, "--models", *models]
        command += ["--compiler", compiler, "--device", device, "--impl", impl]
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True, bufsize=1
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.warmup_seconds: float | None = None

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-3000:]

    def receive(self, what: str, timeout: float) -> dict[str, Any]:
        """The worker's next reply; :class:`BenchError` if it reports an error, exits or takes too long."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                self.close()
                raise BenchError(f"{what} ({self.mode} worker) ran past {timeout:.0f} s") from None
            if line is None:
                code = self.proc.wait()
                raise BenchError(f"{what}: the {self.mode} worker exited ({code}):\n{self._stderr_tail()}")
            if line.startswith(REPLY):
                message = json.loads(line[len(REPLY) :])
                if "error" in message:
                    raise BenchError(f"{what} failed in the {self.mode} worker:\n{message['error']}")
                return message

    def warmed(self, timeout: float) -> float:
        """Wait for the warm-up to finish; its seconds."""
        self.warmup_seconds = self.receive("warm-up", timeout)["warmup_seconds"]
        return self.warmup_seconds

    def measure(self, model: str, layers: int, timeout: float) -> dict[str, Any]:
        """Measure one cell in this worker."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"model": model, "layers": layers}) + "\n")
        self.proc.stdin.flush()
        return self.receive(f"cell {model} x{layers} {self.mode}", timeout)

    def close(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()


def load_average() -> float | None:
    """The 1-minute load average, or None where the platform has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run_cells(
    models: Sequence[str],
    layers: Sequence[int],
    modes: Sequence[str],
    *,
    compiler: str = "inductor",
    device: str = "cpu",
    impl: str = REFERENCE_IMPL,
    timeout: float = 900,
) -> list[dict[str, Any]]:
    """Every (model, layers, mode) cell: one warm worker per mode, fed alternately, one cell at a time."""
    workers = {mode: Worker(mode, models, compiler=compiler, device=device, impl=impl) for mode in modes}
    try:
        for worker in workers.values():
            print(f"bench: {worker.mode} worker warmed up in {worker.warmed(timeout):.1f} s", file=sys.stderr)
        results = []
        for model in models:
            for n in layers:
                for mode in modes:
                    print(f"bench: {model} x{n} {mode} ({compiler})...", file=sys.stderr, flush=True)
                    load = load_average()
                    result = workers[mode].measure(model, n, timeout)
                    result.update(load_before=load, warmup_seconds=workers[mode].warmup_seconds)
                    print(
                        f"bench:   unique {result['unique_pieces']}/{result['pieces']} pieces, "
                        f"compile {result['compile_seconds']:.2f} s, first run {result['first_run_seconds']:.2f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    results.append(result)
        return results
    finally:
        for worker in workers.values():
            worker.close()


def suite_available() -> bool:
    """Whether the plugin's test suite (``pytest_layername.suite``) is installed."""
    try:
        return importlib.util.find_spec(SUITE) is not None
    except ModuleNotFoundError:
        return False


def time_suite(workers: int | None, timeout: float = 1800) -> dict[str, Any]:
    """Wall time of the plugin's suite, serial (``workers=None``) or with ``-n workers``."""
    args = [*SUITE_ARGS, *(["-n", str(workers)] if workers else [])]
    shown = "python -m pytest " + shlex.join(args)
    with tempfile.TemporaryDirectory(prefix="layername-suite-") as tmp:
        start = time.perf_counter()
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "pytest", *args], capture_output=True, text=True, timeout=timeout, cwd=tmp
            )
        except subprocess.TimeoutExpired:
            return {"workers": workers, "command": shown, "timed_out": True, "seconds": timeout}
        seconds = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {
        "workers": workers,
        "command": shown,
        "returncode": proc.returncode,
        "seconds": seconds,
        "summary": lines[-1] if lines else "",
        "timed_out": False,
    }


def run_suite_timing(timeout: float = 1800) -> dict[str, Any]:
    """The suite with ``-n 2`` and serially (in that order), or why it was not timed."""
    if not suite_available():
        return {"available": False, "reason": f"{SUITE} is not installed in this environment"}
    runs = []
    for workers in (2, None):
        print(f"bench: timing the suite with {'-n 2' if workers else 'no xdist'}...", file=sys.stderr, flush=True)
        load = load_average()
        runs.append({**time_suite(workers, timeout), "load_before": load})
    return {"available": True, "runs": runs}


def machine() -> dict[str, Any]:
    """The environment (:func:`~.environment.environment_facts` on the CPU), cores, CPU model, compile threads."""
    facts = environment_facts("cpu")
    return {
        **facts,
        "cores": os.cpu_count(),
        "cpu": facts["device_name"],
        "inductor_compile_threads": torch._inductor.config.compile_threads,
    }


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
