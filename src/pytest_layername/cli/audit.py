"""``layername audit``: its arguments, one audit run (:func:`~..checks.audit_run.run_audit`) and its output.

The audit itself (rules, findings, baselines) is :mod:`..checks.audit`; SARIF output is
:mod:`..checks.audit_sarif`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..checks.audit import RULES, STR_RULE, AuditError, Baseline, BaselineComparison, NamespaceAudit
from ..checks.audit_run import AuditRun, run_audit
from ..checks.audit_walk import WalkError, WalkResult
from ..core.names import REFERENCE_IMPL
from . import CommandError
from .compile_stats import USAGE_ERRORS


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of ``layername audit``."""
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
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--sarif", metavar="PATH", help="also write the op findings as SARIF 2.1.0 (GitHub code scanning)")
    p.set_defaults(func=cmd_audit, usage_errors=(*USAGE_ERRORS, AuditError, WalkError))


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


def cmd_audit(args: argparse.Namespace) -> int:
    """``layername audit``: 0 clean (or not strict), 1 findings with ``--strict`` or import failures with
    ``--fail-on-import-errors``, 2 bad input."""
    _check_flags(args)
    run = run_audit(
        namespaces=args.namespace, imports=args.imports, walk=args.walk, include_tests=args.include_tests,
        model=args.model, layers=args.layers, mode=args.mode, impl=args.impl, baseline=args.baseline,
    )  # fmt: skip
    root = Path.cwd()
    if args.write_baseline:
        Baseline.of(run.op_findings).write(args.write_baseline)
    if args.sarif:
        from ..checks.audit_sarif import sarif_log

        log = sarif_log(run, root, import_failures_fail=args.fail_on_import_errors)
        try:
            Path(args.sarif).write_text(json.dumps(log, indent=2) + "\n", encoding="utf-8")
        except OSError as error:
            raise CommandError(f"--sarif {args.sarif!r}: cannot write: {error.strerror or error}") from None
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
