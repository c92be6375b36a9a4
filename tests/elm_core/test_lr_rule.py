"""The fan-in learning-rate rule: wide neurons get smaller steps, every parameter is trained exactly once."""

from __future__ import annotations

import pytest

from elm_core.config import ELMConfig
from elm_core.lr_rule import FAN_IN_REF, param_groups
from elm_core.model import ELMNetwork
from elm_core.spec import RunSpec


def _net(d_m: int, l_mlp: int = 1) -> ELMNetwork:
    return ELMNetwork(ELMConfig(n_in=10, n_out=5, n_neurons=6, d_m=d_m, d_tree=16, d_brch=8, l_mlp=l_mlp))


def _lr_of(groups, param) -> float:
    (lr,) = [g["lr"] for g in groups if any(p is param for p in g["params"])]
    return lr


@pytest.mark.parametrize("l_mlp", [0, 1, 2])
def test_every_trainable_parameter_is_in_exactly_one_group(l_mlp):
    net = _net(32, l_mlp)
    groups = param_groups(net, 1e-3, "fan-in")
    ids = [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in net.parameters() if p.requires_grad}


def test_wide_neurons_get_a_learning_rate_inverse_to_their_fan_in():
    wide, narrow = _net(32), _net(2)
    g = param_groups(wide, 1e-3, "fan-in")
    assert _lr_of(g, wide.hidden.mlp_w[0]) == pytest.approx(1e-3 * FAN_IN_REF / (16 + 32))
    assert _lr_of(g, wide.hidden.mlp_w[1]) == pytest.approx(1e-3 * FAN_IN_REF / 64)  # d_mlp = 2 d_m
    assert _lr_of(g, wide.hidden.w_y) == pytest.approx(1e-3 * min(1, FAN_IN_REF / 32))
    assert _lr_of(g, wide.hidden.b) == 1e-3  # vectors keep the base rate
    assert _lr_of(g, wide.out.weight) == 1e-3
    g = param_groups(narrow, 1e-3, "fan-in")  # narrow neurons are capped at the base rate, never above
    assert all(grp["lr"] == 1e-3 for grp in g)


def test_constant_rule_and_unknown_rule():
    net = _net(8)
    (group,) = param_groups(net, 2e-3, "constant")
    assert group["lr"] == 2e-3
    with pytest.raises(ValueError, match="lr_rule"):
        param_groups(net, 1e-3, "sqrt")


def test_the_cpu_preset_uses_the_fan_in_budget_rule_and_specs_can_override_it():
    assert RunSpec(task="text", preset="cpu", budget=100_000, d_m=8).protocol("char")["lr_rule"] == "fan-in-budget"
    assert RunSpec(task="text", preset="small", budget=60_000, d_m=8).protocol("char")["lr_rule"] is None
    spec = RunSpec(task="text", preset="cpu", budget=100_000, d_m=8, lr_rule="constant")
    assert spec.protocol("char")["lr_rule"] == "constant"


def test_budget_scale_is_two_at_40k_one_at_113k_and_monotone_between():
    from elm_core.lr_rule import budget_scale

    assert budget_scale(40_000) == 2.0 and budget_scale(10_000) == 2.0
    assert budget_scale(113_000) == 1.0 and budget_scale(2_000_000) == 1.0
    between = [budget_scale(p) for p in range(40_000, 113_001, 7_300)]
    assert all(a > b for a, b in zip(between, between[1:], strict=False))
    # log-linear in log P: the geometric midpoint of the budgets gets the geometric midpoint of the factors
    assert budget_scale(int(round((40_000 * 113_000) ** 0.5))) == pytest.approx(2**0.5, rel=1e-4)


def test_fan_in_budget_rule_is_the_fan_in_rule_on_a_budget_scaled_base():
    net = _net(32)
    fan_in = param_groups(net, 5e-3, "fan-in")
    at_40k = param_groups(net, 5e-3, "fan-in-budget", 40_000)
    at_320k = param_groups(net, 5e-3, "fan-in-budget", 320_000)
    assert [g["lr"] for g in at_40k] == pytest.approx([2 * g["lr"] for g in fan_in])
    assert [g["lr"] for g in at_320k] == pytest.approx([g["lr"] for g in fan_in])
    with pytest.raises(ValueError, match="budget"):
        param_groups(net, 5e-3, "fan-in-budget")


def test_a_cpu_run_at_40k_trains_with_twice_the_base_rate(monkeypatch):
    """The rate reaches the optimizer: a 40k `cpu` run's groups start at 1e-2, a 113k run's at 5e-3."""
    from elm_core import train as train_mod

    seen = []
    real = train_mod.make_optimizer

    def spy(name, groups, lr):
        seen.append(max(g["lr"] for g in groups))
        return real(name, groups, lr)

    monkeypatch.setattr(train_mod, "make_optimizer", spy)
    for budget in (40_000, 113_000):
        spec = RunSpec(task="text", preset="cpu", budget=budget, d_m=4, steps=1, eval_chars=200, test_chars=200)
        assert train_mod.train(spec).status == "done"
    assert seen == pytest.approx([1e-2, 5e-3])
