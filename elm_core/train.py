"""One training function from a run spec to a result record; every worker calls it.

    record = train(spec, on_progress=print, should_stop=lambda: False)

Character tasks (text, enwik8): truncated BPTT over B parallel streams, the carried state reset
with a probability annealed from 1 to `reset_p_final` over `reset_anneal_steps` (the reference's
schedule), cross-entropy on every step, metric BPC = CE / ln 2; the final test pass runs the test
split as parallel streams, each carrying its state (elm_core.evaluation; equal to the batch-1 pass
to 0.01 BPC).
Spike tasks (shd, shd-adding, synthetic-adding): cross-entropy on the last step, metric accuracy.
Both: Adam(ax) with linear warm-up then cosine decay to 0, gradient-norm clipping, label smoothing,
variational dropout from the config. A non-finite loss, a training loss well above the untrained
model's after warm-up, or a test BPC worse than chance ends the run `failed` (reason `diverged...`);
(the losses are read back from the device every LOSS_READ_EVERY steps, so it is noticed within
that many); `should_stop()` ends it `cancelled` with its partial curve. Each `on_progress` dict
carries `points`, the learning-curve points (step, train loss, valid metric) added since the previous
call, so that a listener holds the curve while the run trains. Never raises for a run that fails
while training; invalid specs and missing data raise ValueError before any work starts.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import os
import platform
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from elm_core.budget import count_params, flops_per_step
from elm_core.config import ELMConfig
from elm_core.data import get_task
from elm_core.data.ngram import ngram_baselines
from elm_core.diagnostics import budget_used, convergence
from elm_core.evaluation import evaluate_char_streams
from elm_core.lr_rule import param_groups
from elm_core.memory import check_fits
from elm_core.model import ELMNetwork, ELMState
from elm_core.records import DIVERGE_MARGIN, CurvePoint, RunRecord
from elm_core.runtime import note_device_error, run_globals
from elm_core.spec import RunSpec
from elm_core.workspace import clear_workspace

LN2 = math.log(2.0)
LOSS_READ_EVERY = 25  # steps between reads of the training losses from the device (each read waits for it)
# Divergence beyond NaN: after warm-up, the mean training loss of the last DIVERGE_WINDOW steps above
# the untrained model's loss ln(n_out) by more than DIVERGE_MARGIN nats (a run that learns anything
# sits below ln(n_out)); or a final test BPC above log2(n_out) by as much. Either ends the run failed,
# "diverged", and the fits (which take done runs only) never see it.
DIVERGE_WINDOW = 20
log = logging.getLogger("elmlab.train")
Progress = Callable[[dict[str, Any]], None]


class _Stop(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was requested but no CUDA device is available")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def diverged(recent_losses: collections.deque[float], chance_loss: float) -> bool:
    """Whether a full window of training losses (nats) averages more than DIVERGE_MARGIN above chance."""
    return len(recent_losses) == recent_losses.maxlen and float(np.mean(recent_losses)) > chance_loss + DIVERGE_MARGIN


def lr_factor(step: int, warmup: int, horizon: int) -> float:
    """Linear warm-up over `warmup` steps, then cosine from 1 to 0 at `horizon`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, horizon - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def reset_probability(step: int, anneal: int, p_final: float) -> float:
    """The reference's carried-state reset: probability 1 at step 0, linearly down to p_final at `anneal`."""
    if anneal <= 0:
        return p_final
    return 1.0 + (p_final - 1.0) * min(1.0, step / anneal)


def make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    return {
        "adam": lambda: torch.optim.Adam(params, lr=lr),
        "adamax": lambda: torch.optim.Adamax(params, lr=lr),
        "adamw": lambda: torch.optim.AdamW(params, lr=lr),
        "sgd": lambda: torch.optim.SGD(params, lr=lr, momentum=0.9),
    }[name]()


