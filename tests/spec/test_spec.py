"""Spec validation: every error names the file, the key path and the bad value."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import ROOT

from hpsearch.errors import SpecError
from hpsearch.spec.choices import Activation
from hpsearch.spec.edit import rewritten_spec, spec_to_yaml, with_space_entry
from hpsearch.spec.load import load_spec, parse_spec
from hpsearch.spec.schema import Categorical, NumericRange, Spec


def error_of(data: object) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "configs/x.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"name": "x", "search": {"space": {"lr": {"low": 0, "high": 1, "log": True}}}},
            "configs/x.yaml: search.space.lr.low: must be > 0 when log is true (got 0)",
        ),
        (
            {"name": "x", "search": {"space": {"lr": {"low": 1e-3, "high": 1e-3}}}},
            "configs/x.yaml: search.space.lr.high: must be > low (0.001) (got 0.001)",
        ),
        (
            {"name": "x", "search": {"space": {"lr": {"low": 1, "high": 0.5}}}},
            "configs/x.yaml: search.space.lr.high: must be > low (1) (got 0.5)",
        ),
        ({"name": "x", "trian": {}}, "configs/x.yaml: trian: unknown key (did you mean 'train'?)"),
        ({"name": "x", "train": {"lrr": 0.1}}, "configs/x.yaml: train.lrr: unknown key (did you mean 'lr'?)"),
        (
            {"name": "x", "search": {"space": {"lr": {"low": 1, "high": 2, "lg": True}}}},
            "configs/x.yaml: search.space.lr.lg: unknown key (did you mean 'log'?)",
        ),
        (
            {"name": "x", "search": {"space": {"learning_rate": {"low": 1, "high": 2}}}},
            "configs/x.yaml: search.space.learning_rate: not a searchable parameter",
        ),
        (
            {"name": "x", "search": {"trials": 0}},
            "configs/x.yaml: search.trials: input should be greater than or equal to 1 (got 0)",
        ),
        ({"name": "x", "model": {"activation": "relux"}}, "configs/x.yaml: model.activation: must be one of"),
        (
            {"name": "x", "search": {"space": {"activation": {"values": ["relu", "swish"]}}}},
            "configs/x.yaml: search.space.activation.values.1: input should be 'relu'",
        ),
        (
            {"name": "x", "search": {"space": {"batch_size": {"low": 10.5, "high": 100}}}},
            "configs/x.yaml: search.space.batch_size.low: batch_size is an integer (got 10.5)",
        ),
        (
            {"name": "x", "search": {"space": {"dropout": {"low": 0, "high": 1}}}},
            "configs/x.yaml: search.space.dropout.high: input should be less than 1 (got 1.0)",
        ),
        (
            {"name": "x", "search": {"space": {"init": {"low": 0, "high": 1}}}},
            "configs/x.yaml: search.space.init: is not numeric",
        ),
        ({"name": "x", "search": {"space": {"lr": 0.1}}}, "configs/x.yaml: search.space.lr: must be {low, high, log}"),
        ({"name": "x", "train": {"epochs": "five"}}, "configs/x.yaml: train.epochs: input should be a valid integer"),
        (
            {"name": "x", "model": {"hidden": [50, 0]}},
            "configs/x.yaml: model.hidden.1: every layer width must be >= 1 (got 0)",
        ),
        ({"train": {}}, "configs/x.yaml: name: required key is missing"),
        ({"name": "../evil"}, "configs/x.yaml: name: must be a plain name"),
        (None, "configs/x.yaml: the spec is empty"),
        ([1, 2], "configs/x.yaml: the spec must be a mapping"),
    ],
)
def test_validation_errors_name_file_key_and_value(data: object, expected: str) -> None:
    assert error_of(data).startswith(expected)


def test_defaults_and_types() -> None:
    spec = parse_spec({"name": "x"})
    assert spec.data.val_size is None  # automatic: a tenth of the training set, at most 1000
    assert spec.data.val_examples(50_000) == 1000  # CIFAR-10 holds out 1000, as the lecture does
    assert spec.model.activation is Activation.RELU
    assert spec.model.hidden == (50,)
    assert spec.train.lr_decay == 1.0


def test_yaml_exponent_without_dot_is_a_number() -> None:
    # YAML 1.1 reads 1e-3 as a string; a spec author means the number.
    spec = parse_spec({"name": "x", "search": {"space": {"lr": {"low": "1e-6", "high": "1e-3", "log": True}}}})
    lr = spec.search.space["lr"]
    assert isinstance(lr, NumericRange)
    assert lr.low == 1e-6
    assert lr.high == 1e-3


def test_categorical_values_are_coerced_to_field_types() -> None:
    spec = parse_spec(
        {
            "name": "x",
            "search": {"space": {"activation": {"values": ["tanh", "relu"]}, "hidden": {"values": [[50], [100, 50]]}}},
        }
    )
    act = spec.search.space["activation"]
    assert isinstance(act, Categorical)
    assert act.values == (Activation.TANH, Activation.RELU)
    assert spec.search.space["hidden"].values == ((50,), (100, 50))  # type: ignore[union-attr]


def test_resolved_overrides_fixed_values() -> None:
    spec = parse_spec({"name": "x", "train": {"lr": 0.1, "batch_size": 64}, "model": {"activation": "relu"}})
    trial = spec.resolved({"lr": 0.003, "activation": Activation.TANH, "batch_size": 32})
    assert (trial.train.lr, trial.train.batch_size, trial.model.activation) == (0.003, 32, Activation.TANH)
    assert spec.train.lr == 0.1  # the original is untouched


def test_load_spec_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"missing\.yaml: no such file"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntrain: {epochs: 3\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: invalid YAML at line \d+"):
        load_spec(bad)
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(SpecError, match=r"evil\.yaml: invalid YAML"):
        load_spec(evil)
    assert not Path("pwned").exists()


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate_and_round_trip(config: Path, tmp_path: Path) -> None:
    spec = load_spec(config)
    again = tmp_path / "again.yaml"
    again.write_text(spec_to_yaml(spec))
    assert load_spec(again) == spec


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"name": "x", "search": {"seed": -1}},
            "configs/x.yaml: search.seed: input should be greater than or equal to 0",
        ),
        (
            {"name": "x", "search": {"space": {"lr": {"low": 1e-4, "high": 1, "values": [1]}}}},
            "configs/x.yaml: search.space.lr: give either {low, high, log} or {values: [...]}, not both",
        ),
    ],
)
def test_more_validation_errors(data: object, expected: str) -> None:
    assert error_of(data).startswith(expected)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("a" * 101, "must be at most 100 characters"),
        ("run\nnext", "must not hold control, line-break, invisible or bidi characters"),
        ("run\u202eexe.yaml", "must not hold control, line-break, invisible or bidi characters"),
        ("zero\u200bwidth", "must not hold control, line-break, invisible or bidi characters"),
        ("tab\there", "must not hold control, line-break, invisible or bidi characters"),
        ("a\\b", "must be a plain name"),
        ("a/b", "must be a plain name"),
    ],
)
def test_a_run_name_that_cannot_be_a_safe_directory_is_refused(name: str, why: str) -> None:
    message = error_of({"name": name})
    assert message.startswith("configs/x.yaml: name: ")
    assert why in message


def test_a_name_of_100_plain_characters_is_accepted() -> None:
    assert parse_spec({"name": "é" * 100}).name == "é" * 100


def test_a_bad_command_line_override_is_one_line_naming_the_option() -> None:
    from hpsearch.spec.load import with_overrides

    spec = load_spec(ROOT / "configs/smoke.yaml")
    with pytest.raises(SpecError) as info:
        with_overrides(spec, seed=-1)
    assert str(info.value) == "--seed -1: search.seed: input should be greater than or equal to 0 (got -1)"


BLOCK_SPEC = """\
name: s  # the run's name
search:
  space:
    lr:   # replaced, this comment with it
      low: 1.0e-4
      high: 1.0
      log: true
    # weight decay next
    weight_decay: {low: 1.0e-6, high: 1.0e-1, log: true}
