"""A 20-second run of the soak (tests/reliability/soak.py): mixed load, no 5xx, the audit passes."""

from __future__ import annotations

from tests.reliability.soak import run


def test_soak_smoke() -> None:
    lines: list[str] = []
    result = run(20, threads=4, interval=10, out=lines.append, pool=2000)
    print("\n" + "\n".join(lines))
    assert result.server_errors == 0, result.errors
    assert not result.errors, result.errors
    assert result.audit_ok
    assert sum(result.ops.values()) > 100 and len(result.rows) == 2
