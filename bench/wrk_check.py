"""The same HTTP loads driven by wrk (https://github.com/wg/wrk, Debian package ``wrk``), a load generator
written in C that shares nothing with athar or with ``bench.loadgen``: a cross-check of the figures.

Skipped with a note when ``wrk`` is not installed (``apt-get install wrk``). wrk keeps every connection busy
(closed loop, like ``bench.loadgen``) and reports the latency percentiles itself.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.common import Report

SCRIPT = Path(__file__).with_name("wrk") / "requests.lua"
THREADS = 2


def available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(base: str, method: str, items: Sequence[bytes | str], clients: int, seconds: float) -> dict[str, str]:
    """Run wrk; return its requests/s, latency percentiles and non-2xx count as printed."""
    with tempfile.NamedTemporaryFile("wb", suffix=".txt", delete=False) as f:
        for item in items:
            line = item if isinstance(item, bytes) else item.encode()
            f.write(line.replace(b"\n", b"") + b"\n")
        path = f.name
    try:
        out = subprocess.run(["wrk", "-t", str(THREADS), "-c", str(clients), "-d", f"{seconds:.0f}s", "--latency",
                              "-s", str(SCRIPT), base, "--", path, str(THREADS), method],
                             capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    finally:
        Path(path).unlink(missing_ok=True)
    found = {"rate": _find(r"Requests/sec:\s+([\d.]+)", out) or "0",
             "non2xx": _find(r"Non-2xx or 3xx responses: (\d+)", out) or "0",
             "errors": _find(r"Socket errors: (.*)", out) or ""}
    for p in ("50", "90", "99"):
        found[p] = _find(rf"^\s+{p}%\s+(\S+)", out) or "?"
    return found


def _find(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text, re.MULTILINE)
    return m.group(1) if m else None


def add_rows(report: Report, name: str, what: str, result: dict[str, str], target: str) -> None:
    rate = float(result["rate"] or 0)
    note = "wrk, 2 threads" + (f"; {result['non2xx']} non-2xx" if result["non2xx"] != "0" else "")
    if result["errors"]:
        note += f"; socket errors {result['errors']}"
    report.add(name, what, f"{rate:,.0f}/s  p50 {result['50']}  p90 {result['90']}  p99 {result['99']}",
               target=target, note=note)
