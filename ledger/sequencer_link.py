"""One sequencer for several server processes.

Each API worker process parses submissions and checks their signatures (the work that runs in parallel),
then hands the checked submissions to a single sequencer process over a Unix socket; the sequencer appends
them in groups (``GroupCommitter``) and answers each with its receipt or refusal. Without it every worker
commits its own groups and the workers take turns on the log-head lock, each group small and each commit
competing for its worker's interpreter lock with the requests being served.

The socket lives in a private directory (mode 0700) made by ``athar serve``; frames are pickles, so only
processes of the same user, which can read the ledger's keys anyway, can talk to it. If the sequencer is not
there, or goes away, a worker appends by itself: correctness never depends on the sequencer (the log-head
lock orders all writers), only speed does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ledger.appender import Prechecked
from ledger.entry import Receipt, SignedEvent
from ledger.errors import LedgerError, OutcomeUnknown
from ledger.sequencer import GroupCommitter, precheck_async

logger = logging.getLogger("athar.sequencer")
_LENGTH = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024  # a 200,000-pack commission is about 4 MB
STOP_SIGNAL = signal.SIGUSR1


def _frame(obj: Any) -> bytes:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


def _frames(batch: list[tuple[int, Any]]) -> bytes:
    """A batch of (request id, payload) pairs in one frame: pickling and sending one list costs a third of doing
    it item by item. A batch too big for one frame (large commissions), or with an item that does not pickle, goes
    one frame per item, so one bad item costs only its own caller an answer."""
    with contextlib.suppress(Exception):
        data = _frame(batch)
        if len(data) - _LENGTH.size <= MAX_FRAME:
            return data
    return b"".join(_one_frame(request_id, payload) for request_id, payload in batch)


def _one_frame(request_id: int, payload: Any) -> bytes:
    try:
        return _frame([(request_id, payload)])
    except Exception as exc:
        logger.exception("a relayed item could not be sent")
        return _frame([(request_id, OutcomeUnknown(
            f"the answer could not be relayed ({type(exc).__name__}); the event may be recorded: send the same "
            "signed event again to get its receipt"))])


class _Outbox:
    """Frames written to a stream once per turn of the event loop, not once per item."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.batch: list[tuple[int, Any]] = []

    def put(self, request_id: int, payload: Any) -> None:
        if not self.batch:
            asyncio.get_running_loop().call_soon(self.flush)
        self.batch.append((request_id, payload))

    def flush(self) -> None:
        batch, self.batch = self.batch, []
        if batch and not self.writer.is_closing():
            self.writer.write(_frames(batch))


