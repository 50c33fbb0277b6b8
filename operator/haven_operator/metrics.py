"""Prometheus metrics of the operator, served on its metrics port."""

from __future__ import annotations

from prometheus_client import Counter

RECONCILES = Counter("haven_operator_reconciles_total", "Reconciliations done", ["kind"])
ERRORS = Counter("haven_operator_errors_total", "Reconciliations that raised", ["kind"])
RECONCILE_ERRORS = Counter(
    "haven_operator_reconcile_errors",  # exposed as haven_operator_reconcile_errors_total
    "Children the reconciler could not write: kind is the child's kind, reason the API "
    "server's reason (Invalid, Forbidden, ...) or ChildConflict/PreviousOwner",
    ["kind", "reason"],
)
STATUS_WRITES = Counter("haven_operator_status_writes_total", "Status patches written", ["kind"])
