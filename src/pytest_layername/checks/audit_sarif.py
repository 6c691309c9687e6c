"""``layername audit --sarif PATH``: op findings as a SARIF 2.1.0 log for GitHub code scanning.

Each finding is a result of rule ``layername/str-layer-name`` or ``layername/unhoisted-opaque-layer-name``,
located at the op's registration site (relative to the working directory when under it, so that code
scanning can place it on the pull request). Modules the walk could not import are tool execution
notifications of the run's invocation.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .audit import RULES, Finding
from .audit_walk import ImportFailure, display_path

if TYPE_CHECKING:
    from .audit_run import AuditRun

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
SRCROOT = "%SRCROOT%"
IMPORT_FAILURE = "layername/import-failure"


def _version() -> str | None:
    try:
        return metadata.version("pytest-layername")
    except metadata.PackageNotFoundError:
        return None


def _artifact(path: str, root: Path) -> dict[str, Any]:
    shown = display_path(path, root)
    if Path(shown).is_absolute():
        return {"uri": Path(shown).as_uri()}
    return {"uri": shown, "uriBaseId": SRCROOT}


def _physical(path: str, line: int | None, root: Path) -> dict[str, Any]:
    location: dict[str, Any] = {"artifactLocation": _artifact(path, root)}
    if line is not None:
        location["region"] = {"startLine": line}
    return {"physicalLocation": location}


def _result(finding: Finding, rule_index: int, root: Path) -> dict[str, Any]:
    rule = RULES[finding.rule]
    what = f"an opaque value type registered without hoisting ({finding.opaque_class})" if finding.opaque_class else ""
    text = f"{finding.op} takes its layer name {finding.argument!r} as {what or finding.type}: {rule.fix}."
    location: dict[str, Any] = _physical(finding.site.path, finding.site.line, root) if finding.site else {}
    location["logicalLocations"] = [{"fullyQualifiedName": finding.op, "kind": "function"}]
    return {
        "ruleId": rule.id,
        "ruleIndex": rule_index,
        "level": "warning",
        "message": {"text": text},
        "locations": [location],
        "partialFingerprints": {"layernameOpArgument/v1": f"{finding.op}:{finding.argument}"},
    }


def _notification(failure: ImportFailure, level: str, root: Path) -> dict[str, Any]:
    notification: dict[str, Any] = {
        "level": level,
        "message": {"text": f"cannot import {failure}"},
        "descriptor": {"id": IMPORT_FAILURE},
    }
    if failure.path is not None:
        notification["locations"] = [_physical(failure.path, None, root)]
    return notification


def sarif_log(run: AuditRun, root: Path, import_failures_fail: bool = False) -> dict[str, Any]:
    """The SARIF 2.1.0 log of ``run``'s op findings; paths under ``root`` are relative to ``%SRCROOT%``."""
    rules = list(RULES.values())
    index = {rule.id: i for i, rule in enumerate(rules)}
    driver: dict[str, Any] = {
        "name": "layername",
        "rules": [
            {
                "id": rule.id,
                "name": rule.name,
                "shortDescription": {"text": rule.title},
                "fullDescription": {"text": rule.summary},
                "help": {"text": f"Fix: {rule.fix}."},
                "defaultConfiguration": {"level": "warning"},
            }
            for rule in rules
        ],
    }
    if (version := _version()) is not None:
        driver["version"] = version
    failures = run.walk.failed if run.walk else []
    invocation = {
        "executionSuccessful": not (import_failures_fail and failures),
        "toolExecutionNotifications": [
            _notification(f, "error" if import_failures_fail else "warning", root) for f in failures
        ],
    }
    return {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": driver},
                "invocations": [invocation],
                "originalUriBaseIds": {SRCROOT: {"uri": root.resolve().as_uri() + "/"}},
                "results": [_result(f, index[f.rule], root) for f in run.op_findings],
            }
        ],
    }