async def _read(reader: asyncio.StreamReader) -> Any:
    (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if size > MAX_FRAME:
        raise ConnectionError(f"frame of {size} bytes refused")
    return pickle.loads(await reader.readexactly(size))  # peers: processes of this user only (see above)


# ---- the sequencer process ----------------------------------------------------------------------------------


class SequencerServer:
    def __init__(self, committer: GroupCommitter) -> None:
        self.committer = committer
        self.unanswered = 0
        self.writers: set[asyncio.StreamWriter] = set()
        self.outboxes: set[_Outbox] = set()

    async def client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        loop = asyncio.get_running_loop()
        outbox = _Outbox(writer)
        self.outboxes.add(outbox)
        try:
            while True:
                for request_id, checked in await _read(reader):
                    self.unanswered += 1
                    self.committer.submit_checked_callback(checked, loop, self._answer(outbox, request_id))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the worker went away (or we stop); its events already queued are still appended
        finally:
            self.writers.discard(writer)
            self.outboxes.discard(outbox)
            writer.close()

    def _answer(self, outbox: _Outbox, request_id: int) -> Callable[[Receipt | LedgerError], None]:
        def answer(result: Receipt | LedgerError) -> None:
            self.unanswered -= 1
            outbox.put(request_id, result)  # a group's answers to one worker leave in one frame
        return answer

    async def drain(self, seconds: float) -> None:
        """Answer what is already queued (up to ``seconds``), then hang up on the workers."""
        deadline = asyncio.get_running_loop().time() + seconds
        while self.unanswered > 0 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for outbox in list(self.outboxes):
            outbox.flush()  # answers given but still waiting for their turn of the loop go out before we hang up
        for writer in list(self.writers):
            writer.close()


def run_sequencer(data_dir: str, database_url: str | None, socket_path: str, parent_pid: int) -> None:
    """The sequencer process. It stops on SIGUSR1 (sent by ``athar serve`` once its workers are done), or when
    the server process that started it is gone (kill -9). SIGINT and SIGTERM, which Ctrl-C and service managers
    send to the whole process group, are ignored: the server drains its requests first, through us."""
    from ledger.heap import settle_after_start
    from ledger.home import open_ledger
    from ledger.proc_name import SEQUENCER, name_this_process

    name_this_process(SEQUENCER)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ledger, db = open_ledger(Path(data_dir), database_url)
    committer = GroupCommitter(ledger)
    settle_after_start()

    async def main() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(STOP_SIGNAL, stop.set)
        sequencer = SequencerServer(committer)
        server = await asyncio.start_unix_server(sequencer.client, path=socket_path, limit=MAX_FRAME)
        os.chmod(socket_path, 0o600)
        while not stop.is_set() and os.getppid() == parent_pid:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        server.close()
        await sequencer.drain(10.0)

    try:
        asyncio.run(main())
    finally:
        committer.close()
        db.dispose()
        with contextlib.suppress(OSError):  # the socket and its private directory, if nothing else is there
            os.unlink(socket_path)
            os.rmdir(os.path.dirname(socket_path))


# ---- the worker side ----------------------------------------------------------------------------------------


class SequencerGone(Exception):
    pass


class _Link:
    """One connection to the sequencer, shared by all requests of a worker's event loop."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[Receipt]] = {}
        self.next_id = 0
        self.outbox = _Outbox(writer)
        self.alive = True
        self.task = asyncio.create_task(self._receive(reader))

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                for request_id, result in await _read(reader):
                    future = self.pending.pop(request_id, None)
                    if future is None or future.done():
                        continue
                    if isinstance(result, Exception):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        except Exception as exc:  # EOF, a broken pipe, a frame that does not unpickle: this link is done
            if not isinstance(exc, asyncio.IncompleteReadError | ConnectionError | OSError):
                logger.warning("dropping the sequencer link: %r", exc)
        finally:
            self.alive = False
            self.writer.close()
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(OutcomeUnknown(
                        "the sequencer went away before answering; the event may be recorded: send the same "
                        "signed event again to get its receipt"))
            self.pending.clear()

    def send(self, checked: Prechecked) -> asyncio.Future[Receipt]:
        self.next_id += 1
        future: asyncio.Future[Receipt] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        self.outbox.put(self.next_id, checked)  # the submissions of one turn of the loop go in one frame
        return future

    def close(self) -> None:
        self.alive = False
        if not self.loop.is_closed():
            self.writer.close()
            self.task.cancel()


class RemoteCommitter:
    """``GroupCommitter.submit_async`` for an API worker, through the sequencer process; appends by itself
    (a local ``GroupCommitter``) when the sequencer cannot be reached."""

    def __init__(self, local: GroupCommitter, socket_path: str) -> None:
        self.local = local
        self.ledger = local.ledger
        self.socket_path = socket_path
        self._link: _Link | None = None
        self._connecting: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._remote = True

    async def submit_async(self, signed: SignedEvent, timeout: float = 60.0, *, inline: bool = True) -> Receipt:
        checked = await precheck_async(self.ledger, signed, inline=inline)
        if self._remote:
            try:
                link = await self._connected()
            except SequencerGone as gone:
                logger.warning("sequencer unreachable (%s); this worker appends by itself from now on", gone)
                self._remote = False
            else:
                future = link.send(checked)
                try:
                    async with asyncio.timeout(timeout):
                        return await asyncio.shield(future)
                except TimeoutError as exc:
                    future.cancel()  # its answer, if it comes, is dropped
                    raise OutcomeUnknown(f"no answer from the ledger within {timeout:.0f} s; the event may still "
                                         "be recorded: send the same signed event again to get its receipt") from exc
        return await self.local.submit_checked_async(checked, timeout)

    async def _connected(self) -> _Link:
        loop = asyncio.get_running_loop()
        if self._link is not None and self._link.alive and self._link.loop is loop:
            return self._link
        if self._connecting is None or self._connecting[0] is not loop:
            self._connecting = (loop, asyncio.Lock())
        async with self._connecting[1]:  # one connection, so submissions reach the sequencer in order
            if self._link is None or not self._link.alive or self._link.loop is not loop:
                try:
                    reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=MAX_FRAME)
                except OSError as exc:
                    raise SequencerGone(str(exc)) from exc
                self._link = _Link(reader, writer)
            return self._link

    def close(self) -> None:
        if self._link is not None:
            self._link.close()
        self.local.close()
