"""Small events queued beside large ones: how long a pharmacy's dispense waits while a manufacturer commissions
several large batches at the same moment.

In-process, on the chosen database: the bench world is set up, then, for each setting of the sequencer's group
ordering (``GroupCommitter.large_event_bytes``: small events first, the default; and plain arrival order), a few
large commissions are submitted together and, right behind them, a few dozen dispenses; each submission's wait for
its receipt is timed. Every caller of a group waits for the whole group, so in arrival order the dispenses wait
for every large batch queued with them; small events first, for the group under way.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench.common import Report, database, ms, pct
from bench.inproc import set_up
from bench.world import EXPIRY, GTIN, World, as_signed, build_world, pool_sizes, sign_all
from ledger.builder import EventBuilder
from ledger.entry import Receipt, SignedEvent
from ledger.home import Home, init_home, open_ledger
from ledger.sequencer import LARGE_EVENT_BYTES, GroupCommitter

ARRIVAL_ORDER = 1 << 40  # no event is large: groups in plain arrival order


def _commissions(world: World, count: int, packs: int) -> list[SignedEvent]:
    mfr = next(a for a, role in world.roles.items() if role == "manufacturer")
    signer = EventBuilder(mfr, world.key_for(mfr))
    lots = ["Q" + uuid.uuid4().hex[:8].upper() for _ in range(count)]
    built = [signer.commission(GTIN, lot, EXPIRY, "Bench Amoxicilline 500 mg", [f"{lot}{i:07d}" for i in range(packs)])
             for lot in lots]
    # as the sequencer receives them from the API's workers: parsed, their canonical bodies already encoded (encoding
    # a 1 MB body in the submitting threads would stagger the commissions' arrival and time that instead)
    return [SignedEvent.from_json(e.to_json()) for e in built]


def _timed(committer: GroupCommitter, large: list[SignedEvent], small: list[SignedEvent]) -> tuple[list[float],
                                                                                                    list[float]]:
    """Submit ``large`` together, then ``small`` right behind; each submission's wait, in seconds."""
    def one(signed: SignedEvent) -> float:
        t = time.perf_counter()
        receipt = committer.submit(signed, timeout=600)
        assert isinstance(receipt, Receipt) and not receipt.replayed
        return time.perf_counter() - t

    with ThreadPoolExecutor(len(large) + len(small)) as pool:
        big = [pool.submit(one, e) for e in large]
        time.sleep(0.05)  # the large ones queue first, as when they arrive a moment earlier
        little = [pool.submit(one, e) for e in small]
        return [f.result() for f in big], [f.result() for f in little]


def run(report: Report, kind: str, quick: bool) -> None:
    count, packs, dispenses = (4, 50_000, 32) if quick else (6, 100_000, 64)
    with database(kind) as (home, url):
        init_home(home, database_url=url)
        ledger, db = open_ledger(home, url)
        try:
            world = build_world(Home(home).root_key(), **{f"n_{k}": v for k, v in pool_sizes(4 * dispenses).items()})
            set_up(ledger, world)
            pool = as_signed(sign_all(world, world.pool["dispense"]))
            orderings = ((LARGE_EVENT_BYTES, f"small events first (over {LARGE_EVENT_BYTES // 1024} kB is large; the "
                          "default)"), (ARRIVAL_ORDER, "in arrival order (before the tenth session)"))
            for bound, label in orderings:
                large = _commissions(world, count, packs)
                small, pool = pool[:dispenses], pool[dispenses:]
                committer = GroupCommitter(ledger, large_event_bytes=bound)
                try:
                    big, little = _timed(committer, large, small)
                finally:
                    committer.close()
                size = len(large[0].body_bytes)
                report.add("queueing", f"{dispenses} dispenses queued behind {count} commissions of {packs:,} packs "
                           f"({size / 1e6:.1f} MB each), {label} [{kind}]",
                           f"dispenses p50 {ms(pct(little, 50))}  max {ms(max(little))}; commissions done in "
                           f"{max(big):.2f} s", note=f"{committer.groups} groups; in-process, GroupCommitter")
        finally:
            db.dispose()
