"""Property-based fuzzing of the OpenAPI contract (schemathesis) against a real server with real data:
no 5xx, and every response conforms to the documented schema."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.settings import Settings
from tests.integration.server import running_server
from tests.support import make_world


@pytest.fixture(scope="module")
def live_base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("fuzz") / "home"
    url = f"sqlite:///{home}/ledger.db"
    world = make_world(home, url)
    serials = world.commission("LOT-FZ", 5, expiry=dt.date(2029, 1, 31))
    world.deliver("maphar", "dist-north", "LOT-FZ", serials)
    world.db.dispose()
    with running_server(Settings(data_dir=home, database_url=url, public_reports_per_minute=1000)) as base:
        yield base


def test_no_server_errors_and_responses_match_the_schema(live_base: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_base}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def exercise(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=live_base, checks=checks)

        exercise()
        tested.append(operation.label)
    assert len(tested) >= 18, tested
