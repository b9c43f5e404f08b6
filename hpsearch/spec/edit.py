"""Writing a spec back as YAML: the resolved spec a stage records, and `rewritten_spec`, which
changes one search-space entry of the user's own file and keeps its comments and layout
(`sanity-check --write-spec`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from hpsearch.errors import SpecError
from hpsearch.spec.load import SafeSpecLoader, end_index, parse_spec_text, value_node
from hpsearch.spec.schema import Spec


def with_space_entry(text: str, name: str, entry: str) -> str | None:
    """A spec's YAML text with search.space.<name> set to `entry` (one line of flow YAML), every
    other character as written (comments, order, layout); None when the text has no search.space
    mapping to put it in."""
    try:
        root = yaml.compose(text, Loader=SafeSpecLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    search = value_node(root, "search")
    space = value_node(search[1], "space") if search else None
    if space is None or not isinstance(space[1], yaml.MappingNode) or not space[1].value:
        return None
    found = value_node(space[1], name)
    if found is not None:  # replace the value: from just after the key's colon to the value's end
        colon = text.find(":", found[0].end_mark.index)
        return text[: colon + 1] + " " + entry + text[end_index(found[1]) :]
    first = space[1].value[0][0]  # insert it before the first entry, as that one is laid out
    at = first.start_mark
    sep = ", " if space[1].flow_style else "\n" + " " * at.column
    return text[: at.index] + f"{name}: {entry}" + sep + text[at.index :]


def rewritten_spec(source: Path, new: Spec, dest: Path, name: str) -> str:
    """The text to write at `dest` for `new`, a copy of the spec file at `source` whose
    search.space.<name> changed: the file as its user wrote it (comments included) with only that
    entry edited, when it then loads as `new` from `dest`; else `new` as written (comments lost)."""
    dom = new.search.space[name]
    fields = dom.model_dump(mode="json", exclude_unset=True)
    entry = yaml.safe_dump(fields, default_flow_style=True, sort_keys=False, width=2**31).strip()
    try:
        edited = with_space_entry(source.read_text(encoding="utf-8"), name, entry)
        if edited is not None and parse_spec_text(edited, dest) == new:
            return edited
    except (OSError, UnicodeDecodeError, SpecError):
        pass
    return spec_to_yaml(new, as_written=True)


def spec_to_yaml(spec: Spec, as_written: bool = False) -> str:
    """The resolved spec as YAML that load_spec reads back to an equal Spec. `as_written`: only the
    keys the spec's file set (the rest are defaults), short collections on one line, as a person
    writes a spec; else every key, defaults included (what a run records it ran)."""
    if as_written:
        return yaml.safe_dump(
            spec.model_dump(mode="json", exclude_unset=True), sort_keys=False, default_flow_style=None, width=110
        )
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
