"""Checks of an implementation beyond compile counts.

Owns the encode/resolve round trips (:mod:`.roundtrip`), the field-bug checks of opaque types
(:mod:`.field_checks`) and the audit for ops and call sites that still take strings (:mod:`.audit`,
:mod:`.audit_walk`, :mod:`.audit_sarif`). Imports :mod:`..core`, :mod:`..harness` and :mod:`..compile`.
"""
