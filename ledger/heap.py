"""How a long-running athar process sets up Python's cyclic garbage collector once it has started.

Measured under 64 clients appending (eleventh session, docs/performance.md): with the interpreter's defaults, each
API worker ran a full collection about every 4 s and the sequencer about every 3 s, each pausing its process for
70-160 ms, because every collection traversed the 100,000-150,000 objects the process made while starting
(modules, the web framework, SQLAlchemy's compiled statements). A sequencer pause holds up every append in flight,
a worker's every request on its connections: the pauses were most of the appends' p99.

Two settings remove them:

- ``gc.freeze()`` moves everything that exists once the process is ready into a generation the collector never
  traverses. Those objects live as long as the process anyway; what is created afterwards is collected as usual.
- A first-generation threshold of 20,000 instead of 700. A request or a group frees almost all it allocates by
  reference counting, so the count of live container objects rarely grows that far: in the same runs no
  collection ran at all while requests were served. Cyclic garbage still is collected, at most this many
  objects late.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
OLDER_THRESHOLDS = (10, 10)  # the interpreter's defaults for the older generations


def settle_after_start() -> None:
    """Call once a server process has finished starting, just before it serves."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)
