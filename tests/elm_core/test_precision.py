"""Mixed precision through the fast path: bf16 autocast and TF32 give the autograd path's gradients.

Under bf16 autocast the fast path runs only the feed-forward product in bfloat16 (elm_core.fast,
"Mixed precision"): its gradients stay within 2% (relative norm) of the float32 ones, and its loss
within 1e-3. The autograd path runs every per-step product in bfloat16 and is itself about 8% off; the
two bf16 paths agree in direction (cosine above 0.99).
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import elm_core.fast as fast
from elm_core import ELMConfig, ELMNetwork
from elm_core.spec import RunSpec
from elm_core.train import train
from tests.elm_core.test_train import TINY, TINY_ADDING

MODES = {"fused": 2**62, "sparse": 0}


def _loss_and_grads(cfg: ELMConfig, impl: str, x: torch.Tensor, y: torch.Tensor, bf16: bool):
    model = ELMNetwork(cfg, impl=impl)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits, state = model(x)
        loss = F.cross_entropy(logits.float().reshape(-1, cfg.n_out), y.reshape(-1))
    loss.backward()
    assert all(t.dtype == torch.float32 for t in state.tensors())  # the carried state stays float32
    return loss.item(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "dense"])
def test_bf16_fast_path_gradients_match_the_autograd_path(monkeypatch, mode, tokens):
    monkeypatch.setattr(fast, "FUSED_MAX_ELEMENTS", MODES[mode])
    cfg = ELMConfig(n_in=7, n_out=6, n_neurons=9, d_m=3, d_tree=3, d_brch=2, p_rec=0.5, seed=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (3, 30), generator=gen) if tokens else torch.randn(3, 30, 7, generator=gen)
    y = torch.randint(0, 6, (3, 30), generator=gen)
    loss_ref, g_ref = _loss_and_grads(cfg, "autograd", x, y, bf16=False)
    loss_bf, g_bf = _loss_and_grads(cfg, "fast", x, y, bf16=True)
    assert loss_bf == pytest.approx(loss_ref, rel=1e-3)
    assert _rel(g_bf, g_ref) < 2e-2
    _, g_ag_bf = _loss_and_grads(cfg, "autograd", x, y, bf16=True)
    assert float(F.cosine_similarity(g_bf, g_ag_bf, dim=0)) > 0.99


def test_tf32_fast_path_gradients_match_the_autograd_path():
    """TF32 changes CUDA matmuls only; on a CPU the flag must leave the fast path exact to float32."""
    cfg = ELMConfig(n_in=7, n_out=6, n_neurons=9, d_m=3, d_tree=3, d_brch=2, p_rec=0.5, seed=3)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randint(0, 7, (3, 20), generator=gen), torch.randint(0, 6, (3, 20), generator=gen)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        _, g_ref = _loss_and_grads(cfg, "autograd", x, y, bf16=False)
        _, g_fast = _loss_and_grads(cfg, "fast", x, y, bf16=False)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    assert _rel(g_fast, g_ref) < 1e-5


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
@pytest.mark.parametrize("kind", ["char", "spike"])
def test_a_run_trains_in_every_precision(precision, kind):
    """Token input (char) and dense input with a small recurrent layer (spike) both train to the end."""
    spec = RunSpec(**TINY, steps=8) if kind == "char" else RunSpec(**TINY_ADDING)
    record = train(spec.model_copy(update={"precision": precision}))
    assert record.status == "done", record.reason
    assert record.test_metric is not None and record.steps == (8 if kind == "char" else 6)
