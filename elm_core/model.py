"""The ELM Network in PyTorch (docs/science.md section 2).

The order of operations is pinned by the reference test vectors (elm_core/reference_data/FORMAT.md).

A hidden layer of N ELM neurons (recurrent, high-pass, ReLU), a readout layer of n_out ELM neurons
(d_m = readout_d_m, l_mlp = 0, identity, fed by the hidden activity of the same step), then a dense
Linear(n_out -> n_out) giving logits. Per-neuron weights are stacked over neurons and every step is
a handful of batched tensor operations; there is no Python loop over neurons.

Layout: inside the time loop every tensor is feature-first with the batch last, e.g. the memory is
(N, d_m, B). The per-neuron MLP is then one `baddbmm` per Linear with the neuron axis as the batch
of matrices: W (N, out, in) @ h (N, in, B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from elm_core.config import ELMConfig, LayerSpec

IMPLS = ("fast", "autograd")  # whole-sequence scans (elm_core.fast) | per-step autograd (ELMLayer.step)
TOKEN_SCALE = 3.0  # token input: x_t = 3 * one_hot(token_t)
TANH_GAIN, TANH_SLOPE = 1.7159, 2.0 / 3.0  # g(v) = 1.7159 tanh(2 v / 3)


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


def _uniform(shape: tuple[int, ...], bound: float, gen: torch.Generator) -> Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound


class ELMLayer(nn.Module):
    """N ELM neurons with independent parameters, stacked on a leading neuron axis."""

    def __init__(self, spec: LayerSpec, gen: torch.Generator) -> None:
        super().__init__()
        self.spec = spec
        n, d_m = spec.n_neurons, spec.d_m
        self.register_buffer("connectome", sample_connectome(spec, gen))  # (N, d_s), frozen
        self.w_s = nn.Parameter(_uniform((n, spec.d_s), 1 / math.sqrt(spec.d_brch), gen))
        self.mlp_w = nn.ParameterList()
        self.mlp_b = nn.ParameterList()
        for fan_in, fan_out in spec.mlp_dims:  # weights stored (out, in): y = W h + b
            self.mlp_w.append(nn.Parameter(_uniform((n, fan_out, fan_in), 1 / math.sqrt(fan_in), gen)))
            self.mlp_b.append(nn.Parameter(_uniform((n, fan_out), 1 / math.sqrt(fan_in), gen)))
        self.w_y = nn.Parameter(_uniform((n, d_m), 1 / math.sqrt(d_m), gen))
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


@dataclass
class ELMState:
    """Everything needed to continue a sequence: per layer the activity, memory and high-pass state.

    Shapes are batch-first, as in the reference vectors: a (B, N), m (B, N, d_m), r (B, N).
    """

    a0: Tensor
    m0: Tensor
    r0: Tensor
    a1: Tensor
    m1: Tensor
    r1: Tensor

    def detach(self) -> ELMState:
        return ELMState(*(t.detach() for t in self.tensors()))

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.a0, self.m0, self.r0, self.a1, self.m1, self.r1)

    def mask(self, keep: Tensor) -> ELMState:
        """Zero the state of the samples where `keep` (B,) is False (a stream that starts over)."""
        out = []
        for t in self.tensors():
            out.append(t * keep.view(-1, *([1] * (t.dim() - 1))).to(t.dtype))
        return ELMState(*out)


def _to_internal(t: Tensor) -> Tensor:  # (B, N, ...) -> (N, ..., B)
    return t.movedim(0, -1)


def _to_external(t: Tensor) -> Tensor:  # (N, ..., B) -> (B, N, ...)
    return t.movedim(-1, 0)


class ELMNetwork(nn.Module):
    """ELM Network: `forward(x, state=None) -> (logits (B, T, n_out), state)`.

    x is float (B, T, n_in), or integer tokens (B, T), which are one-hot encoded and scaled by 3.
    Running a sequence in two halves, passing the state along, equals running it whole.
    impl="fast" (default) runs whole-sequence scans with a hand-written backward (elm_core.fast);
    impl="autograd" runs `ELMLayer.step` once per time step under autograd (the reference path).
    """

    def __init__(
        self,
        cfg: ELMConfig,
        *,
        layers: tuple[LayerSpec, LayerSpec] | None = None,
        dtype: torch.dtype = torch.float32,
        impl: str = "fast",
    ) -> None:
        super().__init__()
        if impl not in IMPLS:
            raise ValueError(f"invalid impl={impl!r}: must be one of {', '.join(IMPLS)}")
        self.cfg = cfg
        self.impl = impl
        hidden, readout = layers if layers is not None else (cfg.hidden(), cfg.readout())
        if readout.n_in != hidden.n_neurons:
            raise ValueError(f"readout n_in={readout.n_in} must equal hidden n_neurons={hidden.n_neurons}")
        gen = torch.Generator().manual_seed(cfg.seed)
        self.hidden = ELMLayer(hidden, gen)
        self.readout = ELMLayer(readout, gen)
        self.out = nn.Linear(readout.n_neurons, cfg.n_out, dtype=torch.float64)
        with torch.no_grad():
            bound = 1 / math.sqrt(readout.n_neurons)
            self.out.weight.copy_(_uniform(tuple(self.out.weight.shape), bound, gen))
            self.out.bias.copy_(_uniform(tuple(self.out.bias.shape), bound, gen))
        self.embed_scale = TOKEN_SCALE
        self.to(dtype)

    @property
    def n_in(self) -> int:
        return self.hidden.spec.n_in

    def embed(self, x: Tensor) -> Tensor:
        """Tokens (B, T) -> 3 * one_hot (B, T, n_in); float input passes through (cast to the model dtype)."""
        dtype = self.out.weight.dtype
        if not x.is_floating_point() and x.dim() == 2:
            return F.one_hot(x.long(), self.n_in).to(dtype) * self.embed_scale
        if x.dim() != 3 or x.shape[-1] != self.n_in:
            raise ValueError(f"input must be (B, T, {self.n_in}) floats or (B, T) tokens, got {tuple(x.shape)}")
        return x.to(dtype)

    def initial_state(self, batch: int, device: torch.device | None = None) -> ELMState:
        w = self.out.weight
        device = device or w.device
        a0, m0, r0 = self.hidden.zero_state(batch, device, w.dtype)
        a1, m1, r1 = self.readout.zero_state(batch, device, w.dtype)
        return ELMState(*(_to_external(t) for t in (a0, m0, r0, a1, m1, r1)))

    def _dropout_masks(self, batch: int, like: Tensor) -> tuple[Tensor | None, ...]:
        """Variational dropout: one mask per sequence for u_t and a_{t-1} of each layer (training only)."""
        p_in, p_rec = self.cfg.input_dropout, self.cfg.recurrent_dropout
        if not self.training or (p_in == 0 and p_rec == 0):
            return (None, None, None, None)

        def mask(n: int, p: float) -> Tensor | None:
            if p == 0:
                return None
            return (torch.rand(n, batch, device=like.device) >= p).to(like.dtype) / (1 - p)

        h, r = self.hidden.spec, self.readout.spec
        return (mask(h.n_in, p_in), mask(h.n_neurons, p_rec), mask(r.n_in, p_in), mask(r.n_neurons, p_rec))

    def run(self, x: Tensor, state: ELMState | None = None, trace: bool = False) -> dict:
        """Forward pass with everything a test or a probe may want.

        Returns a dict with `logits` (B, T, n_out), `hidden` (B, T, N), `readout` (B, T, n_out),
        `state` and, with trace=True, per-layer intermediates `L0_branch`, `L0_mlp`, ... batch-first.
        With trace=True, or impl="autograd", or an empty sequence, the steps run one by one through
        `ELMLayer.step` under autograd; otherwise through the whole-sequence scans of `elm_core.fast`.
        """
        if self.impl == "fast" and not trace and x.dim() >= 2 and x.shape[1] > 0:
            from elm_core.fast import fast_run

            batch = x.shape[0]
            like = self.out.weight
            if state is None:
                state = self.initial_state(batch, x.device)
            return fast_run(self, x, state, self._dropout_masks(batch, like))
        x = self.embed(x)
        batch, steps = x.shape[0], x.shape[1]
        if state is None:
            state = self.initial_state(batch, x.device)
        a0, m0, r0, a1, m1, r1 = (_to_internal(t) for t in state.tensors())
        drop_u0, drop_a0, drop_u1, drop_a1 = self._dropout_masks(batch, x)
        xs = x.permute(1, 2, 0)  # (T, I, B)
        tr0: dict[str, list[Tensor]] | None = {} if trace else None
        tr1: dict[str, list[Tensor]] | None = {} if trace else None
        hidden_seq, readout_seq = [], []
        for t in range(steps):
            u0 = xs[t] if drop_u0 is None else xs[t] * drop_u0
            a0, m0, r0 = self.hidden.step(u0, a0 if drop_a0 is None else a0 * drop_a0, m0, r0, tr0)
            u1 = a0 if drop_u1 is None else a0 * drop_u1
            a1, m1, r1 = self.readout.step(u1, a1 if drop_a1 is None else a1 * drop_a1, m1, r1, tr1)
            hidden_seq.append(a0)
            readout_seq.append(a1)
        readout = torch.stack(readout_seq).permute(2, 0, 1)  # (B, T, n_out)
        out = {
            "logits": self.out(readout),
            "hidden": torch.stack(hidden_seq).permute(2, 0, 1),  # (B, T, N)
            "readout": readout,
            "state": ELMState(*(_to_external(t) for t in (a0, m0, r0, a1, m1, r1))),
        }
        for tag, tr in (("L0", tr0), ("L1", tr1)):
            for key, vals in (tr or {}).items():
                out[f"{tag}_{key}"] = torch.stack(vals).movedim(-1, 0)  # (B, T, N, ...)
        return out

    def forward(self, x: Tensor, state: ELMState | None = None) -> tuple[Tensor, ELMState]:
        out = self.run(x, state)
        return out["logits"], out["state"]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
