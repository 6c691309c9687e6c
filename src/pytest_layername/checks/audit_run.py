"""One audit run: the walked packages, the namespaces and a model audited, compared with a baseline.

The audit itself (rules, findings, baselines) is :mod:`.audit`; ``layername audit`` (the command line) prints
an :class:`AuditRun`, :mod:`.audit_sarif` turns it into SARIF.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.names import REFERENCE_IMPL
from .audit import (
    AuditError,
    Baseline,
    BaselineComparison,
    Finding,
    ModelAudit,
    NamespaceAudit,
    OpaqueCheck,
    audit_model,
    audit_namespace,
    load_factory,
    opaque_check,
    reference_model,
)
from .audit_walk import WalkResult, all_op_names, walk_packages, walked_namespaces


@dataclass
class AuditRun:
    """Everything one ``layername audit`` found, and what it covered."""

    walk: WalkResult | None
    namespaces: list[NamespaceAudit]
    model: ModelAudit | None
    opaque: OpaqueCheck
    seconds: float  # finding and auditing the namespaces (the walk's imports not included)
    baseline: BaselineComparison | None = None

    @property
    def op_findings(self) -> list[Finding]:
        return [f for n in self.namespaces for f in n.findings]

    @property
    def findings(self) -> int:
        return len(self.op_findings) + (len(self.model.findings) if self.model else 0)

    def summary(self) -> dict[str, Any]:
        walk = self.walk
        return {
            "modules_imported": len(walk.imported) if walk else None,
            "modules_failed": len(walk.failed) if walk else None,
            "namespaces": len(self.namespaces),
            "ops": sum(len(n.ops) for n in self.namespaces),
            "findings": self.findings,
            "walk_seconds": round(walk.seconds, 3) if walk else None,
            "audit_seconds": round(self.seconds, 3),
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "walk": self.walk.as_dict() if self.walk else None,
            "namespaces": [n.as_dict() for n in self.namespaces],
            "model": self.model.as_dict() if self.model else None,
            "opaque_check": {"available": self.opaque.available, "reason": self.opaque.reason},
            "summary": self.summary(),
            "findings": self.findings,
            "baseline": self.baseline.as_dict() if self.baseline else None,
        }


def _build(model: str, layers: int, mode: str, impl: str) -> Any:
    from ..harness.models import MODEL_NAMES

    if ":" in model:
        return load_factory(model)
    if model not in MODEL_NAMES:
        raise AuditError(
            f"--model {model!r} is neither MODULE:FACTORY nor a reference model ({', '.join(MODEL_NAMES)})"
        )
    return reference_model(model, layers, mode, impl)


def _audit_namespaces(namespaces: Iterable[str], walk: WalkResult | None, check: OpaqueCheck) -> list[NamespaceAudit]:
    audits = []
    for namespace in namespaces:
        try:
            audits.append(audit_namespace(namespace, check=check))
        except AuditError as error:
            if walk is None or not walk.failed:
                raise
            failed = "; ".join(str(f) for f in walk.failed)
            raise AuditError(f"{error}; the walk failed to import {len(walk.failed)} module(s): {failed}") from error
    return audits


def run_audit(
    *,
    namespaces: Sequence[str] = (),
    imports: Sequence[str] = (),
    walk: Sequence[str] = (),
    include_tests: bool = False,
    model: str | None = None,
    layers: int = 4,
    mode: str = "auto",
    impl: str = REFERENCE_IMPL,
    baseline: str | None = None,
) -> AuditRun:
    """Import ``imports``, walk the ``walk`` packages, audit ``model`` (``MODULE:FACTORY`` or a reference model
    of ``layers`` layers in ``mode``) and the ``namespaces`` (default: those the walk registered); compare the
    op findings with the ``baseline`` file. Raises :class:`AuditError` (or :class:`.audit_walk.WalkError`) on
    bad input."""
    accepted = Baseline.load(baseline) if baseline else None
    before = all_op_names()
    with contextlib.redirect_stdout(sys.stderr):  # what imported modules print must not mix with --json
        for module_name in imports:
            try:
                importlib.import_module(module_name)
            except ImportError as error:
                raise AuditError(f"--import {module_name!r}: {error}") from error
    walked = walk_packages(walk, include_tests) if walk else None
    # the model first: building it imports its ops
    model_audit = audit_model(_build(model, layers, mode, impl), model) if model else None
    start = time.perf_counter()
    if not namespaces and walked is not None:
        namespaces = walked_namespaces(before, [*imports, *walked.imported])
    check = opaque_check()
    audits = _audit_namespaces(namespaces, walked, check)
    run = AuditRun(walked, audits, model_audit, check, time.perf_counter() - start)
    if accepted is not None:
        run.baseline = accepted.compare(run.op_findings, [a.namespace for a in audits])
    return run
