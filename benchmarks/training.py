"""Training and inference throughput of the ELM Network: `elmlab bench` (or `python -m benchmarks.training`).

For each named configuration this measures, after warm-up, the median over several steps of:
- `train_chars_per_s`: B * T characters / seconds of one full training step (forward over T steps,
  cross-entropy on every step, backward, grad-norm clip, Adam), the state carried (detached);
- `fwd_chars_per_s`: the same for the forward pass alone (eval mode, no gradients), state carried;
- `gflops`: the training step's achieved GFLOP/s, counting `3 * flops_per_step(cfg)` per character
  (forward, plus a backward of about twice the forward), every time step counted;
- `sgemm_fraction`: `gflops` over this machine's fp32 matrix-multiply throughput (a large `torch.mm`);
- `peak_mem_mb`: on CPU the peak resident set size during the warm-up and timed steps minus the
  resident set size just before them (Linux VmHWM reset through /proc/self/clear_refs; falls back
  to the growth of getrusage's max RSS); on CUDA torch.cuda.max_memory_allocated over the steps.

The fast path's time loops are the native ones where they build (elm_core/native; `loops` in the
output), else the Python ones (ELMLAB_NATIVE=0 asks for them). Denormal floats are flushed to zero
(torch.set_flush_denormal), as in training. The threads are
torch's setting (`elmlab bench --threads` changes it).
"""

from __future__ import annotations

import ctypes
import gc
import math
import resource
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from benchmarks.reference import throughput_spread
from elm_core.budget import count_params, flops_per_step
from elm_core.config import ELMConfig


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark configuration: a network, a batch size and a sequence length."""

    name: str
    cfg: ELMConfig
    batch: int
    seq_len: int = 100


def _cfg(n_neurons: int, d_m: int, d_tree: int, d_brch: int, vocab: int = 205) -> ELMConfig:
    return ELMConfig(
        n_in=vocab, n_out=vocab, n_neurons=n_neurons, d_m=d_m, d_tree=d_tree, d_brch=d_brch, p_rec=0.8, l_mlp=1
    )


CONFIGS: dict[str, BenchConfig] = {
    "small": BenchConfig("small", _cfg(128, 8, 16, 8), batch=8),
    "paper-slice": BenchConfig("paper-slice", _cfg(256, 15, 50, 15), batch=8),
    "wide": BenchConfig("wide", _cfg(256, 8, 16, 8), batch=32),
    "paper": BenchConfig("paper", _cfg(440, 30, 50, 15, vocab=204), batch=8),
}
DEFAULT_CONFIGS = ("small", "paper-slice", "wide")

# The reference JAX implementation on this project's 2-core machine (chars/s): medians of three rounds
# run side by side with this benchmark on 2026-12-01 (`elmlab bench --vs-reference`, 2 threads, idle machine).
# The `x ref` columns divide by these; `--vs-reference` measures the ratio afresh, round by round.
REFERENCE = {
    "small": {"train": 1834.0, "fwd": 15548.0},
    "paper-slice": {"train": 291.0, "fwd": 3801.0},
    "wide": {"train": 2598.0, "fwd": 21209.0},
}


def resolve_configs(names: Iterable[str] | None) -> list[BenchConfig]:
    """The named configurations, in order; ValueError naming an unknown one."""
    names = list(DEFAULT_CONFIGS if names is None else names)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise ValueError(f"unknown bench config(s): {', '.join(unknown)} (known: {', '.join(CONFIGS)})")
    if not names:
        raise ValueError(f"no bench configs given (known: {', '.join(CONFIGS)})")
    return [CONFIGS[n] for n in names]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], Any], steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def sgemm_flops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    """This machine's fp32 matrix-multiply throughput (FLOP/s): median over `torch.mm` of two n x n matrices."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device)
    b = torch.randn(n, n, generator=gen).to(device)
    c = torch.empty(n, n, device=device)
    seconds = _median_time(lambda: torch.mm(a, b, out=c), repeats, 1, device)
    return 2 * n**3 / seconds


