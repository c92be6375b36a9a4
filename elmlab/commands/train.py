"""`elmlab train`: run one spec in this process, with a progress bar, and print (or save) the result."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from elmlab.cli import UsageError


def count(text: str) -> int:
    """A parameter count such as 3500000, 3.5e6 or 3_500_000."""
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text}")
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number: {text}")
    return int(value)


# CLI flag -> RunSpec field, for the flags that map one to one.
SPEC_FLAGS = (
    ("task", str), ("preset", str), ("budget", count), ("d_m", int), ("n_neurons", int), ("d_tree", int),
    ("d_brch", int), ("l_mlp", int), ("d_mlp", int), ("seed", int), ("steps", int), ("epochs", int),
    ("batch_size", int), ("seq_len", int), ("lr", float), ("device", str), ("precision", str),
    ("checkpoint_dir", str), ("run_id", str), ("sweep_id", str), ("eval_chars", int), ("test_chars", int),
    ("queue", str),
)


def add_spec_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that describe one run (shared by `train` and `submit`)."""
    p.add_argument("--spec", type=Path, help="a JSON run spec; flags below override its fields")
    for name, kind in SPEC_FLAGS:
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, default=None)


def spec_from_args(args: argparse.Namespace):
    from elm_core.spec import parse_spec

    payload: dict = {}
    if args.spec is not None:
        try:
            payload = json.loads(args.spec.read_text())
        except (OSError, ValueError) as exc:  # ValueError: not JSON, or not UTF-8 text
            raise UsageError(f"cannot read spec file {args.spec}: {exc}") from None
        if not isinstance(payload, dict):
            raise UsageError(f"spec file {args.spec}: a run spec is a JSON object, not {type(payload).__name__}")
    payload.update({name: getattr(args, name) for name, _ in SPEC_FLAGS if getattr(args, name) is not None})
    return parse_spec(payload)


def register(sub) -> None:
    p = sub.add_parser("train", help="train one run in this process and print its result")
    add_spec_arguments(p)
    p.add_argument("--out", type=Path, help="write the result record here as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from elm_core.lr_rule import base_lr
    from elm_core.train import lr_setting, prepare, train

    spec = spec_from_args(args)
    task, cfg = prepare(spec)  # validates everything before any work starts
    proto = spec.protocol(task.kind)
    rule, params = lr_setting(spec, proto, cfg)
    lr = base_lr(proto["lr"], rule, params)  # what the optimizer starts from
    print(f"{task.name}: N={cfg.n_neurons} d_m={cfg.d_m} d_tree={cfg.d_tree} d_brch={cfg.d_brch} "
          f"k_e={cfg.k_e} k_c={cfg.k_c} lr={lr:g} ({rule})", file=sys.stderr)
    bar = None if args.quiet else tqdm(total=None, unit="step", file=sys.stderr, dynamic_ncols=True)

    def progress(p: dict) -> None:
        if bar is None:
            return
        bar.total = p["total_steps"]
        bar.n = p["step"]
        bar.set_postfix(loss=f"{p['loss']:.3f}", tok_s=f"{p['tokens_per_s']:.0f}", eta=f"{p['eta_s']:.0f}s")
        bar.refresh()

    record = train(spec, on_progress=progress)
    if bar is not None:
        bar.close()
    if args.out:
        args.out.write_text(record.model_dump_json(indent=2))
    summary = {k: getattr(record, k) for k in ("run_id", "status", "reason", "task", "params", "n_neurons", "d_m",
                                                "k_e", "k_c", "metric_name", "train_metric", "valid_metric",
                                                "test_metric", "steps", "wall_time_s", "device")}
    print(json.dumps(summary, indent=2))
    return 0 if record.status == "done" else 1
