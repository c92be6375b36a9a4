"""Exact parameter budget, allocation along iso-budget curves, and FLOPs (docs/science.md section 3).

The one home of the parameter arithmetic: the config's per-neuron count, allocation, the analysis
frames and the dashboard all call the closed forms below. With d_s = d_tree d_brch:

Hidden neuron   P_h = d_s + d_mlp (d_tree + d_m + 1) + (l_mlp - 1) d_mlp (d_mlp + 1) + d_m (d_mlp + 1) + d_m + 1
                (l_mlp = 0: P_h = d_s + d_m (d_tree + d_m + 1) + d_m + 1)
Readout neuron  P_r = P_h at d_m = r, l_mlp = 0                  (r = readout_d_m; r = 3 gives d_s + 3 (d_tree + 4) + 4)
Network         P   = N P_h + n_out P_r + n_out^2 + n_out
tau_m and the connectome are frozen and not counted.  k_c = d_s,  k_e = P_h - d_s.
The closed forms take NumPy arrays or scalars (broadcast together) and give the broadcast shape back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from elm_core.config import ELMConfig, LayerSpec

ArrayLike = np.ndarray | float | int

# The budget each preset is usually run at (the dashboard's default for a preset).
PRESET_BUDGET: dict[str, int] = {
    "small": 60_000,
    "cpu": 100_000,
    "enwik8-paper": 3_500_000,
    "adding-small": 40_000,
    "adding-cpu": 50_000,
    "shd-adding-paper": 77_000,
}


def neuron_params(d_m: ArrayLike, l_mlp: ArrayLike, d_mlp: ArrayLike, d_tree: ArrayLike, d_brch: ArrayLike) -> Any:
    """P_h, trainable parameters of one neuron (module docstring): w_s, the per-neuron MLP's weights
    and biases (widths d_tree + d_m, then l_mlp times d_mlp, then d_m), w_y and b. d_mlp is unused
    when l_mlp = 0."""
    d_m, l_mlp, d_mlp, d_tree, d_brch = (np.asarray(v) for v in (d_m, l_mlp, d_mlp, d_tree, d_brch))
    deep = d_mlp * (d_tree + d_m + 1) + (l_mlp - 1) * d_mlp * (d_mlp + 1) + d_m * (d_mlp + 1)
    linear = d_m * (d_tree + d_m + 1)
    return d_tree * d_brch + np.where(l_mlp >= 1, deep, linear) + d_m + 1


def neuron_counts(
    d_m: ArrayLike, l_mlp: ArrayLike, d_mlp: ArrayLike, d_tree: ArrayLike, d_brch: ArrayLike
) -> tuple[Any, Any]:
    """(k_e, k_c) per hidden neuron: k_c = d_tree d_brch (one weight per connection), k_e = P_h - k_c."""
    k_c = np.asarray(d_tree) * np.asarray(d_brch)
    return neuron_params(d_m, l_mlp, d_mlp, d_tree, d_brch) - k_c, k_c


def readout_params(n_out: ArrayLike, d_tree: ArrayLike, d_brch: ArrayLike, readout_d_m: ArrayLike = 3) -> Any:
    """Parameters outside the hidden layer: n_out P_r + n_out^2 + n_out (0 when n_out = 0)."""
    n_out = np.asarray(n_out)
    return n_out * neuron_params(readout_d_m, 0, 0, d_tree, d_brch) + n_out * n_out + n_out


def network_params(
    n_neurons: ArrayLike,
    d_m: ArrayLike,
    l_mlp: ArrayLike,
    d_mlp: ArrayLike,
    d_tree: ArrayLike,
    d_brch: ArrayLike,
    n_out: ArrayLike,
    readout_d_m: ArrayLike = 3,
) -> Any:
    """P = N P_h + n_out P_r + n_out^2 + n_out, the trainable parameters of a whole network."""
    per_neuron = neuron_params(d_m, l_mlp, d_mlp, d_tree, d_brch)
    return np.asarray(n_neurons) * per_neuron + readout_params(n_out, d_tree, d_brch, readout_d_m)


def count_params(cfg: ELMConfig) -> int:
    """Trainable parameters of `ELMNetwork(cfg)`, in closed form."""
    neuron = (cfg.d_m, cfg.l_mlp, cfg.d_mlp_eff, cfg.d_tree, cfg.d_brch)
    return int(network_params(cfg.n_neurons, *neuron, cfg.n_out, cfg.readout_d_m))


def breakdown(cfg: ELMConfig) -> dict[str, int]:
    """Where the parameters go: hidden synapses, hidden MLP, hidden memory readout (w_y, b), readout layer."""
    per_neuron = cfg.hidden().params_per_neuron()
    return {
        "synapses": cfg.n_neurons * cfg.d_s,
        "mlp": cfg.n_neurons * (per_neuron - cfg.d_s - cfg.d_m - 1),
        "neuron_readout": cfg.n_neurons * (cfg.d_m + 1),
        "readout_layer": int(readout_params(cfg.n_out, cfg.d_tree, cfg.d_brch, cfg.readout_d_m)),
    }


def neurons_for_budget(
    budget: ArrayLike,
    d_m: ArrayLike,
    *,
    l_mlp: int = 1,
    d_mlp_ratio: float = 2.0,
    d_tree: int = 50,
    d_brch: int = 15,
    n_out: int = 0,
    readout_d_m: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, k_e, k_c) that spend at most `budget` at memory size d_m, as floats:
    N = max(1, floor((P - n_out P_r - n_out^2 - n_out) / P_h)) with d_mlp = max(1, round(d_mlp_ratio d_m)),
    the same N as `allocate` (n_out = 0: no readout layer, the whole budget is hidden)."""
    d_m = np.asarray(d_m, dtype=float)
    d_mlp = np.maximum(1.0, np.round(d_mlp_ratio * d_m))
    k_e, k_c = neuron_counts(d_m, l_mlp, d_mlp, d_tree, d_brch)
    hidden = np.asarray(budget, dtype=float) - readout_params(n_out, d_tree, d_brch, readout_d_m)
    n = np.maximum(1.0, np.floor(hidden / (k_e + k_c)))
    return n, k_e, np.broadcast_to(np.asarray(k_c, dtype=float), n.shape).astype(float)


