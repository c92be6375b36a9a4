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
"""

from __future__ import annotations

from typing import Any, Literal

from torch import nn

from elm_core.layer import ELMLayer

Rule = Literal["constant", "fan-in"]
RULES: tuple[str, ...] = ("constant", "fan-in")
FAN_IN_REF = 24


def scale(fan_in: int) -> float:
    return min(1.0, FAN_IN_REF / fan_in)


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


def param_groups(model: nn.Module, lr: float, rule: Rule = "constant") -> list[dict[str, Any]]:
    """Optimizer parameter groups for `model` under `rule`; every trainable parameter exactly once."""
    if rule not in RULES:
        raise ValueError(f"lr_rule: must be one of {', '.join(RULES)}, not {rule!r}")
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
