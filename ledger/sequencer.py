"""Group commit: concurrent submissions in one process are appended together, in one transaction with
one checkpoint, instead of one commit each.

Callers block in ``submit``; one writer thread takes everything queued so far (up to ``max_group``) and
hands it to ``Ledger.append``. With one caller there is no added wait: the writer wakes at once. Under load
the groups grow by themselves, which is what keeps throughput up when each commit costs a disk flush. Small
events queued beside large ones (whole batches of serials) go first, in a group of their own (``_next_group``).
Several processes may each run a GroupCommitter on one PostgreSQL database; the log-head row lock keeps
their groups in one linear order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from ledger.appender import Prechecked
from ledger.entry import Receipt, SignedEvent
from ledger.errors import LedgerError, OutcomeUnknown, StorageUnavailable
from ledger.service import Ledger

_STOP = object()
#: an event larger than this (its canonical body) waits for the small events queued with it to be committed first:
#: about a shipment or commission of 3,000 serials, against about 500 B for a dispense
LARGE_EVENT_BYTES = 64 * 1024
logger = logging.getLogger("athar.sequencer")


Answer = Callable[[Receipt | LedgerError], None]


@dataclass
class _Item:
    checked: Prechecked
    future: Future[Receipt] | None = None  # a blocking caller (submit)
    waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[Receipt]] | None = None  # an asyncio caller
    callback: tuple[asyncio.AbstractEventLoop, Answer] | None = None  # called in that loop with the result


class GroupCommitter:
    def __init__(self, ledger: Ledger, *, max_group: int = 256, large_event_bytes: int = LARGE_EVENT_BYTES) -> None:
        self.ledger = ledger
        self.max_group = max_group
        self.large_event_bytes = large_event_bytes
        self._queue: queue.SimpleQueue[_Item | object] = queue.SimpleQueue()
        self._held: list[_Item] = []  # large events put off to the next group (only the writer thread uses it)
        self._thread = threading.Thread(target=self._run, name="athar-sequencer", daemon=True)
        self._thread.start()
        self.groups = 0
        self.appended = 0
        self._closed = False

    def submit(self, signed: SignedEvent, timeout: float = 60.0) -> Receipt:
        future: Future[Receipt] = Future()
        # parsing and signature checks happen here, in the caller's thread: in parallel, outside the lock
        if self._closed:
            raise StorageUnavailable("the server is shutting down; nothing was written")
        self._queue.put(_Item(self.ledger.precheck(signed), future))
        try:
            return future.result(timeout)
        except TimeoutError as exc:
            raise OutcomeUnknown(f"no answer from the ledger within {timeout:.0f} s; the event may still be "
                                 "recorded: send the same signed event again to get its receipt") from exc

    async def submit_async(self, signed: SignedEvent, timeout: float = 60.0, *, inline: bool = True) -> Receipt:
        """``submit`` for an asyncio caller: no thread is held while the group commits (see ``precheck_async``
        for where the signature is checked)."""
        checked = await precheck_async(self.ledger, signed, inline=inline)
        return await self.submit_checked_async(checked, timeout)

    async def submit_checked_async(self, checked: Prechecked, timeout: float = 60.0) -> Receipt:
        if self._closed:
            raise StorageUnavailable("the server is shutting down; nothing was written")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        self._queue.put(_Item(checked, waiter=(loop, future)))
        try:
            async with asyncio.timeout(timeout):
                return await asyncio.shield(future)
        except TimeoutError as exc:
            future.cancel()  # nobody will read its answer now
            raise OutcomeUnknown(f"no answer from the ledger within {timeout:.0f} s; the event may still be "
                                 "recorded: send the same signed event again to get its receipt") from exc

    def submit_checked_callback(self, checked: Prechecked, loop: asyncio.AbstractEventLoop, answer: Answer) -> None:
        """Queue a checked submission; ``answer`` is called in ``loop`` with its receipt or refusal. For the
        sequencer process, which relays thousands of submissions a second: no task, future or timer each (the
        worker that sent it keeps its own timeout)."""
        if self._closed:
            answer(StorageUnavailable("the server is shutting down; nothing was written"))
            return
        self._queue.put(_Item(checked, callback=(loop, answer)))

    def close(self) -> None:
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        left: list[_Item] = []
        while True:  # answer whatever was still queued, and held if the writer has stopped (else it appends them)
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Item):
                left.append(item)
        if not self._thread.is_alive():
            left[:0], self._held = self._held, []
        _answer(left, [StorageUnavailable("the server shut down before this event was appended; nothing was "
                                          "written")] * len(left))

    def _run(self) -> None:
        while True:
            group = self._next_group()
            if group is None:
                return
            self._commit(group)

    def _next_group(self) -> list[_Item] | None:
        """Everything queued so far, up to ``max_group`` events; but when large events (over
        ``large_event_bytes``) and small ones are queued together, the small ones first, as a group of their own,
        and the large ones together right after, with whatever arrived meanwhile. Every caller of a group waits for
        the whole group, so a pharmacy's dispense queued beside a few 50,000-pack commissions would otherwise wait
        seconds for all of them; the large ones are put off by one small group at most, and still share one
        commit. Concurrent submissions have no order among them; one caller's events keep theirs, as each waits
        for its answer before sending the next."""
        group: list[_Item] = []
        held, self._held = self._held, []
        if not held:
            first = self._queue.get()
            if first is _STOP:
                return None
            assert isinstance(first, _Item)
            group.append(first)
        while len(group) + len(held) < self.max_group:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)
                break
            assert isinstance(item, _Item)
            group.append(item)
        if held:
            return held + group
        small: list[_Item] = []
        large: list[_Item] = []
        for i in group:
            (large if _weight(i) > self.large_event_bytes else small).append(i)
        if large and small:
            self._held = large
            return small
        return group

    def _commit(self, items: list[_Item]) -> None:
        try:
            results: list[Receipt | LedgerError] = list(self.ledger.append([i.checked for i in items]))
        except LedgerError as err:
            results = [err] * len(items)
        except Exception as exc:  # never leave a caller waiting forever; the commit's fate is not known here
            logger.exception("group append failed")
            failure = OutcomeUnknown(f"the append failed ({type(exc).__name__}); send the same signed event again: "
                                     "if it was recorded you get its receipt, if not it is recorded then")
            results = [failure] * len(items)
        else:
            self.groups += 1
            self.appended += sum(1 for r in results if not isinstance(r, LedgerError))
        _answer(items, results)


async def precheck_async(ledger: Ledger, signed: SignedEvent, *, inline: bool) -> Prechecked:
    """Parse and signature-check a submission for an asyncio caller: in its event loop (tens of microseconds)
    when the signer's key is already known and the caller says the event is small (``inline``); otherwise in
    the default executor, as it would block the loop (on the database, or on canonicalising a 100,000-pack
    commission)."""
    if inline and ledger.knows_key(signed.key_id):
        return ledger.precheck(signed)
    return await asyncio.get_running_loop().run_in_executor(None, ledger.precheck, signed)


def _weight(item: _Item) -> int:
    try:
        return len(item.checked.signed.body_bytes)
    except Exception:  # a body that cannot be encoded is refused at once, whatever its size
        return 0


def _answer(items: Sequence[_Item], results: Sequence[Receipt | LedgerError]) -> None:
    """Hand each caller its result; asyncio callers are woken with one call per event loop, not one each."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Receipt] | Answer, Receipt | LedgerError]]] = {}
    for item, result in zip(items, results, strict=True):
        if item.future is not None:
            if isinstance(result, Exception):
                item.future.set_exception(result)
            else:
                item.future.set_result(result)
        else:
            target = item.waiter if item.waiter is not None else item.callback
            if target is not None:
                by_loop.setdefault(target[0], []).append((target[1], result))
    for loop, answers in by_loop.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: its callers are gone
            loop.call_soon_threadsafe(_settle, answers)


def _settle(answers: list[tuple[asyncio.Future[Receipt] | Answer, Receipt | LedgerError]]) -> None:
    for to, result in answers:
        if not isinstance(to, asyncio.Future):
            try:
                to(result)
            except Exception:  # one caller's broken answer must not leave the others of the group waiting
                logger.exception("answering a relayed submission failed")
        elif to.done():  # the caller timed out or went away
            continue
        elif isinstance(result, Exception):
            to.set_exception(result)
        else:
            to.set_result(result)
