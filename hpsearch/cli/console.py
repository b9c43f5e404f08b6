"""The terminal: results on stdout (`out`), progress and diagnostics on stderr (`err`), and the one-line
kinds of diagnostic (warning, note, the network a spec's code loaded)."""

from __future__ import annotations

import os
import sys
from typing import IO, cast

from rich.console import Console
from rich.text import Text


# Piped output gets a wide table, not a folded one.
def _width(stream: object) -> int | None:
    return None if getattr(stream, "isatty", lambda: False)() or "COLUMNS" in os.environ else 200


class NoTrailingSpaces:
    """sys.stdout for the results console, with no line ending in spaces. Rich pads a table's title
    and caption, and each line of a borderless table (the layout of a narrow terminal), with spaces
    to the table's width; a pipe or a file keeps them, and diff and git flag them. (On a terminal
    they are invisible either way.) Spaces at the end of one write wait for the next to show
    whether a line break follows. sys.stdout is looked up at each write, as rich does for its
    default file, so a stdout replaced later (CliRunner) is the one written to."""

    def __init__(self) -> None:
        self.held = ""

    def write(self, text: str) -> int:
        whole = self.held + text
        body = whole.rstrip(" ")
        self.held = whole[len(body) :]
        sys.stdout.write("\n".join(line.rstrip(" ") for line in body.split("\n")))
        return len(text)

    def flush(self) -> None:
        sys.stdout.flush()

    def isatty(self) -> bool:
        return sys.stdout.isatty()

    @property
    def encoding(self) -> str:
        return getattr(sys.stdout, "encoding", None) or "utf-8"


# Markup and emoji codes off: paths, spec values and error messages are printed as they are.
# (rich calls write, flush and isatty on its file and reads its encoding: all NoTrailingSpaces has.)
out = Console(file=cast(IO[str], NoTrailingSpaces()), width=_width(sys.stdout), markup=False, emoji=False)
err = Console(stderr=True, width=_width(sys.stderr), markup=False, emoji=False)


def warn(message: str) -> None:
    err.print(Text.assemble(("warning:", "bold yellow"), " ", message), highlight=False, soft_wrap=True)


def note(message: str) -> None:
    """A line worth knowing that is not a warning (the split an automatic val_size chose)."""
    err.print(message, highlight=False, soft_wrap=True, markup=False)


def say_model(line: str) -> None:
    """A spec that names Python code runs it: which file was loaded (and its hash), once, on stderr."""
    err.print(line, highlight=False, soft_wrap=True)
