"""The objects behind ``compile_counter`` and ``fusion_matches`` (imports torch; the fixtures load it on use)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from ..compile.expectations import expect_counts
from ..compile.session import CompileSession
from ..compile.stats import CompileStats
from ..fusion.log import FusionLog


class CompileCounter:
    """A :class:`~pytest_layername.compile.session.CompileSession` for one test, with ``expect`` and ``compile``."""

    def __init__(self, session: CompileSession, mode: str | None, footer: str = "") -> None:
        self.session = session
        self.mode = mode  # the test's layer-name mode, None for a test not parametrized over modes
        self.footer = footer  # ends a failed expectation's message: where the test's torch trace is

    def __repr__(self) -> str:
        return f"CompileCounter(mode={self.mode!r})"

    def backend(self, compiler: str = "inductor", splitting_ops: Iterable[str] | None = None) -> Callable[..., Any]:
        return self.session.backend(compiler, tuple(splitting_ops) if splitting_ops is not None else None)

    def compile(self, fn: Callable[..., Any], compiler: str = "inductor", **kwargs: Any) -> Callable[..., Any]:
        """``torch.compile(fn)`` with the piecewise backend reporting into this counter."""
        return torch.compile(fn, backend=self.backend(compiler, kwargs.pop("splitting_ops", None)), **kwargs)

    @property
    def stats(self) -> CompileStats:
        return self.session.stats

    def expect(self, *, allow_hash_disagreements: bool = False, **counts: int) -> None:
        """Assert the named counts (``unique_pieces=3, inductor_compiles=3, recompiles=0``, ...).

        Fails too where the structural hash and torch's FX-graph cache disagreed on a piece, unless allowed.
        """
        __tracebackhide__ = True
        expect_counts(self.stats, allow_hash_disagreements=allow_hash_disagreements, footer=self.footer, **counts)


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
