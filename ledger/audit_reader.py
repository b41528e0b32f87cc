"""The stored log read ahead of an audit, page by page, in a thread of its own.

Reading a page (its entries and the Merkle nodes they complete) waits mostly on the database, which runs
beside the audit's replay instead of before it; each page read is handed to the signature helpers at once.
The thread owns its database connection and one read transaction from start to end, so the audit sees one
snapshot: the checkpoints and the head first, then the entries up to that head.
"""

from __future__ import annotations

import bisect
import contextlib
import queue
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import cast

from ledger.admission import TrustAnchors
from ledger.audit_signatures import Checked, SignatureChecks, helpers_for
from ledger.merkle import NodeID
from ledger.storage.sql import ProjectionSnapshot, SqlStore, SqlUnit, StoredCheckpoint

PAGE = 2000
#: at most this many bytes of leaves in a page (``SqlUnit.page_end``): pages are read ahead, copied to the helpers
#: and parsed, several at once, so their size bounds the audit's memory
PAGE_BYTES = 8 << 20
#: the share of each page's checkpoint notes sent to the helpers at first, and how far one page moves it
#: (see ``LogReader.results``)
NOTE_SHARE_START = 1.0
NOTE_SHARE_STEP = 0.1


@dataclass(frozen=True)
class LogHead:
    size: int
    root: bytes
    checkpoints: dict[int, StoredCheckpoint]
    projections: ProjectionSnapshot | None = None  # when asked for: read in the head's own snapshot


#: the indexed columns stored beside a leaf (chain, prev, event id, actor, event type, GTIN, lot, serial), which
#: must say what the signed entry says
Columns = tuple[str, bytes | None, str, str, str, str | None, str | None, str | None]


@dataclass(frozen=True)
class Page:
    end: int
    rows: list[tuple[int, bytes, bytes, Columns]]  # index, entry hash, leaf, indexed columns
    nodes: dict[NodeID, bytes]  # the stored Merkle nodes these entries complete
    checkpoints: list[int]  # the sizes of checkpoints these entries complete whose notes the helpers check
    checked: Future[Checked] | None  # the helpers' verdicts, when helpers run


class _Done:
    pass


def _pages(u: SqlUnit, size: int, first: int) -> Iterator[tuple[int, int]]:
    """Pages of at most ``PAGE`` entries and ``PAGE_BYTES`` bytes of leaves (or one entry, if bigger)."""
    start = first
    while start < size:
        end = u.page_end(start, min(size, start + PAGE), PAGE_BYTES)
        yield start, end
        start = end


class LogReader:
    """Reads the head, then the pages in order, ``depth`` pages ahead of the consumer. Iterate ``pages()``
    after ``head()``; errors of the reading thread are raised there. ``close()`` stops it early."""

    def __init__(self, store: SqlStore, trust: TrustAnchors, ledger_verifier: str, helpers: int | None,
                 depth: int = 4, *, projections: bool = False, start: int = 0) -> None:
        self.store, self.trust, self.ledger_verifier, self.helpers = store, trust, ledger_verifier, helpers
        self.projections, self.start = projections, start
        self.note_share = NOTE_SHARE_START  # of the checkpoint notes of each page, the part the helpers check
        self.checks: SignatureChecks | None = None
        self._out: queue.Queue[LogHead | Page | _Done | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="audit-reader", daemon=True)
        self._thread.start()

    def head(self) -> LogHead:
        item = self._next()
        assert isinstance(item, LogHead)
        return item

    def pages(self) -> Iterator[Page]:
        while not isinstance(item := self._next(), _Done):
            assert isinstance(item, Page)
            yield item

    def results(self, page: Page) -> tuple[list[bool], set[int]]:
        """Which of the page's entries the helpers found well-formed and validly signed, and the sizes of its
        checkpoints whose notes they found signed by the ledger (none: the audit checks them itself)."""
        if self.checks is None:
            return [False] * len(page.rows), set()
        if page.checked is not None:
            # the replay waiting for the helpers: they get fewer checkpoint notes to check, the replay checks the
            # rest itself; the helpers ready first: they get more (a log written at low traffic has a checkpoint
            # per entry, which would otherwise leave one of the two busy and the other waiting)
            step = -NOTE_SHARE_STEP if not page.checked.done() else NOTE_SHARE_STEP
            self.note_share = min(1.0, max(0.0, self.note_share + step))
        checked = self.checks.results(page.checked, len(page.rows), len(page.checkpoints))
        return checked.entries, {s for s, ok in zip(page.checkpoints, checked.checkpoints, strict=True) if ok}

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():  # unblock a reader waiting to hand over a page
            with contextlib.suppress(queue.Empty):
                self._out.get(timeout=0.05)
        if self.checks is not None:
            self.checks.close()

    def _next(self) -> LogHead | Page | _Done:
        item = self._out.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def _put(self, item: LogHead | Page | _Done | BaseException) -> bool:
        while not self._stop.is_set():
            try:
                self._out.put(item, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def _run(self) -> None:
        try:
            with self.store.read(snapshot=self.projections) as u:
                # checkpoints before the head: both are written in one transaction, so every honest
                # checkpoint read here is at most the head size even while appends go on
                checkpoints = {c.tree_size: c for c in u.checkpoints(self.start)}
                size, root = u.head()
                # the projections of exactly these entries, for a rebuild to compare with the replay on a live log
                projections = u.snapshot() if self.projections else None
                helpers = helpers_for(size - self.start) if self.helpers is None else self.helpers
                if helpers:
                    self.checks = SignatureChecks({k.key_id: k.public_key for k in u.all_keys()}, self.trust,
                                                  self.ledger_verifier, helpers)
                if not self._put(LogHead(size, root, checkpoints, projections)):
                    return
                sizes = sorted(checkpoints)
                for start, end in _pages(u, size, self.start):
                    rows = cast(list[tuple[int, bytes, bytes, Columns]], u.audit_rows(start, end))
                    completed = sizes[bisect.bisect_right(sizes, start):bisect.bisect_right(sizes, end)]
                    completed = completed[:round(len(completed) * self.note_share)]
                    checked = self.checks.submit([(r[2], r[1]) for r in rows],
                                                 [checkpoints[s].note for s in completed]) if self.checks else None
                    if not self._put(Page(end, rows, u.nodes_completed(start, end), completed, checked)):
                        return
            self._put(_Done())
        except BaseException as exc:  # handed to the consumer, which raises it in its own thread
            self._put(exc)