@torch.no_grad()
def evaluate_chars(
    model: ELMNetwork, task, split: str, *, batch_size: int, seq_len: int, max_chars: int | None, device: torch.device
) -> tuple[float, int]:
    """(BPC, targets seen) over (the first `max_chars` targets of) a split, the state carried through each stream."""
    was_training = model.training
    model.eval()
    state, total, count = None, torch.zeros((), dtype=torch.float64, device=device), 0
    for x, y, _ in task.stream(split, batch_size, seq_len, loop=False):
        logits, state = model(_to(x, device), state)
        total += F.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), _to(y, device).reshape(-1), reduction="sum"
        )
        count += y.numel()
        if max_chars is not None and count >= max_chars:
            break
    model.train(was_training)
    return float(total) / max(count, 1) / LN2, count


@torch.no_grad()
def evaluate_spikes(
    model: ELMNetwork, task, split: str, *, batch_size: int, max_samples: int | None, device: torch.device
) -> tuple[float, int]:
    """(accuracy, samples seen) of the last step's prediction over (the first `max_samples` samples of) a split."""
    was_training = model.training
    model.eval()
    correct, count = torch.zeros((), dtype=torch.int64, device=device), 0
    for x, y in task.batches(split, batch_size, seed=0, epoch=0):
        logits, _ = model(_to(x, device))
        correct += (logits[:, -1].argmax(-1) == _to(y, device)).sum()
        count += y.numel()
        if max_samples is not None and count >= max_samples:
            break
    model.train(was_training)
    return int(correct) / max(count, 1), count


def _to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host batch on `device`; to CUDA through pinned memory, without waiting for the device."""
    if device.type != "cuda":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


@functools.cache
def code_version() -> str:
    """`git describe` of the checkout when there is one, else the installed package version (once per process)."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("elmlab")
    except PackageNotFoundError:
        return "unknown"


def library_versions() -> dict[str, str]:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{platform.processor() or platform.machine()}x{torch.get_num_threads()}"


def lr_setting(spec: RunSpec, proto: dict, cfg: ELMConfig) -> tuple[str, int]:
    """The run's learning-rate rule and the parameter count a budget rule scales by (the spec's budget
    when it names one, else the network's parameters)."""
    return proto["lr_rule"] or "constant", spec.budget or count_params(cfg)


def base_record(spec: RunSpec, cfg: ELMConfig, task) -> RunRecord:
    """The record a run starts from: identity, configuration and provenance, no results yet."""
    return RunRecord(
        run_id=spec.run_id or uuid.uuid4().hex[:12],
        sweep_id=spec.sweep_id,
        task=task.name,
        dataset=task.description,
        dataset_hash=task.dataset_hash,
        n_in=cfg.n_in,
        n_out=cfg.n_out,
        n_neurons=cfg.n_neurons,
        d_m=cfg.d_m,
        l_mlp=cfg.l_mlp,
        d_mlp=cfg.d_mlp_eff,
        d_tree=cfg.d_tree,
        d_brch=cfg.d_brch,
        readout_d_m=cfg.readout_d_m,
        k_e=cfg.k_e,
        k_c=cfg.k_c,
        params=count_params(cfg),
        budget=spec.budget,
        flops_per_step=flops_per_step(cfg),
        seed=spec.seed,
        metric_name=task.metric_name,
        host=socket.gethostname(),
        versions=library_versions(),
        code_version=code_version(),
        config=cfg.to_dict(),
        spec=spec.model_dump(mode="json"),
    )


def prepare(spec: RunSpec, data_dir: Path | None = None):
    """Open the task and resolve the model: (task, cfg). Raises ValueError for anything invalid."""
    task = get_task(spec.task, data_dir, **spec.resolved_task_options())
    cfg = spec.resolve_config(n_in=task.n_in, n_out=task.n_out, kind=task.kind)
    return task, cfg


