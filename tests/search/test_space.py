"""Sampling: log-uniform is uniform in log10, grids are even in log space, trials are deterministic."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hpsearch.errors import SpecError
from hpsearch.search.space import TrialSampler, describe_grid, trial_configs
from hpsearch.spec.load import parse_spec
from hpsearch.spec.schema import Spec


def sampler(space: dict, trials: int = 100, seed: int = 0, kind: str = "random") -> TrialSampler:
    spec = parse_spec({"name": "s", "search": {"trials": trials, "seed": seed, "sampler": kind, "space": space}})
    return TrialSampler(spec.search)


def ks_uniform_pvalue(u: np.ndarray) -> float:
    """Kolmogorov-Smirnov test of u against U(0, 1); asymptotic p-value."""
    u = np.sort(u)
    n = len(u)
    d = max(np.max(np.arange(1, n + 1) / n - u), np.max(u - np.arange(n) / n))
    t = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    return float(min(1.0, 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * t * t) for k in range(1, 101))))


def test_log_uniform_samples_have_uniform_log10() -> None:
    s = sampler({"lr": {"low": 1e-6, "high": 1e-3, "log": True}}, trials=4000)
    lr = np.array([p["lr"] for p in s.all_params()])
    assert lr.min() >= 1e-6
    assert lr.max() <= 1e-3
    u = (np.log10(lr) + 6) / 3
    assert ks_uniform_pvalue(u) > 0.01
    # Each decade gets a third of the samples; a linear-uniform sampler would put ~99.9% in the top one.
    counts = np.histogram(np.log10(lr), bins=[-6, -5, -4, -3])[0] / len(lr)
    assert np.allclose(counts, 1 / 3, atol=0.04)
    # and the values themselves are NOT uniform (guards against sampling linearly)
    assert ks_uniform_pvalue((lr - 1e-6) / (1e-3 - 1e-6)) < 1e-6


def test_linear_uniform_when_log_false() -> None:
    s = sampler({"dropout": {"low": 0.0, "high": 0.5}}, trials=4000)
    d = np.array([p["dropout"] for p in s.all_params()])
    assert ks_uniform_pvalue(d / 0.5) > 0.01


def test_integer_parameter_covers_both_ends_evenly() -> None:
    s = sampler({"batch_size": {"low": 1, "high": 4}}, trials=4000)
    values = [p["batch_size"] for p in s.all_params()]
    assert all(isinstance(v, int) for v in values)
    counts = np.bincount(values, minlength=5)[1:] / len(values)
    assert np.allclose(counts, 0.25, atol=0.03)


def test_integer_log_parameter_stays_in_range() -> None:
    s = sampler({"batch_size": {"low": 16, "high": 512, "log": True}}, trials=2000)
    values = np.array([p["batch_size"] for p in s.all_params()])
    assert values.min() >= 16
    assert values.max() <= 512
    assert np.mean(values < 90) == pytest.approx(0.5, abs=0.05)  # sqrt(16 * 512) ~ 90.5: half below


def test_categorical_parameter_uniform_over_values() -> None:
    s = sampler({"activation": {"values": ["relu", "tanh", "elu"]}}, trials=3000)
    names = [p["activation"].value for p in s.all_params()]
    for v in ("relu", "tanh", "elu"):
        assert names.count(v) / len(names) == pytest.approx(1 / 3, abs=0.04)


def test_same_seed_same_trials_other_seed_other_trials() -> None:
    space = {"lr": {"low": 1e-6, "high": 1e-3, "log": True}, "weight_decay": {"low": 1e-5, "high": 1e5, "log": True}}
    assert sampler(space, seed=3).all_params() == sampler(space, seed=3).all_params()
    assert sampler(space, seed=3).all_params() != sampler(space, seed=4).all_params()


def test_trial_params_do_not_depend_on_earlier_trials() -> None:
    space = {"lr": {"low": 1e-6, "high": 1e-3, "log": True}, "activation": {"values": ["relu", "tanh"]}}
    full = sampler(space, trials=50).all_params()
    alone = sampler(space, trials=50)
    assert alone.params(37) == full[37]  # asked first, without trials 0-36
    assert sampler(space, trials=10).params(7) == full[7]  # the trial count does not matter either


def test_grid_is_even_in_log_space() -> None:
    s = sampler({"lr": {"low": 1e-4, "high": 1e-1, "log": True}}, trials=4, kind="grid")
    assert [p["lr"] for p in s.all_params()] == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1])


def test_grid_product_within_budget() -> None:
    space = {
        "lr": {"low": 1e-4, "high": 1e-1, "log": True},
        "weight_decay": {"low": 0.0, "high": 1e-2},
        "activation": {"values": ["relu", "tanh"]},
    }
    s = sampler(space, trials=18, kind="grid")
    grid = s.all_params()
    assert len(grid) == 18  # 2 activations x 3 lr x 3 weight decay
    assert sorted({p["weight_decay"] for p in grid}) == pytest.approx([0.0, 5e-3, 1e-2])
    assert len({tuple(sorted((k, str(v)) for k, v in p.items())) for p in grid}) == 18


def test_grid_larger_than_trials_is_an_error() -> None:
    with pytest.raises(SpecError, match="search.trials: the grid has 12 points but trials is 5"):
        sampler(
            {
                "lr": {"low": 1e-4, "high": 1e-1, "log": True, "points": 4},
                "activation": {"values": ["relu", "tanh", "elu"]},
            },
            trials=5,
            kind="grid",
        )


def grid_spec(space: dict, trials: int) -> Spec:
    return parse_spec({"name": "g", "search": {"trials": trials, "sampler": "grid", "space": space}})


LR = {"low": 1e-4, "high": 1e-1, "log": True}
WD = {"low": 1e-6, "high": 1e-2, "log": True}


def test_grid_that_leaves_an_axis_below_three_points_is_refused() -> None:
    # --trials 5 on a 2-D grid used to give the 4 corners: both edges flagged, nothing inside.
    with pytest.raises(SpecError) as info:
        trial_configs(grid_spec({"lr": LR, "weight_decay": WD}, trials=5), "configs/g.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("configs/g.yaml: search.trials: 5 trials leave 2 grid points on lr and weight_decay")
    assert "3 points on each needs 9 trials" in message


def test_grid_budget_that_would_collapse_a_free_axis_to_one_value_is_refused() -> None:
    # 4 trials with points: 3 on lr left weight_decay one value, its midpoint: never searched.
    with pytest.raises(
        SpecError, match=r"search.trials: 4 trials leave 1 grid point on weight_decay; .*needs 9 trials"
    ):
        trial_configs(grid_spec({"lr": {**LR, "points": 3}, "weight_decay": WD}, trials=4))


def test_grid_points_two_asked_for_explicitly_is_allowed() -> None:
    space = {"lr": {**LR, "points": 2}, "weight_decay": {**WD, "points": 2}}
    configs = trial_configs(grid_spec(space, trials=4))
    assert sorted({c.params["lr"] for c in configs}) == pytest.approx([1e-4, 1e-1])
    assert sorted({c.params["weight_decay"] for c in configs}) == pytest.approx([1e-6, 1e-2])
    assert len(configs) == 4


def test_describe_grid_says_what_it_built_and_why() -> None:
    spec = grid_spec({"lr": LR, "weight_decay": WD}, trials=10)
    assert describe_grid(spec.search) == (
        "grid: lr 3 points x weight_decay 3 points = 9 trials "
        "(search.trials 10: 1 unused; 4 points on each of lr, weight_decay would need 16)"
    )
    assert len(trial_configs(spec)) == 9  # what it says is what trains


def test_describe_grid_names_values_and_set_points() -> None:
    spec = grid_spec({"activation": {"values": ["relu", "tanh"]}, "lr": {**LR, "points": 4}}, trials=8)
    assert describe_grid(spec.search) == "grid: activation 2 values x lr 4 points (set) = 8 trials (search.trials 8)"


def test_an_integer_range_with_two_values_is_covered_by_two_points() -> None:
    # epochs 1..2 holds two integers: the rest of the budget goes to lr, not an equal share of 2 each.
    spec = grid_spec({"epochs": {"low": 1, "high": 2}, "lr": LR}, trials=6)
    assert (
        describe_grid(spec.search) == "grid: epochs 2 points (every integer) x lr 3 points = 6 trials (search.trials 6)"
    )
    assert sorted({c.params["epochs"] for c in trial_configs(spec)}) == [1, 2]


def test_describe_grid_is_none_for_random_search() -> None:
    spec = parse_spec({"name": "r", "search": {"trials": 5, "space": {"lr": LR}}})
    assert describe_grid(spec.search) is None


def test_describe_grid_of_a_refused_grid_raises_the_same_error() -> None:
    with pytest.raises(SpecError, match=r"^configs/g.yaml: search.trials: 5 trials leave 2 grid points"):
        describe_grid(grid_spec({"lr": LR, "weight_decay": WD}, trials=5).search, "configs/g.yaml")


def test_a_search_of_nothing_with_several_trials_is_refused() -> None:
    spec = parse_spec({"name": "e", "search": {"trials": 5}})
    with pytest.raises(SpecError) as info:
        trial_configs(spec, "configs/e.yaml")
    message = str(info.value)
    assert message.startswith("configs/e.yaml: search.space: nothing is searched, so the 5 trials would train")
    assert "search.trials: 1" in message  # the way to ask for one baseline


def test_a_search_of_single_values_is_refused_too() -> None:
    space = {"activation": {"values": ["tanh"]}, "hidden": {"values": [[64]]}}
    spec = parse_spec({"name": "e", "search": {"trials": 3, "space": space}})
    with pytest.raises(SpecError, match=r"search.space: every searched parameter has one value \(activation, hidden\)"):
        trial_configs(spec)


def test_one_trial_of_nothing_is_a_baseline_and_allowed() -> None:
    (config,) = trial_configs(parse_spec({"name": "b", "search": {"trials": 1}}))
    assert config.params == {}


def test_a_planner_that_dedups_may_plan_one_configuration() -> None:
    # Refine narrows a categorical to the one value its top trials used, and trains it once.
    spec = parse_spec({"name": "e", "search": {"trials": 3, "space": {"activation": {"values": ["tanh"]}}}})
    assert len(trial_configs(spec, one_config_ok=True)) == 3
