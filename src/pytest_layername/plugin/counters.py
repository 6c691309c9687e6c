"""The objects behind ``compile_counter``, ``compile_cache`` and ``fusion_matches`` (they import torch; the
fixtures load them on use)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..compile.cache_faults import Attempt, StartSpec
from ..compile.engines import AttributeCounters, engine_counters
from ..compile.expectations import expect_counts
from ..compile.process_start import ProcessStart, start_process
from ..compile.session import CompileSession
from ..compile.stats import CompileStats
from ..fusion.log import FusionLog

REFERENCE_TARGET = "pytest_layername.compile.process_start:start_reference"


class CompileCounter:
    """A :class:`~pytest_layername.compile.session.CompileSession` for one test, with ``expect`` and ``compile``."""

    def __init__(self, session: CompileSession, mode: str | None, footer: str = "") -> None:
        self.session = session
        self.mode = mode  # the test's layer-name mode, None for a test not parametrized over modes
        self.footer = footer  # ends a failed expectation's message: where the test's torch trace is

    def __repr__(self) -> str:
        return f"CompileCounter(mode={self.mode!r})"

    def backend(self, compiler: str = "inductor", splitting_ops: Iterable[str] | None = None) -> Callable[..., Any]:
        """A piecewise backend for ``torch.compile(backend=...)`` reporting into this counter."""
        return self.session.backend(compiler, tuple(splitting_ops) if splitting_ops is not None else None)

    def compile(self, fn: Callable[..., Any], compiler: str = "inductor", **kwargs: Any) -> Callable[..., Any]:
        """``torch.compile(fn)`` with the piecewise backend reporting into this counter."""
        return torch.compile(fn, backend=self.backend(compiler, kwargs.pop("splitting_ops", None)), **kwargs)

    def watch(self, engine: AttributeCounters | str) -> None:
        """Count an engine's own counters too, from now on (an adapter, ``"vllm"`` or ``"module:factory"``)."""
        self.session.watch(engine_counters(engine) if isinstance(engine, str) else engine)

    @property
    def stats(self) -> CompileStats:
        """The statistics so far (the report's ``stats`` fields), read afresh from torch on every access."""
        return self.session.stats

    def expect(
        self, *, allow_hash_disagreements: bool = False, engine: Mapping[str, int] | None = None, **counts: int
    ) -> None:
        """Assert the named counts (``unique_pieces=3, inductor_compiles=3, recompiles=0``, ...) and engine
        counters (``engine={"vllm.num_compiled_artifacts_saved": 3}``).

        Fails too where the structural hash and torch's FX-graph cache disagreed on a piece, unless allowed.
        """
        __tracebackhide__ = True
        expect_counts(
            self.stats,
            allow_hash_disagreements=allow_hash_disagreements,
            footer=self.footer,
            **counts,
            **(engine or {}),
        )


class CompileCache:
    """A test's own compile cache directory, and start-ups in fresh processes on it (cold, then warm)."""

    def __init__(self, path: Path, mode: str | None, impl: str, device: str) -> None:
        self.path = path
        self.mode = mode
        self.impl = impl
        self.device = device
        self.starts: list[ProcessStart] = []
        self.attempts: list[Attempt] = []  # starts during or after a fault, judged (cache_faults in the report)

    def directory(self, name: str) -> Path:
        """Another cache directory of this test (e.g. an empty one to load saved artifacts into)."""
        return self.path.parent / name

    def start(
        self,
        target: str,
        *,
        label: str | None = None,
        cache_dir: Path | None = None,
        engines: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        save_cache_artifacts: bool = False,
        load_cache_artifacts: str | Path | None = None,
        warm: bool = False,
        **kwargs: Any,
    ) -> ProcessStart:
        """``target(session, **kwargs)`` (``"module:function"``) in a fresh process on this test's cache
        (or ``cache_dir``); ``save_cache_artifacts`` writes ``torch.compiler.save_cache_artifacts()`` to
        ``ProcessStart.artifacts_saved_to``; ``load_cache_artifacts`` loads such a file first; ``warm``: fork
        the process from the warm server with torch imported where that equals an exec
        (:mod:`pytest_layername.core.fresh_interpreter`)."""
        label = label or f"start {len(self.starts) + 1}"
        saved = self.path.parent / f"{label.replace(' ', '-')}.artifacts" if save_cache_artifacts else None
        start = start_process(
            target, kwargs, cache_dir=cache_dir or self.path, label=label, engines=engines, env=env,
            save_cache_artifacts=saved, load_cache_artifacts=load_cache_artifacts, warm=warm,
        )  # fmt: skip
        self.starts.append(start)
        return start

    def start_reference(
        self, model: str, layers: int, mode: str | None = None, *, compiler: str = "inductor", **options: Any
    ) -> ProcessStart:
        """A reference model compiled and run once in a fresh process, in ``mode`` (default: the test's); the
        process is forked from the warm server where that equals an exec (the implementation is imported in it)."""
        mode = mode or self.mode
        if mode is None:
            raise ValueError("compile_cache.start_reference needs a mode: use layername_mode or pass mode=")
        return self.start(
            REFERENCE_TARGET, model=model, layers=layers, mode=mode, impl=self.impl, compiler=compiler,
            device=self.device, **{"warm": True, **options},
        )  # fmt: skip

    def reference_spec(
        self, model: str, layers: int, mode: str | None = None, *, compiler: str = "inductor"
    ) -> StartSpec:
        """A reference model's start in ``mode`` (default: the test's) that returns its output, for fault
        injection (:mod:`pytest_layername.compile.cache_faults`) and a ground-truth check."""
        mode = mode or self.mode
        if mode is None:
            raise ValueError("compile_cache.reference_spec needs a mode: use layername_mode or pass mode=")
        return StartSpec(REFERENCE_TARGET, {
            "model": model, "layers": layers, "mode": mode, "impl": self.impl, "compiler": compiler,
            "device": self.device, "return_output": True,
        }, warm=True)  # fmt: skip

    def record(self, *attempts: Attempt) -> None:
        """Record judged fault attempts in the report (``cache_faults``); their starts join :attr:`starts`
        (once: a start the test already ran or recorded is not added again)."""
        self.attempts.extend(attempts)
        self.starts.extend(a.start for a in attempts if a.start is not None and a.start not in self.starts)

    def report(self) -> dict[str, Any] | None:
        """The last start's statistics with every start's summary (``process_starts``) and every fault
        attempt's (``cache_faults``), or None."""
        if not self.starts:
            return None
        recorded = {**self.starts[-1].stats.as_dict(), "process_starts": [s.summary() for s in self.starts]}
        if self.attempts:
            recorded["cache_faults"] = [a.summary() for a in self.attempts]
        return recorded


class FusionMatches:
    """Pattern-matcher activity during one test, per fusion pass."""

    def __init__(self, log: FusionLog) -> None:
        self.log = log

    def expect(self, pass_name: str, *, matched: int | None = None, patterns: int | None = None) -> None:
        """Assert how many matches ``pass_name`` replaced and/or how many patterns it registered."""
        __tracebackhide__ = True
        actual = {"matched": self.log.matched(pass_name), "patterns": self.log.patterns(pass_name)}
        wanted = {k: v for k, v in {"matched": matched, "patterns": patterns}.items() if v is not None}
        wrong = {k: (v, actual[k]) for k, v in wanted.items() if actual[k] != v}
        if wrong:
            diff = ", ".join(f"{k}: expected {exp}, got {act}" for k, (exp, act) in wrong.items())
            raise AssertionError(f"fusion pass {pass_name!r}: {diff} (all passes: {self.log.as_dict()})")
