"""The ELM Network in PyTorch (docs/science.md section 2).

A hidden layer of N ELM neurons (recurrent, high-pass, ReLU), a readout layer of n_out ELM neurons
(d_m = readout_d_m, l_mlp = 0, identity, fed by the hidden activity of the same step), then a dense
Linear(n_out -> n_out) giving logits. The layers are `elm_core.layer.ELMLayer`; a forward pass runs
them either through the whole-sequence scans of `elm_core.fast` or step by step (`ELMLayer.step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from elm_core.config import ELMConfig, LayerSpec
from elm_core.fast import scan_layer
from elm_core.layer import ELMLayer, uniform

IMPLS = ("fast", "autograd")  # whole-sequence scans (elm_core.fast) | per-step autograd (ELMLayer.step)
TOKEN_SCALE = 3.0  # token input: x_t = 3 * one_hot(token_t)


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
            self.out.weight.copy_(uniform(tuple(self.out.weight.shape), bound, gen))
            self.out.bias.copy_(uniform(tuple(self.out.bias.shape), bound, gen))
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
            return self._run_scans(x, state)
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

    def _run_scans(self, x: Tensor, state: ELMState | None) -> dict:
        """`run` without trace, through the whole-sequence layer scans (elm_core.fast.scan_layer)."""
        if state is None:
            state = self.initial_state(x.shape[0], x.device)
        drop_u0, drop_a0, drop_u1, drop_a1 = self._dropout_masks(x.shape[0], self.out.weight)
        a0, m0, r0, a1, m1, r1 = state.tensors()  # (B, N), (B, N, d_m), (B, N)
        h_state = (a0.t(), m0.transpose(0, 1), r0.t())
        if not x.is_floating_point() and x.dim() == 2 and drop_u0 is None:
            tokens = x.t().long().contiguous()  # (T, B)
            h_a, h_m, h_r = scan_layer(self.hidden, *h_state, drop_a0, tokens=tokens, token_scale=self.embed_scale)
        else:
            u = self.embed(x).transpose(0, 1)  # (T, B, I)
            if drop_u0 is not None:
                u = u * drop_u0.t()
            h_a, h_m, h_r = scan_layer(self.hidden, *h_state, drop_a0, u=u.contiguous())
        u1 = h_a.transpose(1, 2)  # (T, B, N)
        if drop_u1 is not None:
            u1 = u1 * drop_u1.t()
        o_a, o_m, o_r = scan_layer(self.readout, a1.t(), m1.transpose(0, 1), r1.t(), drop_a1, u=u1.contiguous())
        readout = o_a.permute(2, 0, 1)  # (B, T, n_out)
        final = (h_a[-1].t(), h_m[-1].transpose(0, 1), h_r.t(), o_a[-1].t(), o_m[-1].transpose(0, 1), o_r.t())
        return {
            "logits": self.out(readout),
            "hidden": h_a.permute(2, 0, 1),  # (B, T, N)
            "readout": readout,
            "state": ELMState(*final),
        }

    def forward(self, x: Tensor, state: ELMState | None = None) -> tuple[Tensor, ELMState]:
        out = self.run(x, state)
        return out["logits"], out["state"]

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
