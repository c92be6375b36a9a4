"""A layer of ELM neurons: its parameters and the per-step computation (docs/science.md section 2).

The order of operations is pinned by the reference test vectors (elm_core/reference_data/FORMAT.md).
Per-neuron weights are stacked over neurons and every step is a handful of batched tensor operations;
there is no Python loop over neurons.

Layout: inside the time loop every tensor is feature-first with the batch last, e.g. the memory is
(N, d_m, B). The per-neuron MLP is then one `baddbmm` per Linear with the neuron axis as the batch
of matrices: W (N, out, in) @ h (N, in, B).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from elm_core.config import LayerSpec

TANH_GAIN, TANH_SLOPE = 1.7159, 2.0 / 3.0  # the memory nonlinearity g(v) = 1.7159 tanh(2 v / 3)


def tau_m_init(spec: LayerSpec) -> Tensor:
    """Memory time constants: logspace(tau_min, tau_max, d_m) through the reference's scaled sigmoid.

    tau = lb + (ub - lb) sigmoid(raw), raw = log((tau0 - lb) / (ub - tau0)), lb = tau_min / s, ub = tau_max sqrt(s).
    """
    lb, ub = spec.tau_min / spec.tau_range_scale, spec.tau_max * math.sqrt(spec.tau_range_scale)
    tau0 = torch.logspace(math.log10(spec.tau_min), math.log10(spec.tau_max), spec.d_m, dtype=torch.float64)
    tau0 = tau0.clamp(lb + 1e-6, ub - 1e-6)
    raw = torch.log((tau0 - lb) / (ub - tau0))
    return lb + (ub - lb) * torch.sigmoid(raw)


def sample_connectome(spec: LayerSpec, gen: torch.Generator) -> Tensor:
    """(N, d_s) indices into concat(u_t, a_{t-1}): recurrent with probability p_rec, uniform within a block."""
    shape = (spec.n_neurons, spec.d_s)
    recurrent = torch.rand(shape, generator=gen, dtype=torch.float64) < spec.p_rec
    ff = torch.randint(0, spec.n_in, shape, generator=gen)
    rec = spec.n_in + torch.randint(0, spec.n_neurons, shape, generator=gen)
    return torch.where(recurrent, rec, ff)


def uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> Tensor:
    """U(-bound, bound) in float64, drawn from `gen` (the network's one generator: a seed fixes every weight)."""
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


class ELMLayer(nn.Module):
    """N ELM neurons with independent parameters, stacked on a leading neuron axis."""

    def __init__(self, spec: LayerSpec, gen: torch.Generator) -> None:
        super().__init__()
        self.spec = spec
        n, d_m = spec.n_neurons, spec.d_m
        self.register_buffer("connectome", sample_connectome(spec, gen))  # (N, d_s), frozen
        self.w_s = nn.Parameter(uniform((n, spec.d_s), 1 / math.sqrt(spec.d_brch), gen))
        self.mlp_w = nn.ParameterList()
        self.mlp_b = nn.ParameterList()
        for fan_in, fan_out in spec.mlp_dims:  # weights stored (out, in): y = W h + b
            self.mlp_w.append(nn.Parameter(uniform((n, fan_out, fan_in), 1 / math.sqrt(fan_in), gen)))
            self.mlp_b.append(nn.Parameter(uniform((n, fan_out), 1 / math.sqrt(fan_in), gen)))
        self.w_y = nn.Parameter(uniform((n, d_m), 1 / math.sqrt(d_m), gen))
        self.b = nn.Parameter(torch.zeros(n, dtype=torch.float64))
        self.register_buffer("tau_m", tau_m_init(spec).expand(n, d_m).clone())  # frozen, not trained
        self.register_buffer("kappa_m", torch.empty(n, d_m, dtype=torch.float64))
        self.register_buffer("kappa_lam", torch.empty(n, d_m, dtype=torch.float64))
        self.register_buffer("kappa_r", torch.empty((), dtype=torch.float64))
        self.update_kappas()

    def update_kappas(self) -> None:
        """kappa_m = exp(-dt / tau_m), kappa_lam = exp(-dt lam / tau_m), kappa_r = exp(-dt / tau_r)."""
        s = self.spec
        tau = self.tau_m.clamp_min(1e-6)
        self.kappa_m.copy_(torch.exp(-s.dt / tau))
        self.kappa_lam.copy_(torch.exp(-s.dt * s.lam / tau))
        tau_r = s.tau_r if s.tau_r is not None else math.inf
        self.kappa_r.fill_(math.exp(-s.dt / max(tau_r, 1e-6)))

    def kappa_r_value(self) -> float | None:
        """kappa_r as a Python number in the layer's dtype, computed on the host (reading the buffer of a
        CUDA layer would wait for the device on every forward); None without a high-pass."""
        s = self.spec
        if s.tau_r is None:
            return None
        return float(torch.tensor(math.exp(-s.dt / max(s.tau_r, 1e-6)), dtype=self.kappa_r.dtype))

    def zero_state(self, batch: int, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """(a, m, r): activity (N, B), memory (N, d_m, B), high-pass state (N, B); all zero."""
        n, d_m = self.spec.n_neurons, self.spec.d_m
        z = torch.zeros(n, batch, device=device, dtype=dtype)
        return z, torch.zeros(n, d_m, batch, device=device, dtype=dtype), z.clone()

    def step(
        self, u: Tensor, a: Tensor, m: Tensor, r: Tensor, trace: dict[str, list[Tensor]] | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """One time step. u (I, B) feed-forward input; a (N, B), m (N, d_m, B), r (N, B) the carried state."""
        s = self.spec
        n, batch = s.n_neurons, u.shape[-1]
        z = torch.cat((u, a), dim=0)  # (I + N, B): concat(u_t, a_{t-1})
        syn = z.index_select(0, self.connectome.reshape(-1)).view(n, s.d_s, batch)  # (N, d_s, B)
        syn = syn * self.w_s.unsqueeze(-1)
        beta = s.input_scale * syn.view(n, s.d_tree, s.d_brch, batch).sum(2)  # (N, d_tree, B)
        m_decayed = self.kappa_m.unsqueeze(-1) * m  # (N, d_m, B)
        h = torch.cat((beta, m_decayed), dim=1)  # (N, d_tree + d_m, B): branches first
        last = len(self.mlp_w) - 1
        for k, (w, b) in enumerate(zip(self.mlp_w, self.mlp_b, strict=True)):
            h = torch.baddbmm(b.unsqueeze(-1), w, h)  # (N, out_k, B)
            if k < last:
                h = F.relu(h).square()
        g = TANH_GAIN * torch.tanh(TANH_SLOPE * h)
        m = m_decayed + (1 - self.kappa_lam).unsqueeze(-1) * g  # (N, d_m, B)
        o = torch.einsum("nd,ndb->nb", self.w_y, m)  # (N, B)
        if s.tau_r is not None:
            r = self.kappa_r * r + (1 - self.kappa_r) * o
            p = o - r
        else:
            p = o
        pre = p + self.b.unsqueeze(-1)
        a = F.relu(pre) if s.activation == "relu" else pre
        if trace is not None:
            for key, val in (("branch", beta), ("mlp", h), ("memory", m), ("readout", o), ("preact", p)):
                trace.setdefault(key, []).append(val)
        return a, m, r
