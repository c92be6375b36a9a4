"""The native time loops (elm_core/native) against the Python loops of elm_core.fast, and the fall-back
when they cannot be built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

import elm_core.fast as fast
from elm_core import native
from tests.elm_core.test_fast_path import ALL_CASES, _case, _two_chunks

HAVE_TOOLCHAIN = shutil.which(os.environ.get("CXX", "c++")) is not None


@pytest.fixture(scope="module")
def ops():
    """The native ops. Where a C++ compiler exists they must build: a failed build is a failure here."""
    if native.mode() == "0":
        pytest.skip("ELMLAB_NATIVE=0")
    loaded = native.load()
    if loaded is None:
        if HAVE_TOOLCHAIN:
            pytest.fail(f"a C++ compiler is present but the native loops did not build: {native.status()['reason']}")
        pytest.skip(f"no C++ compiler: {native.status()['reason']}")
    return loaded


def _python_loops(monkeypatch) -> None:
    monkeypatch.setattr(fast, "_native_ops", lambda *args: None)


def _counting(monkeypatch) -> list[tuple[int, bool]]:
    """Record each scan's number of hidden MLP layers and whether it went through the native loops."""
    calls = []
    real = fast._native_ops

    def counted(k, W0, n_hidden):
        out = real(k, W0, n_hidden)
        calls.append((n_hidden, out is not None))
        return out

    monkeypatch.setattr(fast, "_native_ops", counted)
    return calls


# In float32 the two loops sum in different orders (the native loop accumulates the weight gradients
# step by step inside the loop). Measured over MODES x CASES, the largest gap relative to its tensor's
# largest entry was 4.0e-6 (fused mode with input and recurrent dropout); asserted within
# 2e-5, as the fast path against autograd.
RTOL = 2e-5


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize(("mode", "changes", "batch", "tokens"), ALL_CASES)
def test_native_loops_match_python_loops(ops, monkeypatch, mode, changes, batch, tokens):
    """Outputs, carried state and every parameter's gradient, in float32, over both chunks."""
    _, model, x = _case(monkeypatch, mode, changes, batch, tokens, torch.float32)
    calls = _counting(monkeypatch)
    out_n, state_n, grads_n = _two_chunks(model, x)
    used = set(calls)
    _python_loops(monkeypatch)
    out_p, state_p, grads_p = _two_chunks(model, x)
    # a layer with at most one hidden MLP layer runs natively, one with more on the Python loops
    assert used and all(native_used == (n_hidden <= 1) for n_hidden, native_used in used), used
    assert _rel(out_n, out_p) <= RTOL
    for a, b in zip(state_n, state_p, strict=True):
        assert _rel(a, b) <= RTOL
    for name, g in grads_p.items():
        assert _rel(grads_n[name], g) <= RTOL, name


@pytest.mark.parametrize("loops", ["native", "python"])
@pytest.mark.parametrize(("mode", "changes", "batch", "tokens"), ALL_CASES)
def test_a_forward_without_gradients_reads_padded_drive_rows(ops, monkeypatch, mode, changes, batch, tokens, loops):
    """Without a backward, a dense input's drive P comes in rows padded to a multiple of 16 floats (the
    readout layer's 6 x 3 columns in 32): the same outputs and state as the unpadded forward."""
    _, model, x = _case(monkeypatch, mode, changes, batch, tokens, torch.float32)
    if loops == "python":
        _python_loops(monkeypatch)
    model.eval()
    logits_ref, state_ref = model(x)  # gradients on: P unpadded
    pads = []
    real = fast._LayerScan.apply

    def spy(k, P, *rest):  # noqa: N803
        if P is not None:
            pads.append((P.shape[2], P.stride(1)))
        return real(k, P, *rest)

    monkeypatch.setattr(fast._LayerScan, "apply", spy)
    with torch.no_grad():
        logits, state = model(x)
    assert any(ld > cols and ld % 16 == 0 for cols, ld in pads), pads  # the readout layer's P at least
    assert _rel(logits, logits_ref.detach()) <= RTOL
    for a, b in zip(state.tensors(), state_ref.tensors(), strict=True):
        assert _rel(a, b.detach()) <= RTOL


def test_native_training_step_matches_on_a_bench_sized_network(ops, monkeypatch):
    """N 96, B 8, T 40, token input, cross-entropy: the loss and every gradient."""
    from elm_core import ELMConfig, ELMNetwork

    cfg = ELMConfig(n_in=40, n_out=40, n_neurons=96, d_m=15, d_tree=12, d_brch=6, seed=2)
    x = torch.randint(0, 40, (8, 41), generator=torch.Generator().manual_seed(3))

    def grads() -> tuple[float, dict[str, torch.Tensor]]:
        model = ELMNetwork(cfg)
        logits, _ = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 40), x[:, 1:].reshape(-1))
        loss.backward()
        return loss.item(), {n: p.grad for n, p in model.named_parameters()}

    loss_n, g_n = grads()
    _python_loops(monkeypatch)
    loss_p, g_p = grads()
    assert abs(loss_n - loss_p) <= 1e-6 * abs(loss_p)
    for name, g in g_p.items():
        assert _rel(g_n[name], g) <= RTOL, name


def test_native_is_off_with_elmlab_native_0(monkeypatch):
    monkeypatch.setenv("ELMLAB_NATIVE", "0")
    assert native.load() is None
    assert native.status() == {"mode": "0", "available": False, "reason": "ELMLAB_NATIVE=0",
                               "cache": str(native.cache_dir())}  # fmt: skip


def test_a_bad_elmlab_native_value_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("ELMLAB_NATIVE", "yes")
    with pytest.raises(ValueError, match="ELMLAB_NATIVE: must be one of auto, 0, 1"):
        native.load()


_NO_COMPILER = """
import torch
from elm_core import ELMConfig, ELMNetwork, native
status = native.status()
assert not status["available"], status
print("REASON", status["reason"])
model = ELMNetwork(ELMConfig(n_in=5, n_out=5, n_neurons=6, d_m=2, d_tree=2, d_brch=2))
logits, _ = model(torch.randint(0, 5, (2, 7)))
logits.square().sum().backward()
assert all(p.grad is not None for p in model.parameters())
print("TRAINED")
"""


def test_without_a_compiler_the_build_fails_once_and_training_uses_the_python_loops(tmp_path):
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "ELMLAB_NATIVE_CACHE": str(tmp_path / "cache"),
           "ELMLAB_NATIVE": "auto"}  # fmt: skip
    out = subprocess.run([sys.executable, "-c", _NO_COMPILER], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "TRAINED" in out.stdout
    reason = out.stdout.split("REASON", 1)[1].splitlines()[0]
    assert reason.strip(), "the status says why"
    # ELMLAB_NATIVE=1 turns the same failure into an error that names it
    env["ELMLAB_NATIVE"] = "1"
    out = subprocess.run([sys.executable, "-c", _NO_COMPILER], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0
    assert "ELMLAB_NATIVE=1 but the native scan loops did not build" in out.stderr
