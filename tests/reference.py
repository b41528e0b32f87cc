"""Where the shared known-answer data lives (``/work/shared/reference`` next to the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
"""``<repo>/../shared/reference``: tests/reference.py -> tests -> repo -> its parent."""


def reference_path(*parts: str) -> Path:
    """A path under the reference directory; the calling test is skipped if it is missing."""
    path = REFERENCE_DIR.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} is not available")
    return path


def reference_files(*parts: str, pattern: str = "**/*.json") -> list[Path]:
    """Files under a reference subdirectory, sorted; empty (tests then skip) if it is missing."""
    base = REFERENCE_DIR.joinpath(*parts)
    return sorted(base.glob(pattern)) if base.is_dir() else []
