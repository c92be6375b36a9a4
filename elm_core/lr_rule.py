"""Learning rate per parameter from the configuration, so that allocations are compared fairly.

Along an iso-budget curve d_m runs from 2 to 64, so each neuron's MLP goes from 4 to 128 units wide,
while N runs the other way. One learning rate for all of them favours whichever end it was tuned at.
The `fan-in` rule follows the Adam learning-rate scaling of the maximal-update parametrisation
(Yang et al. 2022, "Tensor Programs V", arXiv 2203.03466, table 3): a weight matrix whose fan-in grows
with the width gets a learning rate inversely proportional to its fan-in; vectors (biases, thresholds)
keep the base rate. Per weight matrix of an ELM layer:

    lr(W) = lr * min(1, FAN_IN_REF / fan_in(W))

with fan_in = d_tree + d_m for the MLP's first layer, d_mlp for its later layers, d_m for the memory
readout w_y, and d_brch for the synapse weights w_s (each branch sums d_brch synapses). FAN_IN_REF = 24
is the first-layer fan-in of the preset's reference neuron (d_tree 16, d_m 8), where the base rate was
tuned; narrower neurons keep the base rate (the cap: the rule only slows the wide ones down). The
readout layer (d_m 3) and the dense output layer have fixed fan-ins and keep the base rate.
`constant` gives every parameter the base rate.

`fan-in-budget` (the `cpu` preset's) is the fan-in rule on a base rate that also follows the budget P
(the spec's budget; the counted parameters when it names none):

    base rate = lr * budget_scale(P);  budget_scale: 2 at P <= 40k, 1 at P >= 113k, log-linear in log P

Its source is this project's own measurement (docs/science.md, "Sensitivity to the base rate"): with
the `cpu` protocol the preset's 5e-3 is the best of 2.5e-3 / 5e-3 / 1e-2 at 113k, while at 40k 1e-2
trains every allocation 0.01-0.04 BPC better than 5e-3 on validation (and better than 2e-2: "The check
under the budget rule"). The direction agrees with the fitted optimal rates of language-model scaling
studies, which fall as the model grows (Kaplan et al. 2020, arXiv 2001.08361, eq. D.1). Outside the
two measured budgets the factor is held at its end value rather than extrapolated.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from torch import nn

from elm_core.layer import ELMLayer

Rule = Literal["constant", "fan-in", "fan-in-budget"]
RULES: tuple[str, ...] = ("constant", "fan-in", "fan-in-budget")
FAN_IN_REF = 24
# (budget, factor on the base rate) at the two budgets where the base rate was measured.
BUDGET_ANCHORS = ((40_000, 2.0), (113_000, 1.0))


def scale(fan_in: int) -> float:
    return min(1.0, FAN_IN_REF / fan_in)


def budget_scale(params: int) -> float:
    """The factor on the base rate at `params` parameters (the `fan-in-budget` rule)."""
    (p_lo, f_lo), (p_hi, f_hi) = BUDGET_ANCHORS
    if params <= p_lo:
        return f_lo
    if params >= p_hi:
        return f_hi
    t = math.log(params / p_lo) / math.log(p_hi / p_lo)
    return math.exp((1 - t) * math.log(f_lo) + t * math.log(f_hi))


def base_lr(lr: float, rule: Rule, params: int | None) -> float:
    """The base rate a rule starts from: `lr`, times the budget's factor under `fan-in-budget`."""
    if rule != "fan-in-budget":
        return lr
    if params is None:
        raise ValueError("lr_rule fan-in-budget: needs the run's budget or parameter count")
    return lr * budget_scale(params)


def layer_groups(layer: ELMLayer, lr: float) -> list[dict[str, Any]]:
    """Parameter groups of one ELM layer under the fan-in rule."""
    s = layer.spec
    groups = [
        {"params": [layer.w_s], "lr": lr * scale(s.d_brch)},
        {"params": [layer.w_y], "lr": lr * scale(s.d_m)},
        {"params": [layer.b, *layer.mlp_b], "lr": lr},
    ]
    for (fan_in, _), w in zip(s.mlp_dims, layer.mlp_w, strict=True):
        groups.append({"params": [w], "lr": lr * scale(fan_in)})
    return groups


def param_groups(
    model: nn.Module, lr: float, rule: Rule = "constant", params: int | None = None
) -> list[dict[str, Any]]:
    """Optimizer parameter groups for `model` under `rule`; every trainable parameter exactly once.

    `params` is the budget the `fan-in-budget` rule scales by (unused by the other rules)."""
    if rule not in RULES:
        raise ValueError(f"lr_rule: must be one of {', '.join(RULES)}, not {rule!r}")
    lr = base_lr(lr, rule, params)
    if rule == "constant":
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": lr}]
    groups: list[dict[str, Any]] = []
    covered: set[int] = set()
    for module in model.modules():
        if isinstance(module, ELMLayer):
            for g in layer_groups(module, lr):
                groups.append(g)
                covered.update(id(p) for p in g["params"])
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in covered]
    if rest:
        groups.append({"params": rest, "lr": lr})
    return groups
