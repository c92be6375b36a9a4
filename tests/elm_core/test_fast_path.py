"""The fast path (elm_core.fast) against the per-step autograd path: outputs, gradients, state, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import elm_core.fast as fast
from elm_core import ELMConfig, ELMNetwork
from elm_core.config import LayerSpec
from elm_core.interop import from_reference_npz
from elm_core.layer import TANH_GAIN
from elm_core.sparse import sparse_structure
from elm_core.workspace import WORKSPACE
from tests.elm_core.test_model import REFERENCE_TOL

# the scans write through out=: a wrongly shaped out tensor is resized with this warning; make it an error
pytestmark = pytest.mark.filterwarnings("error:An output with one or more elements was resized")

MODES = {"fused": 2**62, "sparse": 0, "sparse-per-step": 0}  # FUSED_MAX_ELEMENTS that selects each mode


def _pair(cfg: ELMConfig, dtype: torch.dtype = torch.float64) -> tuple[ELMNetwork, ELMNetwork]:
    ref = ELMNetwork(cfg, dtype=dtype, impl="autograd")
    fst = ELMNetwork(cfg, dtype=dtype)
    with torch.no_grad():  # b = 0 at init; make it matter
        for m in (ref, fst):
            gen = torch.Generator().manual_seed(5)
            m.hidden.b.copy_(torch.rand(m.hidden.b.shape, generator=gen, dtype=torch.float64) * 0.6 - 0.3)
            m.readout.b.copy_(torch.rand(m.readout.b.shape, generator=gen, dtype=torch.float64) - 0.5)
    return ref, fst


def _two_chunks(model: ELMNetwork, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], dict]:
    """Two chunks with the state carried (not detached), a loss on both and on the final state."""
    model.train()
    model.zero_grad()
    torch.manual_seed(11)
    logits1, state = model(x[:, :6])
    torch.manual_seed(12)
    logits2, state = model(x[:, 6:], state)
    loss = logits1.sin().sum() + (logits2**2).sum() + sum((t**2).sum() for t in state.tensors())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return torch.cat([logits1, logits2], 1).detach(), [t.detach() for t in state.tensors()], grads


CASES = [  # (changes, batch, token input)
    ({"l_mlp": 0}, 3, True),
    ({"l_mlp": 1}, 3, True),
    ({"l_mlp": 1}, 3, False),
    ({"l_mlp": 2, "d_mlp": 5}, 3, True),
    ({"tau_r": None}, 3, True),
    ({"input_dropout": 0.2, "recurrent_dropout": 0.3}, 3, True),
    ({"input_dropout": 0.2, "recurrent_dropout": 0.3, "l_mlp": 2, "d_mlp": 6}, 2, False),
    ({"d_m": 6, "d_tree": 5, "readout_d_m": 5}, 5, True),  # the bmm paths (contractions > 4)
    ({"p_rec": 0.0}, 3, True),
    ({"p_rec": 0.0, "l_mlp": 0}, 3, True),  # a token-fed layer on the native loops' tiny-neuron path
]


ALL_CASES = [(mode, *case) for mode in MODES for case in CASES]


def _case(monkeypatch, mode: str, changes: dict, batch: int, tokens: bool, dtype: torch.dtype):
    """The two paths for one case of MODES x CASES, and its input (B, 11) or (B, 11, 7)."""
    monkeypatch.setattr(fast, "FUSED_MAX_ELEMENTS", MODES[mode])
    if mode == "sparse-per-step":  # W_rec's gradient one step at a time
        monkeypatch.setattr(fast, "SAMPLED_MAX_ELEMENTS", 0)
    cfg = ELMConfig(n_in=7, n_out=6, n_neurons=9, d_m=3, d_tree=3, d_brch=2, p_rec=0.5, seed=3).replace(**changes)
    ref, fst = _pair(cfg, dtype)
    gen = torch.Generator().manual_seed(0)
    if tokens:
        x = torch.randint(0, 7, (batch, 11), generator=gen)
    else:
        x = torch.randn(batch, 11, 7, generator=gen, dtype=dtype)
    return ref, fst, x


@pytest.mark.parametrize(("mode", "changes", "batch", "tokens"), ALL_CASES)
def test_fast_path_equals_autograd_path(monkeypatch, mode, changes, batch, tokens):
    """Outputs, carried state and every parameter gradient, in float64."""
    ref, fst, x = _case(monkeypatch, mode, changes, batch, tokens, torch.float64)
    out_r, state_r, grads_r = _two_chunks(ref, x)
    out_f, state_f, grads_f = _two_chunks(fst, x)
    torch.testing.assert_close(out_f, out_r, atol=1e-10, rtol=0)
    for a, b in zip(state_f, state_r, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    assert grads_f.keys() == grads_r.keys()
    for name in grads_r:
        torch.testing.assert_close(grads_f[name], grads_r[name], atol=1e-10, rtol=0, msg=name)


# In float32 the two paths sum in different orders, and the rounding differences grow along the sequence.
# Measured over MODES x CASES, per parameter, max |g_fast - g_autograd| / max |g_autograd|: at most 4.0e-6
# (hidden.mlp_w.1 without a high-pass; most parameters below 1e-6); a training-sized step (N 48, T 60,
# cross-entropy) gave at most 8e-7. Asserted within 2e-5, five times the worst case measured.
GRAD_RTOL_F32 = 2e-5


@pytest.mark.parametrize(("mode", "changes", "batch", "tokens"), ALL_CASES)
def test_fast_path_gradients_match_autograd_path_in_float32(monkeypatch, mode, changes, batch, tokens):
    """The default dtype of training: every parameter's gradient, relative to its largest entry."""
    ref, fst, x = _case(monkeypatch, mode, changes, batch, tokens, torch.float32)
    _, _, grads_r = _two_chunks(ref, x)
    _, _, grads_f = _two_chunks(fst, x)
    assert grads_f.keys() == grads_r.keys()
    for name, g in grads_r.items():
        assert grads_f[name].dtype == torch.float32 and g.abs().max() > 0, name
        err = ((grads_f[name] - g).abs().max() / g.abs().max()).item()
        assert err <= GRAD_RTOL_F32, f"{name}: relative error {err:.1e}"


