"""What a run leaves behind in its process: the flags it set are put back, a checkpoint resumes on any
device, and a fatal device error marks the process as lost (elm_core.runtime)."""

from __future__ import annotations

import pytest
import torch

import elm_core.runtime as runtime
import elm_core.train as train_mod
from elm_core.config import ELMConfig
from elm_core.model import ELMNetwork
from elm_core.spec import RunSpec
from elm_core.train import _load_checkpoint, _save_checkpoint, make_optimizer, train
from tests.elm_core.test_train import TINY


@pytest.fixture
def fresh_process(monkeypatch):
    """A process that has met no device error (the record of one is a process global)."""
    monkeypatch.setattr(runtime, "_lost", [])


def _globals() -> tuple:
    return (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
            torch.get_float32_matmul_precision(), torch.get_num_threads(),
            torch.are_deterministic_algorithms_enabled())


@pytest.mark.parametrize("precision", ["tf32", "bf16", "fp32"])
def test_a_run_restores_the_flags_and_the_rng_it_changed(precision):
    torch.manual_seed(1234)
    rng, flags = torch.get_rng_state(), _globals()
    record = train(RunSpec(**TINY, steps=3, precision=precision, seed=5))
    assert record.status == "done", record.reason
    assert _globals() == flags  # a later fp32 run in this worker process does not compute in TF32
    assert torch.equal(torch.get_rng_state(), rng)


def test_a_run_after_a_tf32_run_equals_a_run_in_a_fresh_process():
    spec = RunSpec(**TINY, steps=4, seed=2, run_id="same")
    first = train(spec)
    train(spec.model_copy(update={"precision": "tf32", "seed": 9, "run_id": "other"}))
    again = train(spec)
    assert again.test_metric == first.test_metric and again.curve[-1].train_loss == first.curve[-1].train_loss


def _tiny_run(device: str = "cpu"):
    cfg = ELMConfig(n_in=7, n_out=7, n_neurons=8, d_m=3, d_tree=3, d_brch=2, recurrent_dropout=0.2, seed=1)
    model = ELMNetwork(cfg).to(device)
    opt = make_optimizer("adam", model.parameters(), 1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    return model, opt, sched


@pytest.mark.filterwarnings("ignore:for .* copying from a non-meta parameter:UserWarning")
def test_a_checkpoint_loads_onto_another_device_with_the_rng_on_the_host(tmp_path):
    """The RNG state is loaded with map_location="cpu" and set there, whatever device the run trains on; the
    model, optimiser and carried state are moved to that device explicitly ("meta" stands in for a GPU)."""
    model, opt, sched = _tiny_run()
    logits, state = model(torch.randint(0, 7, (2, 5)))
    logits.sum().backward()
    opt.step()
    torch.manual_seed(77)
    rng = torch.get_rng_state()
    path = tmp_path / "run.pt"
    _save_checkpoint(path, model, opt, sched, 3, state.detach(), [], 10)
    torch.manual_seed(0)

    other, other_opt, other_sched = _tiny_run("meta")
    step, loaded, curve, tokens = _load_checkpoint(path, other, other_opt, other_sched, torch.device("meta"))
    assert (step, curve, tokens) == (3, [], 10)
    assert torch.equal(torch.get_rng_state(), rng)  # the dropout masks after the resume are the ones before
    assert all(t.device.type == "meta" for t in loaded.tensors())
    assert all(v.device.type == "meta" for s in other_opt.state.values() for k, v in s.items() if k != "step")


def test_a_resumed_run_with_dropout_equals_the_whole_run(tmp_path):
    spec = RunSpec(**TINY, steps=10, run_id="resume-drop", checkpoint_dir="ck", checkpoint_every_s=1e-9,
                   model={"recurrent_dropout": 0.2, "input_dropout": 0.1})
    calls = []
    stopped = train(spec, should_stop=lambda: calls.append(1) or len(calls) > 6, checkpoint_root=tmp_path)
    assert stopped.status == "cancelled"
    resumed = train(spec, checkpoint_root=tmp_path)
    whole = train(spec.model_copy(update=dict(checkpoint_dir=None, run_id="whole-drop")))
    assert resumed.status == "done" and resumed.test_metric == whole.test_metric


def _failing_forward(monkeypatch, exc: Exception, after: int = 2):
    calls = []
    forward = train_mod.ELMNetwork.forward

    def fail(self, x, state=None):
        calls.append(1)
        if len(calls) > after:
            raise exc
        return forward(self, x, state)

    monkeypatch.setattr(train_mod.ELMNetwork, "forward", fail)


def test_a_fatal_device_error_fails_the_run_and_marks_the_process_lost(monkeypatch, fresh_process):
    _failing_forward(monkeypatch, RuntimeError("CUDA error: an illegal memory access was encountered"))
    record = train(RunSpec(**TINY, steps=5))
    assert record.status == "failed" and "illegal memory access" in record.reason
    assert "illegal memory access" in runtime.device_lost()


def test_out_of_memory_fails_the_run_and_the_process_goes_on(monkeypatch, fresh_process):
    _failing_forward(monkeypatch, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    record = train(RunSpec(**TINY, steps=5))
    assert record.status == "failed" and "out of memory" in record.reason
    assert runtime.device_lost() is None


def test_divergence_is_found_though_losses_are_read_in_groups(monkeypatch):
    calls = []
    forward = train_mod.ELMNetwork.forward

    def nan_after_three(self, x, state=None):
        calls.append(1)
        logits, state = forward(self, x, state)
        return (logits * float("nan") if len(calls) == 4 else logits), state

    monkeypatch.setattr(train_mod.ELMNetwork, "forward", nan_after_three)
    record = train(RunSpec(**TINY, steps=60, eval_every=1000))
    assert record.status == "failed" and record.reason == "diverged: loss is nan at step 3"
    assert record.steps == 3  # the steps before the first non-finite loss
