"""The final test pass of a character task, as parallel streams.

The reference measures test BPC with batch 1: one stream over the split, the state carried throughout.
At batch 1 a step is dozens of small kernels, and on a GPU the 5M-character enwik8 test split takes
hours. This pass lays the split's n - 1 targets out as S contiguous streams of L = ceil((n - 1) / S)
targets (the last one shorter; S at most (n - 1) / (4 warmup), so that the warm-up adds at most a quarter
to the characters computed), runs them as one batch of S, and counts every target exactly once:

    BPC = sum over all n - 1 targets of CE / ((n - 1) ln 2).

Stream 0 starts from the zero state like the batch-1 pass; every other stream first reads the
`warmup` characters before its start (not counted), so that its memory holds what the batch-1 pass
would hold there up to the part of it older than `warmup` steps. With warmup = 500 the metric equals
the batch-1 pass's to 0.01 BPC (tests/elm_core/test_evaluation.py); it costs S (L + warmup) character
steps in L + warmup sequential steps, instead of n - 1 sequential steps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

TEST_STREAMS = 32  # S
TEST_WARMUP = 500  # characters each stream but the first reads before its own


@torch.no_grad()
def evaluate_char_streams(
    model,
    tokens: Tensor,
    *,
    streams: int = TEST_STREAMS,
    warmup: int = TEST_WARMUP,
    seq_len: int = 250,
    device: torch.device | None = None,
) -> tuple[float, int]:
    """(BPC, targets) over all len(tokens) - 1 next-character targets of `tokens` (n,), as `streams`
    parallel streams of seq_len-step chunks (module docstring). One host synchronisation in all."""
    n_targets = tokens.numel() - 1
    if n_targets < 1:
        raise ValueError("the test split needs at least two characters")
    device = device or next(model.parameters()).device
    streams = max(1, min(streams, n_targets // (4 * max(warmup, 1))))  # L >= 4 warmup
    length = math.ceil(n_targets / streams)
    streams = math.ceil(n_targets / length)  # none empty
    warmup = warmup if streams > 1 else 0
    was_training = model.training
    model.eval()
    tokens = tokens.to(device)
    starts = torch.arange(streams, device=device).unsqueeze(1) * length  # (S, 1)
    state = None
    for k in range(-warmup, 0, seq_len):  # stream s reads tokens [s L - warmup, s L) first
        ramp = torch.arange(k, min(k + seq_len, 0), device=device)
        _, state = model(tokens[(starts + ramp).clamp_min(0)], state)
    if state is not None:  # stream 0 has nothing before it: it starts from zero, as the batch-1 pass does
        state = state.mask(torch.arange(streams, device=device) > 0)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for k in range(0, length, seq_len):
        idx = starts + torch.arange(k, min(k + seq_len, length), device=device)  # (S, t): target positions - 1
        valid = idx < n_targets
        logits, state = model(tokens[idx.clamp_max(n_targets - 1)], state)
        ce = F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]),
            tokens[(idx + 1).clamp_max(n_targets)].reshape(-1),
            reduction="none",
        )
        total += (ce * valid.reshape(-1)).sum()
    model.train(was_training)
    return float(total) / n_targets / math.log(2.0), n_targets
