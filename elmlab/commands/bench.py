"""`elmlab bench`: training and inference throughput of the ELM Network on this machine (benchmarks.training)."""

from __future__ import annotations

import argparse
import json


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="training / forward throughput, FLOP/s and peak memory of the ELM Network",
        description="Median over --steps timed steps (after --warmup) of a full training step (forward, "
        "cross-entropy on every step, backward, clip, Adam; state carried) and of the forward pass, for "
        "the named configurations (T = 100, float32).",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--configs", default=None, help="comma-separated names (default: small,paper-slice,wide)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement (default 2)")
    p.add_argument("--impl", default="fast", choices=("fast", "autograd"), help="model implementation")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from elmlab.cli import UsageError

    names = None
    if args.configs is not None:
        names = [n.strip() for n in args.configs.split(",") if n.strip()]
    if args.steps < 1:
        raise UsageError(f"--steps must be at least 1, got {args.steps}")
    if args.warmup < 0:
        raise UsageError(f"--warmup must be at least 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be at least 1, got {args.threads}")

    import torch

    from benchmarks import training as bench

    try:
        bench.resolve_configs(names)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    result = bench.run_bench(names, args.device, steps=args.steps, warmup=args.warmup, model_kwargs={"impl": args.impl})
    if args.json:
        print(json.dumps(result))
        return 0
    print(
        f"device {result['device']}, {result['threads']} threads, torch {result['torch']}, "
        f"fp32 matmul peak {result['sgemm_gflops']:.1f} GFLOP/s, impl {args.impl}"
    )
    header = (
        f"{'config':<12} {'train ch/s':>11} {'x ref':>6} {'fwd ch/s':>10} {'x ref':>6} "
        f"{'GFLOP/s':>8} {'of peak':>8} {'peak MB':>8}"
    )
    print(header)
    for name, r in result["configs"].items():
        ref = bench.REFERENCE.get(name)
        x_train = f"{r['train_chars_per_s'] / ref['train']:.1f}" if ref else "-"
        x_fwd = f"{r['fwd_chars_per_s'] / ref['fwd']:.1f}" if ref else "-"
        print(
            f"{name:<12} {r['train_chars_per_s']:>11.0f} {x_train:>6} {r['fwd_chars_per_s']:>10.0f} {x_fwd:>6} "
            f"{r['gflops']:>8.2f} {100 * r['sgemm_fraction']:>7.2f}% {r['peak_mem_mb']:>8.0f}"
        )
    print("x ref: multiple of the reference JAX implementation on a 2-core machine (targets: train 10x, fwd 3x)")
    return 0
