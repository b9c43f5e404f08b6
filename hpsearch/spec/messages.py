"""How a spec error shows a value and words pydantic's message: shared by the schema's validators and the loader."""

from __future__ import annotations

import difflib
import reprlib
from typing import Any

REPR = reprlib.Repr()
REPR.maxlevel, REPR.maxdict, REPR.maxlist, REPR.maxtuple = 3, 4, 8, 8
REPR.maxstring = REPR.maxlong = REPR.maxother = 60


def message(err: Any) -> str:
    if err["type"] == "hpsearch":
        return str(err["msg"])
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def short(value: Any) -> str:
    text = REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def number(v: float) -> int | float:
    """A whole float as an int (2.0 -> 2), for messages and values written back."""
    return int(v) if float(v).is_integer() else v


def did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
