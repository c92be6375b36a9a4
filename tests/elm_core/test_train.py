"""The training function: learns, is deterministic, fails and cancels cleanly, resumes from checkpoints."""

from __future__ import annotations

import math

import pytest

from elm_core import count_params
from elm_core.config import ELMConfig
from elm_core.spec import PRESETS, RunSpec, parse_spec
from elm_core.train import lr_factor, reset_probability, train

TINY = dict(task="text", n_neurons=16, d_m=4, d_tree=4, d_brch=4, batch_size=4, seq_len=20, eval_chars=400,
            test_chars=400, lr=5e-3, warmup_steps=5)
TINY_ADDING = dict(task="synthetic-adding", n_neurons=16, d_m=4, d_tree=4, d_brch=4, batch_size=8, epochs=1,
                   batches_per_epoch=6, eval_samples=32, test_samples=32,
                   task_options={"num_train": 64, "num_valid": 32, "num_test": 32, "max_time_s": 0.05})


def test_loss_falls_on_the_bundled_corpus():
    record = train(RunSpec(**TINY, steps=60, eval_every=30))
    assert record.status == "done", record.reason
    losses = [p.train_loss for p in record.curve]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    assert record.metric_name == "bpc" and record.task == "text"
    assert 0 < record.test_metric < math.log2(record.n_out) + 0.5
    assert record.valid_metric is not None and record.best_valid_metric <= record.valid_metric
    assert any(p.valid_metric is not None for p in record.curve)  # the periodic evaluation at step 30
    assert record.steps == 60 and record.tokens_seen == 60 * 4 * 20
    assert record.params == count_params(ELMConfig.from_dict(record.config))
    assert record.n_neurons == 16 and record.k_c == 16 and record.flops_per_step > 0
    assert record.versions["torch"] and record.host and record.device.startswith("cpu")


def test_a_run_records_its_diagnostics_and_its_final_validation_point():
    record = train(RunSpec(**TINY, steps=40, eval_every=1000, budget=None))  # shorter than eval_every
    assert record.status == "done", record.reason
    last = record.curve[-1]
    assert last.step == 40 and last.valid_metric == pytest.approx(record.valid_metric)
    assert 400 <= record.test_items < 400 + 250  # test_chars (in whole chunks of 250): what the test pass saw
    assert record.converged is None  # one validation point cannot say whether the curve is flat
    assert record.budget_used is None  # no budget given
    assert set(record.baselines) == {"0", "1", "2", "3", "4"}
    assert record.baselines["0"] == pytest.approx(math.log2(record.n_out), abs=1e-3)

    periodic = train(RunSpec(**TINY, steps=40, eval_every=5))
    assert periodic.converged is not None and periodic.tail_improvement is not None
    assert periodic.final_slope is not None


def test_a_finished_run_gives_back_the_pooled_scan_buffers():
    import torch

    from elm_core.workspace import WORKSPACE

    WORKSPACE.empty((64, 64), torch.empty(0))  # something pooled before the run
    assert WORKSPACE.pool
    record = train(RunSpec(**TINY, steps=3))
    assert record.status == "done", record.reason
    assert WORKSPACE.pool == {} and WORKSPACE.bytes == 0


def test_budget_and_allocation_resolve_to_the_largest_fit():
    spec = RunSpec(task="text", preset="small", budget=60_000, d_m=8)
    record = train(spec.model_copy(update=dict(steps=2, eval_chars=100, test_chars=100)))
    assert record.params <= 60_000 and record.budget == 60_000
    bigger = ELMConfig.from_dict({**record.config, "n_neurons": record.n_neurons + 1})
    assert count_params(bigger) > 60_000


def test_same_seed_same_result_bit_for_bit():
    a = train(RunSpec(**TINY, steps=8))
    b = train(RunSpec(**TINY, steps=8))
    c = train(RunSpec(**TINY, steps=8, seed=1))
    assert [p.train_loss for p in a.curve] == [p.train_loss for p in b.curve]
    assert a.test_metric == b.test_metric
    assert a.test_metric != c.test_metric


def test_non_finite_loss_fails_the_run_without_raising():
    record = train(RunSpec(**TINY, steps=5, model={"input_scale": 1e38}))
    assert record.status == "failed" and record.reason.startswith("diverged")


def test_should_stop_cancels_and_keeps_the_partial_curve():
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 4

    record = train(RunSpec(**TINY, steps=50), should_stop=stop)
    assert record.status == "cancelled" and record.steps == 4
    assert len(record.curve) >= 1 and record.test_metric is None


def test_progress_reports_step_loss_throughput_and_eta():
    seen = []
    train(RunSpec(**TINY, steps=6), on_progress=seen.append, progress_every_s=0.0)
    assert seen and {"step", "total_steps", "tokens", "loss", "tokens_per_s", "eta_s"} <= set(seen[0])
    assert seen[-1]["step"] == 6 and seen[-1]["eta_s"] == 0.0


