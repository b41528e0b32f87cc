"""How a long-running athar process sets up Python's cyclic garbage collector.

Measured under 64 clients appending (eleventh session, docs/performance.md): with the interpreter's defaults, each
API worker ran a full collection about every 4 s and the sequencer about every 3 s, each pausing its process for
70-160 ms, because every collection traversed the 100,000-150,000 objects the process made while starting
(modules, the web framework, SQLAlchemy's compiled statements). A sequencer pause holds up every append in flight,
a worker's every request on its connections: the pauses were a large part of the appends' p99. An audit of 10^5
entries spent 2.7-3.3 s of its 13-16 s in 3,100 collections (the largest 300-345 ms): the state it replays is
long-lived and grows, so each collection of the older generations traversed more of it.

Two settings remove most of this:

- ``gc.freeze()`` moves everything that exists once the process is ready into a generation the collector never
  traverses. Those objects live as long as the process anyway; what is created afterwards is collected as usual.
- A first-generation threshold of 20,000 container objects instead of 700. A request or a group frees almost
  all it allocates by reference counting, so the count of live containers rarely grows that far: in the same
  runs no collection ran at all while requests were served. Cyclic garbage still is collected, at most this
  many objects late.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

YOUNG_THRESHOLD = 20_000


def settle_after_start() -> None:
    """Call once a server process has finished starting, just before it serves; for the rest of its life."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *gc.get_threshold()[1:])


@contextlib.contextmanager
def long_task() -> Iterator[None]:
    """The same settings for one long computation (an audit, a rebuild), then the process's own again: a command
    may run inside another program (a test, a notebook) whose collector is its own business."""
    previous = gc.get_threshold()
    freeze = gc.get_freeze_count() == 0  # a process frozen by someone else stays as they left it
    if freeze:
        gc.freeze()
    if previous[0] != 0:  # 0: the program has switched automatic collection off, and it stays off
        gc.set_threshold(max(YOUNG_THRESHOLD, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)
        if freeze:
            gc.unfreeze()