@pytest.mark.parametrize("mode", ["fused", "sparse"])
def test_fast_path_run_outputs_match_autograd_path(monkeypatch, mode):
    monkeypatch.setattr(fast, "FUSED_MAX_ELEMENTS", MODES[mode])
    cfg = ELMConfig(n_in=7, n_out=6, n_neurons=9, d_m=3, d_tree=3, d_brch=2, p_rec=0.5, seed=3)
    ref, fst = _pair(cfg)
    x = torch.randint(0, 7, (2, 8))
    with torch.no_grad():
        a, b = ref.run(x), fst.run(x)
    for key in ("logits", "hidden", "readout"):
        torch.testing.assert_close(b[key], a[key], atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", ["fused", "sparse"])
def test_reused_buffers_never_leak_into_results(monkeypatch, mode):
    """The scans write into pooled buffers: whatever an earlier call left there (here NaN) must not matter."""
    monkeypatch.setattr(fast, "FUSED_MAX_ELEMENTS", MODES[mode])
    model = ELMNetwork(ELMConfig(n_in=7, n_out=6, n_neurons=9, d_m=3, d_tree=3, d_brch=2, seed=4))
    x = torch.randint(0, 7, (3, 10), generator=torch.Generator().manual_seed(1))

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        logits, _ = model(x)
        logits.square().sum().backward()
        with torch.no_grad():
            inference = model.run(x)["logits"]
        return torch.cat([logits.detach(), inference]), [p.grad.clone() for p in model.parameters()]

    first, grads = run()
    assert WORKSPACE.pool, "the scans use the buffer pool"
    for storages in WORKSPACE.pool.values():
        for st in storages:
            torch.tensor([], dtype=torch.float32).set_(st).fill_(float("nan"))
    second, grads2 = run()
    assert torch.equal(first, second)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads2, strict=True))


@pytest.mark.parametrize("name", sorted(REFERENCE_TOL))
def test_fast_path_reproduces_reference_vectors(reference_data, name):
    """The bounds of the per-step path (tests/elm_core/test_model.py, REFERENCE_TOL) hold here too."""
    with np.load(reference_data / name) as npz:
        ref = {k: npz[k] for k in ("x", "logits", "hidden_activity", "L1_activity", "L0_final_m", "L1_final_m")}
    model = from_reference_npz(reference_data / name)
    assert model.impl == "fast"
    with torch.no_grad():
        out = model.run(torch.from_numpy(ref["x"]))
    tol_out, tol_int = REFERENCE_TOL[name]
    np.testing.assert_allclose(out["logits"].numpy(), ref["logits"], atol=tol_out, rtol=0)
    np.testing.assert_allclose(out["hidden"].numpy(), ref["hidden_activity"], atol=tol_out, rtol=0)
    np.testing.assert_allclose(out["readout"].numpy(), ref["L1_activity"], atol=tol_out, rtol=0)
    np.testing.assert_allclose(out["state"].m0.numpy(), ref["L0_final_m"], atol=tol_int, rtol=0)
    np.testing.assert_allclose(out["state"].m1.numpy(), ref["L1_final_m"], atol=tol_int, rtol=0)


