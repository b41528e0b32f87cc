"""The sequencer link's frames (``ledger.sequencer_link``): batched per turn of the event loop, never losing an
answer at shutdown, and one item that cannot be sent costs only its own caller."""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any, cast

from ledger.errors import OutcomeUnknown
from ledger.sequencer import GroupCommitter
from ledger.sequencer_link import SequencerServer, _frames, _Outbox


class Writer:
    """What ``_Outbox`` and ``drain`` use of an asyncio StreamWriter."""

    def __init__(self) -> None:
        self.data = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.data += data

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


def frames(data: bytes) -> list[list[tuple[int, Any]]]:
    out = []
    while data:
        (size,) = struct.unpack("!I", data[:4])
        out.append(pickle.loads(data[4:4 + size]))
        data = data[4 + size:]
    return out


def test_items_of_one_turn_of_the_loop_travel_in_one_frame_in_order() -> None:
    async def main() -> Writer:
        writer = Writer()
        outbox = _Outbox(cast(Any, writer))
        for i in range(5):
            outbox.put(i, f"answer {i}")
        assert writer.data == b""  # nothing written until the turn ends
        await asyncio.sleep(0)
        outbox.put(5, "next turn")
        await asyncio.sleep(0)
        return writer

    assert frames(asyncio.run(main()).data) == [[(i, f"answer {i}") for i in range(5)], [(5, "next turn")]]


def test_drain_sends_the_answers_still_waiting_for_their_turn_before_hanging_up() -> None:
    async def main() -> Writer:
        server = SequencerServer(cast(GroupCommitter, None))
        writer = Writer()
        outbox = _Outbox(cast(Any, writer))
        server.writers.add(cast(Any, writer))
        server.outboxes.add(outbox)
        outbox.put(7, "the last receipt")  # answered: nothing is counted as unanswered any more
        await server.drain(0.0)
        return writer

    writer = asyncio.run(main())
    assert writer.closed and frames(writer.data) == [[(7, "the last receipt")]]


def test_an_item_that_cannot_be_pickled_costs_only_its_own_caller() -> None:
    sent = frames(_frames([(1, "fine"), (2, lambda: None), (3, "fine too")]))
    assert [item for frame in sent for item in frame][::2] == [(1, "fine"), (3, "fine too")]
    request_id, failure = sent[1][0]
    assert request_id == 2 and isinstance(failure, OutcomeUnknown) and "send the same signed event" in failure.message
