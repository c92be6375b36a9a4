"""The native time loops (elm_core/native) against the Python loops, interleaved in one process.

    python -m benchmarks.native [--configs small,paper-slice,wide] [--rounds 3] [--threads N]

Each round times, for each configuration, a training step and a forward pass (the `elmlab bench`
steps: cross-entropy, grad-norm clip, Adam; eval forward without gradients) with the native loops and
then with the Python loops (ELMLAB_NATIVE switched between them): two untimed steps, then the median
of three. Prints the median over the rounds, chars/s, and the ratio native / Python. Interleaving
keeps the machine's drift out of the ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.training import resolve_configs


def _time(fn, chars: int) -> float:
    fn(), fn()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return chars / statistics.median(times)


def _measure(bc, rounds: int) -> dict[str, tuple[float, float]]:
    """{"train" | "fwd": (native chars/s, Python chars/s)}, medians over the rounds."""
    from elm_core.model import ELMNetwork

    cfg = bc.cfg
    model = ELMNetwork(cfg, dtype=torch.float32)
    tok = torch.randint(0, cfg.n_in, (bc.batch, bc.seq_len + 1), generator=torch.Generator().manual_seed(1))
    x, y = tok[:, :-1], tok[:, 1:]
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)

    def train() -> None:
        model.train()
        logits, _ = model(x)
        loss = F.cross_entropy(logits.reshape(-1, cfg.n_out), y.reshape(-1), label_smoothing=1e-4)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    def fwd() -> None:
        model.eval()
        with torch.no_grad():
            model(x)

    got: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for loops in ("auto", "0"):
            os.environ["ELMLAB_NATIVE"] = loops
            for step, fn in (("train", train), ("fwd", fwd)):
                got.setdefault((step, loops), []).append(_time(fn, bc.batch * bc.seq_len))
    return {
        step: (statistics.median(got[(step, "auto")]), statistics.median(got[(step, "0")])) for step in ("train", "fwd")
    }


def main(argv: list[str] | None = None) -> int:
    from elm_core import native

    p = argparse.ArgumentParser(prog="python -m benchmarks.native", description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="small,paper-slice,wide")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    if native.load() is None:
        print(f"the native loops are not available: {native.status()['reason']}")
        return 1
    before = os.environ.get("ELMLAB_NATIVE")
    print(f"{torch.get_num_threads()} threads, {args.rounds} rounds")
    print(f"{'config':<12} {'step':<6} {'native ch/s':>12} {'python ch/s':>12} {'ratio':>6}")
    try:
        for bc in resolve_configs(args.configs.split(",")):
            for step, (nat, py) in _measure(bc, args.rounds).items():
                print(f"{bc.name:<12} {step:<6} {nat:>12,.0f} {py:>12,.0f} {nat / py:>5.2f}x")
    finally:
        if before is None:
            os.environ.pop("ELMLAB_NATIVE", None)
        else:
            os.environ["ELMLAB_NATIVE"] = before
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
