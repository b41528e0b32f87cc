"""Output: rich for people, ``--json`` for machines. All printing of results goes through here.

Text that comes from the user, a file or the server (codes, paths, reasons, problem details) may hold
``[...]`` or ``:name:``; read as rich markup or emoji codes it would be altered or crash the command. Such text is
printed as ``rich.text.Text`` or passed through :func:`escape`; markup is only ever written in this code's own
literals. Emoji codes are off altogether.
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape as _escape
from rich.text import Text

console = Console(emoji=False)
errors = Console(stderr=True, emoji=False)

# an error line is one line (a server's HTML page or a multi-line reason is folded), and a readable one
_LINE_BREAKS = re.compile(r"\s*[\r\n\v\f\x85\u2028\u2029]+\s*")
_MAX_LINE = 500


def escape(value: object) -> str:
    """``value`` as text that rich shows verbatim inside a markup string."""
    return _escape(str(value))


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def fail_line(message: str) -> None:
    """One readable line on stderr; ``message`` is shown as is, never read as markup."""
    message = _LINE_BREAKS.sub(" ", message).strip()
    if len(message) > _MAX_LINE:
        message = message[:_MAX_LINE - 3] + "..."
    errors.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
