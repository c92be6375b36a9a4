"""`elmlab bench`: training and inference throughput of the ELM Network on this machine (benchmarks.training),
with the spread over --repeats rounds and, with --vs-reference, the reference harness run between them."""

from __future__ import annotations

import argparse
import json
import os


def register(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="training / forward throughput, FLOP/s and peak memory of the ELM Network",
        description="Median over --steps timed steps (after --warmup) of a full training step (forward, "
        "cross-entropy on every step, backward, clip, Adam; state carried) and of the forward pass, for "
        "the named configurations (T = 100, float32); the whole measurement repeated --repeats times, "
        "reported as min / median / max.",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object and nothing else")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--configs", default=None, help="comma-separated names (default: small,paper-slice,wide)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per measurement (default 10)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each measurement (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="rounds of the whole measurement (default 3)")
    p.add_argument("--impl", default="fast", choices=("fast", "autograd"), help="model implementation")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--vs-reference", metavar="PATH", default=None,
                   help="a folder with the reference's harness (ref_bench.py): run it after each round, "
                   "print both and the ratios")
    p.add_argument("--reference-python", metavar="PYTHON", default=os.environ.get("ELMLAB_REFERENCE_PYTHON", "python3"),
                   help="the Python of the reference's environment (default $ELMLAB_REFERENCE_PYTHON or python3)")
    p.add_argument("--reference-cpu", metavar="CPU", type=int, default=None,
                   help="with --threads 1, the CPU the reference runs on (taskset -c CPU; default: the last "
                   "CPU this process may run on)")
    p.set_defaults(func=run, _parser=p)


def _check(args: argparse.Namespace) -> list[str] | None:
    from elmlab.cli import UsageError

    for flag, value, least in (("--steps", args.steps, 1), ("--warmup", args.warmup, 0),
                               ("--repeats", args.repeats, 1), ("--threads", args.threads, 1)):
        if value is not None and value < least:
            raise UsageError(f"{flag} must be at least {least}, got {value}")
    if args.configs is None:
        return None
    return [n.strip() for n in args.configs.split(",") if n.strip()]


def run(args: argparse.Namespace) -> int:
    from elmlab.cli import UsageError

    names = _check(args)
    import torch

    from benchmarks import reference
    from benchmarks import training as bench

    try:
        configs = bench.resolve_configs(names)
        harness = python = None
        if args.vs_reference is not None:
            harness = reference.harness_path(args.vs_reference)
            python = reference.check_python(args.reference_python)
            if args.reference_cpu is not None:
                reference.check_cpu(args.reference_cpu)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    ref_rounds: list[dict] = []

    def reference_round(_: int) -> None:
        ref_rounds.append(reference.run_harness(harness, python, [c.name for c in configs], steps=args.steps,
                                                warmup=args.warmup, threads=args.threads,
                                                cpu=args.reference_cpu))

    result = bench.run_repeats(names, args.device, repeats=args.repeats, steps=args.steps, warmup=args.warmup,
                               model_kwargs={"impl": args.impl}, after_round=reference_round if harness else None)
    if harness is not None:
        result["reference"] = {"harness": str(harness), "python": python, "rounds": ref_rounds,
                               "spread": reference.throughput_spread(ref_rounds),
                               "ratios": reference.ratios(result["rounds"], ref_rounds)}
    if args.json:
        print(json.dumps(result))
        return 0
    _print_table(result, args.impl)
    return 0


def _span(s: dict[str, float]) -> str:
    return f"{s['min']:.0f}-{s['max']:.0f}"


def _print_table(result: dict, impl: str) -> None:
    from benchmarks import training as bench

    print(f"device {result['device']}, {result['threads']} threads, torch {result['torch']}, "
          f"fp32 matmul peak {result['sgemm_gflops']:.1f} GFLOP/s, impl {impl}"
          + (f", {result['loops']} loops" if impl == "fast" else "") + f", {result['repeats']} round(s)")
    print(f"{'config':<12} {'train ch/s':>11} {'min-max':>13} {'x ref':>6} {'fwd ch/s':>10} {'min-max':>13} "
          f"{'x ref':>6} {'GFLOP/s':>8} {'of peak':>8} {'peak MB':>8}")
    for name, r in result["configs"].items():
        s, ref = result["spread"][name], bench.REFERENCE.get(name)
        x_train = f"{r['train_chars_per_s'] / ref['train']:.1f}" if ref else "-"
        x_fwd = f"{r['fwd_chars_per_s'] / ref['fwd']:.1f}" if ref else "-"
        print(f"{name:<12} {r['train_chars_per_s']:>11.0f} {_span(s['train_chars_per_s']):>13} {x_train:>6} "
              f"{r['fwd_chars_per_s']:>10.0f} {_span(s['fwd_chars_per_s']):>13} {x_fwd:>6} "
              f"{r['gflops']:>8.2f} {100 * r['sgemm_fraction']:>7.2f}% {r['peak_mem_mb']:>8.0f}")
    ref = result.get("reference")
    if ref:
        print(f"reference harness {ref['harness']}, run after each round; ratio = ours / reference, round by round")
        print(f"{'config':<12} {'ref train':>10} {'min-max':>13} {'ratio':>6} {'min-max':>11} "
              f"{'ref fwd':>10} {'min-max':>13} {'ratio':>6} {'min-max':>11}")
        for name, s in ref["spread"].items():
            q = ref["ratios"][name]
            t, f, qt, qf = s["train_chars_per_s"], s["fwd_chars_per_s"], q["train_chars_per_s"], q["fwd_chars_per_s"]
            print(f"{name:<12} {t['median']:>10.0f} {_span(t):>13} {qt['median']:>6.2f} "
                  f"{qt['min']:>5.2f}-{qt['max']:<5.2f} {f['median']:>10.0f} {_span(f):>13} {qf['median']:>6.2f} "
                  f"{qf['min']:>5.2f}-{qf['max']:<5.2f}")
    print("x ref: multiple of the reference JAX implementation as measured beside this benchmark on a 2-core machine "
          "(benchmarks.training.REFERENCE; targets: train 20x, fwd 5x)")
