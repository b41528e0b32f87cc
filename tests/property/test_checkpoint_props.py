"""The checkpoint note's character rule, checked by one regular expression, against its plain statement."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.checkpoint import CheckpointError, _check_note_chars


def _first_forbidden(text: str) -> str | None:
    """signed-note: no control character but the newline."""
    return next((ch for ch in text if ord(ch) < 0x20 and ch != "\n"), None)


@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x2FF, exclude_categories=["Cs"]), max_size=80))
def test_a_note_is_refused_exactly_for_its_first_control_character(text: str) -> None:
    bad = _first_forbidden(text)
    if bad is None:
        _check_note_chars(text, "line")
        return
    with pytest.raises(CheckpointError, match=f"U\\+{ord(bad):04X}"):
        _check_note_chars(text, "line")
