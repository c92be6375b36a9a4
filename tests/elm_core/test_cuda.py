"""The CUDA path (`pytest -m cuda`, run by `elmlab gpu-check`; skipped with the reason without a GPU).

What a CPU cannot show: the fast path on CUDA tensors in each recurrent mode (dense, and the cuSPARSE
products: addmm with beta = 0 into its own input, int32 CSR indices, sampled_addmm over all steps and
per step), bf16 and TF32 against the autograd path, determinism of training, resume on CUDA with
dropout, the parallel-stream test pass, and a training step without host synchronisations.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import elm_core.fast as fast
from elm_core import ELMConfig, ELMNetwork
from elm_core.spec import RunSpec
from elm_core.train import train
from tests.elm_core.test_fast_path import ALL_CASES, GRAD_RTOL_F32, MODES, _pair, _two_chunks
from tests.elm_core.test_train import TINY

pytestmark = [pytest.mark.cuda, pytest.mark.filterwarnings("ignore::UserWarning")]
CUDA = torch.device("cuda")
CUDA_MODES = {"fused": 2**62, "sparse": 0, "sparse-per-step": 0}  # CUDA_FUSED_MAX_ELEMENTS for each mode


def _cuda_case(monkeypatch, mode: str, changes: dict, batch: int, tokens: bool, dtype: torch.dtype):
    monkeypatch.setattr(fast, "CUDA_FUSED_MAX_ELEMENTS", CUDA_MODES[mode])
    if mode == "sparse-per-step":
        monkeypatch.setattr(fast, "SAMPLED_MAX_ELEMENTS", 0)
    cfg = ELMConfig(n_in=7, n_out=6, n_neurons=9, d_m=3, d_tree=3, d_brch=2, p_rec=0.5, seed=3).replace(**changes)
    ref, fst = (m.to(CUDA) for m in _pair(cfg, dtype))
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (batch, 11), generator=gen) if tokens else torch.randn(batch, 11, 7, generator=gen,
                                                                                    dtype=dtype)
    return ref, fst, x.to(CUDA)


@pytest.mark.parametrize(("mode", "changes", "batch", "tokens"), ALL_CASES)
def test_cuda_fast_path_equals_autograd_path(monkeypatch, mode, changes, batch, tokens):
    ref, fst, x = _cuda_case(monkeypatch, mode, changes, batch, tokens, torch.float64)
    out_r, state_r, grads_r = _two_chunks(ref, x)
    out_f, state_f, grads_f = _two_chunks(fst, x)
    torch.testing.assert_close(out_f, out_r, atol=1e-10, rtol=0)
    for a, b in zip(state_f, state_r, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], atol=1e-10, rtol=0, msg=name)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_cuda_fast_path_gradients_in_float32(monkeypatch, mode):
    ref, fst, x = _cuda_case(monkeypatch, mode, {"l_mlp": 1}, 3, True, torch.float32)
    _, _, grads_r = _two_chunks(ref, x)
    _, _, grads_f = _two_chunks(fst, x)
    for name, g in grads_r.items():
        err = ((grads_f[name] - g).abs().max() / g.abs().max()).item()
        assert err <= 10 * GRAD_RTOL_F32, f"{name}: relative error {err:.1e}"


def test_cuda_selects_the_dense_recurrent_block_for_the_paper_configuration():
    cfg = ELMConfig(n_in=204, n_out=204, n_neurons=440, d_m=30, d_tree=50, d_brch=15, p_rec=0.8, l_mlp=1)
    model = ELMNetwork(cfg).to(CUDA)
    model(torch.randint(0, 204, (2, 3), device=CUDA))
    assert model.hidden.__dict__["_fast_plan"].mode == "fused"


def _grads(cfg, impl: str, x, y, precision: str):
    model = ELMNetwork(cfg, impl=impl).to(CUDA)
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits, _ = model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, cfg.n_out), y.reshape(-1))
        loss.backward()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    return loss.item(), torch.cat([p.grad.reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize(("precision", "tol"), [("bf16", 2e-2), ("tf32", 1e-2)])
@pytest.mark.parametrize("tokens", [True, False], ids=["tokens", "dense"])
def test_cuda_precisions_match_the_autograd_path_in_float32(precision, tol, tokens):
    cfg = ELMConfig(n_in=7, n_out=6, n_neurons=40, d_m=8, d_tree=6, d_brch=4, p_rec=0.5, seed=3)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 7, (4, 40), generator=gen) if tokens else torch.randn(4, 40, 7, generator=gen)
    y = torch.randint(0, 6, (4, 40), generator=gen)
    x, y = x.to(CUDA), y.to(CUDA)
    loss_ref, g_ref = _grads(cfg, "autograd", x, y, "fp32")
    loss, g = _grads(cfg, "fast", x, y, precision)
    assert loss == pytest.approx(loss_ref, rel=1e-3)
    assert float((g - g_ref).norm() / g_ref.norm()) < tol


def test_cuda_and_cpu_fast_paths_agree():
    cfg = ELMConfig(n_in=7, n_out=6, n_neurons=40, d_m=8, d_tree=6, d_brch=4, p_rec=0.5, seed=3)
    x = torch.randint(0, 7, (4, 30), generator=torch.Generator().manual_seed(2))
    cpu = ELMNetwork(cfg, dtype=torch.float64)
    gpu = ELMNetwork(cfg, dtype=torch.float64).to(CUDA)
    torch.testing.assert_close(gpu(x.to(CUDA))[0].cpu(), cpu(x)[0], atol=1e-10, rtol=0)


CUDA_TINY = {**TINY, "device": "cuda", "n_neurons": 48, "model": {"recurrent_dropout": 0.2, "input_dropout": 0.1}}


def test_training_on_cuda_is_deterministic():
    spec = RunSpec(**CUDA_TINY, steps=12)
    first, second = train(spec), train(spec)
    assert first.status == "done", first.reason
    assert first.device.startswith("cuda:")
    assert [p.train_loss for p in first.curve] == [p.train_loss for p in second.curve]
    assert first.test_metric == second.test_metric


def test_a_run_resumed_on_cuda_equals_the_whole_run(tmp_path):
    spec = RunSpec(**CUDA_TINY, steps=12, run_id="cuda-resume", checkpoint_dir=str(tmp_path), checkpoint_every_s=1e-9)
    calls = []
    assert train(spec, should_stop=lambda: calls.append(1) or len(calls) > 7).status == "cancelled"
    resumed = train(spec)
    whole = train(spec.model_copy(update=dict(checkpoint_dir=None, run_id="cuda-whole")))
    assert resumed.status == "done" and resumed.attempt == 1, resumed.reason
    assert resumed.test_metric == whole.test_metric  # the CUDA RNG (dropout) was saved and restored


@pytest.mark.parametrize("precision", ["bf16", "tf32"])
def test_a_run_trains_on_cuda_in_every_precision(precision):
    record = train(RunSpec(**CUDA_TINY, steps=10, precision=precision))
    assert record.status == "done", record.reason
    assert not torch.backends.cuda.matmul.allow_tf32  # restored after the run


def test_a_training_step_does_not_wait_for_the_device():
    cfg = ELMConfig(n_in=20, n_out=20, n_neurons=64, d_m=8, d_tree=8, d_brch=4, p_rec=0.8, l_mlp=1)
    model = ELMNetwork(cfg).to(CUDA)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randint(0, 20, (4, 51), device=CUDA)

    def step(state):
        logits, state = model(x[:, :-1], state)
        loss = F.cross_entropy(logits.reshape(-1, 20), x[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return state.detach()

    state = step(step(None))  # the first steps build the synapse plan (which reads the connectome once)
    torch.cuda.set_sync_debug_mode("error")
    try:
        step(state)
    finally:
        torch.cuda.set_sync_debug_mode("default")