def test_checkpoint_resume_continues_where_it_stopped(tmp_path):
    spec = RunSpec(**TINY, steps=12, run_id="resume-me", checkpoint_dir="ck", checkpoint_every_s=1e-9)
    calls = []
    first = train(spec, should_stop=lambda: calls.append(1) or len(calls) > 7, checkpoint_root=tmp_path)
    assert first.status == "cancelled"
    assert (tmp_path / "ck" / "resume-me.pt").exists()
    resumed = train(spec, checkpoint_root=tmp_path)
    whole = train(spec.model_copy(update=dict(checkpoint_dir=None, run_id="whole")))
    assert resumed.status == "done" and resumed.attempt == 1 and resumed.steps == 12
    assert resumed.test_metric == whole.test_metric  # resuming loses nothing and changes nothing
    assert not (tmp_path / "ck" / "resume-me.pt").exists()


def test_corrupt_checkpoint_starts_from_scratch_with_a_warning_naming_it(tmp_path, caplog):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "broken.pt").write_bytes(b"not a checkpoint at all")
    spec = RunSpec(**TINY, steps=6, run_id="broken", checkpoint_dir="ck")
    with caplog.at_level("WARNING", logger="elmlab.train"):
        record = train(spec, checkpoint_root=tmp_path)
    whole = train(spec.model_copy(update=dict(checkpoint_dir=None)))
    assert record.status == "done" and record.attempt == 0 and record.test_metric == whole.test_metric
    assert "broken.pt" in caplog.text and "from scratch" in caplog.text


@pytest.mark.parametrize(("field", "value"), [("checkpoint_dir", "/tmp/outside"), ("checkpoint_dir", "a/../../b"),
                                               ("run_id", "../escape"), ("run_id", "r" * 300)])
def test_checkpoint_paths_cannot_leave_the_checkpoint_folder(field, value):
    with pytest.raises(ValueError, match=field):
        parse_spec({**TINY, field: value})


@pytest.mark.parametrize("budget", [True, float("inf"), 1e30, 3_000_000_000])
def test_a_budget_beyond_the_documented_maximum_or_not_a_count_is_refused(budget):
    payload = {k: v for k, v in TINY.items() if k != "n_neurons"}
    with pytest.raises(ValueError, match=r"budget: must"):
        parse_spec({**payload, "budget": budget})


def test_a_run_too_large_for_memory_is_refused_naming_the_estimate():
    with pytest.raises(ValueError, match=r"memory: this run needs at least [\d.]+ GB"):
        train(RunSpec(**{**{k: v for k, v in TINY.items() if k != "n_neurons"}, "budget": 2_000_000_000,
                         "batch_size": 4096}))


def test_spike_task_reports_accuracy():
    record = train(RunSpec(**TINY_ADDING))
    assert record.status == "done", record.reason
    assert record.metric_name == "accuracy" and 0.0 <= record.test_metric <= 1.0
    assert record.n_in == 700 and record.n_out == 19 and record.task == "synthetic-adding"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"budget": -5, "d_m": 3}, "budget"),
        ({"budget": 1e6, "d_m": 3, "n_neurons": 4}, "only one"),
        ({"d_m": 3}, "budget"),
        ({"n_neurons": 4, "d_m": 3, "preset": "huge"}, "preset"),
        ({"n_neurons": 4, "d_m": 3, "lr": 0}, "lr"),
        ({"n_neurons": 4, "d_m": 3, "model": {"p_rec": 2}, "steps": 1}, "p_rec"),
        ({"n_neurons": 4, "d_m": 3, "bogus": 1}, "bogus"),
        ({"n_neurons": 4, "d_m": 3, "queue": "results"}, "queue"),
        ({"n_neurons": 4, "d_m": 3, "queue": "Has Spaces"}, "queue"),
    ],
)
def test_invalid_specs_name_the_field(payload, field):
    with pytest.raises(ValueError, match=field):
        spec = parse_spec(payload)
        spec.resolve_config(n_in=10, n_out=10)


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task"):
        train(RunSpec(task="nope", n_neurons=4, d_m=2))


def test_schedules():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0)
    assert reset_probability(0, 40_000, 0.01) == 1.0
    assert reset_probability(40_000, 40_000, 0.01) == pytest.approx(0.01)
    assert reset_probability(10**6, 40_000, 0.01) == pytest.approx(0.01)


def test_paper_presets_hold_the_reference_protocol():
    p = PRESETS["enwik8-paper"]
    assert (p["optimizer"], p["lr"], p["warmup_steps"], p["schedule_steps"], p["clip"]) == ("adam", 5e-4, 100,
                                                                                            300_000, 1.0)
    assert p["model"]["d_tree"] == 50 and p["model"]["d_brch"] == 15 and p["reset_anneal_steps"] == 40_000
    s = PRESETS["shd-adding-paper"]
    assert (s["optimizer"], s["lr"], s["epochs"], s["batches_per_epoch"]) == ("adamax", 5e-3, 70, 2000)
    assert s["model"]["input_dropout"] == 0.2 and s["model"]["p_rec"] == 0.25


@pytest.mark.parametrize("lr", [100.0, 1e4])
def test_a_diverging_learning_rate_fails_the_run_as_diverged(lr):
    record = train(RunSpec(**{**TINY, "steps": 25, "warmup_steps": 2, "lr": lr}))
    assert record.status == "failed" and record.reason.startswith("diverged"), record.reason


def test_a_sane_learning_rate_is_not_called_diverged():
    record = train(RunSpec(**{**TINY, "steps": 25, "warmup_steps": 2}))
    assert record.status == "done", record.reason
