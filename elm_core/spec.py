"""A run spec: everything one training run needs, validated and JSON-serialisable.

A spec names a task, a model (a budget and an allocation, or an explicit size), the training
protocol and the device. Presets hold the reference's protocols (`enwik8-paper`,
`shd-adding-paper`), ones sized for a 2-core CPU whose runs converge (`cpu`, about 10 minutes on one
core at 100k parameters) and smoke presets that finish in about a minute (`small`, `adding-small`:
they show the machinery works, not where an optimum lies); fields given explicitly override the preset.

    spec = RunSpec(task="text", preset="small", budget=60_000, d_m=8)
    cfg = spec.resolve_config(n_in=task.n_in, n_out=task.n_out)
"""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from elm_core.budget import allocate
from elm_core.config import ELMConfig

# Per preset: training protocol and layer settings (docs/science.md section 4).
PRESETS: dict[str, dict[str, Any]] = {
    "enwik8-paper": dict(
        optimizer="adam",
        lr=5e-4,
        warmup_steps=100,
        schedule_steps=300_000,
        steps=300_000,
        clip=1.0,
        label_smoothing=1e-4,
        batch_size=8,
        seq_len=100,
        reset_anneal_steps=40_000,
        reset_p_final=0.01,
        eval_every=5_000,
        eval_chars=None,
        test_chars=None,
        model=dict(d_tree=50, d_brch=15, tau_min=0.1, tau_max=100.0, tau_r=2.0, p_rec=0.8),
    ),
    "small": dict(
        optimizer="adam",
        lr=3e-3,
        warmup_steps=20,
        schedule_steps=None,
        steps=400,
        clip=1.0,
        label_smoothing=1e-4,
        batch_size=8,
        seq_len=100,
        reset_anneal_steps=200,
        reset_p_final=0.01,
        eval_every=200,
        eval_chars=8_000,
        test_chars=20_000,
        model=dict(d_tree=16, d_brch=8, tau_min=0.1, tau_max=100.0, tau_r=2.0, p_rec=0.8),
    ),
    # Sized for a 2-core CPU: a 100k-parameter run trains 8M characters (about 1.8 epochs of the bundled
    # corpus) in about 10 minutes on one core, and runs of 25k-400k parameters end on a flat validation
    # curve (elm_core.diagnostics); the learning rate follows the budget and each neuron's fan-in
    # (elm_core.lr_rule: 1e-2 at 40k and below, 5e-3 at 113k and above).
    "cpu": dict(
        optimizer="adam",
        lr=5e-3,
        lr_rule="fan-in-budget",
        warmup_steps=100,
        schedule_steps=None,
        steps=2500,
        clip=1.0,
        label_smoothing=1e-4,
        batch_size=32,
        seq_len=100,
        reset_anneal_steps=1000,
        reset_p_final=0.01,
        eval_every=250,
        eval_chars=50_000,
        test_chars=None,
        model=dict(d_tree=16, d_brch=8, tau_min=0.1, tau_max=100.0, tau_r=2.0, p_rec=0.8),
    ),
    "shd-adding-paper": dict(
        optimizer="adamax",
        lr=5e-3,
        warmup_steps=400,
        schedule_steps=None,
        epochs=70,
        batches_per_epoch=2000,
        clip=1.0,
        label_smoothing=0.01,
        batch_size=8,
        eval_every=2000,
        eval_samples=None,
        test_samples=None,
        model=dict(
            d_tree=30,
            d_brch=10,
            tau_min=1.0,
            tau_max=500.0,
            tau_r=5.0,
            p_rec=0.25,
            input_dropout=0.2,
            recurrent_dropout=0.2,
        ),
    ),
    # A smoke test of the spike path (about a minute on a CPU, 2,400 pairs of 700 channels): it runs
    # everything but learns nothing; adding-cpu is the one that learns.
    "adding-small": dict(
        optimizer="adamax",
        lr=5e-3,
        warmup_steps=20,
        schedule_steps=None,
        epochs=1,
        batches_per_epoch=150,
        clip=1.0,
        label_smoothing=0.01,
        batch_size=16,
        eval_every=150,
        eval_samples=256,
        test_samples=512,
        task_options=dict(bin_ms=20.0),
        model=dict(d_tree=10, d_brch=6, tau_min=1.0, tau_max=50.0, tau_r=5.0, p_rec=0.25),
    ),
    # Learns synthetic-adding on one CPU core in about 10 minutes (docs/spikes.md): 70 pooled channels
    # of 40 ms bins (50 steps a pair), fresh training pairs (the synthetic tasks' default), 4000 steps.
    "adding-cpu": dict(
        optimizer="adam",
        lr=3e-3,
        warmup_steps=100,
        schedule_steps=None,
        epochs=20,
        batches_per_epoch=None,
        clip=1.0,
        label_smoothing=0.01,
        batch_size=32,
        eval_every=1000,
        eval_samples=1000,
        test_samples=2000,
        task_options=dict(bin_ms=40.0, channels=70),
        model=dict(d_tree=10, d_brch=6, tau_min=1.0, tau_max=100.0, tau_r=5.0, p_rec=0.25),
    ),
}
DEFAULT_PRESET = {"char": "small", "spike": "adding-small"}

