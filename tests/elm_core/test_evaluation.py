"""The test pass as parallel streams (elm_core.evaluation) equals the batch-1 pass to 0.01 BPC."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from elm_core.evaluation import evaluate_char_streams
from elm_core.model import ELMNetwork
from elm_core.spec import RunSpec
from elm_core.train import evaluate_chars, prepare


@pytest.fixture(scope="module")
def trained():
    """A small model trained for a few dozen steps on the bundled corpus (long memories matter by then)."""
    spec = RunSpec(task="text", n_neurons=24, d_m=6, d_tree=6, d_brch=4, batch_size=8, seq_len=50, steps=1)
    task, cfg = prepare(spec)
    torch.manual_seed(0)
    model = ELMNetwork(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    state = None
    for i, (x, y, _) in enumerate(task.stream("train", 8, 50)):
        if i == 60:
            break
        logits, state = model(x, None if state is None else state.detach())
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return task, model


def test_parallel_streams_equal_the_batch_1_pass(trained):
    task, model = trained
    n = 6000
    one, seen = evaluate_chars(model, task, "test", batch_size=1, seq_len=250, max_chars=n,
                               device=torch.device("cpu"))
    assert seen == n
    bpc, count = evaluate_char_streams(model, task.tokens("test")[: n + 1], streams=3, warmup=500)
    assert count == n  # every target once
    assert bpc == pytest.approx(one, abs=0.01)
    cold, _ = evaluate_char_streams(model, task.tokens("test")[: n + 1], streams=3, warmup=0)
    assert abs(bpc - one) < abs(cold - one)  # the warm-up is what makes the streams agree


def test_a_split_too_short_for_two_streams_is_the_batch_1_pass(trained):
    task, model = trained
    tokens = task.tokens("test")[:1251]  # whole chunks of 250: the batch-1 pass stops after one
    one, _ = evaluate_chars(model, task, "test", batch_size=1, seq_len=250, max_chars=1250,
                            device=torch.device("cpu"))
    bpc, count = evaluate_char_streams(model, tokens, streams=32, warmup=500)
    assert count == 1250 and bpc == pytest.approx(one, abs=1e-6)


def test_streams_of_unequal_length_count_each_target_once(trained):
    task, model = trained
    tokens = task.tokens("test")[:1003]  # 1002 targets in 4 streams of 251, the last one 249
    by_hand = 0.0
    with torch.no_grad():
        model.eval()
        for s in range(4):
            lo, hi = s * 251, min((s + 1) * 251, 1002)
            warm = tokens[max(lo - 10, 0) : lo].unsqueeze(0)
            state = model(warm)[1] if s else None
            logits, _ = model(tokens[lo:hi].unsqueeze(0), state)
            by_hand += float(F.cross_entropy(logits[0].float(), tokens[lo + 1 : hi + 1], reduction="sum"))
    bpc, count = evaluate_char_streams(model, tokens, streams=4, warmup=10)
    assert count == 1002
    assert bpc == pytest.approx(by_hand / 1002 / 0.6931471805599453, rel=1e-5)


def test_a_split_of_one_character_is_a_clear_error(trained):
    with pytest.raises(ValueError, match="at least two characters"):
        evaluate_char_streams(trained[1], torch.tensor([3]))
