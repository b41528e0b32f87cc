"""The benchmark's CPU note: cores busy by role, CPU per request, and the rate the machine's cores could serve
at that CPU per request (``bench.common.cpu_note``), from real process counters' arithmetic."""

from __future__ import annotations

import os

from bench.common import CpuSnapshot, cpu_bound, cpu_note


def test_the_bound_is_the_cores_over_the_serving_cpu_per_request() -> None:
    # 1,000 requests cost the server 0.5 s and PostgreSQL 0.3 s: 800 µs each, so 2 cores serve 2,500/s
    assert cpu_bound(1_000, 0.8, 2) == 2_500
    assert cpu_bound(0, 0.8, 2) is None
    assert cpu_bound(1_000, 0.0, 2) is None


def test_the_note_gives_the_split_and_leaves_the_load_generator_out_of_the_bound() -> None:
    cores = os.cpu_count() or 1
    before = CpuSnapshot(wall=10.0, server=1.0, sequencer=0.2, machine=5.0)
    after = CpuSnapshot(wall=12.0, server=2.0, sequencer=0.6, machine=7.0)  # 2 s: server 1.0, machine 2.0
    note = cpu_note(before, after, loadgen_cpu=0.2, requests=2_000)
    # PostgreSQL and the rest: 2.0 - 1.0 - 0.2 = 0.8 s; serving CPU 1.8 s for 2,000 requests = 900 µs each
    assert "CPU per request 1,000 µs: server 500 (sequencer 200), PostgreSQL and the rest 400, load generator 100" \
        in note
    assert note.endswith(f"at that CPU per request {cores} cores serve at most {cores * 2_000 / 1.8:,.0f}/s")


def test_a_window_of_mixed_requests_gets_no_per_request_figures() -> None:
    before = CpuSnapshot(wall=0.0, server=0.0, sequencer=0.0, machine=0.0)
    after = CpuSnapshot(wall=1.0, server=0.5, sequencer=0.0, machine=1.0)
    note = cpu_note(before, after, loadgen_cpu=0.1)
    assert "CPU per request" not in note and "serve at most" not in note
    assert note.startswith("cores busy: server 0.50, load generator 0.10, other (PostgreSQL...) 0.40")
