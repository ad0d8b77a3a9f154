"""Untrusted text on the terminal: a concept, an LLM's reasoning, a run folder's contents.

Rich reads `[...]` as markup and a terminal obeys escape sequences (`ESC]0;` sets the window
title, `ESC[2J` clears the screen). `safe` makes any text print as itself: control
characters (but newlines and tabs) and invisible bidirectional overrides are shown as
escapes like `\\x1b`, and markup is escaped. `printable` does the first half, for output
that Rich does not parse (markup=False) or plain `print`.
"""

from __future__ import annotations

import re

from rich.markup import escape

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides and
# isolates that can make text read differently from what it is ("trojan source").
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: object) -> str:
    """`text` with every control character shown as an escape (`\\x1b`, `\\u202e`)."""
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))


def safe(text: object) -> str:
    """`text` ready for Rich markup and the terminal: printed as itself, nothing obeyed."""
    return escape(printable(text))
