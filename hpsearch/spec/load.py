"""Reading a spec: YAML through a safe loader that refuses duplicate keys and oversized integers,
validation into the schema with every error one line naming file, key and value, and
`with_overrides` for the command line's overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from hpsearch.errors import SpecError
from hpsearch.spec.messages import did_you_mean, message, short
from hpsearch.spec.schema import NumericRange, Spec


def format_error(path: str, err: Any) -> str:
    loc = [str(p) for p in err["loc"] if p not in ("numeric-range", "categorical")]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    shown = None
    if err["type"] == "hpsearch":
        if ctx.get("key"):
            loc.append(str(ctx["key"]))
        shown = ctx.get("shown")
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        hint = did_you_mean(loc[-1], parent.model_fields) if parent else ""
        return f"{path}: {'.'.join(loc)}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{path}: {'.'.join(loc)}: required key is missing"
    if err["type"] == "enum":
        return f"{path}: {'.'.join(loc)}: must be one of {err['ctx']['expected']} (got {short(value)})"
    key = ".".join(loc) or "(top level)"
    return f"{path}: {key}: {message(err)} (got {shown if shown is not None else short(value)})"


# Bounded, unlike repr(): a few lines of YAML aliases nest billions of elements whose full repr never ends.


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    if loc[:2] == ["search", "space"] and len(loc) == 3:
        return NumericRange
    model: type[BaseModel] = Spec
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


IN_CODE = "<spec>"  # what errors name for a spec that has no file (a Spec built in code)


def parse_spec(data: Any, path: str = IN_CODE, base: Path | None = None) -> Spec:
    """Validate already-parsed YAML into a Spec, or raise SpecError naming path, key and value.
    Relative data and factory paths are relative to `base` (the spec file's folder)."""
    if data is None:
        raise SpecError(f"{path}: the spec is empty")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a mapping of keys to values (got {type(data).__name__})")
    try:
        return Spec.model_validate(data, context={"base": base} if base is not None else None)
    except ValidationError as e:
        raise SpecError(format_error(path, e.errors()[0])) from None


_INT_LIMIT = 2**63 - 1  # no count, size or seed needs more, and torch and numpy take no more


_INT_CHARS = 100  # longer integer literals are out of range (int64 in binary with '_' every 4 digits: 82)


class SafeSpecLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, plus: a scalar Python cannot hold (a date like 2001-13-45, an integer
    beyond 64 bits) is a YAML error at its line and column instead of a ValueError from inside PyYAML."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as e:
            raise yaml.constructor.ConstructorError(None, None, str(e), node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # Checked before converting: Python refuses to read a decimal integer of over 4300 digits.
        value = super().construct_yaml_int(node) if len(str(node.value)) <= _INT_CHARS else None
        if value is None or abs(value) > _INT_LIMIT:
            raise ValueError("integer out of range (more than 64 bits)")
        return value


def load_spec(path: str | Path) -> Spec:
    """Read a YAML spec with a yaml.safe_load loader and validate it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{p}: is a directory, not a spec file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse_spec_text(text, p)


def parse_spec_text(text: str, path: Path) -> Spec:
    """A spec's YAML text, as the file at `path` would be read (relative paths from its folder)."""
    loader = SafeSpecLoader(text)  # a SafeLoader: plain data, no Python objects
    try:
        # yaml.load's two steps, with the node tree checked between them: once constructed, a key
        # given twice has already lost its first value.
        root = loader.get_single_node()
        _refuse_duplicate_keys(root, path)
        data = loader.construct_document(root) if root is not None else None
    except RecursionError:  # PyYAML's parser recurses once per level of nesting
        raise SpecError(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}: invalid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
    return parse_spec(data, str(path), path.resolve().parent)


def _refuse_duplicate_keys(root: yaml.Node | None, path: Path) -> None:
    """A SpecError naming the first key given twice in one mapping (PyYAML keeps the last value
    silently), with its place in the spec and both lines. Each node is visited once: an alias
    points at a node already seen, and a few lines of aliases can reach billions of them."""
    seen: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while todo:
        node, where = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo += [(item, f"{where}.{i}" if where else str(i)) for i, item in reversed(list(enumerate(node.value)))]
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple[str, str], yaml.Node] = {}
        children = []
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges a mapping whose keys the file may override: YAML's own rule
            name = f"{where}.{key.value}" if where else str(key.value)
            earlier = first.setdefault((key.tag, key.value), key)
            if earlier is not key:
                raise SpecError(
                    f"{path}: {name}: duplicate key, at lines {earlier.start_mark.line + 1} and "
                    f"{key.start_mark.line + 1} (YAML would keep only the last; give it once)"
                )
            children.append((value, name))
        todo += reversed(children)


def value_node(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """(key node, value node) of `key` in a YAML mapping node; None if it is not a mapping that has it."""
    if not isinstance(node, yaml.MappingNode):
        return None
    return next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def end_index(node: yaml.Node) -> int:
    """Where a node's own text ends: a block collection's end mark lies past any comments after it."""
    if isinstance(node, yaml.CollectionNode) and not node.flow_style and node.value:
        last = node.value[-1]
        return end_index(last[1] if isinstance(last, tuple) else last)
    return node.end_mark.index


SafeSpecLoader.add_constructor("tag:yaml.org,2002:int", SafeSpecLoader.construct_yaml_int)


def with_overrides(spec: Spec, trials: int | None = None, epochs: int | None = None, seed: int | None = None) -> Spec:
    """The spec with command-line overrides applied, validated like the file."""
    data = spec.model_dump()
    if trials is not None:
        data["search"]["trials"] = trials
    if seed is not None:
        data["search"]["seed"] = seed
    if epochs is not None:
        data["train"]["epochs"] = epochs
        data["search"]["space"].pop("epochs", None)  # --epochs fixes them, as it does for refine
    try:
        return Spec.model_validate(data)
    except ValidationError as e:  # one line naming the option, as a bad value in the file is
        given = {"--trials": trials, "--epochs": epochs, "--seed": seed}
        options = " ".join(f"{k} {v}" for k, v in given.items() if v is not None)
        raise SpecError(format_error(options, e.errors()[0])) from None
