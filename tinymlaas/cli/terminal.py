"""What the CLI prints to a terminal: text from devices and the server, stripped of control characters.

Endpoint names, values read from devices, event details and error messages are data from
outside; printed as they are, an ANSI escape sequence in them would move the cursor, rewrite
earlier lines or retitle the operator's terminal. ``SafeConsole`` is rich's ``Console`` with
every string it renders (``print`` arguments and table cells alike go through
``render_str``) passed through ``tinymlaas.names.printable`` first; rich itself removes only
a handful of codes (BEL, BS, VT, FF, CR) and keeps ESC. ``--json`` output needs nothing:
``json.dumps`` writes control characters as ``\\u`` escapes.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.text import Text

from tinymlaas.names import printable


class SafeConsole(Console):
    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)


def console(stderr: bool = False) -> SafeConsole:
    """The CLI's console for stdout (or stderr)."""
    return SafeConsole(stderr=stderr)
