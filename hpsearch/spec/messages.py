"""How a spec error shows a value and words pydantic's message: shared by the schema's validators and the loader."""

from __future__ import annotations

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
