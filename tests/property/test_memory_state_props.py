"""MemoryState (the audit's replay state) keeps an index of active packs by batch and holder, so that pooling a
holder's packs does not scan every pack: after any sequence of pack changes its packs are what applying each change
to every pack, the plain way, gives, and its index lists exactly the active ones."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.replay import MemoryState
from ledger.state import AddPacks, Change, Pack, PoolPacks, PutPacks

GTINS = ("06111234567895", "06118000000013")
LOTS = ("L1", "L2")
HOLDERS = ("maphar", "dist-north", "ph-rabat", None)
STATUSES = ("active", "in_transit", "dispensed", "destroyed")


def plain(packs: dict[tuple[str, str], Pack], change: Change) -> None:
    match change:
        case AddPacks(gtin, lot, serials, holder):
            for s in serials:
                packs[(gtin, s)] = Pack(gtin, s, lot, "active", holder, None, None, None)
        case PutPacks(put):
            for p in put:
                packs[(p.gtin, p.serial)] = p
        case PoolPacks(gtin, lot, holder):
            for k, p in packs.items():
                if (p.gtin, p.lot, p.holder, p.status) == (gtin, lot, holder, "active"):
                    packs[k] = replace(p, holder=None)


@st.composite
def histories(draw: st.DrawFn) -> list[Change]:
    changes: list[Change] = []
    known: list[Pack] = []
    for n in range(draw(st.integers(1, 40))):
        kind = draw(st.sampled_from(("add", "put", "pool")) if known else st.just("add"))
        if kind == "add":
            gtin, lot = draw(st.sampled_from(GTINS)), draw(st.sampled_from(LOTS))
            serials = tuple(f"S{n}-{i}" for i in range(draw(st.integers(1, 6))))
            changes.append(AddPacks(gtin, lot, serials, draw(st.sampled_from(HOLDERS[:3]))))
            known += [Pack(gtin, s, lot, "active", None, None, None, None) for s in serials]
        elif kind == "put":
            chosen = draw(st.lists(st.sampled_from(known), min_size=1, max_size=4))
            changes.append(PutPacks(tuple(replace(p, status=draw(st.sampled_from(STATUSES)),
                                                  holder=draw(st.sampled_from(HOLDERS))) for p in chosen)))
        else:
            changes.append(PoolPacks(draw(st.sampled_from(GTINS)), draw(st.sampled_from(LOTS)),
                                     draw(st.sampled_from(HOLDERS[:3]))))
    return changes


@settings(max_examples=300, deadline=None)
@given(histories())
def test_pooling_from_the_index_is_pooling_every_pack(changes: list[Change]) -> None:
    state, reference = MemoryState(), {}
    for change in changes:
        state.apply([change])
        plain(reference, change)
        assert state.packs_ == reference
        indexed = {(g, lot, h, s) for (g, lot, h), serials in state.active.items() for s in serials}
        assert indexed == {(p.gtin, p.lot, p.holder, p.serial) for p in reference.values() if p.status == "active"}
