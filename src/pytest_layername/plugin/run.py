"""A layer-name run: what the options resolved to, on this torch and device (imports torch).

The entry module (:mod:`pytest_layername.plugin`) builds one :class:`LayerNameRun` per pytest process,
the first time a layer-name option, fixture or marker needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from ..core.compat import opaque_support
from ..core.environment import DeviceError, environment_facts, resolve_device
from ..core.implementation import REFERENCE_IMPL, Implementation, ImplementationError, load_implementation
from ..core.modes import Mode, ModeError, auto_mode, resolve_modes
from ..core.names import ENV_DEVICE, ENV_MODE
from ..release.known_bugs import KnownBug, active_bugs


@dataclass(frozen=True)
class LayerNameRun:
    """What this run resolved from options, ini and environment."""

    requested_mode: str
    modes: tuple[Mode, ...]  # the modes tests are parametrized over
    impl: Implementation
    native_mode: Mode  # what the implementation's own encoder produces by default
    not_exercised: dict[str, str]  # mode -> why the implementation cannot be switched to it
    device: str  # "cpu" or "cuda": where every suite model, op and fusion test runs
    environment: dict[str, Any]  # environment_facts(device), read once (it may run nvidia-smi)
    known_bugs: tuple[KnownBug, ...]  # the registered torch bugs this torch and device have
    allow_unhoisted: bool = False
    allow_not_exercised: bool = False  # the user accepted that a requested mode is not exercised

    def opaque_problem(self) -> tuple[str, bool] | None:
        """(reason, fail) when opaque-mode tests cannot run: fail for an unhoisted LayerName unless allowed."""
        problem = self.impl.mode_problem("opaque")
        if problem is None:
            return None
        return problem.reason, problem.kind == "not_hoisted" and not self.allow_unhoisted

    def header(self) -> list[str]:
        support = opaque_support()
        opaque = "supported" if support.supported else f"unsupported ({support.reason})"
        switch = self.impl.switch or "none"
        facts = self.environment
        cuda = f", CUDA {facts['cuda_version']}, driver {facts['driver_version']}" if self.device == "cuda" else ""
        lines = [
            f"layername: torch {torch.__version__}, opaque {opaque}, mode {self.requested_mode} -> "
            f"{','.join(self.modes)}, impl {self.impl.module_name} (native {self.native_mode}, switch {switch}), "
            f"device {self.device} ({facts['device_name']}{cuda})"
        ]
        lines += [f"layername: known torch bug {bug.id} expected ({bug.url})" for bug in self.known_bugs]
        lines += [f"layername: {mode} mode NOT EXERCISED: {why}" for mode, why in self.not_exercised.items()]
        if (problem := self.opaque_problem()) and "opaque" in self.modes:
            verdict = "opaque-mode tests FAIL" if problem[1] else "opaque-mode tests skip"
            lines.append(f"layername: {verdict}: {problem[0]}")
        return lines

    def run_info(self) -> dict[str, Any]:
        """The report's ``run`` section (the collector adds timing and workers)."""
        return {
            **self.environment,
            "known_bugs": [bug.as_dict() for bug in self.known_bugs],
            "impl": self.impl.module_name,
            "impl_native_mode": self.native_mode,
            "impl_switch": self.impl.switch,
            "requested_mode": self.requested_mode,
            "modes": list(self.modes),
            "not_exercised": dict(self.not_exercised),
            "allow_unhoisted": self.allow_unhoisted,
            "allow_not_exercised": self.allow_not_exercised,
            "detected_mode": auto_mode(),
        }

    def mode_params(self, allowed: set[str] | None) -> list[Any]:
        """``pytest.param`` per mode for ``layername_mode``: skipped where the test or the implementation rules out."""
        params = []
        for mode in self.modes:
            marks: list[pytest.MarkDecorator] = []
            if allowed is not None and mode not in allowed:
                marks.append(pytest.mark.skip(reason=f"layername: test runs only in mode(s) {sorted(allowed)}"))
            elif mode == "opaque" and (problem := self.opaque_problem()) and not problem[1]:
                marks.append(pytest.mark.skip(reason=f"layername: opaque mode unavailable: {problem[0]}"))
            params.append(pytest.param(mode, id=mode, marks=marks))
        return params

    def check_item(self, item: pytest.Item, needs_opaque: bool, needs_cuda: bool) -> None:
        """Skip (or, for a broken implementation, fail) a test whose needs this run cannot meet."""
        if needs_opaque and (problem := self.opaque_problem()):
            reason, fail = problem
            if fail:  # a broken implementation is a failure, never a skip
                pytest.fail(f"layername: {reason} (--layername-allow-unhoisted skips instead)", pytrace=False)
            pytest.skip(f"layername_requires_opaque: {reason}")
        if needs_cuda and self.device != "cuda":
            why = "the run's device is cpu (--layername-device)"
            if not torch.cuda.is_available():
                why = "no CUDA device: torch.cuda.is_available() is False"
            pytest.skip(f"layername_requires_cuda: {why}")


