"""Exact parameter budget, allocation along iso-budget curves, and FLOPs (docs/science.md section 3).

Hidden neuron   P_h = d_s + d_mlp (d_tree + d_m + 1) + (l_mlp - 1) d_mlp (d_mlp + 1) + d_m (d_mlp + 1) + d_m + 1
                (l_mlp = 0: P_h = d_s + d_m (d_tree + d_m + 1) + d_m + 1)
Readout neuron  P_r = d_s + r (d_tree + r + 1) + r + 1           (r = readout_d_m; r = 3 gives 3 (d_tree + 4) + 4)
Network         P   = N P_h + n_out P_r + n_out^2 + n_out
tau_m and the connectome are frozen and not counted.  k_c = d_s,  k_e = P_h - d_s.
"""

from __future__ import annotations

from typing import Any

from elm_core.config import ELMConfig, LayerSpec


def count_params(cfg: ELMConfig) -> int:
    """Trainable parameters of `ELMNetwork(cfg)`, in closed form."""
    fixed = cfg.n_out * cfg.readout().params_per_neuron() + cfg.n_out * cfg.n_out + cfg.n_out
    return cfg.n_neurons * cfg.hidden().params_per_neuron() + fixed


def breakdown(cfg: ELMConfig) -> dict[str, int]:
    """Where the parameters go: hidden synapses, hidden MLP, hidden memory readout (w_y, b), readout layer."""
    h = cfg.hidden()
    mlp = sum(o * (i + 1) for i, o in h.mlp_dims)
    return {
        "synapses": cfg.n_neurons * h.d_s,
        "mlp": cfg.n_neurons * mlp,
        "neuron_readout": cfg.n_neurons * (h.d_m + 1),
        "readout_layer": cfg.n_out * cfg.readout().params_per_neuron() + cfg.n_out * (cfg.n_out + 1),
    }


def _layer_flops(s: LayerSpec) -> int:
    """Forward FLOPs per time step per sample of one layer (a multiply-add counts 2)."""
    synapse = 2 * s.d_s + s.d_tree  # weighted gather + branch sums, input_scale
    mlp = sum(2 * i * o + o for i, o in s.mlp_dims) + 2 * s.d_mlp * s.l_mlp  # affine maps, ReLU^2
    memory = s.d_m + 4 * s.d_m + 2 * s.d_m  # decay; tanh update (~4); accumulate
    readout = 2 * s.d_m + (4 if s.tau_r is not None else 0) + 2  # w_y . m, high-pass, bias + act
    return s.n_neurons * (synapse + mlp + memory + readout)


def flops_per_step(cfg: ELMConfig) -> int:
    """Forward FLOPs per time step per sample: both ELM layers plus the output Linear (2 n_out^2 + n_out).

    Per neuron: synapses 2 d_s + d_tree; MLP sum(2 in out + out) + 2 d_mlp l_mlp (ReLU squared);
    memory 7 d_m; readout 2 d_m + 2, plus 4 with a high-pass. A backward pass costs about twice this.
    """
    return _layer_flops(cfg.hidden()) + _layer_flops(cfg.readout()) + 2 * cfg.n_out**2 + cfg.n_out


def _fixed_and_per_neuron(cfg: ELMConfig) -> tuple[int, int]:
    per_neuron = cfg.hidden().params_per_neuron()
    return count_params(cfg) - cfg.n_neurons * per_neuron, per_neuron


def _describe(fixed: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in fixed.items() if k in ("d_m", "n_neurons", "d_tree", "d_brch"))


def allocate(budget: int | float, **fixed: Any) -> ELMConfig:
    """The configuration that spends the most of `budget` with the given split fixed.

    With `d_m` fixed (or defaulted) and no `n_neurons`: the largest N with count_params <= budget
    (the count is linear in N, so N = floor((budget - fixed part) / P_h)).
    With `n_neurons` fixed and no `d_m`: the largest d_m with count_params <= budget (the count grows
    with d_m at fixed N; d_mlp follows d_m unless given).
    Any other ELMConfig field may be passed through `fixed` (n_in, n_out, d_tree, d_brch, ...).
    """
    budget = _check_budget(budget)
    if "n_neurons" in fixed and "d_m" not in fixed:
        return _allocate_d_m(budget, fixed)
    fixed = {k: v for k, v in fixed.items() if k != "n_neurons"} if "d_m" in fixed else dict(fixed)
    cfg = ELMConfig(**{**fixed, "n_neurons": 1})
    base, per_neuron = _fixed_and_per_neuron(cfg)
    fixed_split = {k: v for k, v in cfg.to_dict().items() if k != "n_neurons"}
    n = (budget - base) // per_neuron
    if n < 1:
        raise ValueError(
            f"budget {budget:,} is too small for {_describe(fixed_split)}: one neuron needs "
            f"{base + per_neuron:,} parameters (minimum budget {base + per_neuron:,})"
        )
    return cfg.replace(n_neurons=int(n))


def _allocate_d_m(budget: int, fixed: dict[str, Any]) -> ELMConfig:
    smallest = ELMConfig(**{**fixed, "d_m": 1})
    if count_params(smallest) > budget:
        need = count_params(smallest)
        raise ValueError(
            f"budget {budget:,} is too small for n_neurons={fixed['n_neurons']}: even d_m=1 needs "
            f"{need:,} parameters (minimum budget {need:,})"
        )
    lo, hi = 1, 2
    while count_params(smallest.replace(d_m=hi)) <= budget:  # exponential search, then bisection
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count_params(smallest.replace(d_m=mid)) <= budget else (lo, mid)
    return smallest.replace(d_m=lo)


def iso_budget(budget: int | float, d_m_values: list[int] | tuple[int, ...], **fixed: Any) -> list[ELMConfig]:
    """Configurations along one iso-budget curve: for each d_m, the largest N within `budget`.

    Values of d_m for which not even one neuron fits are left out (ValueError if none fits).
    """
    configs, errors = [], []
    for d_m in d_m_values:
        try:
            configs.append(allocate(budget, **{**fixed, "d_m": int(d_m)}))
        except ValueError as exc:
            errors.append(str(exc))
    if not configs:
        raise ValueError(errors[0] if errors else "no d_m values given")
    return configs


def _check_budget(budget: Any) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or budget != budget:
        raise ValueError(f"invalid budget={budget!r}: must be a positive number of parameters")
    if budget <= 0 or budget == float("inf"):
        raise ValueError(f"invalid budget={budget!r}: must be a positive, finite number of parameters")
    return int(budget)
