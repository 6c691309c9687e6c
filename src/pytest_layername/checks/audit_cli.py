"""``layername audit``: arguments, one audit run over walked packages, namespaces and a model, its output.

The audit itself (rules, findings, baselines) is :mod:`.audit`; SARIF output is :mod:`.audit_sarif`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compile.measure import USAGE_ERRORS
from .audit import (
    RULES,
    STR_RULE,
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
from .audit_walk import WalkError, WalkResult, all_op_names, walk_packages, walked_namespaces


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername audit``."""
    from ..core.implementation import REFERENCE_IMPL

    p.add_argument("--namespace", action="append", default=[], help="torch.library namespace to scan (repeatable)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE", help="import first")
    p.add_argument(
        "--walk",
        action="append",
        default=[],
        metavar="PACKAGE",
        help="import PACKAGE and every submodule (repeatable); without --namespace, audit the namespaces it registered",
    )
    p.add_argument("--include-tests", action="store_true", help="--walk also imports tests, test_*, conftest modules")
    p.add_argument("--fail-on-import-errors", action="store_true", help="exit 1 when --walk could not import a module")
    p.add_argument("--model", help="MODULE:FACTORY, or a reference model: decoder, moe, hybrid")
    p.add_argument("--layers", type=int, default=4, help="layers of a reference model (default: %(default)s)")
    p.add_argument("--mode", default="auto", choices=("auto", "opaque", "string"), help="reference model mode")
    p.add_argument("--impl", default=REFERENCE_IMPL, help="implementation of a reference model")
    p.add_argument("--strict", action="store_true", help="exit 1 when anything still takes or bakes a layer name")
    p.add_argument(
        "--baseline",
        metavar="FILE",
        help="accept the op findings recorded in FILE; exit 1 on any other, naming the op; report entries gone",
    )
    p.add_argument("--write-baseline", metavar="FILE", help="record the op findings in FILE (a new baseline)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--sarif", metavar="PATH", help="also write the op findings as SARIF 2.1.0 (GitHub code scanning)")
    p.set_defaults(func=cmd_audit, usage_errors=USAGE_ERRORS)


def _build(args: argparse.Namespace) -> Any:
    from ..harness.models import MODEL_NAMES

    if ":" in args.model:
        return load_factory(args.model)
    if args.model not in MODEL_NAMES:
        raise AuditError(
            f"--model {args.model!r} is neither MODULE:FACTORY nor a reference model ({', '.join(MODEL_NAMES)})"
        )
    return reference_model(args.model, args.layers, args.mode, args.impl)


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


def _check_flags(args: argparse.Namespace) -> None:
    if not args.namespace and not args.model and not args.walk:
        raise AuditError("nothing to audit: pass --walk PACKAGE, --namespace NS and/or --model MODULE:FACTORY")
    for flag in ("include_tests", "fail_on_import_errors"):
        if getattr(args, flag) and not args.walk:
            raise AuditError(f"--{flag.replace('_', '-')} needs --walk PACKAGE")
    if (args.baseline or args.write_baseline) and not (args.namespace or args.walk):
        raise AuditError("--baseline and --write-baseline compare op findings: pass --walk PACKAGE or --namespace NS")
    if args.baseline and Path(args.baseline).exists() and not Path(args.baseline).is_file():
        raise AuditError(f"--baseline {args.baseline!r}: not a regular file")


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


def run_audit(args: argparse.Namespace) -> AuditRun:
    """The audits ``args`` ask for; raises :class:`AuditError` (or :class:`.audit_walk.WalkError`) on bad input."""
    _check_flags(args)
    baseline = Baseline.load(args.baseline) if args.baseline else None
    before = all_op_names()
    with contextlib.redirect_stdout(sys.stderr):  # what imported modules print must not mix with --json
        for module_name in args.imports:
            try:
                importlib.import_module(module_name)
            except ImportError as error:
                raise AuditError(f"--import {module_name!r}: {error}") from error
    walk = walk_packages(args.walk, args.include_tests) if args.walk else None
    model = audit_model(_build(args), args.model) if args.model else None  # imports the model's ops first
    start = time.perf_counter()
    namespaces = args.namespace
    if not namespaces and walk is not None:
        namespaces = walked_namespaces(before, [*args.imports, *walk.imported])
    check = opaque_check()
    audits = _audit_namespaces(namespaces, walk, check)
    run = AuditRun(walk, audits, model, check, time.perf_counter() - start)
    if baseline is not None:
        run.baseline = baseline.compare(run.op_findings, [a.namespace for a in audits])
    return run


