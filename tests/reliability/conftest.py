"""Reliability tests: crashes, tampering, hostile input, access control, operations.

Tests marked ``serial`` disturb shared services (they restart PostgreSQL) and must not run next to other tests:
run them in their own invocation, ``pytest -p no:xdist -m serial tests/reliability``, and the rest with
``pytest -n 2 -m "not serial"``.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "serial: disturbs shared services (restarts PostgreSQL); run alone, without "
                                       "xdist: pytest -p no:xdist -m serial tests/reliability")
