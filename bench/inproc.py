"""Ledgers built in-process with the ledger API (``Ledger.append`` in large groups), for the benchmarks that
need a big log (proofs, audit verify, storage) rather than HTTP traffic."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.common import database
from bench.world import World, as_signed, build_world, pool_sizes, sign_all
from ledger import errors as E
from ledger.entry import SignedEvent
from ledger.home import init_home, open_ledger
from ledger.service import Ledger
from ledger.storage.database import Database

GROUP = 1000


@dataclass
class Built:
    home: Path
    url: str
    ledger: Ledger
    db: Database
    world: World
    append_seconds: float = 0.0  # time spent in Ledger.append for the workload pool
    appended: int = 0


def append_all(ledger: Ledger, events: Sequence[SignedEvent], group: int = GROUP,
               progress: Callable[[int], None] | None = None) -> int:
    """Append in groups; raise on the first refusal (the bench worlds are valid by construction)."""
    done = 0
    for i in range(0, len(events), group):
        results = ledger.append(events[i:i + group])
        for r in results:
            if isinstance(r, E.LedgerError):
                raise RuntimeError(f"bench event refused: {r.code}: {r.message}")
        done += len(results)
        if progress:
            progress(done)
    return done


def set_up(ledger: Ledger, world: World) -> None:
    for _name, items in world.phases:
        append_all(ledger, as_signed(sign_all(world, items)), group=200)


@contextlib.contextmanager
def built_ledger(kind: str, entries: int, *, say: Callable[[str], None] = print) -> Iterator[Built]:
    """A ledger of about ``entries`` entries (set-up + mostly dispenses) on a fresh database."""
    with database(kind) as (home, url):
        init_home(home, database_url=url)
        ledger, db = open_ledger(home, url)
        from ledger.home import Home

        total = max(100, entries - 200)
        world = build_world(Home(home).root_key(), **{f"n_{k}": v for k, v in pool_sizes(total).items()})
        t = time.perf_counter()
        set_up(ledger, world)
        say(f"    set-up: {ledger.size()} entries in {time.perf_counter() - t:.1f} s; signing {total} events...")
        t = time.perf_counter()
        from bench.world import mixed

        items = mixed(world)
        payloads = sign_all(world, items)
        say(f"    signed {len(payloads)} events in {time.perf_counter() - t:.1f} s; appending...")
        b = Built(home, url, ledger, db, world)
        step = 50_000
        t = time.perf_counter()
        for i in range(0, len(payloads), step):
            signed = as_signed(payloads[i:i + step])
            t0 = time.perf_counter()
            b.appended += append_all(ledger, signed)
            b.append_seconds += time.perf_counter() - t0
            if len(payloads) > step:
                say(f"      {b.appended}/{len(payloads)} appended ({b.appended / b.append_seconds:.0f}/s)")
        try:
            yield b
        finally:
            db.dispose()
