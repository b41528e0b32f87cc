"""The collector settings of a started server process (``ledger.heap``), each checked in a fresh interpreter so
this test process keeps the interpreter's defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ledger.heap import YOUNG_THRESHOLD
from ledger.paths import ENV_DATABASE_URL, ENV_HOME
from tests.reliability.harness import now_clock
from tests.support import make_world


def _run(code: str, env: dict[str, str] | None = None) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2], env={**os.environ, **(env or {})}, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_settling_freezes_what_exists_and_still_collects_later_cycles() -> None:
    seen = _run("""
        import gc, json, weakref
        from ledger.heap import settle_after_start

        class Node:
            pass

        before = list(gc.get_threshold())
        settle_after_start()
        frozen = gc.get_freeze_count()
        collected = []
        def cycle(i):
            a, b = Node(), Node()
            a.other, b.other = b, a
            weakref.finalize(a, collected.append, i)
        for i in range(3 * 20_000):  # cyclic garbage only the collector can free
            cycle(i)
        gc.collect()  # whatever is below the threshold at the end
        print(json.dumps({"before": before, "after": gc.get_threshold(), "frozen": frozen,
                          "collected": len(collected)}))
    """)
    assert isinstance(seen["before"], list)
    assert seen["after"] == [YOUNG_THRESHOLD, *seen["before"][1:]]  # the older generations keep the defaults
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 1000  # the modules imported so far
    assert seen["collected"] == 3 * 20_000  # nothing created after start-up is left behind


def test_cycles_are_collected_without_being_asked_once_past_the_threshold() -> None:
    seen = _run("""
        import gc, json, weakref
        from ledger.heap import settle_after_start

        class Node:
            pass

        settle_after_start()
        collected = []
        for i in range(200_000):
            a, b = Node(), Node()
            a.other, b.other = b, a
            weakref.finalize(a, collected.append, i)
        print(json.dumps({"collected": len(collected)}))
    """)
    # each cycle is three containers (two nodes and a finalizer's entry): at most one threshold's worth is pending
    assert isinstance(seen["collected"], int) and seen["collected"] >= 200_000 - YOUNG_THRESHOLD


def test_the_server_factory_settles_its_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_world(tmp_path / "home", url, clock=now_clock()).db.dispose()
    seen = _run("""
        import gc, json
        from api.app import app_from_env

        defaults = list(gc.get_threshold())
        app_from_env()
        print(json.dumps({"defaults": defaults, "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
    """, env={ENV_HOME: str(tmp_path / "home"), ENV_DATABASE_URL: url})
    assert isinstance(seen["defaults"], list)
    assert seen["threshold"] == [YOUNG_THRESHOLD, *seen["defaults"][1:]]
    assert isinstance(seen["frozen"], int) and seen["frozen"] > 10_000  # FastAPI, SQLAlchemy, the app's routes


def test_a_long_task_leaves_the_collector_as_it_found_it() -> None:
    seen = _run("""
        import gc, json
        from ledger.heap import long_task, settle_after_start

        out = {"defaults": list(gc.get_threshold())}
        with long_task():
            out["inside"] = [gc.get_threshold(), gc.get_freeze_count() > 1000]
        out["after"] = [gc.get_threshold(), gc.get_freeze_count()]
        try:
            with long_task():
                raise ValueError
        except ValueError:
            out["after_error"] = [gc.get_threshold(), gc.get_freeze_count()]
        settle_after_start()  # a server process: its freeze is kept through a task run inside it
        frozen = gc.get_freeze_count()
        with long_task():
            pass
        out["server"] = [gc.get_threshold(), gc.get_freeze_count() == frozen]
        gc.set_threshold(0)  # collection switched off by the program: a task does not switch it back on
        with long_task():
            out["off"] = gc.get_threshold()[0]
        print(json.dumps(out))
    """)
    defaults = seen["defaults"]
    assert isinstance(defaults, list)
    assert seen["inside"] == [[YOUNG_THRESHOLD, *defaults[1:]], True]
    assert seen["after"] == [defaults, 0]
    assert seen["after_error"] == [defaults, 0]
    assert seen["server"] == [[YOUNG_THRESHOLD, *defaults[1:]], True]
    assert seen["off"] == 0


def test_athar_audit_verify_runs_as_a_long_task(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    world = make_world(tmp_path / "home", url, clock=now_clock())
    world.commission("LOT-GC", 3)
    world.db.dispose()
    seen = _run(f"""
        import gc, json, sys
        import ledger.audit

        real, seen = ledger.audit.verify_store, {{"defaults": list(gc.get_threshold())}}
        def watched(*args, **kwargs):  # the real audit, with the collector's settings noted as it starts
            seen["during"] = gc.get_threshold()
            return real(*args, **kwargs)
        ledger.audit.verify_store = watched
        sys.argv = ["athar", "audit", "verify", "--data-dir", {str(tmp_path / "home")!r}, "--db", {url!r}, "--json"]
        from scanner_cli.main import run
        try:
            run()
        except SystemExit as done:
            seen["exit"] = done.code
        seen["after"] = gc.get_threshold()
        print(json.dumps(seen))
    """)
    defaults = seen["defaults"]
    assert isinstance(defaults, list)
    assert seen["during"] == [YOUNG_THRESHOLD, *defaults[1:]]
    assert seen["after"] == defaults
    assert seen.get("exit") in (None, 0)