def _char_batches(task, proto, seed: int, device) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed + 1)
    for step, (x, y, new_stream) in enumerate(task.stream("train", proto["batch_size"], proto["seq_len"], seed=seed)):
        p = reset_probability(step, proto["reset_anneal_steps"] or 0, proto["reset_p_final"] or 0.0)
        keep = (torch.rand(x.shape[0], generator=gen) >= p) & ~new_stream
        yield _to(x, device), _to(y, device), _to(keep, device)


def _spike_batches(task, proto, seed: int, device):
    per_epoch = proto["batches_per_epoch"]
    for epoch in range(proto["epochs"]):
        for i, (x, y) in enumerate(task.batches("train", proto["batch_size"], seed=seed, epoch=epoch)):
            if per_epoch is not None and i >= per_epoch:
                break
            yield _to(x, device), _to(y, device), None


def train(
    spec: RunSpec,
    on_progress: Progress | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    data_dir: Path | None = None,
    progress_every_s: float = 1.0,
    checkpoint_root: Path | None = None,
) -> RunRecord:
    """Train one run and return its record (status done, failed or cancelled; never raises mid-run).

    Checkpoints (when the spec sets `checkpoint_dir`) go to checkpoint_root / checkpoint_dir / <run_id>.pt;
    checkpoint_root defaults to the settings' ELMLAB_CHECKPOINT_DIR. A run too large for the device's
    memory raises ValueError before anything is allocated (elm_core.memory). The process globals the
    run sets (seed, precision flags) are restored when it ends (elm_core.runtime)."""
    task, cfg = prepare(spec, data_dir)
    device = pick_device(spec.device)
    with run_globals(spec.seed, spec.precision, device):
        return _train(spec, task, cfg, device, on_progress, should_stop, progress_every_s, checkpoint_root)