def cmd_audit(args: argparse.Namespace) -> int:
    """``layername audit``: 0 clean (or not strict), 1 findings with ``--strict`` or import failures with
    ``--fail-on-import-errors``, 2 bad input."""
    from ..core.modes import ModeError

    try:
        run = run_audit(args)
    except (AuditError, WalkError, ModeError) as error:
        print(f"layername: error: {error}", file=sys.stderr)
        return 2
    root = Path.cwd()
    if args.write_baseline:
        try:
            Baseline.of(run.op_findings).write(args.write_baseline)
        except AuditError as error:
            print(f"layername: error: {error}", file=sys.stderr)
            return 2
    if args.sarif:
        from .audit_sarif import sarif_log

        log = sarif_log(run, root, import_failures_fail=args.fail_on_import_errors)
        try:
            Path(args.sarif).write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            print(f"layername: error: --sarif {args.sarif!r}: cannot write: {error.strerror or error}", file=sys.stderr)
            return 2
    if args.json:
        print(json.dumps(run.as_dict(), indent=2))
        for finding in run.baseline.new if run.baseline else ():  # named where a CI log shows it
            print(f"layername: new finding not in {run.baseline.path}: {finding}", file=sys.stderr)
    else:
        _print_text(run, root)
    failed_imports = bool(args.fail_on_import_errors and run.walk and run.walk.failed)
    if run.baseline is not None:  # accepted op findings pass; --strict still fails on baked model strings
        unaccepted = len(run.baseline.new) + (len(run.model.findings) if args.strict and run.model else 0)
        return 1 if unaccepted or failed_imports else 0
    return 1 if (args.strict and run.findings) or failed_imports else 0


def _print_walk(walk: WalkResult) -> None:
    print(
        f"walk {', '.join(walk.packages)}: {len(walk.imported)} module(s) imported, {len(walk.failed)} failed, "
        f"{len(walk.skipped)} skipped in {walk.seconds:.2f} s"
    )
    for failure in walk.failed:
        print(f"  import failed: {failure}")
    if walk.skipped:
        print(f"  skipped: {', '.join(walk.skipped)}")


def _print_namespace(audit: NamespaceAudit, root: Path) -> None:
    as_str = sum(f.rule == STR_RULE for f in audit.findings)
    print(
        f"namespace {audit.namespace}: {len(audit.ops)} op(s), {as_str} take a layer name as str, "
        f"{len(audit.findings) - as_str} as an unhoisted opaque type"
    )
    for finding in audit.findings:
        print(f"  {finding}")
        if finding.site is not None:
            print(f"    {finding.site.describe(root)}")
    for rule in sorted({f.rule for f in audit.findings}):
        print(f"  fix: {RULES[rule].fix}")


def _print_baseline(comparison: BaselineComparison) -> None:
    print(
        f"baseline {comparison.path}: {len(comparison.known)} known finding(s), {len(comparison.new)} new, "
        f"{len(comparison.gone)} gone, {len(comparison.not_audited)} not audited"
    )
    for finding in comparison.new:
        print(f"  NEW (not in the baseline, fails): {finding}")
    for entry in comparison.gone:
        print(f"  gone (no longer found; remove it from the baseline): {entry}")
    for entry in comparison.not_audited:
        print(f"  not audited (its namespace was not audited, kept): {entry}")


def _print_text(run: AuditRun, root: Path) -> None:
    if run.walk is not None:
        _print_walk(run.walk)
        if not run.namespaces:
            print("no namespace to audit: the walk registered no ops (name them with --namespace NS)")
    for audit in run.namespaces:
        _print_namespace(audit, root)
    if not run.opaque.available:
        print(f"note: unhoisted-opaque check skipped: {run.opaque.reason}")
    model = run.model
    if model is not None:
        print(
            f"model {model.model}: {model.graphs} graph(s), {len(model.findings)} op(s) with baked layer-name strings"
        )
        for site in model.call_sites:
            print(f"  {'!' if site.layer_name_like else ' '} {site}")
    if run.baseline is not None:
        _print_baseline(run.baseline)
    summary = run.summary()
    covered = f"{summary['namespaces']} namespace(s), {summary['ops']} op(s) audited"
    if run.walk is not None:
        covered = f"{summary['modules_imported']} module(s) imported, {summary['modules_failed']} failed; {covered}"
    timing = f"audit {run.seconds:.2f} s" + (f", walk {run.walk.seconds:.2f} s" if run.walk else "")
    print(f"summary: {covered}; {run.findings} finding(s); {timing}")
