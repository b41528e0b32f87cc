"""The scan's JSON, written directly, equals what its documented response model writes."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from api.schemas import PackOut, pack_json
from ledger.identifiers import Channel
from ledger.provenance import Step
from ledger.queries import PackReport
from ledger.state import Batch
from ledger.verdict import Finding, Verdict

# UTC above all (what the ledger stores), and other offsets so the writer cannot rely on it
zones = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=1)), dt.timezone(dt.timedelta(hours=-5, minutes=-30))])
times = st.datetimes(min_value=dt.datetime(1970, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=zones)
texts = st.text(max_size=30)

steps = st.builds(Step, index=st.integers(0, 2**62), type=texts, actor=texts, actor_name=texts, role=texts,
                  region=texts, time=times)
batches = st.builds(Batch, gtin=texts, lot=texts, expiry=st.dates(), product=texts, manufacturer=texts,
                    quantity=st.integers(0, 10**6), channel=st.sampled_from(list(Channel)),
                    status=st.sampled_from(["active", "recalled", "quarantined"]), status_reason=st.none() | texts,
                    status_index=st.none() | st.integers(0, 2**62), commissioned_index=st.integers(0, 2**62),
                    commissioned_at=times)
reports = st.builds(PackReport, gtin=texts, serial=texts,
                    finding=st.builds(Finding, verdict=st.sampled_from(list(Verdict)), reason=texts),
                    batch=st.none() | batches, steps=st.lists(steps, max_size=6))


@settings(max_examples=300)
@given(reports)
def test_the_direct_json_is_the_models_json(report: PackReport) -> None:
    expected = PackOut.of(report).model_dump(mode="json")
    assert pack_json(report) == expected
    assert json.dumps(pack_json(report)) == json.dumps(expected)  # the same keys in the same order
