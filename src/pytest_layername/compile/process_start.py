"""Start-ups in fresh processes on a cache directory: what a server's cold and warm starts compile.

:func:`start_process` runs ``target(session, **kwargs)`` in a new Python process
(``python -m pytest_layername.compile.process_start``) with ``TORCHINDUCTOR_CACHE_DIR`` set to the given
directory, inside :func:`~.session.observe_compile` (plus any engine adapters), and returns what torch and
the engine counted there. A second start on the same directory is a warm start. Optionally the child
carries its artifacts out with ``torch.compiler.save_cache_artifacts()`` or loads a file of them with
``torch.compiler.load_cache_artifacts()`` before the target runs (into an empty directory: a warm start
from artifacts alone). The child also records what torch's caches (and the engines' :class:`~.cache_events.
LogReason` lines) said about each lookup, from which :attr:`ProcessStart.outcome` tells a clean warm load
from a recompile and why (:mod:`.start_outcome`). :func:`spawn_process` starts one without waiting (two at
once, or one to kill). :func:`start_reference` is the target for the reference models.
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.fresh_interpreter import Child, kill_session, launch
from ..core.implementation import REFERENCE_IMPL
from . import kernel_store
from .cache_events import CacheEvent
from .start_outcome import StartOutcome, classify, expect_outcome
from .stats import CompileStats

CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


class ProcessStartError(RuntimeError):
    """A fresh-process start that failed or could not be run."""


class CacheArtifactsUnavailable(ProcessStartError):
    """This torch has no ``torch.compiler.save_cache_artifacts`` / ``load_cache_artifacts``."""


@dataclass
class ProcessStart:
    """One start in a fresh process: torch's and the engine's counts, the target's result, wall seconds."""

    label: str
    target: str
    cache_dir: str
    stats: CompileStats
    result: Any
    seconds: float  # the child process, from launch to exit (imports, compile or cache load, the target's run)
    target_seconds: float  # the target alone, inside the child
    torch: str
    artifacts_saved_to: str | None = None  # file written by torch.compiler.save_cache_artifacts()
    cache_artifacts: dict[str, dict[str, int]] = field(default_factory=dict)  # "saved"/"loaded": type -> count
    cache_events: list[CacheEvent] = field(default_factory=list)  # torch's (and the engines') cache lookups

    @property
    def outcome(self) -> StartOutcome:
        """Loaded, recompiled (with torch's reasons) or empty: see :mod:`.start_outcome`."""
        return classify(self.stats, self.cache_events)

    def expect_outcome(self, kind: str, *, reason: str | None = None) -> None:
        """Assert the outcome: ``"loaded"`` (a clean warm load), ``"recompiled"`` (``reason``: a regex one of
        torch's reasons must match), ``"empty"``."""
        __tracebackhide__ = True
        expect_outcome(self.outcome, kind, reason=reason, label=f"{self.label} start on {self.cache_dir}")

    def expect(
        self, *, allow_hash_disagreements: bool = False, engine: Mapping[str, int] | None = None, **counts: int
    ) -> None:
        """Assert this start's counts (``fx_graph_cache_hits=33, fx_graph_cache_misses=0, artifacts_saved=0``)
        and engine counters (``engine={"vllm.num_inductor_compiles": 0}``)."""
        __tracebackhide__ = True
        from .expectations import CountMismatch, expect_counts

        try:
            expect_counts(self.stats, allow_hash_disagreements=allow_hash_disagreements, **counts, **(engine or {}))
        except CountMismatch as error:
            raise CountMismatch(f"{self.label} start on {self.cache_dir}: {error}") from None

    def summary(self) -> dict[str, Any]:
        """What the report records of this start."""
        return {
            "label": self.label,
            "target": self.target,
            "seconds": round(self.seconds, 3),
            "target_seconds": round(self.target_seconds, 3),
            "counts": self.stats.counts(),
            "artifacts_source": self.stats.artifacts_source,
            "cache_artifacts": self.cache_artifacts,
            "outcome": self.outcome.as_dict(),
            "result": self.result,
        }


