"""A memory estimate for one training run, checked before anything is allocated.

    need = estimate_bytes(cfg, batch_size=32, seq_len=100)
    check_fits(cfg, batch_size=32, seq_len=100, device=torch.device("cpu"))   # ValueError if it cannot

The estimate is a lower bound in fp32 bytes:
    parameters:  16 * P           (weights, gradients and Adam's two moments, 4 bytes each)
    activations:  4 * B * T * (N * (d_s + d_tree + 3 d_m + 2 l_mlp d_mlp) + n_out * (d_s + d_tree + 3 r))
                                  (per step and stream, what backward keeps of each layer: the synaptic
                                  inputs, the branch sums, the memory and its update, the MLP's hidden units;
                                  r = readout_d_m)
A run whose estimate exceeds the memory available (RAM, or the GPU's total memory) would die in the
allocator with a traceback after minutes of set-up, or swap the machine to a halt; it is refused instead.
"""

from __future__ import annotations

import os

import torch

from elm_core.budget import count_params
from elm_core.config import ELMConfig


def estimate_bytes(cfg: ELMConfig, *, batch_size: int, seq_len: int) -> int:
    """The lower-bound fp32 footprint of training `cfg` (module docstring)."""
    hidden = cfg.n_neurons * (cfg.d_s + cfg.d_tree + 3 * cfg.d_m + 2 * cfg.l_mlp * cfg.d_mlp_eff)
    readout = cfg.n_out * (cfg.d_s + cfg.d_tree + 3 * cfg.readout_d_m)
    return 16 * count_params(cfg) + 4 * batch_size * seq_len * (hidden + readout)


def available_bytes(device: torch.device) -> int | None:
    """Memory a run may use on `device`: available RAM, or the GPU's total memory; None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not a POSIX system
        return None


def check_fits(cfg: ELMConfig, *, batch_size: int, seq_len: int, device: torch.device) -> None:
    """ValueError naming the estimate when the run cannot fit in `device`'s memory."""
    need = estimate_bytes(cfg, batch_size=batch_size, seq_len=seq_len)
    have = available_bytes(device)
    if have is not None and need > have:
        raise ValueError(
            f"memory: this run needs at least {need / 1e9:.1f} GB ({count_params(cfg):,} parameters, "
            f"batch {batch_size} x {seq_len} steps) but {device.type} has {have / 1e9:.1f} GB available"
        )