"""


def test_a_space_entry_is_replaced_or_inserted_and_nothing_else_changes() -> None:
    entry = "{low: 0.01, high: 0.1, log: true}"
    replaced = with_space_entry(BLOCK_SPEC, "lr", entry)
    written = "lr:   # replaced, this comment with it\n      low: 1.0e-4\n      high: 1.0\n      log: true"
    assert replaced == BLOCK_SPEC.replace(written, f"lr: {entry}")  # the comment after it kept
    inserted = with_space_entry(BLOCK_SPEC, "momentum", "{low: 0.5, high: 0.9}")
    assert inserted == BLOCK_SPEC.replace("    lr:", "    momentum: {low: 0.5, high: 0.9}\n    lr:")
    flow = "search: {space: {wd: {values: [1]}}}  # flow\n"
    assert with_space_entry(flow, "lr", entry) == f"search: {{space: {{lr: {entry}, wd: {{values: [1]}}}}}}  # flow\n"
    assert with_space_entry(flow.replace("wd", "lr"), "lr", entry) == f"search: {{space: {{lr: {entry}}}}}  # flow\n"
    for nowhere in ("name: s\n", "search: {trials: 3}\n", "search: {space: {}}\n", "- a list\n", "", "a: [\n"):
        assert with_space_entry(nowhere, "lr", entry) is None, nowhere


def with_lr(spec: Spec, low: float, high: float) -> Spec:
    space = {**spec.search.space, "lr": NumericRange(low=low, high=high, log=True)}
    return spec.model_copy(update={"search": spec.search.model_copy(update={"space": space})})


def test_a_rewritten_spec_keeps_the_users_file_where_it_loads_the_same(tmp_path: Path) -> None:
    source = tmp_path / "s.yaml"
    source.write_text(BLOCK_SPEC)
    new = with_lr(load_spec(source), 0.003, 0.3)
    text = rewritten_spec(source, new, tmp_path / "next.yaml", "lr")
    assert text == with_space_entry(BLOCK_SPEC, "lr", "{low: 0.003, high: 0.3, log: true}")  # comments kept
    (tmp_path / "next.yaml").write_text(text)
    assert load_spec(tmp_path / "next.yaml") == new
    # A relative path would name another file from another folder: the spec is written out whole.
    (tmp_path / "nets.py").write_text("def tiny(input_shape, num_classes):\n    return None\n")
    source.write_text(BLOCK_SPEC + "model: {kind: python, factory: nets.py:tiny}\n")
    moved = with_lr(load_spec(source), 0.003, 0.3)
    (tmp_path / "elsewhere").mkdir()
    text = rewritten_spec(source, moved, tmp_path / "elsewhere" / "next.yaml", "lr")
    assert "#" not in text
    assert str(tmp_path / "nets.py") in text
    (tmp_path / "elsewhere" / "next.yaml").write_text(text)
    assert load_spec(tmp_path / "elsewhere" / "next.yaml") == moved
    assert rewritten_spec(source, moved, tmp_path / "next2.yaml", "lr").startswith("name: s  # the run's name\n")


def test_a_key_given_twice_is_refused_naming_the_key_and_both_lines(tmp_path: Path) -> None:
    # PyYAML keeps the last of two equal keys: the search would run on a value the user may not see.
    spec = tmp_path / "twice.yaml"
    spec.write_text(
        "name: twice\n"
        "search:\n"
        "  space:\n"
        "    lr: {low: 1.0e-4, high: 1.0e-1, log: true}\n"
        "    weight_decay: {low: 1.0e-6, high: 1.0e-2, log: true}\n"
        "    lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n"
    )
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    assert str(e.value) == (
        f"{spec}: search.space.lr: duplicate key, at lines 4 and 6 (YAML would keep only the last; give it once)"
    )
    top = tmp_path / "top.yaml"
    top.write_text("name: a\ntrain: {epochs: 2}\nname: b\n")
    with pytest.raises(SpecError, match=r"top\.yaml: name: duplicate key, at lines 1 and 3 "):
        load_spec(top)
    flow = tmp_path / "flow.yaml"
    flow.write_text("name: f\ntrain: {epochs: 2, epochs: 3}\n")
    with pytest.raises(SpecError, match=r"flow\.yaml: train\.epochs: duplicate key, at lines 2 and 2 "):
        load_spec(flow)


def test_a_merged_mapping_may_be_overridden(tmp_path: Path) -> None:
    # `<<: {...}` then a key of the merged mapping is YAML's own way to override it, not a duplicate.
    good = tmp_path / "good.yaml"
    good.write_text("name: g\ntrain:\n  <<: {epochs: 2, batch_size: 50}\n  epochs: 3\n")
    spec = load_spec(good)
    assert (spec.train.epochs, spec.train.batch_size) == (3, 50)