PROTOCOL_FIELDS = (
    "steps",
    "epochs",
    "batches_per_epoch",
    "batch_size",
    "seq_len",
    "optimizer",
    "lr",
    "warmup_steps",
    "schedule_steps",
    "clip",
    "label_smoothing",
    "lr_rule",
    "reset_anneal_steps",
    "reset_p_final",
    "eval_every",
    "eval_chars",
    "test_chars",
    "eval_samples",
    "test_samples",
)
# Run ids name files (store records, checkpoints, the embedded broker's messages) and Celery task ids:
# one strict pattern everywhere, short enough for any file system's name limit.
RUN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# A subfolder of the worker's checkpoint folder (ELMLAB_CHECKPOINT_DIR): relative, no "..", plain names.
CHECKPOINT_DIR_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}(/[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}){0,3}$"
# The largest budget a spec may ask for: 2e9 parameters is about 8 GB of fp32 weights, 32 GB with Adam's
# state and gradients, beyond any machine this project trains on (docs/queue.md, "Limits").
MAX_BUDGET = 2_000_000_000
MODEL_FIELDS = ("p_rec", "tau_min", "tau_max", "tau_r", "input_scale", "lam", "input_dropout", "recurrent_dropout")


class RunSpec(BaseModel):
    """One training run. Unset protocol fields come from the preset (default: the task kind's small one)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    run_id: str | None = Field(default=None, pattern=RUN_ID_PATTERN)
    sweep_id: str | None = Field(default=None, max_length=128)
    task: str = "text"
    task_options: dict[str, Any] = Field(default_factory=dict)
    preset: str | None = None
    seed: int = Field(default=0, ge=0, lt=2**63)  # torch seeds are 64-bit; the data generator adds 1

    # Model: a budget plus an allocation (d_m or n_neurons, with d_tree x d_brch), or an explicit size.
    budget: int | None = Field(default=None, gt=0, le=MAX_BUDGET)
    n_neurons: int | None = Field(default=None, gt=0)
    d_m: int | None = Field(default=None, gt=0)
    d_tree: int | None = Field(default=None, gt=0)
    d_brch: int | None = Field(default=None, gt=0)
    l_mlp: int = Field(default=1, ge=0)
    d_mlp: int | None = Field(default=None, gt=0)
    readout_d_m: int = Field(default=3, gt=0)
    model: dict[str, Any] = Field(default_factory=dict)  # other ELMConfig fields (p_rec, tau_*, dropout)

    # Protocol (None = from the preset).
    steps: int | None = Field(default=None, gt=0)
    epochs: int | None = Field(default=None, gt=0)
    batches_per_epoch: int | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, gt=0)
    seq_len: int | None = Field(default=None, gt=0)
    optimizer: Literal["adam", "adamax", "adamw", "sgd"] | None = None
    lr: float | None = Field(default=None, gt=0)
    # None = the preset's (constant when it names none)
    lr_rule: Literal["constant", "fan-in", "fan-in-budget"] | None = None
    warmup_steps: int | None = Field(default=None, ge=0)
    schedule_steps: int | None = Field(default=None, gt=0)  # cosine horizon; None = the run's length
    clip: float | None = Field(default=None, gt=0)
    label_smoothing: float | None = Field(default=None, ge=0, lt=1)
    reset_anneal_steps: int | None = Field(default=None, ge=0)
    reset_p_final: float | None = Field(default=None, ge=0, le=1)
    eval_every: int | None = Field(default=None, gt=0)
    eval_chars: int | None = Field(default=None, gt=0)  # None = the whole valid split
    test_chars: int | None = Field(default=None, gt=0)  # None = the whole test split
    eval_samples: int | None = Field(default=None, gt=0)
    test_samples: int | None = Field(default=None, gt=0)

    device: Literal["auto", "cpu", "cuda"] = "auto"
    # The broker queue the run goes to; None = "gpu" for device cuda, else "train". A named queue
    # sends runs to the workers started with `elmlab worker --queues NAME` (a machine, a GPU type).
    queue: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    # Checkpoints live under the worker's own ELMLAB_CHECKPOINT_DIR; a spec names at most a relative subfolder.
    checkpoint_dir: str | None = Field(default=None, pattern=CHECKPOINT_DIR_PATTERN)
    checkpoint_every_s: float = Field(default=60.0, gt=0)

    @field_validator("budget", mode="before")
    @classmethod
    def _whole_budget(cls, v: Any) -> Any:
        """A budget is a count: True is not 1, and inf or 1e30 is refused by name, not by an overflow."""
        if isinstance(v, bool):
            raise ValueError("must be a whole number of parameters, not a boolean")
        if isinstance(v, (int, float)) and (not math.isfinite(v) or v > MAX_BUDGET):
            raise ValueError(f"must be at most {MAX_BUDGET:.0e} parameters (got {v:g})")
        return v

    @field_validator("run_id", mode="before")
    @classmethod
    def _plain_run_id(cls, v: Any) -> Any:
        if isinstance(v, str) and not re.fullmatch(RUN_ID_PATTERN, v):
            raise ValueError(
                f"{v[:40]!r}{'...' if len(v) > 40 else ''} is not a run id: 1-64 letters, digits, "
                "'.', '_' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("checkpoint_dir", mode="before")
    @classmethod
    def _relative_checkpoint_dir(cls, v: Any) -> Any:
        if isinstance(v, str) and not re.fullmatch(CHECKPOINT_DIR_PATTERN, v):
            raise ValueError(
                f"{v[:60]!r} is not a subfolder name: checkpoints go under the worker's "
                "ELMLAB_CHECKPOINT_DIR; give a relative path of plain names (no '..', not absolute)"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> RunSpec:
        if self.queue == "results":
            raise ValueError("queue: 'results' is the recorder's queue; runs go to train, gpu or a queue of your own")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        unknown = sorted(set(self.model) - set(MODEL_FIELDS))
        if unknown:
            raise ValueError(f"model: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(MODEL_FIELDS)}")
        if self.budget is None and (self.n_neurons is None or self.d_m is None):
            raise ValueError("give a budget (with d_m or n_neurons), or both n_neurons and d_m")
        if self.budget is not None and self.n_neurons is not None and self.d_m is not None:
            raise ValueError("with a budget, fix only one of d_m and n_neurons; the budget decides the other")
        return self

    def protocol(self, kind: str) -> dict[str, Any]:
        """The resolved training protocol: the fields set here, else the preset's values."""
        preset = PRESETS[self.preset or DEFAULT_PRESET[kind]]
        return {k: preset.get(k) if getattr(self, k) is None else getattr(self, k) for k in PROTOCOL_FIELDS}

    def resolved_task_options(self) -> dict[str, Any]:
        preset = PRESETS.get(self.preset or "", {})
        return {**preset.get("task_options", {}), **self.task_options}

    def resolve_config(self, *, n_in: int, n_out: int, kind: str = "char") -> ELMConfig:
        """The ELMConfig this spec trains: the preset's layer settings, the spec's sizes, the task's vocabulary."""
        preset = PRESETS[self.preset or DEFAULT_PRESET[kind]]
        base: dict[str, Any] = {**preset["model"], **self.model}
        if self.d_tree is not None:
            base["d_tree"] = self.d_tree
        if self.d_brch is not None:
            base["d_brch"] = self.d_brch
        base.update(
            n_in=n_in, n_out=n_out, l_mlp=self.l_mlp, d_mlp=self.d_mlp, readout_d_m=self.readout_d_m, seed=self.seed
        )
        if self.budget is None:
            return ELMConfig(**base, n_neurons=self.n_neurons, d_m=self.d_m)
        if self.d_m is not None:
            return allocate(self.budget, **base, d_m=self.d_m)
        if self.n_neurons is not None:
            return allocate(self.budget, **base, n_neurons=self.n_neurons)
        raise ValueError("with a budget, give d_m or n_neurons")


def parse_spec(data: dict[str, Any]) -> RunSpec:
    """Validate a JSON payload; errors become one ValueError whose message names the fields."""
    try:
        return RunSpec.model_validate(data)
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "spec"
            parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
        raise ValueError("invalid run spec: " + "; ".join(parts)) from None
