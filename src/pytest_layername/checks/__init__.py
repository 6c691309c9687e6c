"""Checks of an implementation beyond compile counts.

Owns the encode/resolve round trips (:mod:`.roundtrip`), the field-bug checks of opaque types
(:mod:`.field_checks`) and the audit for ops and call sites that still take strings (:mod:`.audit`,
:mod:`.audit_walk`, :mod:`.audit_run`, :mod:`.audit_sarif`). Imports :mod:`..core`, :mod:`..harness` and
:mod:`..compile`.
"""

from __future__ import annotations

from .._exports import lazy_exports

__all__, __getattr__ = lazy_exports(
    __name__,
    {
        "OPAQUE_RULE": "audit",
        "STR_RULE": "audit",
        "AuditError": "audit",
        "Baseline": "audit",
        "audit_graph": "audit",
        "audit_namespace": "audit",
        "walk_packages": "audit_walk",
        "AuditRun": "audit_run",
        "run_audit": "audit_run",
        "sarif_log": "audit_sarif",
        "check_fake_purity": "field_checks",
        "check_fx_repr": "field_checks",
        "CACHE_METHODS": "roundtrip",
        "RoundTripError": "roundtrip",
        "assert_cache_roundtrip": "roundtrip",
        "assert_roundtrip": "roundtrip",
        "check_roundtrip": "roundtrip",
    },
)
