"""The scans' buffer pool: it hands a buffer out again once nothing else holds it, and never while it is held.

The pool reads PyTorch's private storage use count; should a torch upgrade remove or change it, the pool
would silently fall back to fresh memory (slower training, same results): these tests catch that.
"""

from __future__ import annotations

import pytest
import torch

import elm_core.fast as fast
from elm_core import ELMConfig, ELMNetwork
from elm_core.workspace import WORKSPACE, Workspace, clear_workspace


def test_a_released_buffer_is_handed_out_again_and_a_held_one_never():
    ws = Workspace()
    assert ws.enabled, "torch._C._storage_Use_Count is gone: the buffer pool is off"
    like = torch.empty(0)
    a = ws.empty((16, 8), like)
    ptr = a.data_ptr()
    del a
    b = ws.empty((16, 8), like)
    assert b.data_ptr() == ptr and b.shape == (16, 8)
    view = b[3]  # a view keeps the storage alive too
    del b
    c = ws.empty((16, 8), like)
    assert c.data_ptr() != ptr
    assert view.untyped_storage().data_ptr() == ptr
    assert ws.empty((16, 8), torch.empty(0, dtype=torch.float64)).dtype == torch.float64


def _pooled() -> dict[tuple, list[int]]:
    return {key: [st.data_ptr() for st in entries] for key, entries in WORKSPACE.pool.items()}


@pytest.mark.parametrize("fused_max", [2**62, 0], ids=["fused", "sparse"])
def test_a_second_identical_training_step_allocates_no_new_pooled_buffer(monkeypatch, fused_max):
    monkeypatch.setattr(fast, "FUSED_MAX_ELEMENTS", fused_max)
    model = ELMNetwork(ELMConfig(n_in=11, n_out=11, n_neurons=24, d_m=4, d_tree=4, d_brch=3, seed=2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 11, (4, 31), generator=torch.Generator().manual_seed(0))

    def step() -> None:
        logits, _ = model(tokens[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 11), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()

    clear_workspace()
    try:
        step()
        first, nbytes = _pooled(), WORKSPACE.bytes
        assert first, "the scans use the buffer pool"
        # room left for every shape: a pool that stopped reusing would grow here
        assert all(len(ptrs) < WORKSPACE.per_shape for ptrs in first.values())
        step()
        assert _pooled() == first and WORKSPACE.bytes == nbytes
    finally:
        clear_workspace()
