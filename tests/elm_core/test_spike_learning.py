"""The adding-cpu preset's protocol learns the synthetic spike tasks on a CPU (a reduced size here)."""

from __future__ import annotations

import torch

from elm_core.budget import count_params
from elm_core.spec import PRESETS, RunSpec
from elm_core.train import prepare, train


def test_adding_cpu_resolves_to_a_pooled_fresh_task_within_its_budget():
    spec = RunSpec(task="synthetic-adding", preset="adding-cpu", budget=50_000, d_m=8)
    task, cfg = prepare(spec)
    assert task.n_in == cfg.n_in == PRESETS["adding-cpu"]["task_options"]["channels"] < 700
    assert task.fresh_train and task.n_out == 19 and task.synthetic and task.seq_len == 50
    assert 45_000 < count_params(cfg) <= 50_000


def test_the_spike_protocol_learns_single_synthetic_digits_well_above_chance():
    torch.set_num_threads(1)
    steps, batch = 200, 16  # about 0.8 test accuracy by then (seeds 0-2); 0.95 after 300
    spec = RunSpec(
        task="synthetic-digits", preset="adding-cpu", n_neurons=32, d_m=6, epochs=1, batch_size=batch,
        warmup_steps=10, eval_every=steps, eval_samples=320, test_samples=320,
        task_options={"num_train": steps * batch, "num_valid": 320, "num_test": 320},
    )
    record = train(spec)
    assert record.status == "done", record.reason
    assert record.steps == steps and record.n_out == 20
    assert record.test_metric > 0.5 and record.valid_metric > 0.5  # chance is 0.05; shuffled labels stay there
