"""Times are stored in UTC whatever the server's time zone: a group's checkpoint and its entries carry the same
moment (the checkpoint's is written by a path of its own on PostgreSQL, through the driver)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


def test_a_checkpoint_and_its_entries_keep_the_same_time_in_any_time_zone(tmp_path: Path, db_url: str) -> None:
    code = textwrap.dedent(f"""
        import json
        from pathlib import Path
        from tests.support import make_world

        w = make_world(Path({str(tmp_path / "home")!r}), {db_url!r})
        w.commission("TZ-1", 2)
        with w.ledger.store.read() as u:
            cp = u.checkpoint()
            last = u.entry(cp.tree_size - 1)
        print(json.dumps({{"checkpoint": cp.created_at.isoformat(), "entry": last.received_at.isoformat()}}))
        w.db.dispose()
    """)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root,
                         env={**os.environ, "TZ": "Asia/Tokyo"}, check=True)  # UTC+9, no daylight saving
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["checkpoint"] == seen["entry"], seen
    assert seen["checkpoint"].endswith("+00:00"), seen
