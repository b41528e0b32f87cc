from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.settings import Settings
from tests.integration.server import running_server
from tests.support import World, make_world


@dataclass
class Live:
    world: World
    base: str
    http: httpx.Client

    def post_event(self, signed: object) -> httpx.Response:
        return self.http.post("/v1/events", json=signed.to_json())  # type: ignore[attr-defined]


@pytest.fixture
def live(tmp_path: Path, db_url: str) -> Iterator[Live]:
    world = make_world(tmp_path / "home", db_url)
    settings = Settings(data_dir=tmp_path / "home", database_url=db_url, public_reports_per_minute=3)
    with running_server(settings) as base, httpx.Client(base_url=base, timeout=30) as http:
        # the server and the test world share one clock-free database; the world signs with its clock
        yield Live(world, base, http)
    world.db.dispose()