def _scan_inputs(mode: str, l_mlp: int, tokens: bool, relu: bool = True, kr: float | None = 0.6):
    """Random float64 inputs of `_LayerScan` for N=3 neurons, d_m=2, d_tree=2, B=2, T=4, 3 inputs."""
    gen = torch.Generator().manual_seed(7)

    def rnd(*shape, scale=0.7):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale).requires_grad_(True)

    n, d_m, d_tree, batch, steps, n_in, d_mlp = 3, 2, 2, 2, 4, 3, 3
    d1 = d_mlp if l_mlp else d_m
    tau = torch.tensor([0.5, 4.0], dtype=torch.float64).expand(n, d_m)
    k = fast._ScanCtx(
        km=torch.exp(-1 / tau).unsqueeze(1),
        c=((1 - torch.exp(-5 / tau)) * TANH_GAIN).unsqueeze(1),
        kr=kr,
        relu=relu,
        mode=mode,
        rec_mask=None,
    )
    P = table = None
    if tokens:
        k.tokens = torch.randint(0, n_in, (steps, batch), generator=gen)
        table = rnd(n_in, n * d1)
    else:
        P = rnd(steps, batch, n * d1)
    R = None
    if mode == "fused":
        R = rnd(n, n * d1)  # M^T
    elif mode == "sparse":
        conn = torch.tensor([[3, 4, 5, 0], [1, 5, 5, 3], [4, 0, 2, 4]])  # d_s = 4, sources < 3 feed-forward
        spec = LayerSpec(n_in=n_in, n_neurons=n, d_m=d_m, l_mlp=l_mlp, d_mlp=d_mlp, d_tree=d_tree, d_brch=2, p_rec=0.5)
        k.sparse = sparse_structure(spec, conn)
        R = rnd(k.sparse.nnz)
    W0 = rnd(n, d1, d_tree + d_m)
    wb = []
    widths = [d1] + [d_mlp] * (l_mlp - 1) + [d_m] if l_mlp else []
    for i, o in zip(widths[:-1], widths[1:], strict=True):
        wb += [rnd(n, o, i), rnd(n, 1, o)]
    a0, m0, r0 = rnd(n, batch, scale=0.3), rnd(n, batch, d_m), rnd(n, batch)
    return k, (P, table, R, W0, rnd(n, d_m), rnd(n), a0, m0, r0, *wb)


@pytest.mark.parametrize(
    ("mode", "l_mlp", "tokens", "relu", "kr"),
    [
        ("fused", 1, True, True, 0.6),
        ("fused", 0, False, True, None),
        ("sparse", 2, True, True, 0.6),
        ("sparse", 1, False, False, None),
        ("none", 1, False, False, None),
        ("none", 0, True, True, 0.3),
    ],
)
def test_scan_backward_passes_gradcheck(mode, l_mlp, tokens, relu, kr):
    k, inputs = _scan_inputs(mode, l_mlp, tokens, relu, kr)
    diff = [i for i, t in enumerate(inputs) if t is not None and t.requires_grad]

    def f(*xs):
        args = list(inputs)
        for i, x in zip(diff, xs, strict=True):
            args[i] = x
        out = fast._LayerScan.apply(k, *args)
        return tuple(o.sin() for o in out)  # a non-linear read-out so that every gradient path counts

    assert torch.autograd.gradcheck(f, tuple(inputs[i] for i in diff), eps=1e-6, atol=1e-6)


def test_a_retained_graph_gives_the_same_gradients_twice():
    model = ELMNetwork(ELMConfig(n_in=5, n_out=5, n_neurons=6, d_m=2, d_tree=2, d_brch=2), dtype=torch.float64)
    logits, _ = model(torch.randint(0, 5, (2, 4)))
    logits.sum().backward(retain_graph=True)
    first = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    logits.sum().backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(first, model.parameters(), strict=True))


def test_training_is_deterministic_on_cpu():
    cfg = ELMConfig(n_in=11, n_out=11, n_neurons=24, d_m=4, d_tree=4, d_brch=3, seed=2)
    tokens = torch.randint(0, 11, (4, 21), generator=torch.Generator().manual_seed(0))

    def train() -> list[torch.Tensor]:
        model = ELMNetwork(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        state = None
        for _ in range(3):
            logits, state = model(tokens[:, :-1], state)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), tokens[:, 1:].reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            state = state.detach()
        return [p.detach().clone() for p in model.parameters()]

    first, second = train(), train()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_unknown_impl_is_a_clear_error():
    with pytest.raises(ValueError, match="impl"):
        ELMNetwork(ELMConfig(n_in=5, n_out=5, n_neurons=4, d_m=2, d_tree=2, d_brch=2), impl="jax")