def _train(
    spec: RunSpec,
    task,
    cfg: ELMConfig,
    device: torch.device,
    on_progress: Progress | None,
    should_stop: Callable[[], bool] | None,
    progress_every_s: float,
    checkpoint_root: Path | None,
) -> RunRecord:
    proto = spec.protocol(task.kind)
    check_fits(
        cfg, batch_size=proto["batch_size"], seq_len=proto["seq_len"] or getattr(task, "seq_len", 1), device=device
    )
    record = base_record(spec, cfg, task)
    record.device = device_name(device)
    record.status = "running"
    if task.kind == "spike":
        per_epoch = proto["batches_per_epoch"] or math.ceil(task.num_items("train") / proto["batch_size"])
        proto["batches_per_epoch"] = per_epoch
        total_steps = proto["epochs"] * per_epoch
    else:
        total_steps = proto["steps"]
    horizon = proto["schedule_steps"] or total_steps

    model = ELMNetwork(cfg).to(device)
    model.train()
    opt = make_optimizer(
        proto["optimizer"],
        param_groups(model, proto["lr"], *lr_setting(spec, proto, cfg)),
        proto["lr"],
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, proto["warmup_steps"] or 0, horizon))
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec.precision == "bf16")

    ckpt = _checkpoint_path(spec, record.run_id, checkpoint_root)
    losses = _StepLosses(task.kind, cfg.n_out, proto["warmup_steps"] or 0)
    start_step, state, curve, tokens = 0, None, [], 0
    if ckpt is not None and ckpt.exists():
        try:
            start_step, state, curve, tokens = _load_checkpoint(ckpt, model, opt, sched, device)
            record.attempt += 1
        except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a truncated or foreign file
            log.warning(
                "run %s: checkpoint %s is unreadable (%s: %s); starting from scratch",
                record.run_id,
                ckpt,
                type(exc).__name__,
                str(exc).splitlines()[0] if str(exc) else "",
            )
            model.load_state_dict(ELMNetwork(cfg).to(device).state_dict())  # a partial load leaves nothing
            start_step, state, curve, tokens = 0, None, [], 0
    t0 = time.perf_counter() - (curve[-1].wall_time_s if curve else 0.0)
    last_progress = last_ckpt = time.perf_counter()
    curve_every = max(1, total_steps // 200)
    batches = (_spike_batches if task.kind == "spike" else _char_batches)(task, proto, spec.seed, device)
    evaluate = _evaluator(model, task, proto, device)
    best_valid: float | None = None
    step = start_step
    sent = len(curve)  # curve points already handed to on_progress (its "points": the search's live signal)
    try:
        for step_i, (x, y, keep) in enumerate(batches):
            if step_i < start_step:
                continue  # resume: the data stream is deterministic, skip what was seen
            if step_i >= total_steps:
                break
            step = step_i
            if should_stop is not None and should_stop():
                raise _Stop("cancelled", "cancelled by user")
            with autocast:
                if task.kind == "char":
                    if state is not None:
                        state = state.mask(keep)
                    logits, state = model(x, state)
                    state = state.detach()
                    flat, target = logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1)
                else:
                    logits, _ = model(x)
                    flat, target = logits[:, -1].float(), y
                loss = F.cross_entropy(flat, target, label_smoothing=proto["label_smoothing"] or 0.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), proto["clip"])
            opt.step()
            sched.step()
            tokens += y.numel() if task.kind == "char" else x.shape[0] * x.shape[1]
            losses.add(step, loss, flat, target)
            now = time.perf_counter()
            valid = None
            if proto["eval_every"] and (step + 1) % proto["eval_every"] == 0 and step + 1 < total_steps:
                valid, _ = evaluate("valid")
                best_valid = _better(best_valid, valid, task.metric_name)
            point = valid is not None or (step + 1) % curve_every == 0 or step == start_step
            save = ckpt is not None and now - last_ckpt >= spec.checkpoint_every_s
            if (point or save or len(losses.pending) >= LOSS_READ_EVERY) and (why := losses.read()):
                raise _Stop("failed", why)
            if point:
                curve.append(
                    CurvePoint(
                        step=step + 1,
                        tokens=tokens,
                        wall_time_s=round(now - t0, 3),
                        train_loss=losses.last_plain,
                        valid_metric=valid,
                    )
                )
            if on_progress is not None and (now - last_progress >= progress_every_s or valid is not None):
                last_progress = now  # the loss last read: reading the newest would wait for the device
                info = _progress(step + 1, total_steps, tokens, losses.last_plain, now - t0, start_step, t0, valid)
                info["points"], sent = [(c.step, c.train_loss, c.valid_metric) for c in curve[sent:]], len(curve)
                on_progress(info)
            if save:
                last_ckpt = now
                _save_checkpoint(ckpt, model, opt, sched, step + 1, state, curve, tokens)
        if why := losses.read():
            raise _Stop("failed", why)
        step = total_steps
        record.valid_metric, _ = evaluate("valid")
        record.test_metric, record.test_items = evaluate("test")
        record.best_valid_metric = _better(best_valid, record.valid_metric, task.metric_name)
        _add_final_point(curve, total_steps, tokens, time.perf_counter() - t0, record.valid_metric)
        record.status, record.reason = "done", None
        if task.kind == "char" and record.test_metric > (losses.chance_loss + DIVERGE_MARGIN) / LN2:
            record.status = "failed"
            record.reason = (
                f"diverged: test BPC {record.test_metric:.4g} is worse than chance, "
                f"log2({cfg.n_out}) = {losses.chance_loss / LN2:.3g}, "
                f"by more than {DIVERGE_MARGIN / LN2:.2g}"
            )
    except _Stop as stop:
        record.status, record.reason = stop.status, stop.reason
    except (RuntimeError, FloatingPointError) as exc:  # e.g. out of memory: the run fails, the caller lives
        record.status, record.reason = "failed", f"{type(exc).__name__}: {exc}"
        note_device_error(exc)  # a fatal CUDA error: the worker must exit (elm_core.runtime)
    finally:
        clear_workspace()  # a worker outlives its runs: give back the scans' pooled buffers
    if record.status == "cancelled":
        losses.read()  # the steps it did
    train_losses = losses.metric
    tail = train_losses[-50:]
    record.train_metric = float(np.mean(tail)) if tail else None
    record.steps = step if record.status == "done" else len(train_losses) + start_step
    record.tokens_seen = tokens
    record.wall_time_s = round(time.perf_counter() - t0, 3)
    record.curve = curve
    _diagnose(record, total_steps, task)
    record.updated_at = time.time()
    if on_progress is not None:
        on_progress(
            _progress(
                record.steps,
                total_steps,
                tokens,
                curve[-1].train_loss if curve else float("nan"),
                record.wall_time_s,
                start_step,
                t0,
                record.valid_metric,
                done=True,
            )
        )
    if ckpt is not None and record.status == "done" and ckpt.exists():
        ckpt.unlink()
    return record