def cache_artifacts_available() -> tuple[bool, str]:
    """Whether this torch has ``torch.compiler.save_cache_artifacts`` / ``load_cache_artifacts``, and if not why."""
    import torch

    missing = [name for name in ("save_cache_artifacts", "load_cache_artifacts") if not hasattr(torch.compiler, name)]
    if missing:
        return False, f"torch {torch.__version__} has no torch.compiler.{' or '.join(missing)}"
    return True, ""


@dataclass
class RunningStart:
    """A start launched by :func:`spawn_process`: ``finish()`` waits for its :class:`ProcessStart`, ``kill()``
    kills it (its whole process group: inductor's compile workers too)."""

    label: str
    target: str
    cache_dir: Path
    process: Child  # exec'd or forked from the warm server (core.fresh_interpreter)
    folder: Path  # the request, the child's output and its stdout/stderr; removed by finish() or kill()
    launched: float

    def finish(self, timeout: float = 1800) -> ProcessStart:
        """Wait for the child; its :class:`ProcessStart`, or :class:`ProcessStartError` if it failed."""
        try:
            returncode = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            self.kill()
            raise ProcessStartError(f"{self.label} start of {self.target} ran past {timeout:.0f} s") from error
        except BaseException:  # interrupted: the child leads its own process group, so it would outlive us
            self.kill()
            raise
        seconds = time.perf_counter() - self.launched
        out = self.folder / "start.pickle"
        try:
            if returncode != 0 or not out.exists():
                log = (self.folder / "log").read_text(encoding="utf-8", errors="replace")
                if returncode == 3:
                    raise CacheArtifactsUnavailable(log.strip().splitlines()[-1])
                how = f"exited {returncode}" if returncode >= 0 else f"was killed by {signal.Signals(-returncode).name}"
                raise ProcessStartError(f"{self.label} start of {self.target} {how}:\n{log[-4000:]}")
            with out.open("rb") as handle:
                child = pickle.load(handle)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        kernel_store.harvest(self.cache_dir)  # it finished: every kernel it built is whole
        cache = str(self.cache_dir)
        return ProcessStart(label=self.label, target=self.target, cache_dir=cache, seconds=seconds, **child)

    def kill(self) -> int:
        """SIGKILL the child's process group now; its exit status."""
        returncode = kill_session(self.process)
        shutil.rmtree(self.folder, ignore_errors=True)
        return returncode


