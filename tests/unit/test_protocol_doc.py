"""docs/protocol.md's worked example is recomputed here with the real code, so the document cannot drift."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from ledger.entry import Entry, SignedEvent
from ledger.events import parse_event
from ledger.request_signing import sign_request, signed_value
from signing import KeyPair, b64decode, canonical
from signing.canonical import signing_input

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


@pytest.fixture(scope="module")
def example() -> dict[str, str]:
    blocks = re.findall(r"```example:(\w+)\n(.*?)\n```", DOC.read_text(), flags=re.S)
    return dict(blocks)


def test_worked_example_matches_the_code(example: dict[str, str]) -> None:
    key = KeyPair.from_seed(b64decode(example["seed"]))
    assert key.public.b64 == example["public_key"]
    assert key.key_id == example["key_id"]

    body = json.loads(example["canonical_event"])
    parse_event(body)  # a valid event
    assert canonical(body).decode() == example["canonical_event"]
    assert signing_input("event", body).startswith(bytes.fromhex(example["signing_input_prefix_hex"]))
    signed = SignedEvent.create(body, key)
    assert signed.to_json()["signature"] == example["signature"]

    entry = Entry(7, dt.datetime(2026, 11, 22, 10, 15, 0, 250000, tzinfo=dt.UTC), "batch/06111000001011/AMX2601",
                  bytes([0x9F]) * 32, signed)
    assert entry.leaf().decode() == example["leaf"]
    assert entry.hash.hex() == example["entry_hash"]

    path = "/v1/batches/06111000001011/AMX2601/history"
    value = signed_value("ph-agdal", key.key_id, "GET", path, 1795342500)
    assert canonical(value).decode() == example["read_auth_value"]
    headers = sign_request(key, "ph-agdal", "GET", path, 1795342500)
    assert headers["Athar-Signature"] == example["read_auth_signature"]


def test_every_event_type_is_documented() -> None:
    from ledger.events import EVENT_TYPES

    text = DOC.read_text()
    for kind in EVENT_TYPES:
        assert re.search(rf"^\| `{kind}`|^\| `\w+`, `{kind}`", text, flags=re.M), kind