def d_m_for_k_e(k_e: ArrayLike, *, l_mlp: int = 1, d_mlp_ratio: float = 2.0, d_tree: int = 50) -> np.ndarray:
    """The (real-valued) memory size d_m whose neuron has complexity k_e, with d_mlp = r d_m:
    k_e = a d_m^2 + b d_m + 1 with a = 2r + (l_mlp - 1) r^2, b = r (d_tree + 1) + 2 + (l_mlp - 1) r
    (l_mlp >= 1), or a = 1, b = d_tree + 2 (l_mlp = 0); the positive root. Maps k_e* from the scaling
    law or the capacity model back to d_m."""
    k_e = np.asarray(k_e, dtype=float)
    r = d_mlp_ratio
    if l_mlp >= 1:
        a, b = 2 * r + (l_mlp - 1) * r * r, r * (d_tree + 1) + 2 + (l_mlp - 1) * r
    else:
        a, b = 1.0, d_tree + 2.0
    return (-b + np.sqrt(b * b + 4 * a * (k_e - 1))) / (2 * a)


def d_brch_for_budget(budget: int, cfg: ELMConfig) -> int:
    """The largest d_brch with count_params <= budget, every other field of `cfg` fixed. The count is
    linear in d_brch (d_tree d_brch synapses per hidden and per readout neuron):
    P(d_brch) = P(1) + (d_brch - 1) d_tree (N + n_out)."""
    c1 = count_params(cfg.replace(d_brch=1))
    if c1 > budget:
        raise ValueError(
            f"budget {budget:,} is too small for n_neurons={cfg.n_neurons}, d_m={cfg.d_m}, "
            f"d_tree={cfg.d_tree}: even d_brch=1 needs {c1:,} parameters"
        )
    return 1 + (budget - c1) // (cfg.d_tree * (cfg.n_neurons + cfg.n_out))


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
    """(parameters outside the hidden layer, P_h)."""
    return int(readout_params(cfg.n_out, cfg.d_tree, cfg.d_brch, cfg.readout_d_m)), cfg.hidden().params_per_neuron()


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