def _add_final_point(curve: list[CurvePoint], step: int, tokens: int, wall: float, valid: float) -> None:
    """The final evaluation joins the learning curve (a run shorter than eval_every still has one)."""
    if curve and curve[-1].step == step:
        curve[-1].valid_metric = valid
        return
    loss = curve[-1].train_loss if curve else float("nan")
    curve.append(CurvePoint(step=step, tokens=tokens, wall_time_s=round(wall, 3), train_loss=loss, valid_metric=valid))


def _diagnose(record: RunRecord, total_steps: int, task) -> None:
    """Convergence from the run's own validation curve, the budget actually used, the data set's baselines."""
    points = [(c.step, c.valid_metric) for c in record.curve if c.valid_metric is not None]
    if record.status == "done" and points:
        conv = convergence([p[0] for p in points], [p[1] for p in points], total_steps, task.metric_name)
        record.converged, record.tail_improvement, record.final_slope = (
            conv.converged,
            conv.tail_improvement,
            conv.final_slope,
        )
    record.budget_used = budget_used(record.params, record.budget)
    if task.kind == "char":
        try:
            record.baselines = ngram_baselines(task, ("test",))["test"]
        except OSError:  # no writable cache folder: the run is still good, only the reference lines are missing
            record.baselines = {}


class _StepLosses:
    """The per-step training values, kept on the device and read back a group at a time (a read waits for the
    device): the optimised loss (a non-finite one is divergence), the plain cross-entropy (the curve's
    train_loss) and the step's train metric (BPC, or the batch's accuracy)."""

    def __init__(self, kind: str, n_out: int, warmup: int) -> None:
        self.kind, self.warmup = kind, warmup
        self.chance_loss = math.log(n_out)  # the cross-entropy of a uniform prediction
        self.recent: collections.deque[float] = collections.deque(maxlen=DIVERGE_WINDOW)
        self.pending: list[torch.Tensor] = []
        self.steps: list[int] = []
        self.metric: list[float] = []
        self.last_plain = float("nan")
        self.diverged: str | None = None

    def add(self, step: int, loss: torch.Tensor, flat: torch.Tensor, target: torch.Tensor) -> None:
        flat = flat.detach()
        plain = F.cross_entropy(flat, target)
        metric = plain / LN2 if self.kind == "char" else (flat.argmax(-1) == target).float().mean()
        self.pending.append(torch.stack((loss.detach().float(), plain, metric)))
        self.steps.append(step)

    def read(self) -> str | None:
        """Read the pending values; the reason the run diverged, if a loss was not finite (later ones dropped)."""
        if self.pending and self.diverged is None:
            for step, (loss, plain, metric) in zip(self.steps, torch.stack(self.pending).tolist(), strict=True):
                if not math.isfinite(loss):
                    self.diverged = f"diverged: loss is {loss} at step {step}"
                    break
                self.recent.append(plain)
                if step >= self.warmup + DIVERGE_WINDOW and diverged(self.recent, self.chance_loss):
                    self.diverged = (
                        f"diverged: mean training loss {np.mean(self.recent):.3g} nats over the last "
                        f"{DIVERGE_WINDOW} steps exceeds the untrained model's "
                        f"{self.chance_loss:.3g} by more than {DIVERGE_MARGIN} (step {step})"
                    )
                    break
                self.metric.append(metric)
                self.last_plain = plain
        self.pending, self.steps = [], []
        return self.diverged