def spawn_process(
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    cache_dir: str | os.PathLike[str],
    label: str = "start",
    engines: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    save_cache_artifacts: str | os.PathLike[str] | None = None,
    load_cache_artifacts: str | os.PathLike[str] | None = None,
    cache_env: Sequence[str] = (),
    warm: bool = False,
) -> RunningStart:
    """Launch ``target`` as :func:`start_process` does, without waiting (the child leads a process group).
    ``cache_env``: the engine's own cache-root variables (``VLLM_CACHE_ROOT``), set to ``cache_dir`` too."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="layername-start-"))
    request = {
        "target": target,
        "kwargs": dict(kwargs or {}),
        "engines": list(engines),
        "save": str(save_cache_artifacts) if save_cache_artifacts else None,
        "load": str(load_cache_artifacts) if load_cache_artifacts else None,
        "out": str(folder / "start.pickle"),
    }
    (folder / "request.json").write_text(json.dumps(request), encoding="utf-8")
    child_env = {**os.environ, **(env or {}), **dict.fromkeys([CACHE_ENV, *cache_env], str(cache))}
    kernel_store.seed(cache)
    args = [str(folder / "request.json")]
    process = launch("pytest_layername.compile.process_start", args, env=child_env, stdout=folder / "log", warm=warm)
    return RunningStart(label, target, cache, process, folder, time.perf_counter())


def start_process(
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    cache_dir: str | os.PathLike[str],
    label: str = "start",
    engines: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    save_cache_artifacts: str | os.PathLike[str] | None = None,
    load_cache_artifacts: str | os.PathLike[str] | None = None,
    timeout: float = 1800,
    warm: bool = False,
) -> ProcessStart:
    """Run ``target`` (``"module:function"``, called as ``function(session, **kwargs)``; JSON-able kwargs and
    result) in a fresh process whose inductor cache is ``cache_dir``; ``engines``: adapter specs
    (:func:`~.engines.engine_counters`); ``env``: extra environment of the child; ``warm``: fork it from the
    warm server where that equals an exec (:mod:`~..core.fresh_interpreter`; a target that imports an
    engine which sets torch's environment before importing torch must be exec'd)."""
    running = spawn_process(
        target, kwargs, cache_dir=cache_dir, label=label, engines=engines, env=env,
        save_cache_artifacts=save_cache_artifacts, load_cache_artifacts=load_cache_artifacts, warm=warm,
    )  # fmt: skip
    return running.finish(timeout)


def _artifact_counts(info: Any) -> dict[str, int]:
    return {kind: len(keys) for kind, keys in sorted(getattr(info, "artifacts", {}).items())}


def _child_main(request_path: str) -> int:
    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    import torch

    from .cache_events import cache_event_log
    from .engines import engine_counters
    from .session import observe_compile

    if request["save"] or request["load"]:
        available, why = cache_artifacts_available()
        if not available:
            print(why, file=sys.stderr)
            return 3
    cache_artifacts: dict[str, dict[str, int]] = {}
    if request["load"]:
        info = torch.compiler.load_cache_artifacts(Path(request["load"]).read_bytes())
        cache_artifacts["loaded"] = _artifact_counts(info)
    module_name, _, function = request["target"].partition(":")
    target = getattr(importlib.import_module(module_name), function)
    engines = [engine_counters(spec) for spec in request["engines"]]
    reasons = [reason for engine in engines for reason in engine.log_reasons]
    with cache_event_log(reasons) as events, observe_compile(engines) as session:
        start = time.perf_counter()
        result = target(session, **request["kwargs"])
        target_seconds = time.perf_counter() - start
        stats = session.stats
    saved_to = None
    if request["save"]:
        saved = torch.compiler.save_cache_artifacts()
        if saved is None:
            print("torch.compiler.save_cache_artifacts() returned None: nothing was recorded", file=sys.stderr)
            return 1
        data, info = saved
        Path(request["save"]).write_bytes(data)
        saved_to = request["save"]
        cache_artifacts["saved"] = _artifact_counts(info)
    child = {
        "stats": stats,
        "result": result,
        "target_seconds": target_seconds,
        "torch": torch.__version__,
        "artifacts_saved_to": saved_to,
        "cache_artifacts": cache_artifacts,
        "cache_events": list(events),
    }
    with open(request["out"], "wb") as handle:
        pickle.dump(child, handle)
    return 0


def start_reference(
    session: Any,
    *,
    model: str,
    layers: int,
    mode: str,
    impl: str = REFERENCE_IMPL,
    compiler: str = "inductor",
    device: str = "cpu",
    return_output: bool = False,
) -> dict[str, Any]:
    """Target for :func:`start_process`: compile a reference model with the piecewise backend and run it once.

    It fails unless the compiled output equals the eager one; with ``return_output`` it returns the compiled
    output (``"output"``, nested lists) instead, for the caller to judge against the ground truth
    (:mod:`.reference_truth`) whatever the cache served.
    """
    import torch

    from ..core.implementation import load_implementation
    from ..harness.models import build_model, run

    net = build_model(model, layers, load_implementation(impl), mode, device=device)  # type: ignore[arg-type]
    x = net.example_input()
    expected = run(net, net, x)
    actual = run(net, torch.compile(net, backend=session.backend(compiler)), x)
    result = {"model": model, "layers": layers, "mode": mode, "max_abs_error": float((actual - expected).abs().max())}
    if return_output:
        return {**result, "output": actual.cpu().tolist()}
    torch.testing.assert_close(actual, expected)
    return result


if __name__ == "__main__":
    raise SystemExit(_child_main(sys.argv[1]))