# --- peak memory ---------------------------------------------------------------------------------
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def _trim_heap() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class _PeakMemory:
    """Peak memory (MB) of what runs inside the `with`, over what was in use on entry."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.mb = math.nan

    def __enter__(self) -> _PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        _trim_heap()
        self.base = _status_kb("VmRSS")
        self.hwm_reset = False
        try:
            _CLEAR_REFS.write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
            self.hwm_reset = True
        except OSError:
            pass
        self.maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mb = (torch.cuda.max_memory_allocated(self.device) - self.base) / 2**20
            return
        hwm = _status_kb("VmHWM")
        if self.hwm_reset and hwm is not None and self.base is not None:
            self.mb = max(hwm - self.base, 0) / 1024
        else:
            self.mb = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.maxrss, 0) / 1024


# --- one configuration ---------------------------------------------------------------------------
def bench_config(
    bc: BenchConfig,
    device: torch.device | str = "cpu",
    *,
    steps: int = 10,
    warmup: int = 2,
    sgemm: float | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Throughput, FLOP/s and peak memory of one configuration (see the module docstring)."""
    from elm_core.model import ELMNetwork

    device = torch.device(device)
    cfg = bc.cfg
    model = ELMNetwork(cfg, dtype=torch.float32, **(model_kwargs or {})).to(device)
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, cfg.n_in, (bc.batch, bc.seq_len + 1), generator=gen).to(device)
    x, y = tokens[:, :-1], tokens[:, 1:]
    chars = bc.batch * bc.seq_len
    opt = torch.optim.Adam(model.parameters(), lr=5e-4)
    state = [None]

    def train_step() -> None:
        model.train()
        logits, new_state = model(x, state[0])
        loss = F.cross_entropy(logits.reshape(-1, cfg.n_out), y.reshape(-1), label_smoothing=1e-4)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        state[0] = new_state.detach()

    fwd_state = [None]

    def fwd_step() -> None:
        model.eval()
        with torch.no_grad():
            _, fwd_state[0] = model(x, fwd_state[0])

    with _PeakMemory(device) as mem:
        t_train = _median_time(train_step, steps, warmup, device)
    t_fwd = _median_time(fwd_step, steps, warmup, device)
    flops_char = flops_per_step(cfg)
    train_cps = chars / t_train
    gflops = 3 * flops_char * train_cps / 1e9
    sgemm = sgemm if sgemm is not None else sgemm_flops(device)
    return {
        "train_chars_per_s": train_cps,
        "fwd_chars_per_s": chars / t_fwd,
        "gflops": gflops,
        "fwd_gflops": flops_char * chars / t_fwd / 1e9,
        "sgemm_fraction": gflops * 1e9 / sgemm,
        "peak_mem_mb": mem.mb,
        "train_step_ms": 1e3 * t_train,
        "fwd_step_ms": 1e3 * t_fwd,
        "flops_per_char": flops_char,
        "params": count_params(cfg),
        "batch": bc.batch,
        "seq_len": bc.seq_len,
    }


def run_bench(
    names: Iterable[str] | None = None,
    device: torch.device | str = "cpu",
    *,
    steps: int = 10,
    warmup: int = 2,
    model_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`{"configs": {name: bench_config(...)}, "sgemm_gflops": ..., "device": ..., "threads": ...}`."""
    if steps < 1 or warmup < 0:
        raise ValueError(f"invalid steps={steps} / warmup={warmup}: need steps >= 1 and warmup >= 0")
    device = torch.device(device)
    configs = resolve_configs(names)
    torch.set_flush_denormal(True)  # as elm_core.train does: decaying memories otherwise produce slow denormals
    sgemm = sgemm_flops(device)
    results = {
        bc.name: bench_config(bc, device, steps=steps, warmup=warmup, sgemm=sgemm, model_kwargs=model_kwargs)
        for bc in configs
    }
    return {
        "configs": results,
        "sgemm_gflops": sgemm / 1e9,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "loops": time_loops(device),
    }


def time_loops(device: torch.device) -> str:
    """Which time loops the fast path ran: "native" (elm_core/native) or "python" (and why)."""
    from elm_core import native

    if device.type != "cpu":
        return "python (not a CPU)"
    status = native.status()
    return "native" if status["available"] else f"python ({status['reason']})"


def run_repeats(
    names: Iterable[str] | None = None,
    device: torch.device | str = "cpu",
    *,
    repeats: int = 3,
    steps: int = 10,
    warmup: int = 2,
    model_kwargs: dict[str, Any] | None = None,
    after_round: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """`run_bench` `repeats` times (calling `after_round(i)` after round i, e.g. to measure another
    implementation in between): `configs` holds each figure's median over the rounds, `spread`
    min / median / max of the throughputs, `rounds` every round's figures. Medians, because the
    machine's speed drifts in phases; the spread shows how far."""
    if repeats < 1:
        raise ValueError(f"invalid repeats={repeats}: need at least 1")
    results = []
    for i in range(repeats):
        results.append(run_bench(names, device, steps=steps, warmup=warmup, model_kwargs=model_kwargs))
        if after_round is not None:
            after_round(i)
    rounds = [r["configs"] for r in results]
    configs = {name: {key: statistics.median(r[name][key] for r in rounds) for key in fig}
               for name, fig in rounds[0].items()}
    return {**results[-1], "configs": configs, "spread": throughput_spread(rounds), "rounds": rounds,
            "repeats": repeats, "sgemm_gflops": statistics.median(r["sgemm_gflops"] for r in results)}


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.training [options]`: the same as `elmlab bench [options]` (its options and output)."""
    import sys

    from elmlab.cli import main as cli

    return cli(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