def _better(best: float | None, value: float, metric: str) -> float:
    if best is None:
        return value
    return min(best, value) if metric == "bpc" else max(best, value)


def _evaluator(model, task, proto, device) -> Callable[[str], tuple[float, int]]:
    def evaluate(split: str) -> tuple[float, int]:
        if task.kind == "char":
            seq_len = max(proto["seq_len"], 250)
            if split == "test":  # every target once, as parallel streams each carrying its state
                limit = proto["test_chars"]
                split_tokens = task.tokens("test")
                return evaluate_char_streams(
                    model, split_tokens if limit is None else split_tokens[: limit + 1], seq_len=seq_len, device=device
                )
            return evaluate_chars(
                model,
                task,
                split,
                batch_size=proto["batch_size"],
                seq_len=seq_len,
                max_chars=proto["eval_chars"],
                device=device,
            )
        limit = proto["eval_samples"] if split == "valid" else proto["test_samples"]
        return evaluate_spikes(
            model, task, split, batch_size=max(proto["batch_size"], 32), max_samples=limit, device=device
        )

    return evaluate


def _progress(step, total, tokens, loss, elapsed, start_step, t0, valid, done=False) -> dict[str, Any]:
    done_here = max(step - start_step, 1)
    rate = done_here / max(elapsed, 1e-9)
    return {
        "step": step,
        "total_steps": total,
        "tokens": tokens,
        "loss": loss,
        "elapsed_s": round(elapsed, 2),
        "tokens_per_s": round(tokens / max(elapsed, 1e-9), 1),
        "steps_per_s": round(rate, 3),
        "eta_s": 0.0 if done else round((total - step) / rate, 1),
        "valid_metric": valid,
    }


def _checkpoint_path(spec: RunSpec, run_id: str, root: Path | None) -> Path | None:
    """root / spec.checkpoint_dir / <run_id>.pt, refused (ValueError) unless it lies inside root: the spec's
    patterns already forbid absolute paths, '..' and path separators in run ids; this is the last guard."""
    if not spec.checkpoint_dir:
        return None
    if root is None:
        from elm_core.settings import get_settings

        root = get_settings().checkpoints_path
    root = Path(root).expanduser().resolve()
    path = (root / spec.checkpoint_dir / f"{run_id}.pt").resolve()
    if not path.is_relative_to(root) or path.parent == path:
        raise ValueError(f"checkpoint_dir: {spec.checkpoint_dir!r} with run id {run_id!r} leaves {root}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _save_checkpoint(path: Path, model, opt, sched, step: int, state: ELMState | None, curve, tokens: int) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(
        {
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "step": step,
            "state": None if state is None else [t.cpu() for t in state.tensors()],
            "curve": [c.model_dump() for c in curve],
            "tokens": tokens,
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if (device := _device_of(model)).type == "cuda" else None,
        },
        tmp,
    )
    os.replace(tmp, path)


def _device_of(model) -> torch.device:
    return next(model.parameters()).device


def _load_checkpoint(path: Path, model, opt, sched, device):
    """Load onto the host, then move: the RNG states are host tensors wherever the run trains, and
    the model and optimiser copy their tensors to their own device."""
    ck = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["opt"])
    sched.load_state_dict(ck["sched"])
    torch.set_rng_state(ck["rng"])
    if device.type == "cuda" and ck.get("cuda_rng") is not None:  # the dropout masks after the resume
        torch.cuda.set_rng_state(ck["cuda_rng"], device)
    state = None if ck["state"] is None else ELMState(*(t.to(device) for t in ck["state"]))
    return ck["step"], state, [CurvePoint(**c) for c in ck["curve"]], ck["tokens"]
