"""User-facing errors.

`UldError` carries one sentence meant for the user: what was seen and what would be valid.
The CLI prints it and exits non-zero; library callers can catch it like any exception.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UldError(Exception):
    """An error caused by the user's input, explained in one sentence."""


class Interrupted(Exception):
    """The user stopped a command (Ctrl-C) and it cleaned up; the message says what was kept and
    how to continue ("interrupted; resume with ..."). The CLI prints it and exits 130.

    Raise it from a `KeyboardInterrupt` handler once the state on disk is consistent; a bare
    `KeyboardInterrupt` also exits 130, with the message "interrupted"."""


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> UldError:
    """Build the 'unknown X; did you mean Y? Available: ...' error."""
    choices = sorted(choices)
    close = difflib.get_close_matches(value, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return UldError(f"unknown {kind} {value!r}{hint} available: {', '.join(choices)}")