def start_run(config: pytest.Config) -> LayerNameRun:
    """Resolve mode, implementation and device (option, then ini, then environment); usage errors say why."""
    requested = config.getoption("layername_mode") or config.getini("layername_mode") or os.environ.get(ENV_MODE)
    requested = requested or "auto"
    impl_name = config.getoption("layername_impl") or config.getini("layername_impl") or REFERENCE_IMPL
    device_option = config.getoption("layername_device") or config.getini("layername_device")
    try:
        requested_modes = resolve_modes(requested)
        impl = load_implementation(impl_name)
        device = resolve_device(device_option or os.environ.get(ENV_DEVICE) or "auto")
    except (ModeError, ImplementationError, DeviceError) as error:
        raise pytest.UsageError(f"layername: {error}") from error
    if requested == "opaque" and (reason := impl.opaque_unavailable_reason()):
        raise pytest.UsageError(f"layername: mode 'opaque' is unavailable with {impl.module_name}: {reason}")
    problems = {mode: impl.mode_problem(mode) for mode in requested_modes}
    not_exercised = {m: p.reason for m, p in problems.items() if p is not None and p.kind == "not_exercised"}
    modes = tuple(m for m in requested_modes if m not in not_exercised)
    if not modes:
        raise pytest.UsageError(f"layername: no requested mode can run: {'; '.join(not_exercised.values())}")
    allow_not_exercised = bool(config.getoption("layername_allow_not_exercised"))
    if not_exercised and not allow_not_exercised:
        raise pytest.UsageError(
            f"layername: requested mode(s) {', '.join(not_exercised)} (--layername-mode={requested}) cannot be "
            f"exercised: {'; '.join(not_exercised.values())}. Pass --layername-allow-not-exercised to run only "
            f"{', '.join(modes)} (recorded in the report; the release gate rejects it for a cell listing that mode)"
        )
    return LayerNameRun(
        requested,
        modes,
        impl,
        impl.native_mode(),
        not_exercised,
        device,
        environment_facts(device),
        tuple(active_bugs(torch.__version__, device)),
        config.getoption("layername_allow_unhoisted"),
        allow_not_exercised,
    )


def apply_known_bug(
    bug: KnownBug, report: pytest.TestReport, excinfo: pytest.ExceptionInfo[BaseException] | None
) -> None:
    """A strict expected failure: failing for the bug's reason is expected; passing or another failure fails.

    The reason is read from the exception alone (type and message), never from the traceback's source lines.
    """
    failure = f"{excinfo.typename}: {excinfo.value}" if excinfo is not None else ""
    if report.failed and bug.explains(failure):
        report.outcome = "skipped"
        report.wasxfail = f"known torch bug {bug.id}: {bug.summary} ({bug.url})"
    elif report.failed:
        report.sections.append(
            ("layername known bug", f"expected {bug.id} (failure matching {bug.match!r}) but it failed otherwise")
        )
    elif report.passed:
        report.outcome = "failed"
        report.longrepr = (
            f"[XPASS(strict)] known torch bug {bug.id} ({bug.url}) no longer fails on torch {torch.__version__}: "
            f"narrow its torch range ({bug.torch}) in known_bugs.toml and the cells' known_bugs"
        )
