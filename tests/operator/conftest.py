"""The operator tests use the release fixtures of tests/release_fixtures.py."""

from tests.release_fixtures import CRDS, OPERATOR_NAMESPACE

__all__ = ["CRDS", "OPERATOR_NAMESPACE"]
