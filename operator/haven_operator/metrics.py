"""Prometheus metrics of the operator, served on its metrics port."""

from __future__ import annotations

from prometheus_client import Counter

RECONCILES = Counter("haven_operator_reconciles_total", "Reconciliations done", ["kind"])
ERRORS = Counter("haven_operator_errors_total", "Reconciliations that raised", ["kind"])
