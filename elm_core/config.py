"""The ELM Network's configuration (docs/science.md section 2) and its per-layer geometry.

`ELMConfig` is what a user chooses: task sizes, N, per-neuron complexity and connectivity.
`LayerSpec` is one layer fully resolved (the hidden layer and the readout layer differ in d_m,
l_mlp, high-pass and activation); `ELMConfig.layers()` derives both. Reference vector files carry
their own per-layer geometry, so `elm_core.interop` builds LayerSpecs directly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal


def _check(name: str, ok: bool, value: Any, what: str) -> None:
    if not ok:
        raise ValueError(f"invalid {name}={value!r}: {what}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of ELM neurons, every setting resolved."""

    n_in: int  # feed-forward inputs (I); the recurrent source is this layer's own activity
    n_neurons: int  # N
    d_m: int  # memory units per neuron
    l_mlp: int  # hidden layers of the per-neuron MLP (0 = one affine map)
    d_mlp: int  # hidden width of the per-neuron MLP
    d_tree: int  # branches per neuron
    d_brch: int  # synapses per branch
    p_rec: float  # probability that a synapse is recurrent
    input_scale: float = 10.0
    lam: float = 5.0  # kappa_lam = exp(-dt * lam / tau_m)
    tau_min: float = 1.0
    tau_max: float = 100.0
    tau_r: float | None = None  # high-pass time constant; None = no high-pass
    activation: Literal["relu", "identity"] = "relu"
    dt: float = 1.0
    tau_range_scale: float = 10.0  # tau_m is bounded to [tau_min / s, tau_max * sqrt(s)]

    @property
    def d_s(self) -> int:
        """Synapses per neuron, d_tree * d_brch."""
        return self.d_tree * self.d_brch

    @property
    def mlp_dims(self) -> list[tuple[int, int]]:
        """(in, out) of each Linear of the per-neuron MLP."""
        widths = [self.d_tree + self.d_m] + [self.d_mlp] * self.l_mlp + [self.d_m]
        return list(zip(widths[:-1], widths[1:], strict=True))

    def params_per_neuron(self) -> int:
        """Trainable parameters of one neuron: w_s, the MLP (weights and biases), w_y and b
        (the closed form `elm_core.budget.neuron_params`)."""
        from elm_core.budget import neuron_params  # budget builds on this module

        return int(neuron_params(self.d_m, self.l_mlp, self.d_mlp, self.d_tree, self.d_brch))


@dataclass(frozen=True)
class ELMConfig:
    """A two-layer ELM Network: N hidden ELM neurons, n_out readout ELM neurons, a dense output.

    Defaults are the reference's enwik8 layer settings (docs/science.md section 4) with its
    204-symbol vocabulary, so that `allocate(budget, d_m=...)` reproduces the published sweep.
    """

    n_in: int = 204
    n_out: int = 204
    n_neurons: int = 256
    d_m: int = 15
    l_mlp: int = 1
    d_mlp: int | None = None  # None = 2 * d_m
    d_tree: int = 50
    d_brch: int = 15
    p_rec: float = 0.8
    input_scale: float = 10.0
    lam: float = 5.0
    tau_min: float = 0.1
    tau_max: float = 100.0
    tau_r: float | None = 2.0  # None = no high-pass
    readout_d_m: int = 3
    input_dropout: float = 0.0  # variational dropout on the input, training only
    recurrent_dropout: float = 0.0  # variational dropout on a_{t-1}, training only
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_in", "n_out", "n_neurons", "d_m", "d_tree", "d_brch", "readout_d_m"):
            v = getattr(self, name)
            _check(name, _is_int(v) and v >= 1, v, "must be a positive integer")
        _check("l_mlp", _is_int(self.l_mlp) and self.l_mlp >= 0, self.l_mlp, "must be an integer >= 0")
        if self.d_mlp is not None:
            _check("d_mlp", _is_int(self.d_mlp) and self.d_mlp >= 1, self.d_mlp, "must be a positive integer")
        _check("seed", _is_int(self.seed), self.seed, "must be an integer")
        _check("p_rec", _is_real(self.p_rec) and 0.0 <= self.p_rec <= 1.0, self.p_rec, "must lie in [0, 1]")
        for name in ("input_scale", "lam", "tau_min", "tau_max"):
            v = getattr(self, name)
            _check(name, _is_real(v) and v > 0, v, "must be a finite number > 0")
        _check("tau_max", self.tau_min < self.tau_max, self.tau_max, f"must exceed tau_min={self.tau_min}")
        if self.tau_r is not None:
            _check("tau_r", _is_real(self.tau_r) and self.tau_r > 0, self.tau_r, "must be > 0 or None")
        for name in ("input_dropout", "recurrent_dropout"):
            v = getattr(self, name)
            _check(name, _is_real(v) and 0.0 <= v < 1.0, v, "must lie in [0, 1)")

    # --- derived sizes -------------------------------------------------------------------------
    @property
    def d_mlp_eff(self) -> int:
        return 2 * self.d_m if self.d_mlp is None else self.d_mlp

    @property
    def d_s(self) -> int:
        return self.d_tree * self.d_brch

    @property
    def k_c(self) -> int:
        """Per-neuron connectivity: one weight per connection, k_c = d_s."""
        return self.d_s

    @property
    def k_e(self) -> int:
        """Per-neuron effective complexity: all other per-neuron parameters (memory, MLP, readout)."""
        return self.hidden().params_per_neuron() - self.d_s

    def hidden(self) -> LayerSpec:
        return LayerSpec(
            n_in=self.n_in,
            n_neurons=self.n_neurons,
            d_m=self.d_m,
            l_mlp=self.l_mlp,
            d_mlp=self.d_mlp_eff,
            d_tree=self.d_tree,
            d_brch=self.d_brch,
            p_rec=self.p_rec,
            input_scale=self.input_scale,
            lam=self.lam,
            tau_min=self.tau_min,
            tau_max=self.tau_max,
            tau_r=self.tau_r,
            activation="relu",
        )

    def readout(self) -> LayerSpec:
        """n_out readout neurons: d_m = readout_d_m, l_mlp = 0, no high-pass, identity, fed by a_t only."""
        return LayerSpec(
            n_in=self.n_neurons,
            n_neurons=self.n_out,
            d_m=self.readout_d_m,
            l_mlp=0,
            d_mlp=2 * self.readout_d_m,
            d_tree=self.d_tree,
            d_brch=self.d_brch,
            p_rec=0.0,
            input_scale=self.input_scale,
            lam=self.lam,
            tau_min=self.tau_min,
            tau_max=self.tau_max,
            tau_r=None,
            activation="identity",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ELMConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ELMConfig field(s): {', '.join(unknown)}")
        return cls(**data)

    def replace(self, **changes: Any) -> ELMConfig:
        return ELMConfig.from_dict({**self.to_dict(), **changes})
