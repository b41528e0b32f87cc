"""Output: rich for people, ``--json`` for machines. All printing of results goes through here."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

console = Console()
errors = Console(stderr=True)


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def fail_line(message: str) -> None:
    """One readable line on stderr."""
    errors.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
